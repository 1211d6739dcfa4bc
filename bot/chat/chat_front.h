#pragma once
// A chat front: one protocol connection, the chain every incoming line goes through
// (addressed to the bot? -> who is it -> ACL -> rate limit -> command), and the outbox that
// carries replies and announcements back.
#include <functional>
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
  // Answers of more than one line to these commands, asked in a room, go to the asker
  // directly, with one line in the room saying so.
  std::vector<std::string> direct_answers = {"help", "plan", "log", "jobs"};
  // Who can grant a right the ACL refuses ("#ops-admins", "ops@example.com"); a refusal
  // names them. Empty: "an admin".
  std::string acl_contact;
  // On SIGTERM: how long the outbox may take to deliver what is queued before the bot quits.
  Millis drain_timeout{std::chrono::seconds(5)};
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
  void say(const std::string& target, OutLine line);
  // A room to join at every connect besides the configured ones (an announce place).
  void add_room(const std::string& room) { supervisor_.add_room(room); }
  // Stops taking commands, gives the outbox up to drain_timeout to deliver what is queued,
  // then leaves with `reason` (IRC QUIT) and calls `done`.
  void drain_and_quit(const std::string& reason, std::function<void()> done);
  // Lines the server refused to deliver, by place, with the last reason.
  struct Refusals {
    size_t count = 0;
    std::string reason;
  };
  const std::map<std::string, Refusals>& refusals() const { return refusals_; }
  const std::string& protocol() const { return protocol_; }
  bool connected() const { return adapter_.connected(); }
  size_t pending() const { return outbox_.pending(); }
  const ReconnectSupervisor& supervisor() const { return supervisor_; }

  void on_connected() override;
  void on_disconnected(const std::string& reason) override;
  // Never throws: a message that fails is logged with this front and the front carries on.
  void on_message(const ChatMessage& message) override;
  void on_refused(const std::string& place, const std::string& reason) override;
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
  std::map<std::string, Refusals> refusals_;
  bool draining_ = false;
  boost::asio::steady_timer drain_timer_;
};

}  // namespace jarvis
