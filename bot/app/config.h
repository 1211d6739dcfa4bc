#pragma once
// Configuration: a YAML file (config/jarvis.example.yaml documents every key), then the
// command-line overrides. Paths are made absolute once, here.
#include <optional>
#include <string>
#include <vector>

#include "bot/chat/announcer.h"
#include "bot/chat/chat_front.h"
#include "bot/chat/irc/irc_adapter.h"
#include "bot/chat/slack/slack_adapter.h"
#include "bot/chat/xmpp/xmpp_adapter.h"
#include "bot/commands/acl.h"
#include "bot/design/ldap_design_source.h"
#include "bot/design/url_design_source.h"
#include "bot/hooks/hook_dispatcher.h"
#include "bot/http/http_server.h"
#include "bot/pipeline/engine.h"
#include "bot/pipeline/process_runner.h"
#include "bot/util/log.h"
#include "bot/util/secrets.h"

namespace jarvis {

// The HTTP API and dashboard of `jarvis serve` (off unless configured).
struct HttpConfig {
  http::ServerConfig server;   // listen address and port, TLS files, limits
  bool allow_plain = false;    // plain HTTP on an address that is not loopback
  double requests_per_second = 20;
  double request_burst = 40;
  size_t max_event_streams = 500;
  std::string metrics_token;   // from metrics_token_file; empty: /metrics is open
};

// Where the job store is: SQLite in the state dir (the default), or PostgreSQL for several
// nodes (docs/scaling.md). The PostgreSQL URL holds a password, so it comes only from a file
// or the environment.
struct StoreConfig {
  enum class Kind { Sqlite, Postgres } kind = Kind::Sqlite;
  std::string url;       // libpq URL or key=value string (postgres)
  std::string url_from;  // "url_file /etc/jarvis/pg.url", for messages
  Millis statement_timeout{2000};  // serve's bound on one statement; past it the write is Busy
};

struct Config {
  std::string config_file;  // the file read, if any (for messages)
  std::string state_dir = "state";
  std::vector<std::string> workers_path = {"workers"};
  std::string pipelines_dir = "pipelines";
  std::string designs_dir = "config/designs";  // where `deploy NAME` from chat looks
  bool designs_dir_configured = false;         // set in the file, not the default
  GistConfig gist;                   // `deploy https://gist.github.com/...`
  std::optional<LdapSourceConfig> ldap;  // `deploy cn=loki`; off unless configured
  int max_running_jobs = 32;
  log::Format log_format = log::Format::Text;
  Millis default_timeout{std::chrono::minutes(10)};
  std::vector<std::string> env_allow;
  std::vector<std::string> env_set = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"};
  ProcessLimits process;
  Millis retry_backoff{2000};
  std::vector<std::string> secret_patterns = SecretPatterns::defaults();
  SafetyConfig safety;  // confirmation of destructive stages on production hosts

  // Chat (jarvis serve).
  std::optional<IrcConfig> irc;
  std::vector<std::string> irc_channels;
  std::optional<XmppConfig> xmpp;
  std::vector<std::string> xmpp_rooms;  // room@conference.example.com
  std::optional<SlackConfig> slack;     // channels: the ones the app is invited to
  ChatFrontConfig chat;  // prefix, rate limits, outbox pacing (rooms come per protocol)
  AnnounceConfig announce;
  // Every announce place with where it was written ("jarvis.yaml:41"), for check-config.
  std::vector<std::pair<std::string, std::string>> announce_places_at;
  std::optional<HttpConfig> http;
  std::vector<HookConfig> hooks;
  std::vector<AclRule> acl_rules;
  std::vector<std::string> acl_open = Acl::default_open();

  StoreConfig store;
  // Several nodes on one PostgreSQL store: this node's name and its lease.
  std::string node_name;
  Millis node_lease{5000};

  std::string store_path() const { return state_dir + "/jarvis.db"; }
  EngineConfig engine_config() const;
};

struct ConfigOverrides {
  std::optional<std::string> config_file;
  std::optional<std::string> state_dir;
  std::optional<std::string> workers_path;  // colon-separated
  std::optional<std::string> pipelines_dir;
  std::optional<std::string> log_format;
};

std::string postgres_url_password(const std::string& url);

// Loads the file (if any) and applies the overrides; throws std::runtime_error with
// "file:line: what is wrong" on a bad file.
Config load_config(const ConfigOverrides& overrides);

}  // namespace jarvis
