#include "bot/ldap/ldap_session.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <set>

#include <ldap.h>

#include "bot/util/text.h"

namespace jarvis {
namespace {

timeval to_timeval(Millis d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

std::optional<std::string> normalize_dn(const std::string& dn) {
  char* out = nullptr;
  if (ldap_dn_normalize(dn.c_str(), LDAP_DN_FORMAT_LDAPV3, &out, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
    return std::nullopt;
  std::string s = out ? out : "";
  ldap_memfree(out);
  return lower(s);
}

// A null-terminated char* array over strings that outlive it.
std::vector<char*> c_array(const std::vector<std::string>& v) {
  std::vector<char*> out;
  for (const auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string ldap_escape_filter_value(std::string_view value) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(value.size());
  for (unsigned char c : value) {
    if (c == '*' || c == '(' || c == ')' || c == '\\' || c < 0x20 || c == 0x7f) {
      out += '\\';
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string ldap_escape_dn_value(std::string_view value) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < value.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c == 0x7f) {
      // As hex pairs: libldap drops whitespace (TAB, LF, CR) around a value, and a control
      // character has no business unescaped in a DN anyway.
      out += '\\';
      out += hex[c >> 4];
      out += hex[c & 15];
      continue;
    }
    bool edge_space = c == ' ' && (i == 0 || i + 1 == value.size());
    if (std::string_view(",+\"\\<>;=").find(static_cast<char>(c)) != std::string_view::npos ||
        edge_space || (i == 0 && c == '#'))
      out += '\\';
    out += static_cast<char>(c);
  }
  return out;
}

bool is_ldap_attribute_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (std::isdigit(static_cast<unsigned char>(name[0])))  // an OID: digits and dots
    return std::all_of(name.begin(), name.end(),
                       [](unsigned char c) { return std::isdigit(c) || c == '.'; });
  return std::isalpha(static_cast<unsigned char>(name[0])) &&
         std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-'; });
}

bool ldap_dn_within(const std::string& dn, const std::string& base) {
  auto d = normalize_dn(dn), b = normalize_dn(base);
  if (!d || !b) return false;
  if (b->empty()) return true;
  return *d == *b || (d->size() > b->size() && d->compare(d->size() - b->size(), b->size(), *b) == 0 &&
                      (*d)[d->size() - b->size() - 1] == ',');
}

std::optional<std::pair<std::string, std::string>> ldap_first_rdn(const std::string& dn) {
  LDAPDN parsed = nullptr;
  if (ldap_str2dn(dn.c_str(), &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS || !parsed || !parsed[0])
    return std::nullopt;
  LDAPAVA* ava = parsed[0][0];
  std::pair<std::string, std::string> out{std::string(ava->la_attr.bv_val, ava->la_attr.bv_len),
                                          std::string(ava->la_value.bv_val, ava->la_value.bv_len)};
  ldap_dnfree(parsed);
  return out;
}

const std::vector<std::string>* LdapEntry::get(std::string_view attribute) const {
  for (const auto& [name, values] : attributes)
    if (lower(name) == lower(attribute)) return &values;
  return nullptr;
}

void LdapCanceller::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  // SHUT_RD, not SHUT_RDWR: the reader wakes to an end of stream, and libldap's goodbye
  // (unbind) can still be written without a SIGPIPE.
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RD);
}

bool LdapCanceller::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

bool LdapCanceller::attach(int fd) {
  std::lock_guard lock(mutex_);
  if (cancelled_) return false;
  fd_ = fd;
  return true;
}

void LdapCanceller::detach() {
  std::lock_guard lock(mutex_);
  fd_ = -1;
}

LdapDeadline::LdapDeadline(std::shared_ptr<LdapCanceller> canceller, Millis after)
    : thread_([this, canceller = std::move(canceller), after] {
        std::unique_lock lock(mutex_);
        if (!wake_.wait_for(lock, after, [this] { return done_; })) {
          expired_ = true;
          canceller->cancel();
        }
      }) {}

LdapDeadline::~LdapDeadline() {
  {
    std::lock_guard lock(mutex_);
    done_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

namespace {

// libldap calls these on the thread that connects, right after connect() (before any TLS)
// and before it closes the socket.
int on_connect(LDAP*, Sockbuf* sb, LDAPURLDesc*, sockaddr*, ldap_conncb* ctx) {
  int fd = -1;
  ber_sockbuf_ctrl(sb, LBER_SB_OPT_GET_FD, &fd);
  auto* canceller = static_cast<LdapCanceller*>(ctx->lc_arg);
  return canceller->attach(fd) ? 0 : -1;
}

void on_disconnect(LDAP*, Sockbuf*, ldap_conncb* ctx) {
  static_cast<LdapCanceller*>(ctx->lc_arg)->detach();
}

}  // namespace

LdapSession::LdapSession(LDAP* ld, Millis timeout, std::shared_ptr<LdapCanceller> canceller)
    : ld_(ld), timeout_(timeout), canceller_(std::move(canceller)) {
  if (!canceller_) canceller_ = std::make_shared<LdapCanceller>();
  connect_callback_ = std::make_unique<ldap_conncb>();
  connect_callback_->lc_add = &on_connect;
  connect_callback_->lc_del = &on_disconnect;
  connect_callback_->lc_arg = canceller_.get();
  ldap_set_option(ld_, LDAP_OPT_CONNECT_CB, connect_callback_.get());
}

std::unique_ptr<LdapSession> LdapSession::open(const LdapConnectOptions& o, std::string& error,
                                               std::shared_ptr<LdapCanceller> canceller) {
  if (canceller && canceller->cancelled()) {
    error = "the LDAP lookup was cancelled (past its deadline)";
    return nullptr;
  }
  LDAP* ld = nullptr;
  if (ldap_initialize(&ld, o.uri.c_str()) != LDAP_SUCCESS || !ld) {
    error = "'" + o.uri + "' is not an LDAP URI (ldap://host:port or ldaps://host:port)";
    return nullptr;
  }
  std::unique_ptr<LdapSession> s(new LdapSession(ld, o.timeout, std::move(canceller)));
  int version = LDAP_VERSION3;
  ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version);
  ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
  timeval tv = to_timeval(o.timeout);
  ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
  ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
  // Certificates are always checked; the only choice is which CAs to trust.
  int demand = LDAP_OPT_X_TLS_DEMAND;
  ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
  if (!o.ca_file.empty()) ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, o.ca_file.c_str());
  int is_server = 0;
  ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &is_server);  // apply the options to this handle

  bool ldaps = lower(o.uri).rfind("ldaps://", 0) == 0;
  if (!ldaps && o.starttls) {
    if (int rc = ldap_start_tls_s(ld, nullptr, nullptr); rc != LDAP_SUCCESS) {
      error = s->describe(rc, "StartTLS with " + o.uri);
      return nullptr;
    }
  }
  berval cred{};
  cred.bv_val = const_cast<char*>(o.password.c_str());
  cred.bv_len = o.password.size();
  int rc = ldap_sasl_bind_s(ld, o.bind_dn.empty() ? nullptr : o.bind_dn.c_str(), LDAP_SASL_SIMPLE,
                            &cred, nullptr, nullptr, nullptr);
  if (rc != LDAP_SUCCESS) {
    error = s->describe(rc, o.bind_dn.empty() ? "anonymous bind to " + o.uri
                                              : "bind to " + o.uri + " as " + o.bind_dn);
    return nullptr;
  }
  return s;
}

LdapSession::~LdapSession() { ldap_unbind_ext_s(ld_, nullptr, nullptr); }

std::string LdapSession::describe(int rc, const std::string& what) {
  std::string out = what + " failed: " + ldap_err2string(rc);
  char* diag = nullptr;
  if (ldap_get_option(ld_, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag) == LDAP_OPT_SUCCESS && diag) {
    if (*diag) out += " (" + std::string(diag).substr(0, 200) + ")";
    ldap_memfree(diag);
  }
  return out;
}

std::vector<LdapEntry> LdapSession::search(const std::string& base, Scope scope,
                                           const std::string& filter,
                                           const std::vector<std::string>& attributes, int limit,
                                           std::string& error, bool* more) {
  std::vector<LdapEntry> out;
  auto attrs = c_array(attributes);
  timeval tv = to_timeval(timeout_);
  LDAPMessage* res = nullptr;
  int rc = ldap_search_ext_s(ld_, base.c_str(), scope == Scope::Base ? LDAP_SCOPE_BASE : LDAP_SCOPE_SUBTREE,
                             filter.c_str(), attributes.empty() ? nullptr : attrs.data(), 0, nullptr,
                             nullptr, &tv, limit, &res);
  if (more) *more = rc == LDAP_SIZELIMIT_EXCEEDED;
  if (rc == LDAP_NO_SUCH_OBJECT && scope == Scope::Base) {
    ldap_msgfree(res);
    return out;
  }
  if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
    error = describe(rc, "search under " + base);
    ldap_msgfree(res);
    return out;
  }
  for (LDAPMessage* e = ldap_first_entry(ld_, res); e; e = ldap_next_entry(ld_, e)) {
    LdapEntry entry;
    if (char* dn = ldap_get_dn(ld_, e)) {
      entry.dn = dn;
      ldap_memfree(dn);
    }
    BerElement* ber = nullptr;
    for (char* a = ldap_first_attribute(ld_, e, &ber); a; a = ldap_next_attribute(ld_, e, ber)) {
      std::vector<std::string> values;
      if (berval** vals = ldap_get_values_len(ld_, e, a)) {
        for (int i = 0; vals[i]; ++i) values.emplace_back(vals[i]->bv_val, vals[i]->bv_len);
        ldap_value_free_len(vals);
      }
      entry.attributes.emplace_back(a, std::move(values));
      ldap_memfree(a);
    }
    if (ber) ber_free(ber, 0);
    out.push_back(std::move(entry));
  }
  ldap_msgfree(res);
  return out;
}

bool LdapSession::upsert(const LdapEntry& wanted, const std::vector<std::string>& object_classes,
                         bool& changed, std::string& error, std::vector<std::string>* changes) {
  changed = false;
  auto rdn = ldap_first_rdn(wanted.dn);
  std::vector<std::string> names = {"objectClass"};
  for (const auto& [name, values] : wanted.attributes) names.push_back(name);
  auto found = search(wanted.dn, Scope::Base, "(objectClass=*)", names, 1, error);
  if (!error.empty()) return false;

  // LDAPMod arrays point into these vectors; they stay put until the call returns.
  std::vector<std::vector<std::string>> value_store;
  std::vector<std::vector<berval>> bervals;
  std::vector<std::vector<berval*>> berval_ptrs;
  std::vector<std::string> mod_names;
  std::vector<int> ops;
  auto add_mod = [&](int op, const std::string& name, const std::vector<std::string>& values) {
    mod_names.push_back(name);
    ops.push_back(op);
    value_store.push_back(values);
  };

  if (found.empty()) {
    add_mod(LDAP_MOD_ADD, "objectClass", object_classes);
    for (const auto& [name, values] : wanted.attributes)
      if (!values.empty()) add_mod(LDAP_MOD_ADD, name, values);
  } else {
    const LdapEntry& have = found.front();
    std::vector<std::string> missing;
    const auto* classes = have.get("objectClass");
    for (const auto& c : object_classes) {
      bool present = classes && std::any_of(classes->begin(), classes->end(),
                                            [&](const std::string& h) { return lower(h) == lower(c); });
      if (!present) missing.push_back(c);
    }
    if (!missing.empty()) add_mod(LDAP_MOD_ADD, "objectClass", missing);
    for (const auto& [name, values] : wanted.attributes) {
      if (rdn && lower(rdn->first) == lower(name)) continue;  // the entry's name: kept as it is
      const auto* current = have.get(name);
      std::multiset<std::string> a(values.begin(), values.end());
      std::multiset<std::string> b;
      if (current) b.insert(current->begin(), current->end());
      if (a != b) add_mod(LDAP_MOD_REPLACE, name, values);
    }
    if (ops.empty()) return true;  // already as wanted: write nothing
  }

  std::vector<LDAPMod> mods(ops.size());
  std::vector<LDAPMod*> mod_ptrs;
  bervals.resize(ops.size());
  berval_ptrs.resize(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    for (auto& v : value_store[i]) bervals[i].push_back(berval{v.size(), v.data()});
    for (auto& bv : bervals[i]) berval_ptrs[i].push_back(&bv);
    berval_ptrs[i].push_back(nullptr);
    mods[i].mod_op = ops[i] | LDAP_MOD_BVALUES;
    mods[i].mod_type = mod_names[i].data();
    mods[i].mod_bvalues = berval_ptrs[i].data();
    mod_ptrs.push_back(&mods[i]);
  }
  mod_ptrs.push_back(nullptr);
  int rc = found.empty() ? ldap_add_ext_s(ld_, wanted.dn.c_str(), mod_ptrs.data(), nullptr, nullptr)
                         : ldap_modify_ext_s(ld_, wanted.dn.c_str(), mod_ptrs.data(), nullptr, nullptr);
  if (rc != LDAP_SUCCESS) {
    error = describe(rc, (found.empty() ? "adding " : "updating ") + wanted.dn);
    return false;
  }
  changed = true;
  if (changes) {
    if (found.empty()) changes->push_back("created");
    else
      for (size_t i = 0; i < ops.size(); ++i) changes->push_back("set " + mod_names[i]);
  }
  return true;
}

}  // namespace jarvis
