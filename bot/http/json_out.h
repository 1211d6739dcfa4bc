#pragma once
// Writing JSON for the HTTP API: objects built member by member, strings always escaped.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bot/util/json.h"

namespace jarvis::http {

class JsonObject {
 public:
  JsonObject& str(std::string_view key, std::string_view value) { return raw(key, json_quote(value)); }
  JsonObject& num(std::string_view key, int64_t value) { return raw(key, std::to_string(value)); }
  JsonObject& boolean(std::string_view key, bool value) { return raw(key, value ? "true" : "false"); }
  JsonObject& null(std::string_view key) { return raw(key, "null"); }
  JsonObject& raw(std::string_view key, std::string_view json) {
    text_ += first_ ? "" : ",";
    first_ = false;
    text_ += json_quote(key);
    text_ += ':';
    text_ += json;
    return *this;
  }
  std::string done() const { return text_ + "}"; }

 private:
  std::string text_ = "{";
  bool first_ = true;
};

inline std::string json_array(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i];
  return out + "]";
}

inline std::string json_strings(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + json_quote(items[i]);
  return out + "]";
}

}  // namespace jarvis::http
