// ldap:update_host: writes the host's facts from the clipboard to its entry in the LDAP CMDB
// (cn=<host>,<hosts OU>), creating the entry or replacing the attributes that differ. Running
// it again with the same clipboard writes nothing. Prints nothing on stdout: the clipboard
// passes on unchanged (re-emitting it with yaml-cpp would change its quoting).
//
// Connection settings and credentials come from the environment (workers.env / env_allow),
// never from the clipboard, which chat users can shape:
//   JARVIS_LDAP_URI            ldap://host:389 (StartTLS) or ldaps://host:636   (required)
//   JARVIS_LDAP_HOSTS_OU       ou=Hosts,dc=example,dc=com                        (required)
//   JARVIS_LDAP_BIND_DN        the writer's DN
//   JARVIS_LDAP_PASSWORD_FILE  a file whose first line is its password (or JARVIS_LDAP_PASSWORD)
//   JARVIS_LDAP_CA_FILE        CA bundle to trust instead of the system's
//   JARVIS_LDAP_STARTTLS       "no" to skip StartTLS on ldap:// (refused with a password)
//   JARVIS_LDAP_TIMEOUT        seconds for each step (default 10); the whole run, TLS
//                              handshake included, is cut off at three times that
//
// Clipboard -> attributes: instance.hostname -> cn, instance.fqdn -> associatedDomain,
// instance.ip and instance.ipv6 -> ipHostNumber, instance.datacenter -> l, instance.provider ->
// jarvisProvider, instance.node_id -> jarvisProviderId, instance.size -> jarvisSize,
// instance.ssh_fingerprints ({type: fingerprint} or a list) -> jarvisSshFingerprint.
// The entry's classes: device, ipHost, domainRelatedObject and jarvisHost
// (deploy/ldap/jarvis-schema.ldif).
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "bot/ldap/ldap_session.h"
#include "bot/util/text.h"

namespace {

std::string task_name() {
  const char* t = std::getenv("JARVIS_TASK");
  return t ? t : "ldap:update_host";
}

int fail(int code, const std::string& reason) {
  std::cerr << task_name() << ": " << reason << '\n';
  return code;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string scalar(const YAML::Node& instance, const char* key) {
  const YAML::Node n = instance[key];
  return n && n.IsScalar() ? n.Scalar() : "";
}

bool is_hostname(const std::string& s) {
  return !s.empty() && s.size() <= 63 && s.front() != '-' && s.back() != '-' &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; });
}

}  // namespace

int main() {
  // Read stdin to the end first, whatever happens next.
  const std::string text{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  YAML::Node clipboard;
  try {
    clipboard = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return fail(1, std::string("the clipboard is not YAML: ") + e.what());
  }
  const YAML::Node& cb = clipboard;
  const YAML::Node instance = cb.IsMap() ? cb["instance"] : YAML::Node();
  if (!instance || !instance.IsMap()) return fail(2, "the clipboard has no instance: mapping");

  jarvis::LdapConnectOptions o;
  o.uri = env("JARVIS_LDAP_URI");
  std::string ou = env("JARVIS_LDAP_HOSTS_OU");
  if (o.uri.empty() || ou.empty())
    return fail(2, "JARVIS_LDAP_URI and JARVIS_LDAP_HOSTS_OU must be set (workers.env in the bot's config)");
  o.bind_dn = env("JARVIS_LDAP_BIND_DN");
  o.ca_file = env("JARVIS_LDAP_CA_FILE");
  o.starttls = env("JARVIS_LDAP_STARTTLS") != "no";
  if (std::string t = env("JARVIS_LDAP_TIMEOUT"); !t.empty()) {
    if (t.size() > 4 || !std::all_of(t.begin(), t.end(), [](unsigned char c) { return std::isdigit(c); }) ||
        std::stoi(t) < 1)
      return fail(2, "JARVIS_LDAP_TIMEOUT must be a whole number of seconds (1-9999)");
    o.timeout = std::chrono::seconds(std::stoi(t));
  }
  if (std::string file = env("JARVIS_LDAP_PASSWORD_FILE"); !file.empty()) {
    std::ifstream in(file);
    if (!in || !std::getline(in, o.password)) return fail(2, "cannot read JARVIS_LDAP_PASSWORD_FILE " + file);
    while (!o.password.empty() && (o.password.back() == '\r' || o.password.back() == ' ')) o.password.pop_back();
  } else {
    o.password = env("JARVIS_LDAP_PASSWORD");
  }
  if (!o.starttls && o.uri.rfind("ldaps://", 0) != 0 && !o.password.empty())
    return fail(2, "refusing to send the LDAP password in clear (JARVIS_LDAP_STARTTLS=no on ldap://)");

  std::string host = jarvis::lower(scalar(instance, "hostname"));
  if (!is_hostname(host)) return fail(2, "instance.hostname is missing or not a host name");
  std::string fqdn = scalar(instance, "fqdn");
  std::string ip = scalar(instance, "ip");
  if (fqdn.empty()) return fail(2, "instance.fqdn is missing");
  if (ip.empty()) return fail(2, "instance.ip is missing (did the provider's get_ip run?)");

  jarvis::LdapEntry wanted;
  wanted.dn = "cn=" + jarvis::ldap_escape_dn_value(host) + "," + ou;
  auto set = [&](const char* attribute, std::vector<std::string> values) {
    values.erase(std::remove(values.begin(), values.end(), std::string()), values.end());
    wanted.attributes.emplace_back(attribute, std::move(values));
  };
  set("cn", {host});
  set("associatedDomain", {fqdn});
  set("ipHostNumber", {ip, scalar(instance, "ipv6")});
  set("l", {scalar(instance, "datacenter")});
  set("jarvisProvider", {scalar(instance, "provider")});
  set("jarvisProviderId", {scalar(instance, "node_id")});
  set("jarvisSize", {scalar(instance, "size")});
  std::vector<std::string> prints;
  if (const YAML::Node f = instance["ssh_fingerprints"]) {
    if (f.IsMap()) {
      for (auto it = f.begin(); it != f.end(); ++it) {
        YAML::Node v = it->second;
        if (v.IsScalar()) prints.push_back(it->first.Scalar() + " " + v.Scalar());
      }
    } else if (f.IsSequence()) {
      for (const auto& v : f)
        if (v.IsScalar()) prints.push_back(v.Scalar());
    }
  }
  std::sort(prints.begin(), prints.end());
  set("jarvisSshFingerprint", prints);

  std::string error;
  // libldap does not time out a stalled TLS handshake: a deadline of its own for the whole
  // connection and write (three of libldap's per-step timeouts).
  auto canceller = std::make_shared<jarvis::LdapCanceller>();
  jarvis::LdapDeadline deadline(canceller, o.timeout * 3);
  auto session = jarvis::LdapSession::open(o, error, canceller);
  if (!session)
    return fail(3, deadline.expired() ? "the LDAP server did not answer within " +
                                            std::to_string(o.timeout.count() * 3 / 1000) + "s" : error);
  bool changed = false;
  std::vector<std::string> changes;
  if (!session->upsert(wanted, {"device", "ipHost", "domainRelatedObject", "jarvisHost"}, changed, error, &changes))
    return fail(3, deadline.expired() ? "the LDAP server did not answer within " +
                                            std::to_string(o.timeout.count() * 3 / 1000) + "s" : error);
  if (!changed) {
    std::cerr << "ldap: " << wanted.dn << " already up to date\n";
  } else {
    std::string list;
    for (const auto& c : changes) list += (list.empty() ? "" : ", ") + c;
    std::cerr << "ldap: " << wanted.dn << ": " << list << '\n';
  }
  return 0;
}
