#pragma once
// A bound LDAP connection with OpenLDAP's libldap: TLS (StartTLS on ldap://, or ldaps://) with
// the server certificate always verified, a simple bind, timeouts on everything. Blocking:
// the bot calls it from its LDAP thread pool, workers call it directly.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <string>
#include <string_view>
#include <vector>

#include "bot/util/duration.h"

typedef struct ldap LDAP;
struct ldap_conncb;

namespace jarvis {

struct LdapConnectOptions {
  std::string uri;          // ldap://host:port or ldaps://host:port
  bool starttls = true;     // for ldap:// (ldaps:// is TLS from the start)
  std::string ca_file;      // trust this CA bundle instead of the system's
  std::string bind_dn;      // empty: anonymous
  std::string password;     // never logged, never in an error
  Millis timeout{10000};    // connect, StartTLS, bind and each operation
};

// RFC 4515: the value of a filter assertion, with * ( ) \ NUL and non-printable bytes
// written as \XX, so "cn=*)(uid=*" can only ever match a cn spelled that way.
std::string ldap_escape_filter_value(std::string_view value);

// RFC 4514 escaping of an attribute value inside a DN ("a,b" -> "a\,b").
std::string ldap_escape_dn_value(std::string_view value);

// An attribute description a filter may name: a letter then letters, digits, '-' (or an OID).
bool is_ldap_attribute_name(std::string_view name);

// True when `dn` is `base` or lies under it, comparing normalized forms (case and spaces).
bool ldap_dn_within(const std::string& dn, const std::string& base);

// The first RDN of a DN, split: "cn=loki,ou=Hosts" -> {"cn", "loki"}. nullopt if not a DN.
std::optional<std::pair<std::string, std::string>> ldap_first_rdn(const std::string& dn);

struct LdapEntry {
  std::string dn;
  std::vector<std::pair<std::string, std::vector<std::string>>> attributes;  // in server order
  const std::vector<std::string>* get(std::string_view attribute) const;  // case-insensitive
};

// Ends a session's blocking calls from any other thread. libldap 2.5 has no timeout for the
// TLS handshake (ldaps://, or StartTLS answered and then silence): it waits, spinning,
// forever. cancel() shuts down the reading side of the session's socket, so libldap sees the
// end of the stream and fails the call it is in; a connection opened after cancel() is
// refused at once. The socket is known from libldap's connect callback and forgotten before
// libldap closes it, under one mutex, so cancel() never touches a reused descriptor.
class LdapCanceller {
 public:
  void cancel();
  bool cancelled() const;
  // From libldap's connect callback (LdapSession sets it up): the socket just connected, and
  // its end. attach() is false when already cancelled, which fails the connection.
  bool attach(int fd);
  void detach();

 private:
  mutable std::mutex mutex_;
  int fd_ = -1;
  bool cancelled_ = false;
};

// Cancels after `after` unless destroyed first: a deadline for callers without an event loop
// (the ldap:update_host worker).
class LdapDeadline {
 public:
  LdapDeadline(std::shared_ptr<LdapCanceller> canceller, Millis after);
  ~LdapDeadline();
  LdapDeadline(const LdapDeadline&) = delete;
  LdapDeadline& operator=(const LdapDeadline&) = delete;
  bool expired() const { return expired_; }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  bool expired_ = false;
  std::thread thread_;
};

class LdapSession {
 public:
  // Connects, secures and binds; nullptr with `error` in words on failure. With a canceller,
  // another thread can end any of the session's calls (see LdapCanceller).
  static std::unique_ptr<LdapSession> open(const LdapConnectOptions& options, std::string& error,
                                           std::shared_ptr<LdapCanceller> canceller = nullptr);
  ~LdapSession();
  LdapSession(const LdapSession&) = delete;
  LdapSession& operator=(const LdapSession&) = delete;

  enum class Scope { Base, Subtree };
  // Up to `limit` entries; `error` set (and empty result) on failure. A base search of a DN
  // that does not exist is not an error: it returns no entries.
  std::vector<LdapEntry> search(const std::string& base, Scope scope, const std::string& filter,
                                const std::vector<std::string>& attributes, int limit,
                                std::string& error, bool* more = nullptr);

  // Adds the entry, or replaces the listed attributes of an existing one; `changed` tells
  // whether anything was written (attributes already holding these values are left alone,
  // and so is the naming attribute of an existing entry). `changes` lists what was written.
  bool upsert(const LdapEntry& wanted, const std::vector<std::string>& object_classes,
              bool& changed, std::string& error, std::vector<std::string>* changes = nullptr);

  LDAP* handle() { return ld_; }

 private:
  LdapSession(LDAP* ld, Millis timeout, std::shared_ptr<LdapCanceller> canceller);
  std::string describe(int rc, const std::string& what);
  LDAP* ld_;
  Millis timeout_;
  std::shared_ptr<LdapCanceller> canceller_;
  std::unique_ptr<ldap_conncb> connect_callback_;  // registered with libldap; outlives ld_
};

}  // namespace jarvis
