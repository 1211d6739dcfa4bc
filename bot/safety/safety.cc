#include "bot/safety/safety.h"

#include <fnmatch.h>

#include <ctime>

#include "bot/util/text.h"
#include "bot/util/utf8.h"
#include "bot/util/yaml_doc.h"

namespace jarvis {
namespace {

// Values come from designs and workers: one short line, nothing that could steer a terminal.
std::string clean(const std::string& s, size_t max = 80) {
  std::string out;
  for (char c : s) out += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? ' ' : c;
  if (out.size() > max) out = std::string(utf8_prefix(out, max)) + "...";
  return out;
}

// A const walk with copies only: operator[] on a non-const node would add the keys, assigning
// one node to another (yaml-cpp's reference semantics) would rewrite the document, and a
// missing key's node is invalid for anything but a test.
YAML::Node at_path(const YAML::Node& n, const char* const* key, const char* const* end) {
  if (key == end) return n;
  if (!n.IsMap()) return YAML::Node();
  const YAML::Node child = n[*key];
  if (!child) return YAML::Node();
  return at_path(child, key + 1, end);
}

YAML::Node at(const YAML::Node& doc, std::initializer_list<const char*> path) {
  if (!doc) return YAML::Node();
  return at_path(doc, path.begin(), path.end());
}

std::string scalar(const YAML::Node& doc, std::initializer_list<const char*> path) {
  YAML::Node n = at(doc, path);
  return n && n.IsScalar() ? n.Scalar() : std::string();
}

bool yes(const YAML::Node& doc, std::initializer_list<const char*> path) {
  std::string v = lower(scalar(doc, path));
  return v == "true" || v == "yes" || v == "on";
}

YAML::Node load(const std::string& document) {
  try {
    return load_mapping_document(document, YamlLimits{});
  } catch (const std::exception&) {
    return YAML::Node();
  }
}

// What a destructive task does to the host, from its name.
std::string action(const std::string& task, bool future) {
  std::string t = lower(task.substr(task.find(':') + 1));
  auto has = [&](const char* w) { return t.find(w) != std::string::npos; };
  if (has("power_off") || has("poweroff") || has("shutdown") || has("halt"))
    return future ? "will power it off" : "powers it off";
  if (has("delete") || has("destroy") || has("remove") || has("terminate"))
    return future ? "will delete it" : "deletes it";
  if (has("rebuild") || has("reinstall") || has("wipe") || has("format"))
    return future ? "will wipe it" : "wipes it";
  return future ? "will run " + task + " on it" : "runs " + task;
}

std::string clock(int64_t at_ms, int64_t now) {
  time_t secs = static_cast<time_t>(at_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  bool soon = at_ms - now < 24 * 3600 * 1000LL;
  std::strftime(buf, sizeof buf, soon ? "%H:%M UTC" : "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

}  // namespace

ProductionFact production_fact(const YAML::Node& doc, const std::string& host,
                               const SafetyConfig& config) {
  std::string fqdn = scalar(doc, {"instance", "fqdn"});
  for (const auto& pattern : config.production_hosts) {
    for (const std::string& name : {host, fqdn}) {
      if (!name.empty() && ::fnmatch(pattern.c_str(), name.c_str(), FNM_CASEFOLD) == 0)
        return {true, "config safety.production_hosts '" + clean(pattern, 60) + "'"};
    }
  }
  if (yes(doc, {"instance", "production"})) return {true, "the design's instance.production"};
  if (yes(doc, {"inventory", "production"})) {
    std::string source = scalar(doc, {"inventory", "source"});
    return {true, "inventory:check_production" + (source.empty() ? "" : ": " + clean(source, 60))};
  }
  if (yes(doc, {"production"})) return {true, "the clipboard's production: true"};
  return {};
}

ProductionFact production_fact(const std::string& document, const std::string& host,
                               const SafetyConfig& config) {
  return production_fact(load(document), host, config);
}

std::string host_facts(const std::string& document) {
  YAML::Node doc = load(document);
  std::vector<std::string> facts;
  if (auto fqdn = scalar(doc, {"instance", "fqdn"}); !fqdn.empty()) facts.push_back(clean(fqdn));
  std::string node;
  for (auto path : {std::initializer_list<const char*>{"inventory", "node_id"}, {"instance", "node_id"},
                    {"instance", "previous_node_id"}}) {
    node = scalar(doc, path);
    if (!node.empty()) break;
  }
  std::string provider = scalar(doc, {"instance", "provider"});
  if (!node.empty()) facts.push_back(clean(provider.empty() ? "node " + node : provider + " " + node));
  std::string ip = scalar(doc, {"inventory", "ip"});
  if (ip.empty()) ip = scalar(doc, {"instance", "ip"});
  if (!ip.empty()) facts.push_back(clean(ip, 45));
  std::string out;
  for (const auto& f : facts) out += (out.empty() ? "" : ", ") + f;
  return out;
}

int destructive_run_end(const std::vector<TaskSpec>& tasks, int stage) {
  int end = stage;
  while (end < static_cast<int>(tasks.size()) && tasks[static_cast<size_t>(end)].destructive) ++end;
  return end;
}

std::string confirmation_prompt(const JobRecord& job, int through, const ProductionFact& fact,
                                Millis timeout) {
  std::string facts = host_facts(job.clipboard);
  std::string id = std::to_string(job.id);
  std::string line = job.host + (facts.empty() ? "" : " (" + facts + ")") + " is in production (" +
                     fact.source + "): stage " + std::to_string(job.stage + 1) + "/" +
                     std::to_string(job.stage_count()) + " " +
                     job.tasks[static_cast<size_t>(job.stage)].name + " " +
                     action(job.tasks[static_cast<size_t>(job.stage)].name, true);
  for (int s = job.stage + 1; s < through; ++s)
    line += ", then stage " + std::to_string(s + 1) + " " + action(job.tasks[static_cast<size_t>(s)].name, false);
  return line + ". Say `confirm " + id + "` within " + round_duration(timeout) + ", or `cancel " + id + "`.";
}

std::string round_duration(Millis d) {
  int64_t ms = d.count();
  if (ms > 0 && ms % (3600 * 1000) == 0) return std::to_string(ms / (3600 * 1000)) + "h";
  if (ms > 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms > 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return format_duration(d);
}

const Freeze* freeze_for(const std::vector<Freeze>& freezes, const std::string& host,
                         const std::string& cluster) {
  for (const std::string& scope : {host, cluster, std::string("all")}) {
    if (scope.empty()) continue;
    for (const auto& f : freezes)
      if (lower(f.scope) == lower(scope)) return &f;
  }
  return nullptr;
}

std::string describe_freeze(const Freeze& f, int64_t now) {
  std::string scope = f.scope == "all" ? "everything is" : f.scope + " is";
  std::string until = f.until_ms ? "until " + clock(f.until_ms, now) : "until someone unfreezes it";
  return scope + " frozen by " + clean(f.by, 60) + " " + until +
         (f.reason.empty() ? "" : " (" + clean(f.reason, 200) + ")");
}

}  // namespace jarvis
