#pragma once
// One reconnect policy for every protocol: on disconnect, wait (exponential backoff with
// jitter), connect again, rejoin the rooms, then tell the front it is back.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/chat/chat_adapter.h"
#include "bot/util/duration.h"

namespace jarvis {

struct Backoff {
  Millis initial{1000};
  Millis max{std::chrono::minutes(1)};
  double jitter = 0.2;  // +/- this fraction of each delay
};

class ReconnectSupervisor : public ChatAdapter::Listener {
 public:
  ReconnectSupervisor(boost::asio::io_context& io, ChatAdapter& adapter,
                      std::vector<std::string> rooms, ChatAdapter::Listener& front,
                      Backoff backoff = {});
  void start();
  void stop();
  void stop_with(const std::string& reason);  // leaves saying why (IRC QUIT), no reconnect
  int reconnects() const { return reconnects_; }

  void on_connected() override;
  void on_disconnected(const std::string& reason) override;
  void on_message(const ChatMessage& message) override { front_.on_message(message); }
  void on_refused(const std::string& place, const std::string& reason) override {
    front_.on_refused(place, reason);
  }
  void add_room(const std::string& room) {
    if (std::find(rooms_.begin(), rooms_.end(), room) == rooms_.end()) rooms_.push_back(room);
  }
  const std::vector<std::string>& rooms() const { return rooms_; }

 private:
  ChatAdapter& adapter_;
  std::vector<std::string> rooms_;
  ChatAdapter::Listener& front_;
  Backoff backoff_;
  Millis next_delay_;
  boost::asio::steady_timer timer_;
  std::mt19937 rng_{std::random_device{}()};
  bool stopped_ = false;
  int reconnects_ = 0;
};

}  // namespace jarvis
