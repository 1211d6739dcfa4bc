#pragma once
// libircclient connects to the server and sends PASS/NICK/USER at once, speaks no TLS and
// knows no IRCv3 (no CAP, no SASL, no message tags). The relay sits between it and the
// server, on the bot's io_context: it makes the connection itself (TLS through asio::ssl,
// certificate verified against the server name by default, or plain TCP), listens on an
// ephemeral loopback port for exactly the one connection libircclient makes (checked by its
// port), and splices the two.
//
// With `Ircv3::caps` it also speaks IRCv3 for libircclient, which then never sees it:
// - it sends CAP LS before libircclient's first byte reaches the server, so the server holds
//   registration until the relay's CAP END: SASL (PLAIN or EXTERNAL) is done before the bot
//   is registered, and a failed login ends the connection instead of registering without it
//   (unless `sasl_required` is false);
// - CAP, AUTHENTICATE and the SASL numerics are answered here and not forwarded; message
//   tags are stripped, extended JOINs rewritten to plain ones and ACCOUNT lines swallowed;
// - from account-tag, extended-join and account-notify it
//   learns, in stream order, the services account of the sender of each PRIVMSG it
//   forwards, which the adapter takes with account_of() when libircclient delivers it.
#include <array>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include "bot/chat/chat_adapter.h"

namespace jarvis {

enum class SaslMechanism { None, Plain, External };

struct Ircv3 {
  bool caps = false;  // run CAP negotiation at all
  bool accounts = false;  // ask for account-notify, extended-join, account-tag
  SaslMechanism sasl = SaslMechanism::None;
  std::string sasl_username;  // PLAIN's authentication identity
  std::string sasl_password;  // PLAIN; never logged
  bool sasl_required = true;  // a failed login ends the connection
};

// One IRC line split into its parts (tags dropped): ":prefix COMMAND p1 p2 :trailing".
struct IrcLine {
  std::string tags;  // without the '@'
  std::string prefix;  // without the ':'
  std::string command;
  std::vector<std::string> params;
};
std::optional<IrcLine> parse_irc_line(std::string_view line);
// The value of `key` in a tag string ("account=alice;time=..."), unescaped; nullopt if absent.
std::optional<std::string> irc_tag(std::string_view tags, std::string_view key);
// An account name as the server gave it, if it is one word of printable characters (at
// most 64 bytes); otherwise "" (no account), so nothing odd reaches the ACL or the logs.
std::string checked_account(std::string_view account);
// SASL PLAIN's AUTHENTICATE payloads: base64 of "user\0user\0password" in 400-byte pieces,
// and a "+" after a last piece of exactly 400.
std::vector<std::string> sasl_plain_chunks(const std::string& user, const std::string& password);

class IrcRelay : public std::enable_shared_from_this<IrcRelay> {
 public:
  using Ready = std::function<void(const std::string& error, unsigned short local_port)>;
  using Closed = std::function<void(const std::string& reason)>;
  // What the server said about the bot's own login, once: the account, or why not.
  using LoggedIn = std::function<void(const std::string& account)>;

  // `tls` null: a plain TCP connection.
  IrcRelay(boost::asio::io_context& io, boost::asio::ssl::context* tls, Ircv3 v3);
  // Connects (and completes the TLS handshake with `server`, verifying its certificate for
  // `host_name` unless `verify` is false), then opens the loopback listener; `ready` gets
  // its port or an error.
  void start(const boost::asio::ip::tcp::endpoint& server, const std::string& host_name,
             bool verify, Ready ready, Closed closed);
  // Accepts the loopback connection whose client port is `client_port`, then splices.
  void accept_from(unsigned short client_port);
  void close();
  void on_logged_in(LoggedIn f) { logged_in_ = std::move(f); }

  // The account of the sender of the PRIVMSG libircclient is now delivering, in the order
  // they were forwarded: "" when the server says they are logged out, nullopt when nothing
  // says (then ask WHOIS). Entries for lines libircclient did not deliver are skipped.
  std::optional<std::string> account_of(const std::string& origin, const std::string& target,
                                        const std::string& text);
  // Whether the server gave the account capabilities (after negotiation).
  bool has_account_tag() const { return acked_.count("account-tag") > 0; }
  bool has_account_notify() const { return acked_.count("account-notify") > 0; }
  bool has_extended_join() const { return acked_.count("extended-join") > 0; }

 private:
  void accept();
  void read_up();    // local -> server
  void read_down();  // server -> local
  void send_up(std::string bytes);
  void send_down(std::string bytes);
  void flush_up();
  void flush_down();
  void on_server_line(std::string line);
  bool negotiate(const IrcLine& l);  // true: the line was the relay's, not libircclient's
  void learn(const IrcLine& l);
  void cap_end();
  void fail(const std::string& reason);
  template <typename F> void read_upstream(boost::asio::mutable_buffer b, F f);
  template <typename F> void write_upstream(boost::asio::const_buffer b, F f);
  boost::asio::ip::tcp::socket& upstream_socket();
  std::string fold(std::string_view nick) const;

  std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls_;
  boost::asio::ip::tcp::socket plain_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::socket local_;
  unsigned short expected_port_ = 0;
  std::array<char, 8192> up_buf_{}, down_buf_{};
  std::deque<std::string> up_q_, down_q_;
  bool up_writing_ = false, down_writing_ = false;
  Closed closed_;
  LoggedIn logged_in_;
  bool closing_ = false;

  Ircv3 v3_;
  enum class Phase { Off, Listing, Requesting, Authenticating, Done } phase_ = Phase::Off;
  std::string server_buf_;  // a partial line from the server
  std::map<std::string, std::string> offered_;  // CAP LS: name -> value
  std::map<std::string, bool> acked_;
  std::vector<std::string> plain_chunks_;
  std::string own_nick_;
  CaseMapping casemapping_ = CaseMapping::Rfc1459;
  // Accounts known from extended-join and account-notify (kept true by account-notify while
  // the bot shares a channel with them), by folded nick; "" = logged out.
  std::map<std::string, std::string> accounts_;
  struct Delivered {
    std::string origin, target, text;
    std::optional<std::string> account;
  };
  std::deque<Delivered> delivered_;
};

}  // namespace jarvis
