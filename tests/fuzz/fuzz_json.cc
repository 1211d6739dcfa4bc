// The JSON reader for the Slack and gist APIs (yaml-cpp behind the streaming limits): any
// answer is read or refused with std::runtime_error, never another exception; and what
// json_quote writes, the reader reads back.
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "bot/util/json.h"

namespace {

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!n || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const YAML::Node o = jarvis::parse_json_object(text, 1 << 20);
    for (const char* key : {"type", "envelope_id", "payload", "files", "ok", "error"}) {
      (void)jarvis::json_text(o, key);
      if (o.IsMap()) (void)jarvis::json_text(o[key], "content");  // const: never inserts
    }
  } catch (const std::runtime_error&) {
  }
  if (valid_utf8(text)) {
    YAML::Node back;
    try {
      back = jarvis::parse_json_object("{\"k\": " + jarvis::json_quote(text) + "}", 1 << 20);
    } catch (const std::runtime_error&) {
      std::abort();  // valid JSON that the reader refuses
    }
    if (jarvis::json_text(back, "k") != text) std::abort();
  }
  return 0;
}
