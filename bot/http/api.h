#pragma once
// The HTTP API (/api/v1): authenticates a token, applies the same ACL, rate limit and audit
// trail as chat, and maps each request to the command core (CommandService) or to a read of
// the job store, and the result to JSON. Also the event stream (Server-Sent Events,
// resumable from the store's events) and /metrics.
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/commands/acl.h"
#include "bot/commands/command_service.h"
#include "bot/http/http_server.h"
#include "bot/http/tokens.h"
#include "bot/pipeline/engine.h"
#include "bot/store/job_store.h"
#include "bot/util/secrets.h"
#include "bot/util/token_bucket.h"

namespace jarvis::http {

struct ApiConfig {
  double requests_per_second = 20;  // per token, after a burst
  double request_burst = 40;
  size_t max_event_clients = 500;
  Millis heartbeat{15000};          // a comment line on idle event streams
  std::string metrics_token;        // when set, /metrics needs "Authorization: Bearer <it>"
  SecretPatterns secret_patterns;   // clipboard keys whose values are redacted
  std::vector<std::string> secrets; // the bot's own, redacted wherever they appear
  Millis refusal_window{std::chrono::minutes(1)};  // 401/403/429: one audit row per caller per window
};

// What /readyz and /metrics report about the rest of the bot.
struct Health {
  std::string store_problem;  // empty: writable
  struct Front {
    std::string protocol;
    bool connected = false;
    size_t outbox = 0;  // lines waiting
  };
  std::vector<Front> fronts;
  int running = 0;
  size_t queued = 0;
};

class Api {
 public:
  Api(boost::asio::io_context& io, JobStore& store, CommandService& commands, const Acl& acl, ApiConfig config);
  ~Api();
  void set_health(std::function<Health()> health) { health_ = std::move(health); }
  // More /metrics lines (the hooks').
  void set_more_metrics(std::function<std::string()> more) { more_metrics_ = std::move(more); }
  // Every engine event, after the engine stored it: to the event streams (and the metrics).
  // On a shared store (several nodes) the streams read the event table instead, so that they
  // carry every node's events in id order: this wakes them, and so does a poll every 500 ms.
  void on_event(const EngineEvent& e);
  // Reads the event table past the streams' cursors now (shared store; NOTIFY from others).
  void poke();
  void handle(const Request& request, Respond respond);
  // Closes the event streams and stops the timers (serve is stopping).
  void stop();
  size_t event_clients() const { return clients_.size(); }

 private:
  struct Caller {
    std::string name;  // the token's name
    Role role = Role::Read;
    Requester who;
    Identity id;
  };
  struct Refusals {
    TokenBucket bucket;
    TokenBucket::Clock::time_point window_start{};
    int unaudited = 0;
  };
  struct EventClient {
    std::shared_ptr<EventStream> stream;
    int64_t last_id = 0;
    bool caught_up = true;
    int64_t job = 0;  // only this job's events, when set
  };

  void route(const Request& r, const Caller& c, const std::vector<std::string>& parts, Respond& respond);
  // False (and the 403 sent, audited) when the caller may not run `verb`.
  bool allowed(const Caller& c, Verb verb, const std::string& text, Respond& respond);
  std::optional<Caller> authenticate(const Request& r, Respond& respond);
  std::optional<Caller> caller_for_hash(const std::string& hash, const std::string& remote);
  void session(const Request& r, Respond& respond);
  void asset(const Request& r, Respond& respond);
  void refuse_audited(const Requester& who, const std::string& key, const std::string& text, const std::string& why);
  void run_command(const Caller& c, Command cmd, int success_status, Respond respond);
  void jobs(const Request& r, const Caller& c, Respond& respond);
  void job(int64_t id, Respond& respond);
  void log(const Request& r, int64_t id, Respond& respond);
  void clipboard(const Request& r, int64_t id, Respond& respond);
  void hosts(const Request& r, const std::vector<std::string>& parts, Respond& respond);
  void audit(const Request& r, Respond& respond);
  void dead_letters(const Request& r, Respond& respond);
  void events(const Request& r, Respond& respond);
  void top_up();
  void heartbeat();
  void poll();
  void ready(Respond& respond);
  void metrics(const Request& r, Respond& respond);
  std::string job_json(const JobRecord& j, bool with_stages);

  boost::asio::io_context& io_;
  JobStore& store_;
  CommandService& commands_;
  const Acl& acl_;
  ApiConfig config_;
  std::function<Health()> health_;
  std::function<std::string()> more_metrics_;
  std::unordered_map<std::string, TokenBucket> buckets_;   // per token name
  std::unordered_map<std::string, Refusals> refusals_;     // per caller (token or address)
  std::vector<EventClient> clients_;
  boost::asio::steady_timer catch_up_timer_, heartbeat_timer_, poll_timer_;
  bool catching_up_ = false;
  // Metrics kept from events (the rest is read from the store at scrape time).
  struct StageStats {
    std::vector<uint64_t> buckets;  // cumulative counts per bound
    uint64_t count = 0;
    double sum = 0;
    uint64_t failures = 0;
  };
  std::map<std::string, StageStats> stage_stats_;
  std::map<std::pair<int, std::string>, uint64_t> requests_;  // (status, route) -> count
  void count_request(int status, const std::string& route);
};

}  // namespace jarvis::http
