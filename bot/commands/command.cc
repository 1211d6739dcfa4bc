#include "bot/commands/command.h"

#include <algorithm>
#include <charconv>
#include <sstream>

#include "bot/design/design.h"
#include "bot/util/text.h"
#include "bot/util/utf8.h"

namespace jarvis {
namespace {

struct VerbInfo {
  Verb verb;
  std::string_view name;
  bool needs_argument;
};

constexpr VerbInfo kVerbs[] = {
    {Verb::Deploy, "deploy", true}, {Verb::Status, "status", false},
    {Verb::Jobs, "jobs", false},     {Verb::Log, "log", true},
    {Verb::Cancel, "cancel", true},  {Verb::Retry, "retry", true},
    {Verb::Plan, "plan", true},      {Verb::Help, "help", false},
    {Verb::Audit, "audit", false},
};

}  // namespace

std::string_view verb_name(Verb v) {
  for (const auto& info : kVerbs)
    if (info.verb == v) return info.name;
  return "?";
}

ParsedCommand parse_command(std::string_view text) {
  ParsedCommand out;
  if (text.size() > kMaxCommandLength) {
    out.error = "that command is too long (over " + std::to_string(kMaxCommandLength) + " characters)";
    return out;
  }
  for (unsigned char c : text) {
    if (c < 0x20 && c != '\t') {
      out.error = "that command contains control characters";
      return out;
    }
  }
  std::istringstream in{std::string(text)};
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  if (words.empty()) {
    out.error = "say \"help\" to see what I can do";
    return out;
  }
  std::string verb = lower(words[0]);
  const VerbInfo* info = nullptr;
  for (const auto& v : kVerbs)
    if (v.name == verb) info = &v;
  if (!info) {
    std::vector<std::string_view> names;
    for (const auto& v : kVerbs) names.push_back(v.name);
    std::string meant = verb.size() <= 40 ? closest_name(verb, names) : std::string();
    out.error = "I don't know \"" + std::string(utf8_prefix(words[0], 40)) + "\"" +
                (meant.empty() ? "." : "; did you mean \"" + meant + "\"?") + " Say \"help\" for the commands.";
    return out;
  }
  Command cmd;
  cmd.verb = info->verb;
  cmd.text = std::string(text);
  std::vector<std::string> args;
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    bool takes_pipeline = cmd.verb == Verb::Deploy || cmd.verb == Verb::Plan;
    if (takes_pipeline && (w == "--pipeline" || w == "with")) {
      if (i + 1 >= words.size()) {
        out.error = std::string(info->name) + ": " + w + " needs a pipeline name";
        return out;
      }
      cmd.pipeline = words[++i];
    } else if (takes_pipeline && w.rfind("--pipeline=", 0) == 0) {
      cmd.pipeline = w.substr(11);
    } else if (cmd.verb == Verb::Log && (w == "-n" || w == "--lines")) {
      int n = 0;
      const std::string* v = i + 1 < words.size() ? &words[++i] : nullptr;
      if (!v || std::from_chars(v->data(), v->data() + v->size(), n).ptr != v->data() + v->size() ||
          n < 1 || n > 100000) {
        out.error = "log: -n needs a number of lines from 1 to 100000";
        return out;
      }
      cmd.lines = n;
    } else {
      args.push_back(w);
    }
  }
  // "status job 17" reads naturally; treat it as "status 17".
  if (args.size() == 2 && lower(args[0]) == "job") args.erase(args.begin());
  if (args.size() > 1) {
    out.error = std::string(info->name) + " takes one argument. Say \"help " +
                std::string(info->name) + "\".";
    return out;
  }
  if (info->needs_argument && args.empty()) {
    out.error = std::string(info->name) + " needs an argument. Say \"help " +
                std::string(info->name) + "\".";
    return out;
  }
  if (!args.empty()) cmd.argument = args[0];
  out.command = std::move(cmd);
  return out;
}

std::optional<Target> parse_target(std::string_view text, std::string& error) {
  Target t;
  std::string_view digits = text;
  if (!digits.empty() && digits[0] == '#') digits.remove_prefix(1);
  if (!digits.empty() && std::all_of(digits.begin(), digits.end(), ::isdigit)) {
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), t.job);
    if (ec == std::errc() && t.job > 0) return t;
    error = "'" + std::string(utf8_prefix(text, 40)) + "' is not a job number";
    return std::nullopt;
  }
  if (!is_valid_hostname(text)) {
    error = "'" + std::string(utf8_prefix(text, 80)) + "' is neither a host name nor a job number";
    return std::nullopt;
  }
  t.host = lower(text);
  return t;
}

}  // namespace jarvis
