#include "bot/util/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "bot/util/json.h"
#include "bot/util/url_redact.h"

namespace jarvis::log {
namespace {
Format g_format = Format::Text;

spdlog::level::level_enum to_spdlog(Level l) {
  switch (l) {
    case Level::Debug: return spdlog::level::debug;
    case Level::Info: return spdlog::level::info;
    case Level::Warn: return spdlog::level::warn;
    case Level::Error: return spdlog::level::err;
  }
  return spdlog::level::info;
}
}  // namespace

void init(Format format, Level level) {
  g_format = format;
  // Logs go to stderr: stdout belongs to replies and progress.
  auto logger = spdlog::stderr_logger_st("jarvis");
  spdlog::set_default_logger(logger);
  if (format == Format::Json) {
    spdlog::set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l",%v})");
  } else {
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
  }
  spdlog::set_level(to_spdlog(level));
}

bool enabled(Level level) { return spdlog::default_logger_raw()->should_log(to_spdlog(level)); }

void write(Level level, int64_t job, std::string_view message) {
  auto lvl = to_spdlog(level);
  if (!spdlog::default_logger_raw()->should_log(lvl)) return;
  std::string job_text = job == kNoJob ? std::string("-") : std::to_string(job);
  // Tokens in URLs (?access_token=..., user:pass@) never reach the log.
  std::string redacted = redact_url_credentials(message);
  message = redacted;
  if (g_format == Format::Json) {
    spdlog::log(lvl, "\"job\":{},\"msg\":\"{}\"", job == kNoJob ? "null" : job_text,
                json_escape(message));
  } else {
    spdlog::log(lvl, "job={} {}", job_text, message);
  }
}

}  // namespace jarvis::log
