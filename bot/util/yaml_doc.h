#pragma once
// Untrusted YAML (worker output, designs, pipeline files) is checked by streaming parser
// events, never by walking a node tree, so an alias bomb is never expanded and nesting is
// bounded before yaml-cpp recurses deep.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace jarvis {

struct YamlLimits {
  size_t max_bytes = 8u << 20;   // whole document
  int max_depth = 64;            // nested mappings/sequences
  size_t max_nodes = 1'000'000;  // scalars + collections
  size_t max_aliases = 1024;     // "*name" references
  // Nodes the document would have if every alias were copied out; it never is, but a walk
  // by a worker might, so a billion-laughs document is refused here.
  uint64_t max_expanded_nodes = 1'000'000;
};

// True when the text holds nothing but whitespace (a worker that printed nothing).
bool is_blank(std::string_view text);

// Checks that `text` is exactly one YAML document whose root is a mapping, within the limits.
// Returns a reason such as "line 3, column 7: illegal map value" on failure.
std::optional<std::string> check_mapping_document(std::string_view text, const YamlLimits& limits);

// check_mapping_document, then yaml-cpp's loader (aliases stay shared nodes, not copies).
// Throws std::runtime_error with the reason on failure.
YAML::Node load_mapping_document(std::string_view text, const YamlLimits& limits);

// How big a node would be with every alias copied out: nodes, and bytes (an estimate of what
// a block emitter writes: scalar text, a little punctuation and the indentation per node).
struct ExpandedSize {
  uint64_t nodes = 0;
  uint64_t bytes = 0;
  ExpandedSize& operator+=(const ExpandedSize& o) {
    nodes += o.nodes;
    bytes += o.bytes;
    return *this;
  }
};

// The expanded sizes of the parts of a document whose root is a mapping, from parser events
// (so nothing is expanded to measure it): each root key's entry (key and value; a key that
// appears twice adds up), and each item of the list under the root key `list_key`.
struct RootSizes {
  std::vector<std::pair<std::string, ExpandedSize>> entries;  // by key text ("" if not a scalar)
  std::vector<ExpandedSize> list_items;
  bool list_items_known = false;  // false when the list is an alias, absent or not a list
  ExpandedSize of(std::string_view key) const;
};
// Call on a document that passed check_mapping_document; nullopt if it does not parse.
std::optional<RootSizes> root_expanded_sizes(std::string_view text, std::string_view list_key);

// A scalar reached by a dotted path ("instance.hostname"); empty if absent or not a scalar.
std::optional<std::string> scalar_at(const YAML::Node& root, std::string_view dotted_path);

}  // namespace jarvis
