#pragma once
// JSON for the Slack and gist APIs without another library: JSON is YAML, so yaml-cpp reads
// it (behind the same streaming limits as any untrusted document); writing needs only quoting.
#include <string>
#include <string_view>

#include <yaml-cpp/yaml.h>

namespace jarvis {

// The inside of a JSON string literal (no quotes): " \ and control characters escaped.
std::string json_escape(std::string_view text);
// A JSON string literal, quotes included.
inline std::string json_quote(std::string_view text) { return "\"" + json_escape(text) + "\""; }

// Parses a JSON object; throws std::runtime_error with the reason (too big, too deep, ...).
YAML::Node parse_json_object(std::string_view text, size_t max_bytes);

// A member that is a string (or number, or bool) as text; "" when absent or not a scalar.
std::string json_text(const YAML::Node& object, const char* key);

}  // namespace jarvis
