#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace jarvis {

using Millis = std::chrono::milliseconds;

// Parses "500ms", "30s", "5m", "1h" or a bare number of seconds. Empty on anything else.
std::optional<Millis> parse_duration(std::string_view text);

// Human form for chat and the CLI: "850ms", "41s", "3m02s", "1h05m".
std::string format_duration(Millis d);

// "512 bytes", "64 KiB", "8 MiB" (rounded down).
std::string format_bytes(size_t bytes);

// Milliseconds since the Unix epoch (what the store records).
int64_t now_ms();

// The time of day of an epoch time in UTC, to the second: "14:05:09 UTC".
std::string utc_time_of_day(int64_t at_ms);

}  // namespace jarvis
