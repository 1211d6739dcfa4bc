#pragma once
// UTF-8 for text that reaches people: cut only between characters, and turn bytes that are
// not UTF-8 into U+FFFD, because a chat server drops a connection that sends them (XMPP
// closes the stream as not-well-formed) and Slack refuses the JSON.
#include <cstddef>
#include <string>
#include <string_view>

namespace jarvis {

// The longest prefix of `text` of at most `max_bytes` bytes that does not end inside a
// character.
std::string_view utf8_prefix(std::string_view text, size_t max_bytes);

// `text` with every invalid sequence (stray continuation bytes, truncated or overlong
// sequences, surrogates, code points past U+10FFFF) replaced by U+FFFD.
std::string valid_utf8(std::string_view text);

// The character of valid UTF-8 (as valid_utf8 returns it) that starts at `at`: its code
// point, and its length in bytes as the return value.
inline size_t next_code_point(std::string_view valid, size_t at, char32_t& cp) {
  auto b = static_cast<unsigned char>(valid[at]);
  size_t n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  cp = n == 1 ? b : n == 2 ? b & 0x1F : n == 3 ? b & 0x0F : b & 0x07;
  size_t k = 1;
  for (; k < n && at + k < valid.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(valid[at + k]) & 0x3F);
  return k;
}

}  // namespace jarvis
