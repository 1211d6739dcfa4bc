#include "bot/cluster/event_relay.h"

#include <algorithm>

#include "bot/util/json.h"
#include "bot/util/log.h"

namespace jarvis {
using Kind = EngineEvent::Kind;

namespace {
constexpr Kind kKinds[] = {Kind::JobQueued,     Kind::JobStarted,     Kind::StageStarted, Kind::StageLog,
                           Kind::StageSucceeded, Kind::StageRetrying, Kind::JobReady,     Kind::JobFailed,
                           Kind::JobCancelled,  Kind::StoreFailed,    Kind::StoreRecovered, Kind::StoreLost,
                           Kind::ConfirmationNeeded, Kind::Confirmed, Kind::Notice};
constexpr size_t kMaxBacklog = 10000;
constexpr int kBatch = 500;
}  // namespace

// One encoding for every reader of the event table: the engine's (bot/pipeline/engine.cc).
std::string encode_event(const EngineEvent& e) { return event_json(e); }

std::optional<EngineEvent> decode_event(const std::string& json) {
  try {
    YAML::Node n = parse_json_object(json, 256 * 1024);
    EngineEvent e;
    std::string kind = json_text(n, "kind");
    // The names are the engine's own (event_kind_name), so the two cannot drift apart.
    const Kind* k = std::find_if(std::begin(kKinds), std::end(kKinds), [&](Kind c) { return event_kind_name(c) == kind; });
    if (k == std::end(kKinds)) return std::nullopt;
    e.kind = *k;
    auto num = [&](const char* key) { return std::strtoll(json_text(n, key).c_str(), nullptr, 10); };
    e.job = num("job");
    e.host = json_text(n, "host");
    e.stage = static_cast<int>(num("stage"));
    e.stage_count = static_cast<int>(num("stage_count"));
    e.task = json_text(n, "task");
    e.attempt = static_cast<int>(num("attempt"));
    e.text = json_text(n, "text");
    e.elapsed = Millis(num("elapsed_ms"));
    e.delay = Millis(num("delay_ms"));
    e.requested_by = json_text(n, "requested_by");
    e.pipeline = json_text(n, "pipeline");
    e.origin = json_text(n, "origin");
    return e;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

EventPublisher::EventPublisher(boost::asio::io_context& io, JobStore& store) : store_(store), retry_(io) {}

void EventPublisher::on_event(const EngineEvent& event) {
  if (event.kind == Kind::StageLog) return;
  if (backlog_.size() >= kMaxBacklog) {
    ++dropped_;
    return;
  }
  backlog_.emplace_back(event, now_ms());
  flush();
}

void EventPublisher::flush() {
  while (!backlog_.empty()) {
    const auto& [event, at] = backlog_.front();
    try {
      store_.append_event(at, event.job, std::string(event_kind_name(event.kind)), encode_event(event));
    } catch (const StoreError& e) {
      if (!retrying_) {
        retrying_ = true;
        retry_.expires_after(std::chrono::seconds(1));
        retry_.async_wait([this](const boost::system::error_code& ec) {
          retrying_ = false;
          if (!ec) flush();
        });
      }
      return;
    }
    backlog_.pop_front();
  }
  if (dropped_) {
    log::error(log::kNoJob, "{} events could not be stored for the other nodes (the backlog was full)", dropped_);
    dropped_ = 0;
  }
}

ChatLeadership::ChatLeadership(boost::asio::io_context& io, JobStore& store, std::string holder, Millis ttl,
                               Hooks hooks)
    : store_(store), holder_(std::move(holder)), ttl_(ttl), hooks_(std::move(hooks)), timer_(io) {}

void ChatLeadership::start() { tick(); }

void ChatLeadership::stop() {
  stopped_ = true;
  timer_.cancel();
  if (!leading_) return;
  leading_ = false;
  try {
    drain();  // what is stored is handed to the fronts, which drain before they quit
    store_.resign("chat", holder_);
    log::info(log::kNoJob, "gave up the chat leadership; another node takes the connections over");
  } catch (const StoreError& e) {
    log::warn(log::kNoJob, "could not give up the chat leadership ({}); another node takes over after the lease", e.what());
  }
}

void ChatLeadership::poke() {
  if (leading_ && !stopped_) drain();
}

void ChatLeadership::tick() {
  if (stopped_) return;
  auto now = std::chrono::steady_clock::now();
  bool held = false;
  bool answered = true;
  try {
    held = store_.lead("chat", holder_, ttl_);
  } catch (const StoreError& e) {
    answered = false;
    held = leading_;  // cannot tell: keep what we had, until the lease would have run out
  }
  if (answered && held) last_renewal_ = now;
  if (leading_ && (!held || now - last_renewal_ > ttl_)) {
    leading_ = false;
    log::error(log::kNoJob, "this node lost the chat leadership (its lease of {} was not renewed in time); "
                            "another node holds the chat connections now",
               format_duration(ttl_));
    if (hooks_.lost) hooks_.lost();
    return;
  }
  if (!leading_ && held && answered) {
    leading_ = true;
    try {
      cursor_ = store_.leader_cursor("chat");
    } catch (const StoreError&) {
      leading_ = false;  // try again at the next tick
    }
    if (leading_) {
      log::info(log::kNoJob, "this node leads chat now ({}); announcing events after {}", holder_, cursor_);
      if (hooks_.gained) hooks_.gained();
    }
  }
  if (leading_) drain();
  timer_.expires_after(ttl_ / 5);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) tick();
  });
}

// Announces what was stored after the cursor, then moves the cursor, which lives with the
// lease: the next leader continues after the last batch this one handed to its fronts.
void ChatLeadership::drain() {
  try {
    for (int round = 0; round < 10; ++round) {
      auto events = store_.events_after(cursor_, kBatch);
      if (events.empty()) return;
      for (const auto& stored : events)
        if (auto ev = decode_event(stored.json)) hooks_.event(*ev);
      cursor_ = events.back().id;
      if (!store_.save_leader_cursor("chat", holder_, cursor_)) {
        log::warn(log::kNoJob, "the chat leadership moved while announcing (cursor {})", cursor_);
        return;
      }
      if (static_cast<int>(events.size()) < kBatch) return;
    }
  } catch (const StoreError& e) {
    // Read again from the cursor at the next tick.
  }
}

}  // namespace jarvis
