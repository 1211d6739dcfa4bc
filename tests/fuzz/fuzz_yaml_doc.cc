// check_mapping_document: what it accepts must be safe to load, walk and emit (aliases
// expanded), and the sizes measured from parser events must match the expanded tree.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <yaml-cpp/yaml.h>

#include "bot/util/yaml_doc.h"

namespace {

uint64_t count(const YAML::Node& n) {
  uint64_t c = 1;
  if (n.IsMap())
    for (auto it = n.begin(); it != n.end(); ++it) c += count(it->first) + count(it->second);
  else if (n.IsSequence())
    for (const auto& item : n) c += count(item);
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  jarvis::YamlLimits limits;
  limits.max_bytes = 64 * 1024;
  limits.max_expanded_nodes = 20'000;  // the walk below expands aliases
  if (jarvis::check_mapping_document(text, limits)) return 0;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception&) {
    std::abort();  // the check accepted what yaml-cpp's loader refuses
  }
  if (!root.IsMap()) std::abort();
  uint64_t nodes = count(root);
  if (nodes > limits.max_expanded_nodes + 1) std::abort();
  YAML::Emitter out;
  out << root;  // expands every alias: must neither recurse forever nor blow up
  auto sizes = jarvis::root_expanded_sizes(text, "instances");
  if (!sizes) std::abort();
  uint64_t measured = 1;
  for (const auto& [key, s] : sizes->entries) measured += s.nodes;
  if (measured != nodes) std::abort();
  return 0;
}
