#pragma once
// XMPP through gloox, driven from the asio loop. gloox's own connect() resolves and connects
// with blocking calls, so the loop does that part (asio's resolver and an async connect) and
// hands gloox a connected socket; from then on the socket is watched by asio and gloox only
// reads when asio says it is readable. TLS is required and the certificate decision (made by
// gloox's onTLSConnect callback) is ours: anything but a valid chain to a trusted CA for the
// server's name is refused. Rooms are joined without history, and any delayed (replayed)
// message is ignored, so an old command is never run again.
#include <map>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/chat/chat_adapter.h"
#include "bot/util/duration.h"

namespace jarvis {

struct XmppConfig {
  std::string jid;          // the bot's account, bare: jarvis@example.com
  std::string password;     // from an environment variable or a file, never inline
  std::string server;       // host to connect to; default: the JID's domain (no SRV lookup)
  unsigned short port = 5222;
  std::string resource = "jarvis";
  std::string nick = "jarvis";  // in rooms
  // Trust this CA bundle (or self-signed certificate); default: the system's bundle.
  std::string tls_ca_file = "/etc/ssl/certs/ca-certificates.crt";
  Millis connect_timeout{std::chrono::seconds(20)};
  Millis ping_interval{std::chrono::seconds(60)};  // XMPP ping; 2.5 intervals of silence = dead
  // MUC services whose real JIDs the ACL believes (a MUC on another server can claim any JID
  // for its occupants). Empty: the JID's domain and its subdomains (conference.example.com).
  std::vector<std::string> trusted_muc_domains;
};

// Whether the real JIDs shown by the MUC service `service` are believed.
bool trusts_muc_service(const XmppConfig& config, const std::string& service);

// Words for gloox's certificate status bits ("signer unknown, wrong peer").
std::string describe_cert_status(int status);

class XmppSession;  // the gloox side (handlers), in the .cc

class XmppAdapter : public ChatAdapter {
 public:
  XmppAdapter(boost::asio::io_context& io, XmppConfig config);
  ~XmppAdapter() override;

  std::string protocol() const override { return "xmpp"; }
  std::string own_name() const override { return config_.nick; }
  void set_listener(Listener* l) override { listener_ = l; }
  void connect() override;
  void disconnect() override;
  bool connected() const override { return connected_; }
  void join(const std::string& room) override;
  void send(const std::string& target, const std::string& line) override;
  size_t max_line_bytes() const override { return 3000; }

  // From the session (gloox callbacks), on the loop.
  void session_connected();
  void session_disconnected(const std::string& reason);
  void session_message(const ChatMessage& message);
  void session_joined(const std::string& place, bool as_room);
  void session_refused(const std::string& place, const std::string& reason);

 private:
  void start_session(boost::asio::ip::tcp::socket socket);
  void watch();
  void teardown(const std::string& reason);
  void keepalive();

  boost::asio::io_context& io_;
  XmppConfig config_;
  Listener* listener_ = nullptr;
  boost::asio::ip::tcp::resolver resolver_;
  std::unique_ptr<boost::asio::ip::tcp::socket> connecting_;
  boost::asio::steady_timer connect_timer_, keepalive_timer_;
  std::unique_ptr<XmppSession> session_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> watcher_;
  bool active_ = false, connected_ = false, read_armed_ = false;
  std::chrono::steady_clock::time_point last_heard_;
  int generation_ = 0;
  // The generation, shared with the session's posted callbacks (which may outlive it).
  std::shared_ptr<int> current_gen_;
};

}  // namespace jarvis
