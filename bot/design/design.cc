#include "bot/design/design.h"

#include <algorithm>


namespace jarvis {

YamlLimits design_limits() {
  YamlLimits l;
  l.max_bytes = 1u << 20;
  l.max_depth = 32;
  l.max_nodes = 100'000;
  l.max_aliases = 64;
  return l;
}

bool is_valid_hostname(std::string_view name) {
  if (name.empty() || name.size() > 63 || name.front() == '-' || name.back() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
  });
}

std::optional<Design> parse_design(std::string ref, std::string text, std::string& error) {
  Design d;
  try {
    d.root = load_mapping_document(text, design_limits());
  } catch (const std::exception& e) {
    error = "the design is not usable YAML: " + std::string(e.what());
    return std::nullopt;
  }
  const YAML::Node& root = d.root;
  const YAML::Node instance = root["instance"];
  if (!instance || !instance.IsMap()) {
    error = "the design has no 'instance:' mapping";
    return std::nullopt;
  }
  auto host = scalar_at(d.root, "instance.hostname");
  if (!host) {
    error = "instance.hostname is missing (line " + std::to_string(instance.Mark().line + 1) + ")";
    return std::nullopt;
  }
  if (!is_valid_hostname(*host)) {
    error = "instance.hostname '" + host->substr(0, 80) + "' (line " +
            std::to_string(instance["hostname"].Mark().line + 1) +
            ") is not a host name: use 1-63 letters, digits and '-', not starting or ending "
            "with '-'";
    return std::nullopt;
  }
  d.hostname = *host;
  std::transform(d.hostname.begin(), d.hostname.end(), d.hostname.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  d.ref = std::move(ref);
  d.text = std::move(text);
  return d;
}

}  // namespace jarvis
