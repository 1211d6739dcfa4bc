// secret_values and the Redactor: any text ends; a value collected is never left in what
// redact or redact_cut return.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "bot/util/secrets.h"

namespace {

// True if `v` shows in `text` outside the marks that replaced values (a value may well be a
// piece of the mark itself, "redacted").
bool shows(const std::string& text, const std::string& v) {
  const std::string_view mark = jarvis::Redactor::kMark;
  size_t start = 0;
  while (start <= text.size()) {
    size_t m = text.find(mark, start);
    size_t end = m == std::string::npos ? text.size() : m;
    if (text.substr(start, end - start).find(v) != std::string::npos) return true;
    if (m == std::string::npos) break;
    start = m + mark.size();
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  size_t max = 8 + data[0];  // where redact_cut cuts
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto values = jarvis::secret_values(text, jarvis::SecretPatterns{});
  jarvis::Redactor r;
  r.add(values);
  std::string out = r.redact(text);
  std::string cut = r.redact_cut(text, max);
  if (cut.size() > max + jarvis::Redactor::kMark.size() + 3) std::abort();
  for (const auto& v : r.values()) {
    if (shows(out, v) || shows(cut, v)) std::abort();
    std::string probe = "line: " + v + " [line cut: 12 more bytes]";
    if (shows(r.redact(probe), v)) std::abort();
  }
  return 0;
}
