#pragma once
// A chat front: one protocol connection, the chain every incoming line goes through
// (addressed to the bot? -> who is it -> ACL -> rate limit -> command), and the outbox that
// carries replies and announcements back.
#include <map>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

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
  void on_message(const ChatMessage& message) override;

 private:
  ChatAdapter& adapter_;
  CommandService& commands_;
  const Acl& acl_;
  ChatFrontConfig config_;
  std::string protocol_;
  Outbox outbox_;
  ReconnectSupervisor supervisor_;
  std::map<std::string, TokenBucket> rate_;  // per identity
};

}  // namespace jarvis
