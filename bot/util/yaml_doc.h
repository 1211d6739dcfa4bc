#pragma once
// Untrusted YAML (worker output, designs, pipeline files) is checked by streaming parser
// events, never by walking a node tree, so an alias bomb is never expanded and nesting is
// bounded before yaml-cpp recurses deep.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

// A scalar reached by a dotted path ("instance.hostname"); empty if absent or not a scalar.
std::optional<std::string> scalar_at(const YAML::Node& root, std::string_view dotted_path);

}  // namespace jarvis
