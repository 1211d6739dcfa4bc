#pragma once
// A chat front: one protocol connection, the chain every incoming line goes through
// (addressed to the bot? -> who is it -> ACL -> rate limit -> command), and the outbox that
// carries replies and announcements back.
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/chat/chat_adapter.h"
#include "bot/chat/outbox.h"
#include "bot/chat/reconnect.h"
#include "bot/commands/acl.h"
#include "bot/commands/command_service.h"
#include "bot/util/token_bucket.h"

namespace jarvis {

struct ChatFrontConfig {
  std::string prefix = "!";              // "!status loki"; empty to turn off
  std::vector<std::string> rooms;        // joined on every connect
  OutboxLimits outbox;
  double commands_per_second = 0.5;      // per person, after a burst
  double command_burst = 5;
  // Refusals (ACL, rate limit): one reply and one audit row per person per window; the rest
  // of the window's refusals are one audit row saying how many, and get no reply.
  Millis refusal_window{std::chrono::minutes(1)};
  size_t max_people = 10000;             // per-person state kept at most (the idlest goes)
  Backoff backoff;
};

class ChatFront : public ChatAdapter::Listener {
 public:
  ChatFront(boost::asio::io_context& io, ChatAdapter& adapter, CommandService& commands,
            const Acl& acl, ChatFrontConfig config);
  void start();
  void stop();

  // Announcements and other unprompted lines ("#ops", or a user for a direct message).
  // `key` names what the line is the progress of (a job): edited in place where possible.
  void say(const std::string& target, const std::string& text, bool progress,
           const std::string& key = {});
  const std::string& protocol() const { return protocol_; }
  bool connected() const { return adapter_.connected(); }
  size_t pending() const { return outbox_.pending(); }
  const ReconnectSupervisor& supervisor() const { return supervisor_; }

  void on_connected() override;
  void on_disconnected(const std::string& reason) override;
  // Never throws: a message that fails is logged with this front and the front carries on.
  void on_message(const ChatMessage& message) override;
  size_t people() const { return people_.size(); }

 private:
  using Clock = TokenBucket::Clock;
  // One person, as a nick change does not reset it (account, or user@host on IRC).
  struct Person {
    TokenBucket bucket;
    Clock::time_point last_seen{};
    Clock::time_point window_start{};  // of the current refusal window
    bool answered = false;             // told (and audited) in this window already
    int unanswered = 0;                // refused since, silently: one audit row at the end
    Requester who;                     // for that row
  };
  void handle(const ChatMessage& message);
  Person& person(const Identity& who, Clock::time_point now);
  void refuse(Person& p, const Requester& who, const std::string& reply_to, const std::string& text,
              const std::string& line, const std::string& why);
  void close_window(Person& p);
  void sweep();  // timer: writes the rows of ended windows, forgets idle people

  ChatAdapter& adapter_;
  CommandService& commands_;
  const Acl& acl_;
  ChatFrontConfig config_;
  std::string protocol_;
  Outbox outbox_;
  ReconnectSupervisor supervisor_;
  std::unordered_map<std::string, Person> people_;
  boost::asio::steady_timer sweep_timer_;
};

}  // namespace jarvis
