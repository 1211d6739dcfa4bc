#pragma once
// The seam every chat protocol implements (IRC, later XMPP and Slack, and an in-memory one
// for tests): connect, join rooms, hear messages, send one line to a room or a user.
// Reconnecting, flood control, addressing, ACL and commands live above it, once.
#include <cstddef>
#include <string>

namespace jarvis {

// How a server compares names (IRC's CASEMAPPING): ascii folds A-Z only; rfc1459 also folds
// []\~ to {}|^ (so "bob[m]" and "BOB{M}" are one nick); strict-rfc1459 folds []\ only.
enum class CaseMapping { Ascii, Rfc1459, StrictRfc1459 };

struct Identity {
  std::string protocol;  // "irc"
  std::string name;      // what to call them: the IRC nick
  std::string full;      // what the server vouches for: nick!user@host on IRC
  std::string account;   // services account, when the server says
  bool anonymous = false;  // the server hides who this is (an XMPP room without real JIDs)
  CaseMapping casemapping = CaseMapping::Ascii;  // how the ACL folds masks and names for them
  // Where direct messages reach this person and nobody else, when that is not `name`: on IRC
  // the full mask, which the adapter checks before each send (a nick can change hands).
  std::string direct{};
  const std::string& direct_target() const { return direct.empty() ? name : direct; }
  // For the audit trail and logs: "irc:alice_!alice@host (account alice)".
  std::string label() const {
    return protocol + ":" + (full.empty() ? name : full) + (account.empty() ? "" : " (account " + account + ")");
  }
};

struct ChatMessage {
  Identity sender;
  std::string room;  // "#ops"; empty for a direct message
  std::string text;
  // Where a reply to this message goes when that is not `room` itself: a Slack thread
  // ("C0OPS/1700000000.000100"). Empty: the room (or the person, for a direct message).
  std::string reply_target{};
  bool direct() const { return room.empty(); }
};

class ChatAdapter {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void on_connected() = 0;
    virtual void on_disconnected(const std::string& reason) = 0;
    virtual void on_message(const ChatMessage& message) = 0;
    // The server refused to deliver a line to `place` (IRC 404/403/471-477, an XMPP error
    // stanza, Slack's not_in_channel): the reason as the server gave it.
    virtual void on_refused(const std::string& /*place*/, const std::string& /*reason*/) {}
    // The server confirmed the bot is in `place` (IRC's JOIN echo, XMPP's self-presence), or,
    // with as_room false, that `place` is a person (an XMPP JID that is no room), whom lines
    // reach as direct messages.
    virtual void on_joined(const std::string& /*place*/, bool /*as_room*/) {}
  };

  virtual ~ChatAdapter() = default;
  virtual std::string protocol() const = 0;
  // The name people address the bot by right now (an IRC nick may have fallen back).
  virtual std::string own_name() const = 0;
  virtual void set_listener(Listener* listener) = 0;
  // Starts connecting; the listener hears on_connected or on_disconnected later, never inline.
  virtual void connect() = 0;
  virtual void disconnect() = 0;
  // Leaves for good, saying why where the protocol can (IRC QUIT with the reason).
  virtual void quit(const std::string& /*reason*/) { disconnect(); }
  // Lines handed over but not yet written to the server (IRC's own queue); 0 when idle.
  virtual size_t unsent() const { return 0; }
  virtual bool connected() const = 0;
  virtual void join(const std::string& room) = 0;
  // Sends one line (no CR/LF: the caller splits; the adapter still cleans) to a room or user.
  virtual void send(const std::string& target, const std::string& line) = 0;
  // Where the protocol can edit a message it sent (Slack), the progress of one thing (`key`,
  // a job) in one place is one message, edited to show `line`; true when the adapter took
  // the line. IRC and XMPP cannot: false, and the caller sends it as a new line.
  virtual bool update_in_place(const std::string& /*target*/, const std::string& /*key*/,
                               const std::string& /*line*/) {
    return false;
  }
  // How the server vouches for who people are, once connected, in words for check-config
  // --online ("account-tag", "WHOIS (330) only"); empty where the protocol says nothing more
  // than its identities (XMPP's JIDs, Slack's user ids).
  virtual std::string identity_source() const { return {}; }
  // The longest line the protocol carries safely, in bytes.
  virtual size_t max_line_bytes() const = 0;
};

}  // namespace jarvis
