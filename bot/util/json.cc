#include "bot/util/json.h"

#include <cstdint>

#include "bot/util/yaml_doc.h"

namespace jarvis {

std::string json_escape(std::string_view text) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 8);
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

namespace {

int hex4(std::string_view s, size_t at) {
  if (at + 4 > s.size()) return -1;
  int v = 0;
  for (size_t i = at; i < at + 4; ++i) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return -1;
  }
  return v;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// JSON writes characters beyond U+FFFF (emoji) as UTF-16 surrogate pairs, "\ud83d\ude80";
// yaml-cpp refuses surrogates, so they become the UTF-8 bytes first (a lone one, U+FFFD).
std::string join_surrogates(std::string_view s) {
  if (s.find("\\u") == std::string_view::npos) return std::string(s);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 >= s.size()) {
      out += s[i];
      continue;
    }
    if (s[i + 1] != 'u') {  // another escape: copy it whole, so "\\\\u" is not misread
      out += s[i];
      out += s[++i];
      continue;
    }
    int hi = hex4(s, i + 2);
    if (hi < 0xd800 || hi > 0xdfff) {
      out += s[i];
      continue;
    }
    int lo = (hi <= 0xdbff && i + 7 < s.size() && s[i + 6] == '\\' && s[i + 7] == 'u') ? hex4(s, i + 8) : -1;
    if (lo >= 0xdc00 && lo <= 0xdfff) {
      append_utf8(out, 0x10000 + ((static_cast<uint32_t>(hi) - 0xd800) << 10) + (static_cast<uint32_t>(lo) - 0xdc00));
      i += 11;
    } else {
      append_utf8(out, 0xfffd);
      i += 5;
    }
  }
  return out;
}

}  // namespace

YAML::Node parse_json_object(std::string_view text, size_t max_bytes) {
  YamlLimits limits;
  limits.max_bytes = max_bytes;
  limits.max_depth = 32;
  limits.max_nodes = 200'000;
  limits.max_aliases = 0;  // JSON has none; "*x" outside a string is not JSON
  if (text.size() > max_bytes) return load_mapping_document(text, limits);  // reports "too big"
  return load_mapping_document(join_surrogates(text), limits);
}

std::string json_text(const YAML::Node& object, const char* key) {
  const YAML::Node& o = object;
  if (!o.IsMap()) return {};
  const YAML::Node v = o[key];
  return v && v.IsScalar() ? v.Scalar() : std::string();
}

}  // namespace jarvis
