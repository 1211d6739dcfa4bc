#pragma once
// Event hooks (config `hooks:`): each engine event that matches a hook's filters is queued in
// the store for it, then delivered at least once: a URL gets a JSON POST signed with
// HMAC-SHA256 (X-Jarvis-Signature), a command gets the JSON on stdin (argv, no shell). Failed
// attempts are retried with backoff, across restarts; after max_attempts a delivery is dead
// (kept, listed by the API, counted in /metrics).
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/net/http_client.h"
#include "bot/pipeline/engine.h"
#include "bot/pipeline/worker_runner.h"
#include "bot/store/job_store.h"

namespace jarvis {

struct HookConfig {
  std::string name;
  std::string url;                   // or
  std::vector<std::string> command;  // argv; command[0] an absolute path
  std::string secret;                // HMAC key for URL hooks (from secret_file / secret_env)
  std::vector<std::string> events;   // kinds (job_ready, ...); empty: all but stage_log
  std::vector<std::string> hosts;    // globs; empty: any
  std::vector<std::string> pipelines;
  int max_attempts = 8;
  Millis timeout{10000};
  Millis backoff{1000};              // after the first failure; doubles, up to backoff_max
  Millis backoff_max{std::chrono::minutes(5)};
  std::string ca_file;
  bool allow_http = false;           // a plain http:// URL
  std::string file;                  // where it was configured, for messages
};

// "sha256=<hex of HMAC-SHA256(secret, body)>".
std::string hook_signature(const std::string& secret, const std::string& body);

class HookDispatcher {
 public:
  HookDispatcher(boost::asio::io_context& io, JobStore& store, HttpClient& http, WorkerRunner& runner,
                 std::vector<HookConfig> hooks);
  // Queues what the store holds past the hooks' cursor (events of a serve that died before
  // queueing them), then delivers whatever is due.
  void start();
  void stop();
  void on_event(const EngineEvent& e);
  const std::vector<HookConfig>& hooks() const { return hooks_; }
  // Prometheus lines: deliveries by hook and result, dead letters by hook.
  std::string metrics();

 private:
  void catch_up();
  void pump();
  void schedule(Millis delay);
  void deliver(const HookDelivery& d, const HookConfig& hook);
  void finished(const HookDelivery& d, const HookConfig& hook, bool ok, const std::string& error);
  bool matches(const HookConfig& h, const std::string& kind, const std::string& host, const std::string& pipeline) const;

  boost::asio::io_context& io_;
  JobStore& store_;
  HttpClient& http_;
  WorkerRunner& runner_;
  std::vector<HookConfig> hooks_;
  boost::asio::steady_timer timer_;
  std::set<int64_t> in_flight_;
  bool stopped_ = true;
  std::map<std::pair<std::string, std::string>, uint64_t> results_;  // (hook, result) -> count
};

}  // namespace jarvis
