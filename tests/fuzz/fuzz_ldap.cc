// LDAP: the escape functions (chat text put into filters and DNs) and the mapping from an
// entry (the directory's data) to a design. A value escaped for a DN reads back the same
// through libldap's parser; a filter value holds no filter syntax; an entry's DN and values
// never add keys to the design, and values come back as they were.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "bot/design/ldap_design_source.h"
#include "bot/ldap/ldap_session.h"

namespace {

// UTF-8 that yaml-cpp carries through a quoted scalar unchanged: valid, and no noncharacter
// (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF), which its emitter writes as U+FFFD as it does invalid bytes.
bool yaml_carries(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!n || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe)
      return false;
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  // DN escaping round-trips through libldap (values without NUL: C strings).
  if (input.find('\0') == std::string::npos && !input.empty()) {
    std::string escaped = jarvis::ldap_escape_dn_value(input);
    auto rdn = jarvis::ldap_first_rdn("cn=" + escaped + ",dc=example,dc=com");
    if (!rdn || rdn->first != "cn" || rdn->second != input) std::abort();
  }
  // Filter escaping: nothing but data inside the assertion.
  std::string f = jarvis::ldap_escape_filter_value(input);
  for (size_t i = 0; i < f.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(f[i]);
    if (c == '(' || c == ')' || c == '*' || c < 0x20 || c == 0x7f) std::abort();
    if (c == '\\' && (i + 2 >= f.size() || !std::isxdigit(static_cast<unsigned char>(f[i + 1])) ||
                      !std::isxdigit(static_cast<unsigned char>(f[i + 2]))))
      std::abort();
  }
  // An entry: the input split in three, DN, host name and description.
  size_t a = input.find('|'), b = a == std::string::npos ? a : input.find('|', a + 1);
  if (b == std::string::npos) return 0;
  jarvis::LdapEntry e;
  e.dn = input.substr(0, a);
  std::string host = input.substr(a + 1, b - a - 1), description = input.substr(b + 1);
  e.attributes = {{"cn", {host}}, {"description", {description}}, {"jarvisSize", {"007"}}};
  std::string text = jarvis::design_text_from_entry(e, jarvis::LdapSourceConfig{});
  YAML::Node root;
  try {
    root = jarvis::load_mapping_document(text, jarvis::design_limits());
  } catch (const std::exception&) {
    // Only values yaml-cpp cannot carry (invalid UTF-8, or bytes it refuses) may fail.
    return 0;
  }
  const YAML::Node& r = root;
  if (r.size() != 1 || !r["instance"] || r["instance"].size() != 3) std::abort();
  // Values come back as they were when they are UTF-8 (the directory's strings are; bytes
  // that are not, and noncharacters, become U+FFFD in yaml-cpp's emitter).
  if (yaml_carries(host) && r["instance"]["hostname"].Scalar() != host) std::abort();
  if (yaml_carries(description) && r["instance"]["description"].Scalar() != description) std::abort();
  if (r["instance"]["size"].Scalar() != "007") std::abort();
  return 0;
}
