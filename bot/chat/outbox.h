#pragma once
// Everything the bot says on one chat connection goes through its outbox: lines are split to
// the protocol's length, held while offline, and paced by token buckets (one for the whole
// connection, one per target) so the server never disconnects the bot for flooding. Replies
// to commands go out ahead of every queued announcement. When a target falls behind (more
// queued than its tokens can send now), a job's queued progress line is dropped for the
// newer line about the same job queued after it (its newest state, or its end), and
// queued lines of the same group ("alice: deploying", "alice: ready:") are merged into one
// ("alice: deploying web01, web02 (jobs 3, 4)"). Nothing but stale progress is dropped short
// of the bounds below. Every line is made chat-safe (chat_text.h).
#include <deque>
#include <map>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/chat/chat_adapter.h"
#include "bot/util/token_bucket.h"

namespace jarvis {

struct OutboxLimits {
  double per_second = 1.0;         // whole connection, after the burst
  double burst = 3.0;
  double target_per_second = 1.0;  // one room or user
  double target_burst = 3.0;
  size_t coalesce_at = 3;          // unused; kept so that aggregate initialisers still read
  // Bounds, so that no one can grow the bot's memory by making it talk: lines queued for one
  // target (past it the oldest progress line goes, else the oldest line), and targets kept
  // (idle ones are forgotten first).
  size_t max_queued = 1000;
  size_t max_targets = 1000;
};

// Splits `text` into pieces of at most `max_bytes`, at spaces where possible and never
// inside a UTF-8 character; CR, LF and NUL become spaces.
std::vector<std::string> split_line(const std::string& text, size_t max_bytes);

// One line to send, and what the outbox may do with it while it waits.
struct OutLine {
  enum class Kind {
    Reply,     // the answer to a command: ahead of every announcement
    Progress,  // a job's progress: replaced by a newer line about the same job while queued
    Final,     // a job's end (ready, failed, cancelled): never dropped; drops its queued progress
    Notice,    // anything else, in order
  };
  OutLine() = default;
  OutLine(std::string text_, Kind kind_ = Kind::Notice, std::string key_ = {})
      : text(std::move(text_)), kind(kind_), key(std::move(key_)) {}
  std::string text;
  Kind kind = Kind::Notice;
  std::string key;    // the job the line is about ("job 17"), for Progress and Final
  // Lines of the same group queued together merge: group + " " + items + " (jobs ...)".
  std::string group;  // "alice: deploying", "alice: ready:"; empty: never merged
  std::string item;   // "web01"
  int64_t job = 0;
  bool mentions = false;  // names the person it is for (an end line in a room)
};

class Outbox {
 public:
  Outbox(boost::asio::io_context& io, ChatAdapter& adapter, OutboxLimits limits);

  // Queues `text` (made chat-safe: chat_safe_text) for `target`; progress lines may be
  // merged with others when busy.
  void send(const std::string& target, const std::string& text, bool progress = false);
  void send(const std::string& target, OutLine line);
  void reply(const std::string& target, const std::string& text) {
    send(target, OutLine{text, OutLine::Kind::Reply});
  }
  void pause();   // disconnected: hold everything
  void resume();  // connected and rooms joined: deliver what waited
  size_t pending() const;
  size_t targets() const { return targets_.size(); }

 private:
  using Entry = OutLine;
  struct Target {
    std::deque<Entry> replies;  // sent first
    std::deque<Entry> queue;    // announcements, in order
    TokenBucket bucket;
    size_t size() const { return replies.size() + queue.size(); }
  };
  void schedule(TokenBucket::Clock::duration delay);
  void flush();
  std::string next_line(Target& t, bool behind);
  void compact(Target& t);
  std::string merge(std::deque<Entry>& queue, Entry first);

  ChatAdapter& adapter_;
  OutboxLimits limits_;
  TokenBucket total_;
  std::map<std::string, Target> targets_;
  std::string last_target_;  // round-robin position
  size_t dropped_ = 0;       // lines dropped at the bounds, not yet logged
  bool paused_ = true;
  bool scheduled_ = false;
  boost::asio::steady_timer timer_;
};

}  // namespace jarvis
