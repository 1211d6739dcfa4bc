#pragma once
// IRC through libircclient (the design card's choice), driven from the asio loop: its socket
// is watched as a descriptor and libircclient only ever processes what asio reported ready.
// Around it: name resolution off the loop (asio's resolver; libircclient would block in
// gethostbyname), TLS, CAP, SASL and the IRCv3 account capabilities through IrcRelay, nick fallback and recovery, our own keepalive (the
// library has none), NickServ, and CR/LF cleaning of every outgoing line.
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/chat/chat_adapter.h"
#include "bot/chat/irc/irc_relay.h"
#include "bot/util/duration.h"

struct irc_session_s;

namespace jarvis {

struct IrcConfig {
  std::string server = "127.0.0.1";
  unsigned short port = 6697;
  bool tls = true;
  bool tls_verify = true;        // off only for a server you trust on a network you trust
  std::string tls_ca_file;       // trust this CA (or self-signed certificate) instead of the system's
  std::string tls_server_name;   // name the certificate must carry; defaults to `server`
  std::string nick = "jarvis";
  std::string username = "jarvis";
  std::string realname = "jarvis deploy bot";
  std::string server_password;   // read from an environment variable or a file, never inline
  // IDENTIFY goes only to this services target, qualified by the services server
  // ("NickServ@services.example.net"), so a client that took the nick NickServ on a network
  // without services never gets the password; and only over verified TLS unless allowed.
  std::string nickserv_target;
  std::string nickserv_password;
  bool allow_plaintext_identify = false;
  // The bot's own login with SASL, before registration (PLAIN: sasl_username, or the nick,
  // and sasl_password; EXTERNAL: the TLS client certificate below). sasl_required: a login
  // that fails ends the connection rather than registering without it.
  SaslMechanism sasl = SaslMechanism::None;
  std::string sasl_username;
  std::string sasl_password;
  bool sasl_required = true;
  std::string tls_client_cert;  // PEM certificate (chain) and key, for SASL EXTERNAL
  std::string tls_client_key;
  // Learn each sender's services account (account-tag, extended-join, account-notify,
  // WHOIS 330), so irc:account: ACL rules can match. Needs a network with services.
  bool accounts = false;
  Millis ping_interval{std::chrono::seconds(60)};  // quiet this long: we PING the server
  Millis ping_timeout{std::chrono::seconds(120)};  // quiet this long: the link is dead
  Millis register_timeout{std::chrono::seconds(30)};
  Millis nick_recover_interval{std::chrono::seconds(60)};
};

// Removes what could end an IRC line or smuggle a second command into it, and the
// formatting, colour and bidi codes chat_safe_text removes.
std::string clean_irc_text(std::string_view text);
// A services target with its server, "NickServ@services.example.net".
bool is_server_qualified_target(std::string_view target);
// The nick!user@host masks in a USERHOST reply ("alice=+al@host bob*=-b@h"), keyed by nick.
std::vector<std::pair<std::string, std::string>> parse_userhost_reply(std::string_view reply);
// A target (nick or channel) is sent only if it cannot carry anything but a name.
bool is_safe_irc_target(std::string_view target);

class IrcAdapter : public ChatAdapter {
 public:
  IrcAdapter(boost::asio::io_context& io, IrcConfig config);
  ~IrcAdapter() override;

  std::string protocol() const override { return "irc"; }
  std::string own_name() const override { return own_nick_; }
  void set_listener(Listener* l) override { listener_ = l; }
  void connect() override;
  void disconnect() override;
  // QUIT with `reason` after every queued line, then waits (2 s at most) for the server to
  // close the connection, so the QUIT is not lost in the relay.
  void quit(const std::string& reason) override;
  size_t unsent() const override;
  bool connected() const override { return registered_; }
  void join(const std::string& room) override;
  // `target` is a channel, a nick, or a person's full mask (nick!user@host, from
  // Identity::direct): then the line goes only if USERHOST shows the nick still has that
  // user@host, so someone who took the nick after its owner left never receives it.
  void send(const std::string& target, const std::string& line) override;
  size_t max_line_bytes() const override { return 400; }
  std::string identity_source() const override;

  // libircclient callbacks land here (public for the C trampolines).
  void on_connect_event(const char* nick);
  void on_nick_event(const char* origin, const char* new_nick);
  void on_message_event(const char* origin, const char* target, const char* text);
  void on_numeric_event(unsigned int code, const char** params, unsigned int count);
  void on_unknown_event(const char* event, const char** params, unsigned int count);
  void on_kick_event(const char* channel, const char* kicked);
  void on_join_event(const char* origin, const char* channel);

 private:
  struct Wants {
    int fd = -1;
    bool ok = false, read = false, write = false;
  };
  // What libircclient wants to do on its socket now (irc_add_select_descriptors).
  Wants wants() const;
  void start_session(const std::string& address, unsigned short port);
  void watch();
  void process(bool readable, bool writable);
  void feed();  // moves queued lines into libircclient while it has room
  void keepalive();
  void teardown(const std::string& reason);
  void recover_nick();
  void identify();
  void queue_direct(const std::string& mask, const std::string& line);
  void on_userhost(const std::string& reply);
  void deliver(ChatMessage m);
  void resolve_whois(bool found);
  void expire_held();  // messages whose WHOIS got no answer in 10 s: from no account

  boost::asio::io_context& io_;
  IrcConfig config_;
  Listener* listener_ = nullptr;
  boost::asio::ip::tcp::resolver resolver_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  std::shared_ptr<IrcRelay> relay_;
  irc_session_s* session_ = nullptr;
  std::unique_ptr<boost::asio::posix::stream_descriptor> socket_;
  bool read_armed_ = false, write_armed_ = false, process_posted_ = false;
  boost::asio::steady_timer keepalive_timer_, nick_timer_, quit_timer_, whois_timer_;
  bool whois_timer_armed_ = false;
  std::string quit_reason_ = "jarvis stopping";
  std::chrono::steady_clock::time_point last_heard_;
  bool ping_sent_ = false;
  bool registered_ = false;
  bool active_ = false;  // between connect() and teardown
  int generation_ = 0;   // handlers from an older connection ignore themselves
  std::string own_nick_;
  int nick_attempt_ = 0;
  std::deque<std::string> raw_queue_;  // lines waiting for room in libircclient's buffer
  std::vector<std::string> rooms_;     // joined, for rejoin after a kick
  // Rooms asked for but not yet confirmed by the server, with when the JOIN was queued;
  // the keepalive tick asks again for any that stay unconfirmed.
  std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>> joining_;
  std::string last_error_;
  CaseMapping casemapping_ = CaseMapping::Rfc1459;  // until the server's 005 says otherwise
  // Direct lines waiting for USERHOST to confirm who holds the nick, by full mask, and the
  // masks asked about, in the order the server answers.
  std::map<std::string, std::deque<std::string>> direct_waiting_;
  std::deque<std::string> userhost_asked_;
  // Messages whose sender's account nothing told us, held (in order) until WHOIS answers.
  struct Held {
    ChatMessage message;
    bool resolved = false;
    std::chrono::steady_clock::time_point since;
  };
  std::deque<Held> held_;
  struct Whois {
    std::string nick, userhost, account;
    bool seen_user = false;
  };
  std::deque<Whois> whois_asked_;
};

}  // namespace jarvis
