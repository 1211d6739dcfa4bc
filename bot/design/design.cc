#include "bot/design/design.h"

#include <algorithm>

#include "bot/util/text.h"


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

namespace {

std::string line_of(const YAML::Node& n) { return "line " + std::to_string(n.Mark().line + 1); }

bool is_valid_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  if (name.back() == '.') name.remove_suffix(1);
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    if (!is_valid_hostname(name.substr(start, dot - start))) return false;
    start = dot + 1;
  }
  return true;
}

bool is_plain_word(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

bool has_control_characters(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

// Checks the instance fields jarvis and its workers rely on; other keys are kept as they are.
// A value in an error: quoted for local designs, left out for remote ones (it may be secret).
std::string shown(const std::string& value, DesignOrigin origin) {
  return origin == DesignOrigin::Local ? " '" + value.substr(0, 80) + "'" : std::string();
}

std::optional<std::string> check_instance(const YAML::Node& instance, DesignOrigin origin) {
  // Fields that must be one value (not a list or a mapping) when present.
  for (const char* key : {"hostname", "fqdn", "provider", "size", "datacenter", "guestid"}) {
    const YAML::Node v = instance[key];
    if (v && !v.IsScalar())
      return std::string("instance.") + key + " (" + line_of(v) + ") must be a single value";
  }
  const YAML::Node hostname = instance["hostname"];
  if (!hostname) return "instance.hostname is missing (the instance starts at " + line_of(instance) + ")";
  const std::string host = hostname.Scalar();
  if (!is_valid_hostname(host))
    return "instance.hostname" + shown(host, origin) + " (" + line_of(hostname) +
           ") is not a host name: use 1-63 letters, digits and '-', not starting or ending "
           "with '-'";
  if (const YAML::Node fqdn = instance["fqdn"]) {
    std::string name = fqdn.Scalar();
    if (!is_valid_dns_name(name))
      return "instance.fqdn" + shown(name, origin) + " (" + line_of(fqdn) + ") is not a DNS name";
    if (lower(name).rfind(lower(host) + ".", 0) != 0)
      return "instance.fqdn" + shown(name, origin) + " (" + line_of(fqdn) +
             ") does not start with the hostname" + shown(host, origin);
  }
  if (const YAML::Node provider = instance["provider"]; provider && !is_plain_word(provider.Scalar()))
    return "instance.provider" + shown(provider.Scalar(), origin) + " (" + line_of(provider) +
           ") is not a provider name: use letters, digits, '-', '_' and '.'";
  if (const YAML::Node size = instance["size"]; size && !is_plain_word(size.Scalar()))
    return "instance.size" + shown(size.Scalar(), origin) + " (" + line_of(size) +
           ") is not a size: a number or a plan name";
  for (const char* key : {"datacenter", "guestid"}) {
    const YAML::Node v = instance[key];
    if (v && (v.Scalar().size() > 128 || has_control_characters(v.Scalar())))
      return std::string("instance.") + key + " (" + line_of(v) +
             ") must be text of at most 128 characters without control characters";
  }
  return std::nullopt;
}

struct TooBig {};

// Writes a node back as YAML, keeping scalars that were quoted quoted ('007' stays a string
// for the next reader; yaml-cpp's own emitter would drop the quotes). Aliases are copied out,
// so every node written counts against `budget`; TooBig is thrown when it runs out.
void emit_preserving(YAML::Emitter& out, const YAML::Node& n, uint64_t& budget) {
  if (budget == 0) throw TooBig{};
  --budget;
  switch (n.Type()) {
    case YAML::NodeType::Map:
      out << YAML::BeginMap;
      for (auto it = n.begin(); it != n.end(); ++it) {
        out << YAML::Key;
        emit_preserving(out, it->first, budget);
        out << YAML::Value;
        emit_preserving(out, it->second, budget);
      }
      out << YAML::EndMap;
      break;
    case YAML::NodeType::Sequence:
      out << YAML::BeginSeq;
      for (const auto& item : n) emit_preserving(out, item, budget);
      out << YAML::EndSeq;
      break;
    case YAML::NodeType::Scalar:
      if (n.Tag() == "!") out << YAML::DoubleQuoted;
      out << n.Scalar();
      break;
    default:
      out << YAML::Null;
  }
}

// A cluster design: `cluster: NAME`, `instances:` (one mapping per host) and optionally a
// shared `instance:` whose fields each host inherits unless it sets them itself.
std::optional<Design> parse_cluster(std::string ref, std::string text, YAML::Node root,
                                    std::string& error, DesignOrigin origin) {
  const YAML::Node& r = root;
  const YAML::Node name = r["cluster"];
  if (!name) {
    error = "a design with instances: needs cluster: NAME (line " +
            std::to_string(r["instances"].Mark().line + 1) + "), the name status reports the hosts under";
    return std::nullopt;
  }
  if (!name.IsScalar() || !is_valid_hostname(name.Scalar())) {
    error = "cluster (" + line_of(name) + ") is not a cluster name: use 1-63 letters, digits and '-'";
    return std::nullopt;
  }
  const YAML::Node list = r["instances"];
  if (!list.IsSequence() || list.size() == 0) {
    error = "instances (" + line_of(list) + ") must be a list of instance mappings";
    return std::nullopt;
  }
  if (list.size() > kMaxClusterHosts) {
    error = "instances (" + line_of(list) + ") lists " + std::to_string(list.size()) +
            " hosts; a cluster design may list at most " + std::to_string(kMaxClusterHosts);
    return std::nullopt;
  }
  const YAML::Node shared = r["instance"];
  if (shared && !shared.IsMap()) {
    error = "instance (" + line_of(shared) + ") must be a mapping of the fields the hosts share";
    return std::nullopt;
  }
  // What each host's design will weigh once its aliases are copied out, from the parser's
  // events (nothing is expanded to find out): refused before any of it is built.
  const YamlLimits member_limits = design_limits();
  auto sizes = root_expanded_sizes(text, "instances");
  if (!sizes) {
    error = "the design is not usable YAML";
    return std::nullopt;
  }
  ExpandedSize common;  // what every host's design holds: all but the instance fields
  for (const auto& [key, size] : sizes->entries)
    if (key != "instance" && key != "instances") common += size;
  common += sizes->of("instance");
  const bool per_item = sizes->list_items_known && sizes->list_items.size() == list.size();
  ExpandedSize whole;
  for (size_t i = 0; i < list.size(); ++i) {
    ExpandedSize host = common;
    host += per_item ? sizes->list_items[i] : sizes->of("instances");
    if (host.nodes > member_limits.max_nodes || host.bytes > member_limits.max_bytes) {
      error = "instances[" + std::to_string(i + 1) + "] (" + line_of(list[i]) +
              "): the host's design would be " + std::to_string(host.nodes) + " nodes and " +
              std::to_string(host.bytes) + " bytes with its aliases expanded, over the limit of " +
              std::to_string(member_limits.max_nodes) + " nodes and " +
              std::to_string(member_limits.max_bytes) + " bytes for one host's design";
      return std::nullopt;
    }
    whole += host;
  }
  if (whole.nodes > kMaxClusterExpandedNodes || whole.bytes > kMaxClusterExpandedBytes) {
    error = "the cluster's " + std::to_string(list.size()) + " host designs would be " +
            std::to_string(whole.nodes) + " nodes and " + std::to_string(whole.bytes) +
            " bytes with their aliases expanded (each host gets its own copy of the shared "
            "fields), over the limit of " + std::to_string(kMaxClusterExpandedNodes) +
            " nodes and " + std::to_string(kMaxClusterExpandedBytes) + " bytes for a whole cluster";
    return std::nullopt;
  }

  Design d;
  d.cluster = lower(name.Scalar());
  std::vector<std::string> seen;
  uint64_t nodes_left = kMaxClusterExpandedNodes;  // counted again as the hosts are built
  uint64_t bytes_left = kMaxClusterExpandedBytes;
  for (size_t i = 0; i < list.size(); ++i) {
    const YAML::Node member = list[i];
    std::string where = "instances[" + std::to_string(i + 1) + "] (" + line_of(member) + ")";
    if (!member.IsMap()) {
      error = where + " must be a mapping of the host's fields";
      return std::nullopt;
    }
    if (!member["hostname"]) {
      error = where + " has no hostname";
      return std::nullopt;
    }
    // Each key once: shared fields the host does not set, then the host's own.
    YAML::Node merged(YAML::NodeType::Map);
    if (shared)
      for (auto it = shared.begin(); it != shared.end(); ++it)
        if (!member[it->first.Scalar()]) {
          YAML::Node v = it->second;
          merged[it->first.Scalar()] = v;
        }
    for (auto it = member.begin(); it != member.end(); ++it) {
      YAML::Node v = it->second;
      merged[it->first.Scalar()] = v;
    }
    if (auto problem = check_instance(merged, origin)) {
      error = "instances[" + std::to_string(i + 1) + "]: " + *problem;
      return std::nullopt;
    }
    std::string host = lower(merged["hostname"].Scalar());
    if (std::find(seen.begin(), seen.end(), host) != seen.end()) {
      error = where + ": " + host + " is listed twice";
      return std::nullopt;
    }
    seen.push_back(host);
    // The host's own design: the document with its instance in place of the list.
    YAML::Emitter out;
    uint64_t budget = std::min<uint64_t>(member_limits.max_nodes, nodes_left);
    const uint64_t budget_before = budget;
    try {
      out << YAML::BeginMap;
      bool placed = false;
      for (auto it = r.begin(); it != r.end(); ++it) {
        std::string key = it->first.Scalar();
        if (key == "instance" || key == "instances") {
          if (placed) continue;
          placed = true;
          out << YAML::Key << "instance" << YAML::Value;
          emit_preserving(out, merged, budget);
          continue;
        }
        out << YAML::Key;
        emit_preserving(out, it->first, budget);
        out << YAML::Value;
        emit_preserving(out, it->second, budget);
      }
      out << YAML::EndMap;
    } catch (const TooBig&) {
      budget = 0;
    }
    if (budget == 0 || out.size() > std::min<uint64_t>(member_limits.max_bytes, bytes_left)) {
      error = where + ": the host's design grows past the limit of " +
              std::to_string(member_limits.max_nodes) + " nodes and " +
              std::to_string(member_limits.max_bytes) + " bytes for one host's design, or of " +
              std::to_string(kMaxClusterExpandedNodes) + " nodes and " +
              std::to_string(kMaxClusterExpandedBytes) + " bytes for a whole cluster, with its " +
              "aliases expanded";
      return std::nullopt;
    }
    nodes_left -= budget_before - budget;
    bytes_left -= out.size();
    std::string member_error;
    auto host_design = parse_design(ref, "# host " + host + " of cluster " + d.cluster + "\n" +
                                             out.c_str() + "\n",
                                    member_error, origin);
    if (!host_design) {
      error = where + ": " + member_error;
      return std::nullopt;
    }
    host_design->cluster = d.cluster;
    d.members.push_back(std::move(*host_design));
  }
  d.ref = std::move(ref);
  d.text = std::move(text);
  d.root = std::move(root);
  return d;
}

}  // namespace

std::optional<Design> parse_design(std::string ref, std::string text, std::string& error,
                                   DesignOrigin origin) {
  Design d;
  try {
    d.root = load_mapping_document(text, design_limits());
  } catch (const std::exception& e) {
    error = "the design is not usable YAML: " + std::string(e.what());
    return std::nullopt;
  }
  const YAML::Node& root = d.root;
  if (root["instances"]) return parse_cluster(std::move(ref), std::move(text), d.root, error, origin);
  const YAML::Node instance = root["instance"];
  if (!instance || !instance.IsMap()) {
    error = instance ? "instance (" + line_of(instance) + ") must be a mapping of the host's fields"
                     : "the design has no 'instance:' mapping";
    return std::nullopt;
  }
  if (auto problem = check_instance(instance, origin)) {
    error = *problem;
    return std::nullopt;
  }
  d.hostname = lower(instance["hostname"].Scalar());
  d.ref = std::move(ref);
  d.text = std::move(text);
  return d;
}

bool DesignSources::handles(const std::string& ref) const {
  return std::any_of(sources_.begin(), sources_.end(), [&](DesignSource* s) { return s->handles(ref); });
}

bool DesignSources::remote(const std::string& ref) const {
  for (DesignSource* s : sources_)
    if (s->handles(ref)) return s->remote(ref);
  return false;
}

void DesignSources::fetch(const std::string& ref, Done done) {
  for (DesignSource* s : sources_) {
    if (s->handles(ref)) {
      s->fetch(ref, std::move(done));
      return;
    }
  }
  done(std::nullopt, "'" + ref.substr(0, 80) + "' is not a design I can load");
}

}  // namespace jarvis
