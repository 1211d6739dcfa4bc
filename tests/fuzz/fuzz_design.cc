// parse_design: designs come from chat (gists, URLs, LDAP entries); whatever it is given it
// must answer quickly with a design or an error, and every design it makes must parse again.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "bot/design/design.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto d = jarvis::parse_design("fuzz.yaml", text, error);
  if (!d) {
    if (error.empty()) std::abort();
    return 0;
  }
  if (d->cluster.empty() ? d->hostname.empty() : d->members.empty()) std::abort();
  for (const auto& m : d->members) {
    std::string again;
    if (!jarvis::parse_design(m.ref, m.text, again) || m.hostname.empty()) std::abort();
  }
  return 0;
}
