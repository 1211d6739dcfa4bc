#include "bot/chat/chat_front.h"

#include "bot/chat/addressing.h"
#include "bot/util/log.h"

namespace jarvis {

ChatFront::ChatFront(boost::asio::io_context& io, ChatAdapter& adapter, CommandService& commands,
                     const Acl& acl, ChatFrontConfig config)
    : adapter_(adapter), commands_(commands), acl_(acl), config_(std::move(config)),
      protocol_(adapter.protocol()), outbox_(io, adapter, config_.outbox),
      supervisor_(io, adapter, config_.rooms, *this, config_.backoff) {}

void ChatFront::start() { supervisor_.start(); }
void ChatFront::stop() { supervisor_.stop(); }

void ChatFront::say(const std::string& target, const std::string& text, bool progress,
                    const std::string& key) {
  if (!key.empty() && adapter_.update_in_place(target, key, text)) return;
  outbox_.send(target, text, progress);
}

void ChatFront::on_connected() {
  // Rooms were joined by the supervisor; what queued while offline goes out now, paced.
  outbox_.resume();
}

void ChatFront::on_disconnected(const std::string&) { outbox_.pause(); }

void ChatFront::on_message(const ChatMessage& m) {
  auto text = addressed_command(m.text, adapter_.own_name(), config_.prefix, m.direct());
  if (!text) return;  // not for the bot
  // Replies go back where the command came from: the room, or the person.
  std::string reply_to = m.direct() ? m.sender.name : m.room;
  Requester who;
  who.who = m.sender.name;
  who.protocol = protocol_;
  who.place = m.direct() ? "@" + m.sender.name : m.room;
  who.id = m.sender.label();
  who.may = [this, m](Verb v) { return acl_.allows(m.sender, m.room, v); };

  auto parsed = parse_command(*text);
  if (parsed.command && !acl_.allows(m.sender, m.room, parsed.command->verb)) {
    std::string verb(verb_name(parsed.command->verb));
    std::string line = m.sender.name + ": you may not " + verb + (m.direct() ? "" : " here") +
                       "; ask an admin to add you to the ACL";
    commands_.audit_refusal(who, *text, "not allowed by the ACL");
    log::warn(log::kNoJob, "{} refused {} in {}: not allowed by the ACL", who.id, verb, who.place);
    outbox_.send(reply_to, line);
    return;
  }
  auto [it, inserted] = rate_.try_emplace(m.sender.label(), config_.commands_per_second,
                                          config_.command_burst);
  if (!it->second.take()) {
    commands_.audit_refusal(who, *text, "rate limited");
    outbox_.send(reply_to, m.sender.name + ": slow down; try again in a few seconds");
    return;
  }
  auto deliver = [this, reply_to](Reply r) {
    for (const auto& line : r.lines) outbox_.send(reply_to, line);
  };
  if (parsed.command) commands_.run(*parsed.command, who, deliver);
  else commands_.handle(*text, who, deliver);  // reports (and audits) the parse error
}

}  // namespace jarvis
