#pragma once
// Logging through spdlog with the job id on every line ("job=-" for lines about no job).
// Text for people, or one JSON object per line with --log-format json.
#include <cstdint>
#include <string>
#include <string_view>

#include <spdlog/fmt/fmt.h>

namespace jarvis::log {

enum class Format { Text, Json };
enum class Level { Debug, Info, Warn, Error };

void init(Format format, Level level = Level::Info);

void write(Level level, int64_t job, std::string_view message);
bool enabled(Level level);
// Changes the level after init (the CLI quiets the engine's warnings under a progress bar).
void set_level(Level level);

template <typename... Args>
void info(int64_t job, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Info)) write(Level::Info, job, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(int64_t job, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Warn)) write(Level::Warn, job, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(int64_t job, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Error)) write(Level::Error, job, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(int64_t job, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Debug)) write(Level::Debug, job, fmt::format(f, std::forward<Args>(args)...));
}

constexpr int64_t kNoJob = 0;

}  // namespace jarvis::log
