#pragma once
// A host design: the YAML document that describes what to build, as loaded from its source.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "bot/util/yaml_doc.h"

namespace jarvis {

struct Design {
  std::string ref;       // what the user named: a file, later a gist URL or an LDAP DN
  std::string text;      // the document exactly as loaded; the first worker reads this
  YAML::Node root;       // parsed, for reading fields (never re-emitted)
  std::string hostname;  // instance.hostname, lower-cased; empty for a cluster
  // A cluster: `cluster: NAME` with `instances:`, one design per host (each with its own
  // `instance:`, the shared `instance:` fields under its own), deployed as one group.
  std::string cluster;
  std::vector<Design> members;
};

// Most hosts one cluster design may list.
constexpr size_t kMaxClusterHosts = 100;

// Each host of a cluster gets its own copy of the shared fields, aliases expanded, so a small
// design with a shared alias can stand for a great deal: one host's design may be at most
// design_limits().max_nodes nodes and max_bytes bytes once expanded, and all of them together
// at most these (each host's design is written out and parsed again on the loop: 100,000
// nodes take about half a second).
constexpr uint64_t kMaxClusterExpandedNodes = 100'000;
constexpr uint64_t kMaxClusterExpandedBytes = 4u << 20;

// Limits for designs: small documents, shallow nesting, few aliases.
YamlLimits design_limits();

// RFC 1123 host label: 1-63 of [a-z0-9-], not starting or ending with '-'.
bool is_valid_hostname(std::string_view name);

// Where a design's text came from. A remote one (gist, URL, LDAP) may hold values its
// requester must not see: its errors name the field and line but never quote a value.
enum class DesignOrigin { Local, Remote };

// Parses and checks a design; on failure `error` names the field or line.
std::optional<Design> parse_design(std::string ref, std::string text, std::string& error,
                                   DesignOrigin origin = DesignOrigin::Local);

// Where designs come from. Asynchronous, because gists and LDAP are network fetches.
class DesignSource {
 public:
  using Done = std::function<void(std::optional<Design>, std::string error)>;
  virtual ~DesignSource() = default;
  // True if this source understands `ref` (a path, a URL, a DN).
  virtual bool handles(const std::string& ref) const = 0;
  // True if fetching `ref` goes over the network with the bot's own credentials (a gist, a
  // URL, LDAP): planning it then needs the right to deploy.
  virtual bool remote(const std::string& ref) const { (void)ref; return false; }
  // Loads the design; `done` runs later on the loop, never before fetch returns.
  virtual void fetch(const std::string& ref, Done done) = 0;
};

// Several sources behind one: the first that handles a ref fetches it.
class DesignSources : public DesignSource {
 public:
  void add(DesignSource& source) { sources_.push_back(&source); }
  bool handles(const std::string& ref) const override;
  bool remote(const std::string& ref) const override;
  void fetch(const std::string& ref, Done done) override;

 private:
  std::vector<DesignSource*> sources_;
};

}  // namespace jarvis
