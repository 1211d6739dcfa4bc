#pragma once
// Everything the bot says on one chat connection goes through its outbox: lines are split to
// the protocol's length, held while offline, and paced by token buckets (one for the whole
// connection, one per target) so the server never disconnects the bot for flooding. When a
// target falls behind, its queued progress lines are merged into summary lines: batched,
// never dropped short of the bounds below. Every line is made chat-safe (chat_text.h).
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
  size_t coalesce_at = 3;          // queued progress lines per target before merging
  // Bounds, so that no one can grow the bot's memory by making it talk: lines queued for one
  // target (past it the oldest progress line goes, else the oldest line), and targets kept
  // (idle ones are forgotten first).
  size_t max_queued = 1000;
  size_t max_targets = 1000;
};

// Splits `text` into pieces of at most `max_bytes`, at spaces where possible and never
// inside a UTF-8 character; CR, LF and NUL become spaces.
std::vector<std::string> split_line(const std::string& text, size_t max_bytes);

class Outbox {
 public:
  Outbox(boost::asio::io_context& io, ChatAdapter& adapter, OutboxLimits limits);

  // Queues `text` (made chat-safe: chat_safe_text) for `target`; progress lines may be
  // merged with others when busy.
  void send(const std::string& target, const std::string& text, bool progress = false);
  void pause();   // disconnected: hold everything
  void resume();  // connected and rooms joined: deliver what waited
  size_t pending() const;
  size_t targets() const { return targets_.size(); }

 private:
  struct Entry {
    std::string line;
    bool progress;
  };
  struct Target {
    std::deque<Entry> queue;
    TokenBucket bucket;
  };
  void schedule(TokenBucket::Clock::duration delay);
  void flush();
  std::string next_line(Target& t);

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
