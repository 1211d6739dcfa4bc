#include "bot/pipeline/worker_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "bot/pipeline/pipeline.h"

namespace jarvis {

std::optional<std::string> resolve_worker(const std::vector<std::string>& workers_path,
                                          const std::string& task_name) {
  auto colon = task_name.find(':');
  if (colon == std::string::npos) return std::nullopt;
  std::string rel = task_name.substr(0, colon) + "/" + task_name.substr(colon + 1);
  for (const auto& dir : workers_path) {
    std::string candidate = dir + "/" + rel;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return std::nullopt;
}

std::vector<std::string> missing_workers(const std::vector<std::string>& workers_path,
                                         const Pipeline& pipeline) {
  std::vector<std::string> missing;
  for (const auto& t : pipeline.tasks)
    if (!resolve_worker(workers_path, t.name)) missing.push_back(t.name);
  return missing;
}

std::vector<std::string> split_search_path(const std::string& colon_separated) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= colon_separated.size()) {
    size_t end = colon_separated.find(':', start);
    if (end == std::string::npos) end = colon_separated.size();
    std::string part = colon_separated.substr(start, end - start);
    if (!part.empty()) out.push_back(std::filesystem::absolute(part).lexically_normal().string());
    start = end + 1;
  }
  return out;
}

}  // namespace jarvis
