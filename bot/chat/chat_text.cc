#include "bot/chat/chat_text.h"

#include "bot/util/utf8.h"

namespace jarvis {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool removed(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069) || cp == 0xFFFE || cp == 0xFFFF;
}

// The end of an IRC colour code's argument starting at `i`: "fg[,bg]", each at most `width`
// characters of `digit` (2 decimal digits for ^C, 6 hex digits for ^D).
size_t skip_colour(std::string_view s, size_t i, size_t width, bool (*digit)(char)) {
  auto number = [&](size_t at) {
    size_t n = 0;
    while (n < width && at + n < s.size() && digit(s[at + n])) ++n;
    return n;
  };
  size_t fg = number(i);
  if (fg == 0) return i;
  i += fg;
  if (i + 1 < s.size() && s[i] == ',' && digit(s[i + 1])) i += 1 + number(i + 1);
  return i;
}

}  // namespace

std::string chat_safe_text(std::string_view text) {
  std::string valid = valid_utf8(text);
  std::string_view s = valid;
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    if (c == '\x03' || c == '\x04') {  // a colour code takes its numbers with it
      i = c == '\x03' ? skip_colour(s, i + 1, 2, is_digit) : skip_colour(s, i + 1, 6, is_hex);
      continue;
    }
    if (c == '\t' || c == '\r' || c == '\n') {
      out += ' ';
      ++i;
      continue;
    }
    char32_t cp = 0;
    size_t n = next_code_point(s, i, cp);
    if (!removed(cp)) out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace jarvis
