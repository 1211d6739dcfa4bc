#pragma once
// Designs from LDAP host entries: "cn=loki,ou=Hosts,dc=example,dc=com" reads that entry,
// a bare "cn=loki" searches for it under the configured base. libldap's calls block, so they
// run on a small pool of threads; answers come back on the loop.
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "bot/design/design.h"
#include "bot/ldap/ldap_session.h"

namespace boost::asio {
class thread_pool;
}

namespace jarvis {

struct LdapSourceConfig {
  LdapConnectOptions connect;
  std::string base;                      // bare RDNs are searched here; DNs must lie under it
  std::string filter = "(objectClass=*)";  // and-ed with the RDN's assertion
  // LDAP attribute -> dotted path in the design; multi-valued attributes become lists.
  std::vector<std::pair<std::string, std::string>> attributes = default_attributes();
  // Dotted path -> value, for fields the entry does not give (e.g. instance.provider).
  std::vector<std::pair<std::string, std::string>> defaults;
  int threads = 2;
  // The whole lookup (connect, TLS, bind, search), enforced outside libldap: past it the
  // caller is answered and the session's socket is shut down, which frees its thread.
  Millis lookup_timeout{30000};
  // Lookups waiting for a free thread; more are refused ("LDAP is busy").
  int max_queued = 8;

  static std::vector<std::pair<std::string, std::string>> default_attributes();
};

// An LDAP name ("cn=loki", "cn=loki,ou=Hosts,..."), as opposed to a file name or a URL.
bool is_ldap_name(const std::string& ref);

// True when a DN holds a control character or a line break (C0, DEL, C1, U+2028, U+2029):
// refused, from chat and from the directory alike.
bool has_control_characters_in_dn(std::string_view dn);

// Builds the design document (YAML text) from an entry with yaml-cpp's emitter; `rdn_value` is the entry's own name,
// which wins when the naming attribute has several values (cn: loki, cn: loki.example.com).
std::string design_text_from_entry(const LdapEntry& entry, const LdapSourceConfig& config);

class LdapDesignSource : public DesignSource {
 public:
  LdapDesignSource(boost::asio::io_context& io, LdapSourceConfig config);
  ~LdapDesignSource() override;  // waits for lookups in flight (each bounded by the timeout)
  bool handles(const std::string& ref) const override;
  bool remote(const std::string& ref) const override { return handles(ref); }
  void fetch(const std::string& ref, Done done) override;

  // The blocking lookup (run on the pool; public for tests). A cancelled canceller ends it.
  std::optional<Design> load(const std::string& ref, std::string& error,
                             std::shared_ptr<LdapCanceller> canceller = nullptr) const;
  // Lookups on the pool or waiting for it (their threads are not free yet).
  int in_flight() const { return *in_flight_; }

 private:
  boost::asio::io_context& io_;
  LdapSourceConfig config_;
  std::unique_ptr<boost::asio::thread_pool> pool_;
  std::shared_ptr<int> in_flight_ = std::make_shared<int>(0);  // touched on the loop only
  std::vector<std::weak_ptr<LdapCanceller>> cancellers_;       // cancelled when destroyed
};

}  // namespace jarvis
