#include "bot/chat/addressing.h"

#include <strings.h>

namespace jarvis {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "jarvis:", "jarvis,", "@jarvis" at the start, followed by a space or the end.
std::optional<std::string_view> after_name(std::string_view text, std::string_view name) {
  if (!text.empty() && text.front() == '@') text.remove_prefix(1);
  if (name.empty() || text.size() < name.size() ||
      ::strncasecmp(text.data(), name.data(), name.size()) != 0)
    return std::nullopt;
  std::string_view rest = text.substr(name.size());
  if (!rest.empty() && (rest.front() == ':' || rest.front() == ',')) rest.remove_prefix(1);
  if (!rest.empty() && rest.front() != ' ' && rest.front() != '\t') return std::nullopt;
  return trim(rest);
}

}  // namespace

std::optional<std::string> addressed_command(std::string_view text, std::string_view own_name,
                                             std::string_view prefix, bool direct) {
  text = trim(text);
  if (auto rest = after_name(text, own_name)) {
    if (rest->empty()) return std::string("help");
    return std::string(*rest);
  }
  if (!prefix.empty() && text.size() > prefix.size() && text.substr(0, prefix.size()) == prefix)
    return std::string(trim(text.substr(prefix.size())));
  if (direct && !text.empty()) return std::string(text);
  return std::nullopt;
}

}  // namespace jarvis
