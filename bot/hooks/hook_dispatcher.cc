#include "bot/hooks/hook_dispatcher.h"

#include <fnmatch.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <random>

#include <boost/asio/post.hpp>

#include "bot/util/json.h"
#include "bot/util/log.h"

namespace jarvis {

std::string hook_signature(const std::string& secret, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  static const char* hex = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[mac[i] >> 4];
    out += hex[mac[i] & 15];
  }
  return out;
}

HookDispatcher::HookDispatcher(boost::asio::io_context& io, JobStore& store, HttpClient& http, WorkerRunner& runner,
                               std::vector<HookConfig> hooks)
    : io_(io), store_(store), http_(http), runner_(runner), hooks_(std::move(hooks)), timer_(io) {}

void HookDispatcher::start() {
  stopped_ = false;
  try {
    // Pins the cursor where it is (on a store new to hooks: its newest event), so that the
    // events from now on are queued even if this serve dies before the first of them is.
    store_.queue_hook_deliveries(store_.hook_cursor(), {}, now_ms());
  } catch (const StoreError& e) {
    log::error(log::kNoJob, "hooks: cannot record where delivery starts: {}", e.what());
  }
  catch_up();
  pump();
}

void HookDispatcher::stop() {
  stopped_ = true;
  timer_.cancel();
}

bool HookDispatcher::matches(const HookConfig& h, const std::string& kind, const std::string& host,
                             const std::string& pipeline) const {
  if (h.events.empty() ? kind == "stage_log" : std::find(h.events.begin(), h.events.end(), kind) == h.events.end())
    return false;
  if (!h.hosts.empty() &&
      std::none_of(h.hosts.begin(), h.hosts.end(), [&](const auto& g) { return ::fnmatch(g.c_str(), host.c_str(), 0) == 0; }))
    return false;
  if (!h.pipelines.empty() && std::find(h.pipelines.begin(), h.pipelines.end(), pipeline) == h.pipelines.end())
    return false;
  return true;
}

void HookDispatcher::on_event(const EngineEvent& e) {
  if (stopped_ || !e.id) return;  // an event the store could not keep cannot be delivered durably
  catch_up();
  pump();
}

// Everything past the cursor, from the store: the live event just stored, or what a serve
// that died (or a failed write) left unqueued. One path, so nothing is skipped.
void HookDispatcher::catch_up() {
  try {
    for (;;) {
      auto events = store_.events_after(store_.hook_cursor(), 200);
      for (const auto& ev : events) {
        std::string host, pipeline;
        try {
          auto doc = parse_json_object(ev.json, 1 << 20);
          host = json_text(doc, "host");
          pipeline = json_text(doc, "pipeline");
        } catch (const std::exception&) {
        }
        std::vector<std::string> names;
        for (const auto& h : hooks_)
          if (matches(h, ev.kind, host, pipeline)) names.push_back(h.name);
        store_.queue_hook_deliveries(ev.id, names, now_ms());
      }
      if (events.size() < 200) break;
    }
  } catch (const StoreError& e) {
    // The cursor did not move: the next event (or the next start) queues these again.
    log::error(log::kNoJob, "hooks: cannot queue events for delivery: {}; retrying with the next event", e.what());
    schedule(Millis(2000));
  }
}

void HookDispatcher::schedule(Millis delay) {
  if (stopped_) return;
  timer_.expires_after(delay);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    catch_up();
    pump();
  });
}

void HookDispatcher::pump() {
  if (stopped_) return;
  std::vector<HookDelivery> due;
  try {
    due = store_.due_hook_deliveries(now_ms(), 64);
  } catch (const StoreError& e) {
    log::warn(log::kNoJob, "hooks: cannot read due deliveries: {}", e.what());
  }
  for (const auto& d : due) {
    if (in_flight_.size() >= 16) break;
    if (in_flight_.count(d.id)) continue;
    auto hook = std::find_if(hooks_.begin(), hooks_.end(), [&](const auto& h) { return h.name == d.hook; });
    if (hook == hooks_.end()) continue;  // a hook removed from the config: kept, not sent
    in_flight_.insert(d.id);
    deliver(d, *hook);
  }
  schedule(Millis(500));  // retries come due by the clock
}

void HookDispatcher::deliver(const HookDelivery& d, const HookConfig& hook) {
  // The body is the event as the API's event stream sends it, with its id for idempotence.
  std::string body = d.event_json.size() > 1 ? "{\"id\":" + std::to_string(d.event_id) + "," + d.event_json.substr(1)
                                             : "{\"id\":" + std::to_string(d.event_id) + "}";
  if (!hook.url.empty()) {
    HttpRequest r;
    r.method = "POST";
    r.url = hook.url;
    r.body = body;
    r.timeout = hook.timeout;
    r.allow_http = hook.allow_http;
    r.ca_file = hook.ca_file;
    r.max_bytes = 64 * 1024;
    r.max_redirects = 0;
    r.headers = {"Content-Type: application/json", "User-Agent: jarvis-hooks",
                 "X-Jarvis-Event: " + d.event_kind, "X-Jarvis-Event-Id: " + std::to_string(d.event_id),
                 "X-Jarvis-Delivery: " + std::to_string(d.id)};
    if (!hook.secret.empty()) r.headers.push_back("X-Jarvis-Signature: " + hook_signature(hook.secret, body));
    http_.fetch(std::move(r), [this, d, hook](HttpResponse resp) {
      std::string error = resp.ok() ? "" : !resp.error.empty() ? resp.error : "HTTP status " + std::to_string(resp.status);
      finished(d, hook, resp.ok(), error);
    });
    return;
  }
  WorkerInvocation inv;
  inv.executable = hook.command.front();
  inv.argv = hook.command;
  inv.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "JARVIS_HOOK=" + hook.name,
             "JARVIS_EVENT_ID=" + std::to_string(d.event_id), "JARVIS_EVENT_KIND=" + d.event_kind};
  inv.input = body;
  inv.timeout = hook.timeout;
  runner_.start(std::move(inv), [](std::string_view) {}, [this, d, hook](WorkerOutcome out) {
    std::string error;
    if (!out.succeeded()) {
      error = out.kind == WorkerOutcome::Kind::TimedOut ? "timed out"
              : out.kind == WorkerOutcome::Kind::SpawnFailed ? out.error
              : "exit status " + std::to_string(out.code);
      if (!out.stderr_tail.empty()) error += ": " + out.stderr_tail.back();
    }
    finished(d, hook, out.succeeded(), error);
  });
}

void HookDispatcher::finished(const HookDelivery& d, const HookConfig& hook, bool ok, const std::string& error) {
  in_flight_.erase(d.id);
  int attempts = d.attempts + 1;
  std::string state = ok ? "delivered" : attempts >= hook.max_attempts ? "dead" : "pending";
  int64_t next = 0;
  if (state == "pending") {
    Millis delay = std::min<Millis>(Millis(hook.backoff.count() * (int64_t{1} << std::min(attempts - 1, 20))), hook.backoff_max);
    static std::mt19937 rng{std::random_device{}()};
    delay = Millis(static_cast<int64_t>(static_cast<double>(delay.count()) * std::uniform_real_distribution<>(0.8, 1.2)(rng)));
    next = now_ms() + delay.count();
  }
  ++results_[{hook.name, ok ? "delivered" : state == "dead" ? "dead" : "failed"}];
  if (!ok) {
    if (state == "dead")
      log::error(log::kNoJob, "hook {}: event {} is a dead letter after {} attempts: {} (GET /api/v1/hooks/dead)",
                 hook.name, d.event_id, attempts, error);
    else
      log::warn(log::kNoJob, "hook {}: event {} attempt {} failed: {}; retrying", hook.name, d.event_id, attempts, error);
  }
  try {
    store_.hook_attempt_done(d.id, state, next, std::string(error.substr(0, 500)));
  } catch (const StoreError& e) {
    // Not recorded: the delivery stays due and is attempted again (at least once, not exactly once).
    log::error(log::kNoJob, "hook {}: cannot record delivery {}: {}", hook.name, d.id, e.what());
  }
  if (!stopped_) boost::asio::post(io_, [this] { pump(); });
}

std::string HookDispatcher::metrics() {
  std::string out = "# HELP jarvis_hook_deliveries_total Hook delivery attempts by result, since this serve started.\n"
                    "# TYPE jarvis_hook_deliveries_total counter\n";
  for (const auto& h : hooks_)
    for (const char* r : {"delivered", "failed", "dead"})
      out += "jarvis_hook_deliveries_total{hook=\"" + h.name + "\",result=\"" + r + "\"} " +
             std::to_string(results_[{h.name, r}]) + "\n";
  out += "# HELP jarvis_hook_dead_letters Deliveries given up on, kept in the store.\n# TYPE jarvis_hook_dead_letters gauge\n";
  std::map<std::string, int> dead;
  for (const auto& h : hooks_) dead[h.name] = 0;
  try {
    for (const auto& d : store_.dead_hook_deliveries(10000)) ++dead[d.hook];
  } catch (const StoreError&) {
  }
  for (const auto& [name, n] : dead) out += "jarvis_hook_dead_letters{hook=\"" + name + "\"} " + std::to_string(n) + "\n";
  return out;
}

}  // namespace jarvis
