#pragma once
// Pipeline definitions: pipelines/<name>.yaml, an ordered list of module:task stages.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "bot/util/duration.h"

namespace jarvis {

struct TaskSpec {
  std::string name;  // "module:task"
  Millis timeout{0};
  int retries = 0;  // extra attempts after a failure
  bool destructive = false;

  std::string module() const { return name.substr(0, name.find(':')); }
  std::string task() const { return name.substr(name.find(':') + 1); }
  bool operator==(const TaskSpec&) const = default;
};

// True for "module:task" where both parts are [a-z0-9][a-z0-9_-]*: safe as path components.
bool is_valid_task_name(std::string_view name);

struct Pipeline {
  std::string name;
  std::string description;
  std::string file;
  // Design fields that select this pipeline: "provider" means instance.provider,
  // a dotted key ("sandbox.zone") is a path from the design's root. Case-insensitive.
  std::vector<std::pair<std::string, std::string>> match;
  std::vector<TaskSpec> tasks;

  bool matches(const YAML::Node& design) const;
};

struct PipelineDefaults {
  Millis timeout{std::chrono::minutes(10)};
};

class PipelineSet {
 public:
  // Loads every *.yaml in `dir`. Each problem is reported as "file:line: what is wrong";
  // a pipeline with a problem is left out.
  static PipelineSet load_dir(const std::string& dir, const PipelineDefaults& defaults,
                              std::vector<std::string>& errors);
  // Parses one pipeline file; on failure returns nullopt and appends "file:line: ...".
  static std::optional<Pipeline> load_file(const std::string& path,
                                           const PipelineDefaults& defaults,
                                           std::vector<std::string>& errors);

  const Pipeline* find(std::string_view name) const;
  const std::vector<Pipeline>& all() const { return pipelines_; }

  // The pipeline named, or else the one whose `match` fits the design most specifically.
  // On failure `error` says why (no match, ambiguous, unknown name).
  const Pipeline* select(const YAML::Node& design, const std::optional<std::string>& name,
                         std::string& error) const;

  // Why select() chose `chosen` for this design, in one line for `plan`: named, or which
  // design keys its match compared (with the pipeline's values), and the other matching
  // pipelines it was more specific than ("chosen because instance.provider is 'linode'
  // (match of redeploy-linode)").
  std::string explain(const Pipeline& chosen, const YAML::Node& design,
                      const std::optional<std::string>& name) const;

 private:
  std::vector<Pipeline> pipelines_;
};

}  // namespace jarvis
