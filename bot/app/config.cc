#include "bot/app/config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

#include <strings.h>

#include <boost/asio/ip/address.hpp>


#include "bot/pipeline/worker_path.h"
#include "bot/util/text.h"
#include "bot/util/yaml_doc.h"

namespace jarvis {
namespace fs = std::filesystem;

namespace {

std::string absolute(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

[[noreturn]] void fail(const std::string& file, const YAML::Node& n, const std::string& what) {
  throw std::runtime_error(file + ":" + std::to_string(n.Mark().line + 1) + ": " + what);
}

std::string text(const std::string& file, const YAML::Node& n, const char* key) {
  if (!n.IsScalar()) fail(file, n, std::string(key) + " must be text");
  return n.Scalar();
}

Millis duration(const std::string& file, const YAML::Node& n, const char* key) {
  auto d = n.IsScalar() ? parse_duration(n.Scalar()) : std::nullopt;
  if (!d) fail(file, n, std::string(key) + " must be a duration like 500ms, 30s, 5m");
  return *d;
}

int64_t number(const std::string& file, const YAML::Node& n, const char* key, int64_t lo, int64_t hi) {
  int64_t v = lo - 1;
  try { v = n.as<int64_t>(); } catch (const YAML::Exception&) {}
  if (v < lo || v > hi)
    fail(file, n, std::string(key) + " must be a whole number from " + std::to_string(lo) +
                      " to " + std::to_string(hi));
  return v;
}

std::vector<std::string> strings(const std::string& file, const YAML::Node& n, const char* key) {
  if (!n.IsSequence()) fail(file, n, std::string(key) + " must be a list");
  std::vector<std::string> out;
  for (const auto& item : n) out.push_back(text(file, item, key));
  return out;
}

log::Format parse_log_format(const std::string& v) {
  if (v == "text") return log::Format::Text;
  if (v == "json") return log::Format::Json;
  throw std::runtime_error("log format must be text or json, not '" + v + "'");
}

void apply_workers(const std::string& file, const YAML::Node& w, Config& c) {
  if (!w.IsMap()) fail(file, w, "workers must be a mapping");
  for (auto it = w.begin(); it != w.end(); ++it) {
    std::string key = it->first.Scalar();
    YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
    if (key == "path") {
      c.workers_path.clear();
      for (const auto& p : strings(file, v, "workers.path")) c.workers_path.push_back(p);
    } else if (key == "env_allow") {
      c.env_allow = strings(file, v, "workers.env_allow");
    } else if (key == "env") {
      if (!v.IsMap()) fail(file, v, "workers.env must be a mapping of NAME: value");
      for (auto e = v.begin(); e != v.end(); ++e) {
        std::string name = e->first.Scalar();
        std::erase_if(c.env_set, [&](const std::string& s) { return s.rfind(name + "=", 0) == 0; });
        c.env_set.push_back(name + "=" + text(file, e->second, "workers.env"));
      }
    } else if (key == "default_timeout") {
      c.default_timeout = duration(file, v, "workers.default_timeout");
      if (c.default_timeout.count() == 0) fail(file, v, "workers.default_timeout must be more than 0");
    } else if (key == "kill_grace") {
      c.process.kill_grace = duration(file, v, "workers.kill_grace");
    } else if (key == "output_cap_bytes") {
      c.process.stdout_cap = static_cast<size_t>(number(file, v, "workers.output_cap_bytes", 1024, 1LL << 30));
    } else if (key == "stderr_line_max") {
      c.process.stderr_line_max = static_cast<size_t>(number(file, v, "workers.stderr_line_max", 80, 1 << 20));
    } else if (key == "stderr_lines_max") {
      c.process.stderr_lines_max = static_cast<size_t>(number(file, v, "workers.stderr_lines_max", 10, 1 << 20));
    } else if (key == "retry_backoff") {
      c.retry_backoff = duration(file, v, "workers.retry_backoff");
    } else if (key == "nice") {
      c.process.nice = static_cast<int>(number(file, v, "workers.nice", 0, 19));
    } else if (key == "max_processes") {
      c.process.max_processes = static_cast<unsigned>(number(file, v, "workers.max_processes", 0, 1 << 22));
    } else {
      fail(file, it->first, "unknown key workers." + key);
    }
  }
}

// A variable both passed through and set would reach workers twice, with a value that
// depends on their libc; refuse the ambiguity.
void check_env(const std::string& file, const YAML::Node& workers, const Config& c) {
  for (const auto& name : c.env_allow)
    for (const auto& set : c.env_set)
      if (set.rfind(name + "=", 0) == 0)
        fail(file, workers, "workers.env and workers.env_allow both name " + name);
}

bool boolean(const std::string& file, const YAML::Node& n, const char* key) {
  try {
    return n.as<bool>();
  } catch (const YAML::Exception&) {
    fail(file, n, std::string(key) + " must be true or false");
  }
}

// A secret named by `<key>_env` (an environment variable) or `<key>_file` (a file whose first
// line is the secret); inline secrets are refused so they never sit in a config file.
std::string secret(const std::string& file, const YAML::Node& section, const std::string& key) {
  if (section[key]) fail(file, section[key], key + " may not be written inline: use " + key + "_env or " + key + "_file");
  if (const YAML::Node env = section[key + "_env"]) {
    const char* v = std::getenv(text(file, env, (key + "_env").c_str()).c_str());
    if (!v || !*v) fail(file, env, "the environment variable " + env.Scalar() + " (" + key + "_env) is not set");
    return v;
  }
  if (const YAML::Node f = section[key + "_file"]) {
    fs::path path = text(file, f, (key + "_file").c_str());
    if (path.is_relative()) path = fs::path(file).parent_path() / path;
    std::ifstream in(path);
    std::string line;
    if (!in || !std::getline(in, line)) fail(file, f, "cannot read " + f.Scalar() + " (" + key + "_file)");
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    return line;
  }
  return {};
}

void check_known(const std::string& file, const YAML::Node& n, const char* section,
                 const std::vector<std::string>& known);

void apply_irc(const std::string& file, const YAML::Node& n, Config& c) {
  if (!n.IsMap()) fail(file, n, "irc must be a mapping");
  IrcConfig irc;
  static const std::vector<std::string> known = {
      "server", "port", "tls", "tls_verify", "tls_ca_file", "tls_server_name", "nick", "username",
      "realname", "password_env", "password_file", "nickserv", "channels", "ping_interval",
      "ping_timeout", "flood", "nick_recover_interval", "password", "sasl", "accounts",
      "tls_client_cert", "tls_client_key"};
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string key = it->first.Scalar();
    if (key.rfind("nickserv_password", 0) == 0)  // the old form sent IDENTIFY to any "NickServ"
      fail(file, it->first, "irc." + key + " is no more: use irc.nickserv: {target: NickServ@services.example.net, "
                            "password_file: ...}; IDENTIFY goes only to a server-qualified target");
    if (std::find(known.begin(), known.end(), key) == known.end())
      fail(file, it->first, "unknown key irc." + key);
  }
  if (n["server"]) irc.server = text(file, n["server"], "irc.server");
  if (n["port"]) irc.port = static_cast<unsigned short>(number(file, n["port"], "irc.port", 1, 65535));
  else irc.port = 6697;
  if (n["tls"]) irc.tls = boolean(file, n["tls"], "irc.tls");
  if (!n["port"] && !irc.tls) irc.port = 6667;
  if (n["tls_verify"]) irc.tls_verify = boolean(file, n["tls_verify"], "irc.tls_verify");
  if (n["tls_ca_file"]) irc.tls_ca_file = text(file, n["tls_ca_file"], "irc.tls_ca_file");
  if (n["tls_server_name"]) irc.tls_server_name = text(file, n["tls_server_name"], "irc.tls_server_name");
  if (n["nick"]) irc.nick = text(file, n["nick"], "irc.nick");
  if (!is_safe_irc_target(irc.nick) || irc.nick[0] == '#') fail(file, n["nick"], "irc.nick is not a nickname");
  if (n["username"]) irc.username = text(file, n["username"], "irc.username");
  if (n["realname"]) irc.realname = text(file, n["realname"], "irc.realname");
  irc.server_password = secret(file, n, "password");
  if (const YAML::Node ns = n["nickserv"]) {
    check_known(file, ns, "irc.nickserv", {"target", "password_env", "password_file", "allow_plaintext_identify", "password"});
    if (!ns["target"]) fail(file, ns, "irc.nickserv.target is missing (the services nick and server: NickServ@services.example.net)");
    irc.nickserv_target = text(file, ns["target"], "irc.nickserv.target");
    if (!is_server_qualified_target(irc.nickserv_target))
      fail(file, ns["target"], "irc.nickserv.target must name the services server too: NickServ@services.example.net");
    irc.nickserv_password = secret(file, ns, "password");
    if (irc.nickserv_password.empty()) fail(file, ns, "irc.nickserv needs password_env or password_file");
    if (ns["allow_plaintext_identify"])
      irc.allow_plaintext_identify = boolean(file, ns["allow_plaintext_identify"], "irc.nickserv.allow_plaintext_identify");
  }
  if (n["tls_client_cert"]) irc.tls_client_cert = text(file, n["tls_client_cert"], "irc.tls_client_cert");
  if (n["tls_client_key"]) irc.tls_client_key = text(file, n["tls_client_key"], "irc.tls_client_key");
  if (n["tls_client_key"] && !n["tls_client_cert"])
    fail(file, n["tls_client_key"], "irc.tls_client_key needs irc.tls_client_cert");
  if (const YAML::Node sasl = n["sasl"]) {
    if (!sasl.IsMap()) fail(file, sasl, "irc.sasl must be a mapping: {mechanism: plain, password_file: ...}");
    check_known(file, sasl, "irc.sasl", {"mechanism", "username", "password_env", "password_file", "required", "password"});
    std::string mech = sasl["mechanism"] ? lower(text(file, sasl["mechanism"], "irc.sasl.mechanism")) : "plain";
    if (mech == "plain") {
      irc.sasl = SaslMechanism::Plain;
      if (sasl["username"]) irc.sasl_username = text(file, sasl["username"], "irc.sasl.username");
      irc.sasl_password = secret(file, sasl, "password");
      if (irc.sasl_password.empty()) fail(file, sasl, "irc.sasl (plain) needs password_env or password_file");
      if (!irc.tls) fail(file, sasl, "irc.sasl sends the password: it needs tls: true");
    } else if (mech == "external") {
      irc.sasl = SaslMechanism::External;
      if (!irc.tls || irc.tls_client_cert.empty())
        fail(file, sasl, "irc.sasl mechanism external logs in with a TLS client certificate: it needs tls: true "
                         "and irc.tls_client_cert");
      if (sasl["username"] || sasl["password_env"] || sasl["password_file"])
        fail(file, sasl, "irc.sasl mechanism external takes no username or password (the certificate is the login)");
    } else {
      fail(file, sasl["mechanism"], "irc.sasl.mechanism must be plain or external");
    }
    if (sasl["required"]) irc.sasl_required = boolean(file, sasl["required"], "irc.sasl.required");
  }
  irc.accounts = n["accounts"] ? boolean(file, n["accounts"], "irc.accounts") : irc.sasl != SaslMechanism::None;
  if (n["ping_interval"]) irc.ping_interval = duration(file, n["ping_interval"], "irc.ping_interval");
  if (n["ping_timeout"]) irc.ping_timeout = duration(file, n["ping_timeout"], "irc.ping_timeout");
  if (n["nick_recover_interval"])
    irc.nick_recover_interval = duration(file, n["nick_recover_interval"], "irc.nick_recover_interval");
  if (irc.ping_timeout <= irc.ping_interval)
    fail(file, n, "irc.ping_timeout must be longer than irc.ping_interval");
  if (n["channels"]) {
    c.irc_channels = strings(file, n["channels"], "irc.channels");
    for (const auto& ch : c.irc_channels)
      if (!is_safe_irc_target(ch) || (ch[0] != '#' && ch[0] != '&'))
        fail(file, n["channels"], "'" + ch + "' is not a channel name");
  }
  if (const YAML::Node f = n["flood"]) {
    check_known(file, f, "irc.flood", {"burst", "per_second"});
    if (f["burst"]) c.chat.outbox.burst = static_cast<double>(number(file, f["burst"], "irc.flood.burst", 1, 1000));
    if (f["per_second"]) {
      double per_second = 0;
      try { per_second = f["per_second"].as<double>(); } catch (const YAML::Exception&) {}
      if (!(per_second > 0 && per_second <= 1000))
        fail(file, f["per_second"], "irc.flood.per_second must be a number of lines per second, more than 0 and at most 1000");
      c.chat.outbox.per_second = per_second;
    }
    c.chat.outbox.target_burst = c.chat.outbox.burst;
    c.chat.outbox.target_per_second = c.chat.outbox.per_second;
  }
  c.irc = irc;
}

void note_places(const std::string& file, const YAML::Node& list, Config& c) {
  auto at = [&](const YAML::Node& n) { return file + ":" + std::to_string(n.Mark().line + 1); };
  if (list.IsScalar()) c.announce_places_at.emplace_back(list.Scalar(), at(list));
  else if (list.IsSequence())
    for (const auto& item : list)
      if (item.IsScalar()) c.announce_places_at.emplace_back(item.Scalar(), at(item));
}

void apply_chat(const std::string& file, const YAML::Node& n, Config& c) {
  if (!n.IsMap()) fail(file, n, "chat must be a mapping");
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string key = it->first.Scalar();
    YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
    if (key == "prefix") c.chat.prefix = text(file, v, "chat.prefix");
    else if (key == "announce") {
      c.announce.everywhere = strings(file, v, "chat.announce");
      note_places(file, v, c);
    }
    else if (key == "announce_to_requester") c.announce.to_requester = boolean(file, v, "chat.announce_to_requester");
    else if (key == "announce_pipelines") {
      if (!v.IsMap()) fail(file, v, "chat.announce_pipelines must map pipeline names to places");
      for (auto p = v.begin(); p != v.end(); ++p)
      {
        c.announce.by_pipeline[p->first.Scalar()] = strings(file, p->second, "chat.announce_pipelines");
        note_places(file, p->second, c);
      }
    } else if (key == "announce_level" || key == "announce_level_direct") {
      auto level = parse_announce_level(text(file, v, ("chat." + key).c_str()));
      if (!level) fail(file, v, "chat." + key + " must be quiet, stages or all");
      (key == "announce_level" ? c.announce.channel_level : c.announce.direct_level) = *level;
    } else if (key == "announce_levels") {
      if (!v.IsMap()) fail(file, v, "chat.announce_levels must map places (irc:#deploys) to quiet, stages or all");
      for (auto p = v.begin(); p != v.end(); ++p) {
        YAML::Node lv = p->second;
        auto level = parse_announce_level(text(file, lv, "chat.announce_levels"));
        if (!level) fail(file, lv, "chat.announce_levels: " + p->first.Scalar() + " must be quiet, stages or all");
        c.announce.levels[p->first.Scalar()] = *level;
      }
    } else if (key == "direct_answers") {
      c.chat.direct_answers = strings(file, v, "chat.direct_answers");
      for (const auto& verb : c.chat.direct_answers)
        if (verb == "*" || !is_command_name(verb)) fail(file, v, "chat.direct_answers names an unknown command '" + verb + "'");
    } else if (key == "drain_timeout") {
      c.chat.drain_timeout = duration(file, v, "chat.drain_timeout");
      if (c.chat.drain_timeout > std::chrono::minutes(5)) fail(file, v, "chat.drain_timeout must be at most 5m");
    } else if (key == "command_burst") {
      c.chat.command_burst = static_cast<double>(number(file, v, "chat.command_burst", 1, 1000));
    } else if (key == "commands_per_minute") {
      c.chat.commands_per_second = static_cast<double>(number(file, v, "chat.commands_per_minute", 1, 6000)) / 60.0;
    } else {
      fail(file, it->first, "unknown key chat." + key);
    }
  }
}

void apply_acl(const std::string& file, const YAML::Node& n, Config& c) {
  if (!n.IsMap()) fail(file, n, "acl must be a mapping");
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string key = it->first.Scalar();
    YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
    if (key == "open") {
      c.acl_open = strings(file, v, "acl.open");
    } else if (key == "contact") {
      c.chat.acl_contact = text(file, v, "acl.contact");
    } else if (key == "rules") {
      if (!v.IsSequence()) fail(file, v, "acl.rules must be a list");
      for (const auto& r : v) {
        if (!r.IsMap() || !r["who"] || !r["commands"]) fail(file, r, "an acl rule needs who and commands");
        AclRule rule;
        rule.who = strings(file, r["who"], "acl.rules.who");
        rule.commands = strings(file, r["commands"], "acl.rules.commands");
        if (r["where"]) rule.where = strings(file, r["where"], "acl.rules.where");
        rule.file = file;
        rule.line = r.Mark().line + 1;
        c.acl_rules.push_back(rule);
      }
    } else {
      fail(file, it->first, "unknown key acl." + key);
    }
  }
  for (const auto& problem : Acl(c.acl_rules, c.acl_open).problems()) fail(file, n, problem);
}

void check_known(const std::string& file, const YAML::Node& n, const char* section,
                 const std::vector<std::string>& known) {
  if (!n.IsMap()) fail(file, n, std::string(section) + " must be a mapping");
  for (auto it = n.begin(); it != n.end(); ++it)
    if (std::find(known.begin(), known.end(), it->first.Scalar()) == known.end())
      fail(file, it->first, "unknown key " + std::string(section) + "." + it->first.Scalar());
}

void apply_http(const std::string& file, const YAML::Node& n, Config& c, const std::function<std::string(const std::string&)>& rel) {
  check_known(file, n, "http", {"listen", "tls_cert_file", "tls_key_file", "allow_plain", "max_body",
                                "max_header", "max_connections", "request_timeout", "idle_timeout",
                                "requests_per_second", "request_burst", "max_event_streams", "metrics_token",
                                "metrics_token_env", "metrics_token_file"});
  HttpConfig h;
  if (n["listen"]) {
    std::string listen = text(file, n["listen"], "http.listen");
    auto colon = listen.rfind(':');
    std::string host = colon == std::string::npos ? "" : listen.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    boost::system::error_code ec;
    auto address = boost::asio::ip::make_address(host, ec);
    int64_t port = -1;
    try {
      port = colon == std::string::npos ? -1 : std::stoll(listen.substr(colon + 1));
    } catch (const std::exception&) {
    }
    if (ec || port < 0 || port > 65535)
      fail(file, n["listen"], "http.listen must be ADDRESS:PORT, like 127.0.0.1:8088 or [::1]:8088 (port 0: any free one)");
    h.server.address = address.to_string();
    h.server.port = static_cast<uint16_t>(port);
  }
  if (n["tls_cert_file"]) h.server.tls_cert_file = rel(text(file, n["tls_cert_file"], "http.tls_cert_file"));
  if (n["tls_key_file"]) h.server.tls_key_file = rel(text(file, n["tls_key_file"], "http.tls_key_file"));
  if (h.server.tls_cert_file.empty() != h.server.tls_key_file.empty())
    fail(file, n, "http needs both tls_cert_file and tls_key_file, or neither");
  if (n["allow_plain"]) h.allow_plain = boolean(file, n["allow_plain"], "http.allow_plain");
  boost::system::error_code ec;
  bool loopback = boost::asio::ip::make_address(h.server.address, ec).is_loopback();
  if (h.server.tls_cert_file.empty() && !loopback && !h.allow_plain)
    fail(file, n["listen"] ? n["listen"] : n,
         "http.listen " + h.server.address + " is not loopback: tokens would cross the network in clear. "
         "Set tls_cert_file and tls_key_file, or allow_plain: true behind a TLS proxy");
  auto& l = h.server.limits;
  if (n["max_body"]) l.max_body = static_cast<size_t>(number(file, n["max_body"], "http.max_body", 1024, 16 << 20));
  if (n["max_header"]) l.max_header = static_cast<size_t>(number(file, n["max_header"], "http.max_header", 1024, 1 << 20));
  if (n["max_connections"]) l.max_connections = static_cast<size_t>(number(file, n["max_connections"], "http.max_connections", 1, 100000));
  if (n["request_timeout"]) l.request_timeout = duration(file, n["request_timeout"], "http.request_timeout");
  if (n["idle_timeout"]) l.idle_timeout = duration(file, n["idle_timeout"], "http.idle_timeout");
  if (n["requests_per_second"]) h.requests_per_second = static_cast<double>(number(file, n["requests_per_second"], "http.requests_per_second", 1, 100000));
  if (n["request_burst"]) h.request_burst = static_cast<double>(number(file, n["request_burst"], "http.request_burst", 1, 100000));
  if (n["max_event_streams"]) h.max_event_streams = static_cast<size_t>(number(file, n["max_event_streams"], "http.max_event_streams", 1, 100000));
  h.metrics_token = secret(file, n, "metrics_token");
  c.http = std::move(h);
}

void apply_hooks(const std::string& file, const YAML::Node& n, Config& c, const std::function<std::string(const std::string&)>& rel) {
  if (!n.IsSequence()) fail(file, n, "hooks must be a list of {name, url or command, ...}");
  static const std::vector<std::string> kinds = {"job_queued", "job_started", "stage_started", "stage_log",
                                                 "stage_succeeded", "stage_retrying", "job_ready", "job_failed",
                                                 "job_cancelled", "store_recovered"};
  for (const auto& h : n) {
    check_known(file, h, "hooks[]", {"name", "url", "command", "secret", "secret_env", "secret_file", "events", "hosts",
                                     "pipelines", "max_attempts", "timeout", "backoff", "backoff_max", "ca_file", "allow_http"});
    HookConfig k;
    k.file = file + ":" + std::to_string(h.Mark().line + 1);
    if (!h["name"]) fail(file, h, "a hook needs a name");
    k.name = text(file, h["name"], "hooks.name");
    if (k.name.empty() || k.name.size() > 64 ||
        k.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != std::string::npos)
      fail(file, h["name"], "hook name '" + k.name + "' must be 1-64 letters, digits, '.', '_' or '-'");
    for (const auto& other : c.hooks)
      if (other.name == k.name) fail(file, h["name"], "two hooks are named " + k.name);
    if (h["url"]) k.url = text(file, h["url"], "hooks.url");
    if (h["command"]) k.command = strings(file, h["command"], "hooks.command");
    if (k.url.empty() == k.command.empty()) fail(file, h, "hook " + k.name + " needs a url or a command (argv list), not both");
    if (!k.command.empty() && (k.command.front().empty() || k.command.front()[0] != '/'))
      fail(file, h["command"], "hook " + k.name + ": command[0] must be an absolute path (it is run without a shell)");
    if (h["allow_http"]) k.allow_http = boolean(file, h["allow_http"], "hooks.allow_http");
    if (!k.url.empty() && k.url.rfind("https://", 0) != 0 && !(k.allow_http && k.url.rfind("http://", 0) == 0))
      fail(file, h["url"], "hook " + k.name + ": url must be https:// (or http:// with allow_http: true)");
    k.secret = secret(file, h, "secret");
    if (!k.url.empty() && k.secret.empty())
      fail(file, h, "hook " + k.name + " needs secret_file or secret_env: receivers check X-Jarvis-Signature with it");
    if (h["events"]) {
      k.events = strings(file, h["events"], "hooks.events");
      for (const auto& e : k.events)
        if (std::find(kinds.begin(), kinds.end(), e) == kinds.end())
          fail(file, h["events"], "hook " + k.name + ": unknown event kind '" + e + "' (job_ready, job_failed, stage_succeeded, ...)");
    }
    if (h["hosts"]) k.hosts = strings(file, h["hosts"], "hooks.hosts");
    if (h["pipelines"]) k.pipelines = strings(file, h["pipelines"], "hooks.pipelines");
    if (h["max_attempts"]) k.max_attempts = static_cast<int>(number(file, h["max_attempts"], "hooks.max_attempts", 1, 1000));
    if (h["timeout"]) k.timeout = duration(file, h["timeout"], "hooks.timeout");
    if (h["backoff"]) k.backoff = duration(file, h["backoff"], "hooks.backoff");
    if (h["backoff_max"]) k.backoff_max = duration(file, h["backoff_max"], "hooks.backoff_max");
    if (h["ca_file"]) k.ca_file = rel(text(file, h["ca_file"], "hooks.ca_file"));
    c.hooks.push_back(std::move(k));
  }
}

void apply_store(const std::string& file, const YAML::Node& n, Config& c) {
  if (!n.IsMap()) fail(file, n, "store must be a mapping: {kind: sqlite} or {kind: postgres, url_file: FILE}");
  check_known(file, n, "store", {"kind", "url", "url_file", "url_env", "statement_timeout"});
  StoreConfig& s = c.store;
  std::string kind = n["kind"] ? text(file, n["kind"], "store.kind") : "sqlite";
  if (kind == "sqlite") {
    s.kind = StoreConfig::Kind::Sqlite;
    if (n["url_file"] || n["url_env"] || n["url"]) fail(file, n, "store.url_file/url_env are for kind: postgres");
  } else if (kind == "postgres") {
    s.kind = StoreConfig::Kind::Postgres;
    if (n["url"]) fail(file, n["url"], "store.url may not be written inline (it holds the password): use url_file or url_env");
    if (!n["url_file"] && !n["url_env"]) fail(file, n, "store.kind postgres needs url_file (a file holding the libpq URL) or url_env");
    s.url = secret(file, n, "url");
    s.url_from = n["url_env"] ? "url_env " + n["url_env"].Scalar() : "url_file " + n["url_file"].Scalar();
    if (s.url.empty()) fail(file, n["url_env"] ? n["url_env"] : n["url_file"], "store." + s.url_from + " is empty");
  } else {
    fail(file, n["kind"], "store.kind must be sqlite or postgres, not '" + kind + "'");
  }
  if (n["statement_timeout"]) s.statement_timeout = duration(file, n["statement_timeout"], "store.statement_timeout");
}

void apply_gist(const std::string& file, const YAML::Node& n, Config& c) {
  check_known(file, n, "gist", {"api_url", "gist_hosts", "url_hosts", "token", "token_env", "token_file",
                                "ca_file", "timeout", "max_bytes", "max_redirects", "allow_http",
                                "design_files", "allow_private_addresses"});
  GistConfig& g = c.gist;
  if (n["api_url"]) {
    g.api_url = text(file, n["api_url"], "gist.api_url");
    if (g.api_url.rfind("https://", 0) != 0 && g.api_url.rfind("http://", 0) != 0)
      fail(file, n["api_url"], "gist.api_url must be an https:// URL");
  }
  if (n["gist_hosts"]) g.gist_hosts = strings(file, n["gist_hosts"], "gist.gist_hosts");
  if (n["url_hosts"]) g.url_hosts = strings(file, n["url_hosts"], "gist.url_hosts");
  g.token = secret(file, n, "token");
  if (n["ca_file"]) g.ca_file = text(file, n["ca_file"], "gist.ca_file");
  if (n["timeout"]) g.timeout = duration(file, n["timeout"], "gist.timeout");
  if (n["max_bytes"]) g.max_bytes = static_cast<size_t>(number(file, n["max_bytes"], "gist.max_bytes", 1024, design_limits().max_bytes));
  if (n["max_redirects"]) g.max_redirects = static_cast<long>(number(file, n["max_redirects"], "gist.max_redirects", 0, 20));
  if (n["allow_http"]) g.allow_http = boolean(file, n["allow_http"], "gist.allow_http");
  if (n["allow_private_addresses"])
    g.allow_private_addresses = boolean(file, n["allow_private_addresses"], "gist.allow_private_addresses");
  if (n["design_files"]) g.design_files = strings(file, n["design_files"], "gist.design_files");
  if (g.design_files.empty()) fail(file, n["design_files"], "gist.design_files must name at least one file");
  if (g.api_url.rfind("http://", 0) == 0 && !g.allow_http)
    fail(file, n["api_url"], "gist.api_url is plain http://: set gist.allow_http: true to allow that");
}

void apply_xmpp(const std::string& file, const YAML::Node& n, Config& c) {
  check_known(file, n, "xmpp", {"jid", "password", "password_env", "password_file", "server", "port",
                                "resource", "nick", "tls_ca_file", "rooms", "ping_interval",
                                "connect_timeout", "trusted_muc_domains"});
  XmppConfig x;
  if (!n["jid"]) fail(file, n, "xmpp.jid is missing (the bot's account, like jarvis@example.com)");
  x.jid = text(file, n["jid"], "xmpp.jid");
  auto at = x.jid.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == x.jid.size() || x.jid.find('/') != std::string::npos)
    fail(file, n["jid"], "xmpp.jid must be a bare JID: user@domain");
  x.password = secret(file, n, "password");
  if (x.password.empty()) fail(file, n, "xmpp needs password_env or password_file");
  if (n["server"]) x.server = text(file, n["server"], "xmpp.server");
  if (n["port"]) x.port = static_cast<unsigned short>(number(file, n["port"], "xmpp.port", 1, 65535));
  if (n["resource"]) x.resource = text(file, n["resource"], "xmpp.resource");
  if (n["nick"]) x.nick = text(file, n["nick"], "xmpp.nick");
  if (n["tls_ca_file"]) x.tls_ca_file = text(file, n["tls_ca_file"], "xmpp.tls_ca_file");
  if (n["ping_interval"]) x.ping_interval = duration(file, n["ping_interval"], "xmpp.ping_interval");
  if (n["connect_timeout"]) x.connect_timeout = duration(file, n["connect_timeout"], "xmpp.connect_timeout");
  if (n["trusted_muc_domains"]) x.trusted_muc_domains = strings(file, n["trusted_muc_domains"], "xmpp.trusted_muc_domains");
  if (n["rooms"]) {
    c.xmpp_rooms = strings(file, n["rooms"], "xmpp.rooms");
    for (const auto& r : c.xmpp_rooms)
      if (r.find('@') == std::string::npos || r.find('/') != std::string::npos ||
          r.find_first_of(" \t\r\n") != std::string::npos)
        fail(file, n["rooms"], "'" + r + "' is not a room JID (room@conference.example.com)");
  }
  c.xmpp = std::move(x);
}

void apply_slack(const std::string& file, const YAML::Node& n, Config& c) {
  check_known(file, n, "slack", {"app_token", "app_token_env", "app_token_file", "bot_token",
                                 "bot_token_env", "bot_token_file", "api_url", "ca_file", "ping_interval"});
  SlackConfig s;
  s.app_token = secret(file, n, "app_token");
  s.bot_token = secret(file, n, "bot_token");
  if (s.app_token.empty() || s.bot_token.empty())
    fail(file, n, "slack needs app_token_env/_file (xapp-...) and bot_token_env/_file (xoxb-...)");
  if (n["api_url"]) {
    s.api_url = text(file, n["api_url"], "slack.api_url");
    if (s.api_url.rfind("https://", 0) != 0) fail(file, n["api_url"], "slack.api_url must be an https:// URL");
  }
  if (n["ca_file"]) s.ca_file = text(file, n["ca_file"], "slack.ca_file");
  if (n["ping_interval"]) s.ping_interval = duration(file, n["ping_interval"], "slack.ping_interval");
  c.slack = std::move(s);
}

std::vector<std::pair<std::string, std::string>> string_pairs(const std::string& file, const YAML::Node& n,
                                                              const char* key) {
  if (!n.IsMap()) fail(file, n, std::string(key) + " must be a mapping");
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = n.begin(); it != n.end(); ++it) {
    YAML::Node v = it->second;
    out.emplace_back(it->first.Scalar(), v.IsNull() ? std::string() : text(file, v, key));
  }
  return out;
}

void apply_ldap(const std::string& file, const YAML::Node& n, Config& c) {
  check_known(file, n, "ldap", {"uri", "starttls", "ca_file", "bind_dn", "bind_password",
                                "bind_password_env", "bind_password_file", "base", "filter",
                                "timeout", "attributes", "defaults", "threads", "lookup_timeout", "max_queued"});
  LdapSourceConfig l;
  if (!n["uri"]) fail(file, n, "ldap.uri is missing (ldap://host:389 or ldaps://host:636)");
  l.connect.uri = text(file, n["uri"], "ldap.uri");
  bool ldaps = l.connect.uri.rfind("ldaps://", 0) == 0;
  if (!ldaps && l.connect.uri.rfind("ldap://", 0) != 0)
    fail(file, n["uri"], "ldap.uri must start with ldap:// or ldaps://");
  if (n["starttls"]) l.connect.starttls = boolean(file, n["starttls"], "ldap.starttls");
  if (n["ca_file"]) l.connect.ca_file = text(file, n["ca_file"], "ldap.ca_file");
  if (n["bind_dn"]) l.connect.bind_dn = text(file, n["bind_dn"], "ldap.bind_dn");
  l.connect.password = secret(file, n, "bind_password");
  if (!ldaps && !l.connect.starttls && !l.connect.password.empty())
    fail(file, n["starttls"], "ldap.starttls: false would send the bind password in clear; use StartTLS or ldaps://");
  if (n["base"]) l.base = text(file, n["base"], "ldap.base");
  if (!l.base.empty() && !ldap_first_rdn(l.base)) fail(file, n["base"], "ldap.base is not a DN");
  if (n["filter"]) {
    l.filter = text(file, n["filter"], "ldap.filter");
    if (l.filter.size() < 3 || l.filter.front() != '(' || l.filter.back() != ')')
      fail(file, n["filter"], "ldap.filter must be a filter in parentheses, like (objectClass=ipHost)");
  }
  if (n["timeout"]) l.connect.timeout = duration(file, n["timeout"], "ldap.timeout");
  if (n["threads"]) l.threads = static_cast<int>(number(file, n["threads"], "ldap.threads", 1, 16));
  if (n["lookup_timeout"]) l.lookup_timeout = duration(file, n["lookup_timeout"], "ldap.lookup_timeout");
  if (n["max_queued"]) l.max_queued = static_cast<int>(number(file, n["max_queued"], "ldap.max_queued", 0, 1000));
  if (n["attributes"]) {
    // Merged over the defaults; an attribute mapped to nothing (~) is dropped.
    for (const auto& entry : string_pairs(file, n["attributes"], "ldap.attributes")) {
      const std::string& attr = entry.first;  // a plain name: clang 14 cannot capture a binding
      const std::string& path = entry.second;
      if (!is_ldap_attribute_name(attr)) fail(file, n["attributes"], "ldap.attributes: '" + attr + "' is not an attribute name");
      std::erase_if(l.attributes, [&](const auto& p) { return strcasecmp(p.first.c_str(), attr.c_str()) == 0; });
      if (!path.empty()) l.attributes.emplace_back(attr, path);
    }
  }
  if (n["defaults"]) l.defaults = string_pairs(file, n["defaults"], "ldap.defaults");
  c.ldap = std::move(l);
}

void apply_safety(const std::string& file, const YAML::Node& n, Config& c) {
  if (!n.IsMap()) fail(file, n, "safety must be a mapping");
  check_known(file, n, "safety", {"confirm_timeout", "two_person", "production_hosts"});
  if (n["confirm_timeout"]) {
    c.safety.confirm_timeout = duration(file, n["confirm_timeout"], "safety.confirm_timeout");
    if (c.safety.confirm_timeout.count() < 1000 || c.safety.confirm_timeout > std::chrono::hours(24))
      fail(file, n["confirm_timeout"], "safety.confirm_timeout must be from 1s to 24h");
  }
  if (n["two_person"]) c.safety.two_person = boolean(file, n["two_person"], "safety.two_person");
  if (n["production_hosts"]) {
    c.safety.production_hosts = strings(file, n["production_hosts"], "safety.production_hosts");
    for (const auto& p : c.safety.production_hosts)
      if (p.empty() || p.size() > 253) fail(file, n["production_hosts"], "safety.production_hosts: a pattern must be 1 to 253 characters");
  }
}

using Rel = std::function<std::string(const std::string&)>;

// One top-level entry of the config file.
void apply_entry(const std::string& file, const std::string& key, const YAML::Node& key_node,
                 const YAML::Node& v, const Rel& rel, Config& c) {
  {
    if (key == "state_dir") c.state_dir = rel(text(file, v, "state_dir"));
    else if (key == "pipelines_dir") c.pipelines_dir = rel(text(file, v, "pipelines_dir"));
    else if (key == "designs_dir") {
      c.designs_dir = rel(text(file, v, "designs_dir"));
      c.designs_dir_configured = true;
    }
    else if (key == "max_running_jobs") c.max_running_jobs = static_cast<int>(number(file, v, "max_running_jobs", 1, 100000));
    else if (key == "log_format") c.log_format = parse_log_format(text(file, v, "log_format"));
    else if (key == "irc") {
      apply_irc(file, v, c);
      if (!c.irc->tls_ca_file.empty()) c.irc->tls_ca_file = rel(c.irc->tls_ca_file);
      if (!c.irc->tls_client_cert.empty()) c.irc->tls_client_cert = rel(c.irc->tls_client_cert);
      if (!c.irc->tls_client_key.empty()) c.irc->tls_client_key = rel(c.irc->tls_client_key);
      // The client key is a secret: not in a file everyone on the host can read.
      const std::string& key_file = c.irc->tls_client_key.empty() ? c.irc->tls_client_cert : c.irc->tls_client_key;
      std::error_code kec;
      if (!key_file.empty()) {
        auto st = fs::status(key_file, kec);
        if (kec || !fs::is_regular_file(st))
          fail(file, v, "cannot read the TLS client key " + key_file + " (irc.tls_client_key)");
        if ((st.permissions() & fs::perms::others_read) != fs::perms::none)
          fail(file, v, "the TLS client key " + key_file + " is readable by everyone: chmod 600 it");
      }
    }
    else if (key == "chat") apply_chat(file, v, c);
    else if (key == "xmpp") {
      apply_xmpp(file, v, c);
      if (!c.xmpp->tls_ca_file.empty()) c.xmpp->tls_ca_file = rel(c.xmpp->tls_ca_file);
    }
    else if (key == "slack") {
      apply_slack(file, v, c);
      if (!c.slack->ca_file.empty()) c.slack->ca_file = rel(c.slack->ca_file);
    }
    else if (key == "gist") {
      apply_gist(file, v, c);
      if (!c.gist.ca_file.empty()) c.gist.ca_file = rel(c.gist.ca_file);
    }
    else if (key == "ldap") {
      apply_ldap(file, v, c);
      if (!c.ldap->connect.ca_file.empty()) c.ldap->connect.ca_file = rel(c.ldap->connect.ca_file);
    }
    else if (key == "acl") apply_acl(file, v, c);
    else if (key == "http") apply_http(file, v, c, rel);
    else if (key == "hooks") apply_hooks(file, v, c, rel);
    else if (key == "store") apply_store(file, v, c);
    else if (key == "node") {
      if (!v.IsMap()) fail(file, v, "node must be a mapping: {name: runner-2}");
      check_known(file, v, "node", {"name", "lease"});
      if (v["name"]) c.node_name = text(file, v["name"], "node.name");
      if (v["lease"]) c.node_lease = duration(file, v["lease"], "node.lease");
      if (c.node_lease < Millis(2000)) fail(file, v["lease"], "node.lease must be at least 2s (it is renewed every 500ms)");
    }
    else if (key == "safety") apply_safety(file, v, c);
    else if (key == "secret_patterns") {
      c.secret_patterns = strings(file, v, "secret_patterns");
      if (c.secret_patterns.empty()) fail(file, v, "secret_patterns must name at least one pattern");
    }
    else if (key == "workers") {
      apply_workers(file, v, c);
      check_env(file, v, c);
      for (auto& p : c.workers_path) p = rel(p);
    } else {
      fail(file, key_node, "unknown key '" + key + "'");
    }
  }
}

void apply_file(const std::string& file, Config& c) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(file + ":0: cannot read the config file");
  std::stringstream buf;
  buf << in.rdbuf();
  YAML::Node doc;
  try {
    doc = load_mapping_document(buf.str(), YamlLimits{});
  } catch (const std::exception& e) {
    throw std::runtime_error(file + ": " + e.what());
  }
  fs::path base = fs::path(file).parent_path();
  Rel rel = [&](const std::string& p) { return fs::path(p).is_absolute() ? p : (base / p).string(); };
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    std::string key = it->first.Scalar();
    YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
    try {
      apply_entry(file, key, it->first, v, rel, c);
    } catch (const YAML::Exception& e) {
      // A value of the wrong kind deep in a section (a list where a mapping was expected):
      // yaml-cpp's own complaint, with the file and the line it is about.
      const YAML::Mark& m = e.mark.is_null() ? v.Mark() : e.mark;
      throw std::runtime_error(file + ":" + std::to_string(m.line + 1) + ": " + key +
                               ": a value of the wrong kind (" + e.msg + ")");
    }
  }
}

}  // namespace

// The password in a libpq URL (postgresql://user:PASSWORD@host/db) or key=value string
// (password=PASSWORD), to redact it wherever it could show.
std::string postgres_url_password(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme != std::string::npos) {
    auto at = url.find('@', scheme + 3);
    auto colon = url.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at) return url.substr(colon + 1, at - colon - 1);
    return {};
  }
  auto p = url.find("password=");
  if (p == std::string::npos) return {};
  p += 9;
  std::string v;
  if (p < url.size() && url[p] == '\'') {  // a quoted value: backslash escapes ' and backslash
    for (++p; p < url.size() && url[p] != '\''; ++p) {
      if (url[p] == '\\' && p + 1 < url.size()) ++p;
      v += url[p];
    }
    return v;
  }
  auto end = url.find(' ', p);
  return url.substr(p, end == std::string::npos ? std::string::npos : end - p);
}

EngineConfig Config::engine_config() const {
  EngineConfig e;
  e.workers_path = workers_path;
  e.state_dir = state_dir;
  e.max_running = max_running_jobs;
  e.env_allow = env_allow;
  e.env_set = env_set;
  e.output_limits.max_bytes = process.stdout_cap;
  e.retry_backoff = retry_backoff;
  e.secret_patterns = SecretPatterns(secret_patterns);
  e.node_name = node_name;
  e.lease = node_lease;
  e.safety = safety;
  // The bot's own secrets are redacted from workers' output like the clipboards' (a worker
  // could print an inherited token, or a clipboard could echo one).
  auto secret = [&](const std::string& v) {
    if (!v.empty()) e.secrets.push_back(v);
  };
  if (irc) {
    secret(irc->server_password);
    secret(irc->nickserv_password);
    secret(irc->sasl_password);
  }
  if (xmpp) secret(xmpp->password);
  if (slack) {
    secret(slack->app_token);
    secret(slack->bot_token);
  }
  secret(gist.token);
  if (ldap) secret(ldap->connect.password);
  if (http) secret(http->metrics_token);
  for (const auto& h : hooks) secret(h.secret);
  if (!store.url.empty()) {
    secret(store.url);
    secret(postgres_url_password(store.url));
  }
  return e;
}

Config load_config(const ConfigOverrides& o) {
  Config c;
  if (o.config_file) {
    apply_file(*o.config_file, c);
    c.config_file = *o.config_file;
  }
  if (o.state_dir) c.state_dir = *o.state_dir;
  if (o.workers_path) c.workers_path = split_search_path(*o.workers_path);
  if (o.pipelines_dir) c.pipelines_dir = *o.pipelines_dir;
  if (o.log_format) c.log_format = parse_log_format(*o.log_format);
  c.state_dir = absolute(c.state_dir);
  c.pipelines_dir = absolute(c.pipelines_dir);
  c.designs_dir = absolute(c.designs_dir);
  for (auto& p : c.workers_path) p = absolute(p);
  if (c.node_name.empty()) {
    char host[256] = {};
    c.node_name = ::gethostname(host, sizeof host - 1) == 0 && host[0] ? host : "jarvis";
  }
  return c;
}

}  // namespace jarvis
