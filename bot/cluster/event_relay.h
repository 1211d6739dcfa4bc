#pragma once
// Events across nodes (docs/scaling.md). On a shared store every node writes its engine's
// events to the event table (EventPublisher); the one node that leads "chat" (a lease row)
// holds the chat connections and reads the table with a cursor kept beside its lease
// (ChatLeadership), woken by LISTEN/NOTIFY and polling every second, so an event is announced
// once, by whichever node leads, whichever node ran the job.
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/pipeline/engine.h"
#include "bot/store/job_store.h"

namespace jarvis {

std::string encode_event(const EngineEvent& event);
std::optional<EngineEvent> decode_event(const std::string& json);

class EventPublisher {
 public:
  EventPublisher(boost::asio::io_context& io, JobStore& store);
  // Appends the event (not worker log lines: those stay in the job's log). While the store
  // cannot be written they wait here, in order, up to 10,000. The engine stores its own
  // events as it emits them (Engine::emit); serve gives this only the store failures, which
  // the engine cannot store itself.
  void on_event(const EngineEvent& event);
  size_t backlog() const { return backlog_.size(); }

 private:
  void flush();
  JobStore& store_;
  std::deque<std::pair<EngineEvent, int64_t>> backlog_;
  boost::asio::steady_timer retry_;
  bool retrying_ = false;
  size_t dropped_ = 0;
};

class ChatLeadership {
 public:
  struct Hooks {
    std::function<void()> gained;                     // start the chat fronts
    std::function<void()> lost;                       // stop them (this node stops)
    std::function<void(const EngineEvent&)> event;    // announce one event
  };
  ChatLeadership(boost::asio::io_context& io, JobStore& store, std::string holder, Millis ttl, Hooks hooks);
  void start();
  void stop();
  // New events may be in the table (a NOTIFY): read them now rather than at the next tick.
  void poke();
  bool leading() const { return leading_; }

 private:
  void tick();
  void drain();
  JobStore& store_;
  std::string holder_;
  Millis ttl_;
  Hooks hooks_;
  boost::asio::steady_timer timer_;
  bool leading_ = false, stopped_ = false;
  int64_t cursor_ = 0;
  std::chrono::steady_clock::time_point last_renewal_{};
};

}  // namespace jarvis
