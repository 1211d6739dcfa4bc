#pragma once
#include <optional>
#include <string>
#include <vector>

namespace jarvis {

// Finds the executable for "module:task": <dir>/<module>/<task> in the first directory of
// the workers path that has it.
std::optional<std::string> resolve_worker(const std::vector<std::string>& workers_path,
                                          const std::string& task_name);

// Tasks of a pipeline that have no executable on the workers path.
struct Pipeline;
std::vector<std::string> missing_workers(const std::vector<std::string>& workers_path,
                                         const Pipeline& pipeline);

// "a:b:c" -> {"a","b","c"}, made absolute against the current directory.
std::vector<std::string> split_search_path(const std::string& colon_separated);

}  // namespace jarvis
