#pragma once
// ASCII lower case, as host names, URL hosts, DNs, LDAP attribute names and commands compare.
#include <algorithm>
#include <string>
#include <string_view>

namespace jarvis {

inline std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); });
  return out;
}

}  // namespace jarvis
