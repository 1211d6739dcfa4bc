#include "bot/chat/chat_front.h"

#include <boost/asio/post.hpp>

#include <algorithm>

#include "bot/chat/addressing.h"
#include "bot/chat/chat_text.h"
#include "bot/util/log.h"

namespace jarvis {
namespace {

// The part of an identity a nick change keeps: the account, or user@host of nick!user@host.
std::string person_key(const Identity& id) {
  if (!id.account.empty()) return id.protocol + ":account:" + id.account;
  const std::string& full = id.full.empty() ? id.name : id.full;
  auto bang = full.find('!');
  return id.protocol + ":" + (bang == std::string::npos ? full : full.substr(bang + 1));
}

// Where a direct message reaches this person and nobody else, or empty when the server
// does not say (an anonymous XMPP occupant).
std::string direct_place(const Identity& id) {
  if (id.anonymous) return {};
  if (!id.direct.empty()) return id.direct;
  if (id.protocol == "xmpp") {
    // In a room, the real JID the room shows; its bare form is the person.
    auto slash = id.full.find('/');
    return id.full.empty() ? std::string() : id.full.substr(0, slash);
  }
  return id.name;
}

}  // namespace

ChatFront::ChatFront(boost::asio::io_context& io, ChatAdapter& adapter, CommandService& commands,
                     const Acl& acl, ChatFrontConfig config)
    : adapter_(adapter), commands_(commands), acl_(acl), config_(std::move(config)),
      protocol_(adapter.protocol()), outbox_(io, adapter, config_.outbox),
      supervisor_(io, adapter, config_.rooms, *this, config_.backoff), sweep_timer_(io),
      drain_timer_(io) {}

void ChatFront::start() {
  supervisor_.start();
  sweep();
}

void ChatFront::stop() {
  supervisor_.stop();
  sweep_timer_.cancel();
}

void ChatFront::say(const std::string& target, const std::string& text, bool progress,
                    const std::string& key) {
  say(target, OutLine{text, progress ? OutLine::Kind::Progress : OutLine::Kind::Notice, key});
}

void ChatFront::say(const std::string& target, OutLine line) {
  if (!line.key.empty() && line.kind != OutLine::Kind::Reply &&
      adapter_.update_in_place(target, line.key, chat_safe_text(line.text))) {
    // An edited message notifies nobody: an end that names someone is also a new message.
    if (line.kind != OutLine::Kind::Final || !line.mentions) return;
    line.key.clear();
  }
  outbox_.send(target, std::move(line));
}

void ChatFront::on_refused(const std::string& place, const std::string& reason) {
  auto& r = refusals_[place];
  ++r.count;
  r.reason = reason;
  if (r.count == 1 || r.count % 100 == 0)
    log::warn(log::kNoJob, "{}: the server refused a line for {}: {} ({} refused there so far)", protocol_,
              place, reason, r.count);
}

void ChatFront::drain_and_quit(const std::string& reason, std::function<void()> done) {
  draining_ = true;
  sweep_timer_.cancel();
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(config_.drain_timeout);
  auto step = std::make_shared<std::function<void()>>();
  *step = [this, reason, done, deadline, step] {
    bool idle = outbox_.pending() == 0 && adapter_.unsent() == 0;
    if (!adapter_.connected() || idle || Clock::now() >= deadline) {
      if (!idle && adapter_.connected())
        log::warn(log::kNoJob, "{}: leaving with {} lines undelivered after {}", protocol_,
                  outbox_.pending() + adapter_.unsent(), format_duration(config_.drain_timeout));
      supervisor_.stop_with(reason);
      if (done) done();
      // Breaks the step -> lambda -> step cycle, but later: clearing it here would destroy the
      // lambda that is running (and its captures) under our feet.
      boost::asio::post(drain_timer_.get_executor(), [step] { *step = nullptr; });
      return;
    }
    drain_timer_.expires_after(std::chrono::milliseconds(20));
    drain_timer_.async_wait([step](const boost::system::error_code& ec) {
      if (!ec && *step) (*step)();
    });
  };
  (*step)();
}

void ChatFront::on_connected() {
  // Rooms were joined by the supervisor; what queued while offline goes out now, paced.
  outbox_.resume();
}

void ChatFront::on_disconnected(const std::string&) { outbox_.pause(); }

void ChatFront::on_message(const ChatMessage& m) {
  try {
    handle(m);
  } catch (const std::exception& e) {
    log::error(log::kNoJob, "{}: a message from {} failed inside jarvis: {}", protocol_,
               m.sender.label(), e.what());
  }
}

ChatFront::Person& ChatFront::person(const Identity& who, Clock::time_point now) {
  std::string key = person_key(who);
  auto it = people_.find(key);
  if (it == people_.end()) {
    if (people_.size() >= config_.max_people) {
      auto idlest = std::min_element(people_.begin(), people_.end(), [](const auto& a, const auto& b) {
        return a.second.last_seen < b.second.last_seen;
      });
      close_window(idlest->second);
      people_.erase(idlest);
    }
    it = people_.try_emplace(key).first;
    it->second.bucket = TokenBucket(config_.commands_per_second, config_.command_burst);
  }
  it->second.last_seen = now;
  return it->second;
}

void ChatFront::handle(const ChatMessage& m) {
  if (draining_) return;  // stopping: a command now would get no answer
  auto text = addressed_command(m.text, adapter_.own_name(), config_.prefix, m.direct());
  if (!text) return;  // not for the bot
  // Replies go back where the command came from: the room, or the person (and only them).
  std::string reply_to = m.direct() ? m.sender.direct_target() : !m.reply_target.empty() ? m.reply_target : m.room;
  Requester who;
  who.who = m.sender.name;
  who.protocol = protocol_;
  who.place = m.direct() ? "@" + m.sender.direct_target() : m.room;
  who.id = m.sender.label();
  who.may = [this, m](Verb v) { return acl_.allows(m.sender, m.room, v); };

  // The rate limit comes first: a refused command costs the same as any other, so nobody
  // can flood the channel (or the audit trail) with refusals.
  auto now = Clock::now();
  Person& p = person(m.sender, now);
  if (!p.bucket.take(now))
    return refuse(p, who, reply_to, *text, m.sender.name + ": slow down; try again in a few seconds",
                  "rate limited");
  auto parsed = parse_command(*text);
  if (parsed.command && !acl_.allows(m.sender, m.room, parsed.command->verb)) {
    std::string verb(verb_name(parsed.command->verb));
    return refuse(p, who, reply_to, *text,
                  m.sender.name + ": you may not " + verb + (m.direct() ? "" : " here") + "; ask " +
                      (config_.acl_contact.empty() ? std::string("an admin") : config_.acl_contact) +
                      " to add you to the ACL",
                  "not allowed by the ACL");
  }
  // A long answer asked in a room goes to the asker, where they can read it at their pace.
  std::string verb = parsed.command ? std::string(verb_name(parsed.command->verb)) : "";
  std::string to_person = m.direct() || verb.empty() ||
                                  std::find(config_.direct_answers.begin(), config_.direct_answers.end(), verb) ==
                                      config_.direct_answers.end()
                              ? std::string()
                              : direct_place(m.sender);
  auto deliver = [this, reply_to, to_person, verb, name = m.sender.name](Reply r) {
    try {
      if (!to_person.empty() && r.lines.size() > 1) {
        for (const auto& line : r.lines) outbox_.reply(to_person, line);
        outbox_.reply(reply_to, name + ": I sent you the answer to \"" + verb + "\" (" +
                                    std::to_string(r.lines.size()) + " lines) in a direct message");
        return;
      }
      for (const auto& line : r.lines) {
        OutLine out{line, OutLine::Kind::Reply};
        if (r.lines.size() == 1 && !r.group.empty()) {
          out.group = r.group;
          out.item = r.item;
          out.job = r.job;
        }
        outbox_.send(reply_to, std::move(out));
      }
    } catch (const std::exception& e) {
      log::error(log::kNoJob, "{}: cannot send a reply to {}: {}", protocol_, reply_to, e.what());
    }
  };
  if (parsed.command) commands_.run(*parsed.command, who, deliver);
  else commands_.handle(*text, who, deliver);  // reports (and audits) the parse error
}

void ChatFront::refuse(Person& p, const Requester& who, const std::string& reply_to,
                       const std::string& text, const std::string& line, const std::string& why) {
  auto now = Clock::now();
  if (now - p.window_start >= config_.refusal_window) {
    close_window(p);
    p.window_start = now;
    p.answered = false;
  }
  if (p.answered) {
    ++p.unanswered;
    p.who = who;
    return;
  }
  p.answered = true;
  commands_.audit_refusal(who, text, why);
  log::warn(log::kNoJob, "{} refused in {}: {}", who.id, who.place, why);
  outbox_.reply(reply_to, line);
}

void ChatFront::close_window(Person& p) {
  if (p.unanswered == 0) return;
  std::string n = std::to_string(p.unanswered);
  commands_.audit_refusal(p.who, "(" + n + " more commands)",
                          n + " more refused (ACL or rate limit) within " +
                              format_duration(config_.refusal_window) + ", not answered");
  p.unanswered = 0;
}

void ChatFront::sweep() {
  auto now = Clock::now();
  // Someone idle this long has a full bucket and no open window: forgetting them changes
  // nothing, and keeps the map as small as the people actually talking.
  auto idle = std::max(std::chrono::duration_cast<Clock::duration>(config_.refusal_window),
                       std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                           config_.command_burst / config_.commands_per_second)));
  for (auto it = people_.begin(); it != people_.end();) {
    if (now - it->second.window_start >= config_.refusal_window) close_window(it->second);
    if (now - it->second.last_seen > idle && it->second.unanswered == 0) it = people_.erase(it);
    else ++it;
  }
  sweep_timer_.expires_after(std::max(config_.refusal_window / 2, Millis(10)));
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) sweep();
  });
}

}  // namespace jarvis
