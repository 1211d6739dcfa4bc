#include "bot/design/ldap_design_source.h"

#include <algorithm>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "bot/util/log.h"
#include "bot/util/text.h"

namespace jarvis {
namespace {

constexpr size_t kMaxValues = 1000;         // per entry
constexpr size_t kMaxValueBytes = 64 * 1024;

// Has an unescaped ',' or '+': a DN (or multi-valued RDN), not a bare "attr=value".
bool has_unescaped(const std::string& s, std::string_view chars) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
      continue;
    }
    if (chars.find(s[i]) != std::string_view::npos) return true;
  }
  return false;
}

// Length of the control character or line break at s[i] (C0, DEL, C1, U+2028, U+2029: every
// one some YAML reader takes as a line break or refuses), or 0.
size_t control_at(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x20 || c == 0x7f) return 1;
  if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
      static_cast<unsigned char>(s[i + 1]) <= 0x9f)
    return 2;
  if (c == 0xe2 && i + 2 < s.size() && s[i + 1] == '\x80' && (s[i + 2] == '\xa8' || s[i + 2] == '\xa9'))
    return 3;
  return 0;
}

// The DN for the design's first comment line: whatever could end the line becomes '?'.
std::string printable_dn(std::string_view dn) {
  std::string out;
  for (size_t i = 0; i < dn.size() && out.size() < 1024; ++i) {
    if (size_t n = control_at(dn, i)) {
      out += '?';
      i += n - 1;
    } else {
      out += dn[i];
    }
  }
  return out;
}

// Writes the design; a value with a control character is double-quoted, with the character
// escaped (yaml-cpp would write a CR raw in a plain scalar, which other YAML readers take as a
// line break).
void emit_entry(YAML::Emitter& out, const YAML::Node& n) {
  if (n.IsMap()) {
    out << YAML::BeginMap;
    for (auto it = n.begin(); it != n.end(); ++it) {
      out << YAML::Key << it->first.Scalar() << YAML::Value;
      emit_entry(out, it->second);
    }
    out << YAML::EndMap;
  } else if (n.IsSequence()) {
    out << YAML::BeginSeq;
    for (const auto& item : n) emit_entry(out, item);
    out << YAML::EndSeq;
  } else if (n.IsScalar()) {
    const std::string& v = n.Scalar();
    bool control = false;
    for (size_t i = 0; i < v.size() && !control; ++i) control = control_at(v, i) != 0;
    if (control) out << YAML::DoubleQuoted;
    out << v;
  } else {
    out << YAML::Null;
  }
}

YAML::Node node_at(YAML::Node root, const std::string& dotted) {
  YAML::Node n = root;
  size_t start = 0;
  while (true) {
    size_t dot = dotted.find('.', start);
    std::string key = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (dot == std::string::npos) return n[key];
    YAML::Node child = n[key];
    if (!child.IsMap()) {
      child = YAML::Node(YAML::NodeType::Map);
      n[key] = child;
    }
    n.reset(child);
    start = dot + 1;
  }
}

}  // namespace

bool has_control_characters_in_dn(std::string_view dn) {
  for (size_t i = 0; i < dn.size(); ++i)
    if (control_at(dn, i)) return true;
  return false;
}

std::vector<std::pair<std::string, std::string>> LdapSourceConfig::default_attributes() {
  // Standard host schema (device, ipHost, domainRelatedObject) plus deploy/ldap's jarvisHost.
  return {{"cn", "instance.hostname"},
          {"associatedDomain", "instance.fqdn"},
          {"ipHostNumber", "instance.ip"},
          {"l", "instance.datacenter"},
          {"description", "instance.description"},
          {"jarvisProvider", "instance.provider"},
          {"jarvisSize", "instance.size"},
          {"jarvisProviderId", "instance.node_id"},
          {"jarvisSshFingerprint", "instance.ssh_fingerprints"}};
}

std::string design_text_from_entry(const LdapEntry& entry, const LdapSourceConfig& config) {
  YAML::Node root(YAML::NodeType::Map);
  auto rdn = ldap_first_rdn(entry.dn);
  for (const auto& [attribute, path] : config.attributes) {
    const auto* values = entry.get(attribute);
    if (!values || values->empty()) continue;
    YAML::Node target = node_at(root, path);
    if (values->size() == 1) {
      target = values->front();
    } else if (rdn && lower(rdn->first) == lower(attribute)) {
      target = rdn->second;  // the entry's own name among its aliases
    } else {
      YAML::Node list(YAML::NodeType::Sequence);
      for (const auto& v : *values) list.push_back(v);
      target = list;
    }
  }
  for (const auto& [path, value] : config.defaults) {
    YAML::Node target = node_at(root, path);
    if (!target.IsDefined() || target.IsNull()) target = value;
  }
  // Everything through the emitter: values are quoted as they need, and the DN (data from the
  // directory, where a newline could start a key of its own) is a comment that cannot end early.
  YAML::Emitter out;
  out << YAML::Comment("from LDAP: " + printable_dn(entry.dn)) << YAML::Newline;
  emit_entry(out, root);
  return std::string(out.c_str()) + "\n";
}

LdapDesignSource::LdapDesignSource(boost::asio::io_context& io, LdapSourceConfig config)
    : io_(io), config_(std::move(config)), pool_(std::make_unique<boost::asio::thread_pool>(static_cast<size_t>(std::max(1, config_.threads)))) {}

LdapDesignSource::~LdapDesignSource() {
  // Lookups still stuck in libldap end now instead of at their deadline.
  for (auto& weak : cancellers_)
    if (auto c = weak.lock()) c->cancel();
  pool_->join();
}

bool is_ldap_name(const std::string& ref) {
  auto eq = ref.find('=');
  return eq != std::string::npos && eq > 0 && ref.find("://") == std::string::npos;
}

bool LdapDesignSource::handles(const std::string& ref) const { return is_ldap_name(ref); }

std::optional<Design> LdapDesignSource::load(const std::string& ref, std::string& error,
                                             std::shared_ptr<LdapCanceller> canceller) const {
  if (ref.size() > 1024) {
    error = "the LDAP name is longer than 1024 characters";
    return std::nullopt;
  }
  if (has_control_characters_in_dn(ref)) {
    error = "the LDAP name contains control characters or line breaks";
    return std::nullopt;
  }
  const auto& base = config_.base;
  bool full_dn = has_unescaped(ref, ",+");
  std::string attr, value;
  if (full_dn) {
    if (!ldap_first_rdn(ref)) {
      error = "'" + ref.substr(0, 120) + "' is not an LDAP DN";
      return std::nullopt;
    }
    if (!base.empty() && !ldap_dn_within(ref, base)) {
      error = ref.substr(0, 120) + " is outside " + base + ", where jarvis reads hosts";
      return std::nullopt;
    }
  } else {
    // A bare RDN, "cn=loki": the value is data for a filter, never filter syntax.
    auto eq = ref.find('=');
    attr = ref.substr(0, eq);
    value = ref.substr(eq + 1);
    if (!is_ldap_attribute_name(attr) || value.empty()) {
      error = "'" + ref.substr(0, 120) + "' is not an LDAP name: use attribute=value, e.g. cn=loki";
      return std::nullopt;
    }
    if (base.empty()) {
      error = "ldap.base is not configured, so " + ref.substr(0, 120) + " cannot be looked up; use the full DN";
      return std::nullopt;
    }
  }

  auto session = LdapSession::open(config_.connect, error, std::move(canceller));
  if (!session) return std::nullopt;
  std::vector<std::string> wanted;
  for (const auto& [a, path] : config_.attributes) wanted.push_back(a);
  std::vector<LdapEntry> entries;
  if (full_dn) {
    entries = session->search(ref, LdapSession::Scope::Base, config_.filter, wanted, 1, error);
    if (!error.empty()) return std::nullopt;
    if (entries.empty()) {
      error = "no LDAP entry " + ref.substr(0, 200);
      return std::nullopt;
    }
  } else {
    std::string filter = "(&" + config_.filter + "(" + attr + "=" + ldap_escape_filter_value(value) + "))";
    bool more = false;
    entries = session->search(base, LdapSession::Scope::Subtree, filter, wanted, 2, error, &more);
    if (!error.empty()) return std::nullopt;
    if (entries.empty()) {
      error = "no LDAP entry " + ref.substr(0, 120) + " under " + base;
      return std::nullopt;
    }
    if (entries.size() > 1 || more) {
      error = ref.substr(0, 120) + " names several entries under " + base + " (" + entries[0].dn +
              ", " + entries[1].dn + ", ...); use the full DN";
      return std::nullopt;
    }
  }
  const LdapEntry& entry = entries.front();
  if (has_control_characters_in_dn(entry.dn)) {
    error = "the LDAP entry's DN (" + printable_dn(entry.dn).substr(0, 200) +
            ") contains control characters or line breaks";
    return std::nullopt;
  }
  size_t count = 0;
  for (const auto& [a, values] : entry.attributes) {
    count += values.size();
    for (const auto& v : values)
      if (v.size() > kMaxValueBytes) {
        error = entry.dn + ": attribute " + a + " has a value over " + std::to_string(kMaxValueBytes) + " bytes";
        return std::nullopt;
      }
  }
  if (count > kMaxValues) {
    error = entry.dn + " has " + std::to_string(count) + " values, over the limit of " + std::to_string(kMaxValues);
    return std::nullopt;
  }
  auto design = parse_design(entry.dn, design_text_from_entry(entry, config_), error, DesignOrigin::Remote);
  if (!design) error = entry.dn + ": " + error;
  return design;
}

void LdapDesignSource::fetch(const std::string& ref, Done done) {
  int threads = std::max(1, config_.threads);
  if (*in_flight_ >= threads + config_.max_queued) {
    log::warn(log::kNoJob, "design: LDAP lookup of {} refused: {} lookups in flight", ref.substr(0, 120), *in_flight_);
    boost::asio::post(io_, [done = std::move(done), n = *in_flight_] {
      done(std::nullopt, "LDAP is busy (" + std::to_string(n) + " lookups in flight); try again in a moment");
    });
    return;
  }
  log::info(log::kNoJob, "design: looking up {} in LDAP", ref.substr(0, 120));
  std::erase_if(cancellers_, [](const auto& w) { return w.expired(); });
  // One answer per lookup, from whichever comes first on the loop: the pool's result or the
  // deadline. At the deadline the socket is shut down, which frees the pool's thread.
  struct Lookup {
    explicit Lookup(boost::asio::io_context& io) : timer(io) {}
    boost::asio::steady_timer timer;
    std::shared_ptr<LdapCanceller> canceller = std::make_shared<LdapCanceller>();
    Done done;
    bool answered = false;
  };
  auto lookup = std::make_shared<Lookup>(io_);
  lookup->done = std::move(done);
  cancellers_.push_back(lookup->canceller);
  ++*in_flight_;
  Millis deadline = config_.lookup_timeout;
  lookup->timer.expires_after(deadline);
  lookup->timer.async_wait([lookup, ref, deadline](const boost::system::error_code& ec) {
    if (ec || lookup->answered) return;
    lookup->answered = true;
    lookup->canceller->cancel();
    log::warn(log::kNoJob, "design: LDAP lookup of {} did not finish within {}: cancelled", ref.substr(0, 120),
              format_duration(deadline));
    lookup->done(std::nullopt, "LDAP did not answer within " + format_duration(deadline) +
                                   " (ldap.lookup_timeout); try again later");
  });
  // The guard keeps io_.run() going while the lookup is on the pool (the CLI has nothing else).
  boost::asio::post(*pool_, [this, ref, lookup, in_flight = in_flight_,
                             guard = boost::asio::make_work_guard(io_)]() mutable {
    std::string error;
    std::optional<Design> design;
    try {
      design = load(ref, error, lookup->canceller);
    } catch (const std::exception& e) {
      design.reset();
      error = "the LDAP lookup failed inside jarvis: " + std::string(e.what());
    }
    boost::asio::post(io_, [lookup, in_flight, design = std::move(design), error = std::move(error)]() mutable {
      --*in_flight;
      if (lookup->answered) return;  // the deadline answered already
      lookup->answered = true;
      lookup->timer.cancel();
      try {
        lookup->done(std::move(design), std::move(error));
      } catch (const std::exception& e) {
        log::error(log::kNoJob, "design: an LDAP completion handler failed: {}", e.what());
      }
    });
    guard.reset();
  });
}

}  // namespace jarvis
