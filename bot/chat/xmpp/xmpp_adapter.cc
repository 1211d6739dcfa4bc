#include "bot/chat/xmpp/xmpp_adapter.h"

#include <fcntl.h>

#include <gloox/client.h>
#include <gloox/connectionlistener.h>
#include <gloox/connectiontcpclient.h>
#include <gloox/delayeddelivery.h>
#include <gloox/disco.h>
#include <gloox/discohandler.h>
#include <gloox/error.h>
#include <gloox/eventhandler.h>
#include <gloox/loghandler.h>
#include <gloox/message.h>
#include <gloox/messagehandler.h>
#include <gloox/mucroom.h>
#include <gloox/mucroomhandler.h>
#include <gloox/tlsdefault.h>

#include <deque>
#include <set>

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>

#include "bot/chat/chat_text.h"
#include "bot/util/log.h"
#include "bot/util/text.h"
#include "bot/util/utf8.h"

namespace jarvis {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

std::string describe_cert_status(int status) {
  static const std::pair<int, const char*> bits[] = {
      {gloox::CertInvalid, "not trusted"},        {gloox::CertSignerUnknown, "signer unknown"},
      {gloox::CertRevoked, "revoked"},            {gloox::CertExpired, "expired"},
      {gloox::CertNotActive, "not yet valid"},    {gloox::CertWrongPeer, "issued for another name"},
      {gloox::CertSignerNotCa, "signer is not a CA"}};
  std::string out;
  for (const auto& [bit, words] : bits)
    if (status & bit) out += (out.empty() ? "" : ", ") + std::string(words);
  return out.empty() ? "ok" : out;
}

bool trusts_muc_service(const XmppConfig& config, const std::string& service) {
  std::string s = lower(service);
  if (!config.trusted_muc_domains.empty()) {
    for (const auto& d : config.trusted_muc_domains)
      if (lower(d) == s) return true;
    return false;
  }
  std::string own = lower(config.jid.substr(config.jid.find('@') + 1));
  return s == own || (s.size() > own.size() && s.compare(s.size() - own.size(), own.size(), own) == 0 &&
                      s[s.size() - own.size() - 1] == '.');
}

namespace {

// RFC 6120's names for stanza errors, as a server's refusal is reported to people.
std::string stanza_error_name(gloox::StanzaError e) {
  switch (e) {
    case gloox::StanzaErrorBadRequest: return "bad-request";
    case gloox::StanzaErrorConflict: return "conflict";
    case gloox::StanzaErrorFeatureNotImplemented: return "feature-not-implemented";
    case gloox::StanzaErrorForbidden: return "forbidden";
    case gloox::StanzaErrorGone: return "gone";
    case gloox::StanzaErrorInternalServerError: return "internal-server-error";
    case gloox::StanzaErrorItemNotFound: return "item-not-found";
    case gloox::StanzaErrorJidMalformed: return "jid-malformed";
    case gloox::StanzaErrorNotAcceptable: return "not-acceptable";
    case gloox::StanzaErrorNotAllowed: return "not-allowed";
    case gloox::StanzaErrorNotAuthorized: return "not-authorized";
    case gloox::StanzaErrorRecipientUnavailable: return "recipient-unavailable";
    case gloox::StanzaErrorRegistrationRequired: return "registration-required";
    case gloox::StanzaErrorRemoteServerNotFound: return "remote-server-not-found";
    case gloox::StanzaErrorRemoteServerTimeout: return "remote-server-timeout";
    case gloox::StanzaErrorResourceConstraint: return "resource-constraint";
    case gloox::StanzaErrorServiceUnavailable: return "service-unavailable";
    case gloox::StanzaErrorSubscribtionRequired: return "subscription-required";
    case gloox::StanzaErrorUnexpectedRequest: return "unexpected-request";
    default: return "error " + std::to_string(static_cast<int>(e));
  }
}

std::string describe_connection_error(gloox::ConnectionError e, gloox::Client& c) {
  switch (e) {
    case gloox::ConnStreamError: return "stream error: " + c.streamErrorText();
    case gloox::ConnStreamClosed: return "the server closed the stream";
    case gloox::ConnIoError: return "connection lost";
    case gloox::ConnParseError: return "the server sent XML gloox could not parse";
    case gloox::ConnConnectionRefused: return "connection refused";
    case gloox::ConnNoSupportedAuth: return "no SASL mechanism in common with the server";
    case gloox::ConnTlsFailed: return "TLS failed";
    case gloox::ConnTlsNotAvailable: return "the server offers no TLS";
    case gloox::ConnAuthenticationFailed: return "authentication failed (wrong JID or password)";
    case gloox::ConnUserDisconnected: return "disconnected";
    case gloox::ConnNotConnected: return "not connected";
    default: return "connection error " + std::to_string(static_cast<int>(e));
  }
}

// gloox's TCP connection, given a socket the loop already connected, so that gloox never
// resolves or connects with its blocking calls.
class ConnectedTcp : public gloox::ConnectionTCPClient {
 public:
  ConnectedTcp(gloox::ConnectionDataHandler* handler, const gloox::LogSink& log,
               const std::string& server, int port, int fd)
      : ConnectionTCPClient(handler, log, server, port), fd_(fd) {}
  gloox::ConnectionError connect() override {
    if (fd_ < 0) return gloox::ConnNotConnected;  // used once; a reconnect builds a new one
    m_socket = fd_;
    fd_ = -1;
    m_state = gloox::StateConnected;
    m_cancel = false;
    if (m_handler) m_handler->handleConnect(this);
    return gloox::ConnNoError;
  }

 private:
  int fd_;
};

}  // namespace

// The gloox client and its handlers for one connection. Callbacks are posted to the
// adapter, never run inside gloox's own call stack (the adapter may destroy this object).
class XmppSession : public gloox::ConnectionListener,
                    public gloox::MessageHandler,
                    public gloox::MUCRoomHandler,
                    public gloox::LogHandler,
                    public gloox::EventHandler,
                    public gloox::DiscoHandler {
 public:
  XmppSession(XmppAdapter& adapter, asio::io_context& io, const XmppConfig& config, int fd, int gen,
              std::shared_ptr<int> current)
      : adapter_(adapter), io_(io), config_(config), gen_(gen), current_(std::move(current)),
        client_(gloox::JID(config.jid + "/" + config.resource), config.password) {
    client_.setTls(gloox::TLSRequired);
    client_.setCompression(false);
    client_.disableRoster();
    // Our own TLS object: gloox 1.0.24 builds its default one with the system's CAs only and
    // never loads the list given to Client::setCACerts; set on the object, the file is used.
    auto* tls = new gloox::TLSDefault(&client_, gloox::JID(config.jid).server());
    if (tls->init()) {
      if (!config.tls_ca_file.empty()) tls->setCACerts({config.tls_ca_file});
      client_.setEncryptionImpl(tls);  // the client owns it from here
    } else {
      delete tls;  // no TLS available: TLSRequired makes the login fail, loudly
    }
    client_.registerConnectionListener(this);
    client_.registerMessageHandler(this);
    // Warnings and errors only: gloox's debug areas carry raw XML, SASL included.
    client_.logInstance().registerLogHandler(gloox::LogLevelWarning, gloox::LogAreaAll, this);
    std::string server = config.server.empty() ? gloox::JID(config.jid).server() : config.server;
    client_.setConnectionImpl(new ConnectedTcp(&client_, client_.logInstance(), server, config.port, fd));
  }
  ~XmppSession() override {
    rooms_.clear();
    client_.removeConnectionListener(this);
    client_.logInstance().removeLogHandler(this);
  }

  bool start() { return client_.connect(false); }
  void read() { client_.recv(0); }
  void close() { client_.disconnect(); }
  // XEP-0199 to our server: the answer (like anything read) tells the adapter the link lives.
  void ping() {
    client_.xmppPing(gloox::JID(client_.jid().server()), this);
    // A room that did not exist may have been created since: look again, quietly.
    auto missing = std::move(missing_rooms_);
    missing_rooms_.clear();
    for (const auto& room : missing) join(room);
  }
  void handleEvent(const gloox::Event&) override {}  // the pong; reading it was the point

  // Rooms are never created by the bot (a new room gets the server's defaults, perhaps
  // public and logged): it asks the room's disco#info first and joins only one that answers.
  void join(const std::string& room) {
    int context = next_context_++;
    asked_rooms_[context] = room;
    wanted_rooms_.insert(room);
    client_.disco()->getDiscoInfo(gloox::JID(room), "", this, context);
  }
  std::string asked_room(int context) {
    auto it = asked_rooms_.find(context);
    if (it == asked_rooms_.end()) return {};
    std::string room = std::move(it->second);
    asked_rooms_.erase(it);
    return room;
  }
  void handleDiscoInfo(const gloox::JID&, const gloox::Disco::Info& info, int context) override {
    std::string room = asked_room(context);
    if (room.empty()) return;
    if (info.hasFeature("http://jabber.org/protocol/muc")) return join_existing(room);
    // A person (or any entity that is not a room): announcements go to it as chat messages.
    deliver_direct(room);
  }
  void handleDiscoItems(const gloox::JID&, const gloox::Disco::Items&, int) override {}
  void handleDiscoError(const gloox::JID& from, const gloox::Error* error, int context) override {
    gloox::StanzaError e = error ? error->error() : gloox::StanzaErrorUndefined;
    std::string room = asked_room(context);
    bool person = e == gloox::StanzaErrorServiceUnavailable || e == gloox::StanzaErrorFeatureNotImplemented ||
                  e == gloox::StanzaErrorSubscribtionRequired || e == gloox::StanzaErrorForbidden ||
                  e == gloox::StanzaErrorNotAuthorized || e == gloox::StanzaErrorNotAllowed;
    if (!room.empty() && person) {
      // Not a room service's "no such room": most likely a person's JID, whose server does
      // not answer disco for strangers. Send as chat; a real refusal comes back as an error.
      deliver_direct(room);
      return;
    }
    if (!room.empty()) missing_rooms_.push_back(room);
    if (!reported_rooms_.insert(from.bare()).second) return;  // said once per connection
    bool missing = e == gloox::StanzaErrorItemNotFound;
    log::error(log::kNoJob, "xmpp: room {} {}; not joining it yet (the bot never creates rooms; it looks again every ping_interval)",
               from.bare(), missing ? "does not exist" : "did not answer disco#info (" + stanza_error_name(e) + ")");
    std::string why = missing ? "item-not-found (no such room)" : stanza_error_name(e);
    if (!room.empty()) post([room, why](XmppAdapter& a) { a.session_refused(room, why); });
  }
  void deliver_direct(const std::string& jid) {
    wanted_rooms_.erase(jid);
    post([jid](XmppAdapter& a) { a.session_joined(jid, false); });
    auto waiting = waiting_lines_.extract(jid);
    if (waiting.empty()) return;
    for (const auto& text : waiting.mapped()) client_.send(gloox::Message(gloox::Message::Chat, gloox::JID(jid), text));
  }

  void join_existing(const std::string& room) {
    if (rooms_.count(room)) rooms_.erase(room);  // a fresh join (after a kick or an error)
    auto r = std::make_unique<gloox::MUCRoom>(&client_, gloox::JID(room + "/" + config_.nick), this, nullptr);
    r->setRequestHistory(0, gloox::MUCRoom::HistoryMaxStanzas);  // no replay of old commands
    r->join();
    // What was said to the room while it was being looked up goes out after the join.
    if (auto waiting = waiting_lines_.extract(room))
      for (const auto& text : waiting.mapped()) r->send(text);
    rooms_[room] = std::move(r);
  }

  void send(const std::string& target, const std::string& line) {
    // Invalid UTF-8 or a character XML 1.0 forbids would make the server close the stream.
    std::string text = chat_safe_text(line);
    if (auto it = rooms_.find(target); it != rooms_.end()) {
      it->second->send(text);
      return;
    }
    if (wanted_rooms_.count(target)) {  // not joined yet (disco#info on its way, or missing)
      auto& lines = waiting_lines_[target];
      if (lines.size() >= 200) lines.pop_front();
      lines.push_back(text);
      return;
    }
    gloox::JID to(target);
    if (!to || to.bare() != target) {
      log::warn(log::kNoJob, "xmpp: not sending to '{}': not a bare JID or joined room", utf8_prefix(target, 80));
      return;
    }
    gloox::Message m(gloox::Message::Chat, to, text);
    client_.send(m);
  }

  // gloox::ConnectionListener
  void onConnect() override {
    post([](XmppAdapter& a) { a.session_connected(); });
  }
  void onDisconnect(gloox::ConnectionError e) override {
    std::string reason = describe_connection_error(e, client_);
    if (!cert_problem_.empty()) reason = cert_problem_;
    post([reason](XmppAdapter& a) { a.session_disconnected(reason); });
  }
  bool onTLSConnect(const gloox::CertInfo& info) override {
    // The one certificate decision: a chain to a trusted CA, for this server, in its dates.
    if (info.status == gloox::CertOk) {
      log::info(log::kNoJob, "xmpp: TLS {} with {} (issuer {})", info.protocol, info.server, info.issuer);
      return true;
    }
    cert_problem_ = "TLS certificate refused (" + describe_cert_status(info.status) +
                    "; issuer " + std::string(utf8_prefix(info.issuer, 120)) + ")";
    log::error(log::kNoJob, "xmpp: {}; trust its CA with xmpp.tls_ca_file", cert_problem_);
    return false;
  }
  void onResourceBind(const std::string&) override {}
  void onResourceBindError(const gloox::Error*) override {}
  void onSessionCreateError(const gloox::Error*) override {}
  void onStreamEvent(gloox::StreamEvent) override {}

  // gloox::MessageHandler: one-to-one messages.
  // Nothing may unwind through gloox: a stanza that fails is logged and the stream goes on.
  template <typename F>
  void guard(const char* what, F f) {
    try {
      f();
    } catch (const std::exception& e) {
      log::error(log::kNoJob, "xmpp: handling a {} failed inside jarvis: {}", what, e.what());
    }
  }
  void handleMessage(const gloox::Message& msg, gloox::MessageSession*) override {
    guard("message", [&] { chat_message(msg); });
  }
  void chat_message(const gloox::Message& msg) {
    if (msg.subtype() == gloox::Message::Error) {  // a line of ours the server did not deliver
      std::string place = msg.from().bare();
      std::string why = stanza_error_name(msg.error() ? msg.error()->error() : gloox::StanzaErrorUndefined);
      post([place, why](XmppAdapter& a) { a.session_refused(place, why); });
      return;
    }
    if (msg.subtype() != gloox::Message::Chat && msg.subtype() != gloox::Message::Normal) return;
    if (msg.body().empty()) return;
    if (rooms_.count(msg.from().bare())) return;  // a private message through a room: anonymous
    if (msg.when()) {
      log::info(log::kNoJob, "xmpp: ignoring a delayed message from {} (stored while offline)", msg.from().bare());
      return;
    }
    ChatMessage m;
    m.sender.protocol = "xmpp";
    m.sender.name = msg.from().bare();  // what the server authenticated; replies go there
    m.sender.full = m.sender.name;
    m.text = msg.body();
    post([m](XmppAdapter& a) { a.session_message(m); });
  }

  // gloox::MUCRoomHandler
  void handleMUCParticipantPresence(gloox::MUCRoom* room, const gloox::MUCRoomParticipant p,
                                    const gloox::Presence& presence) override {
    guard("room presence", [&] { occupant_presence(room, p, presence); });
  }
  void occupant_presence(gloox::MUCRoom* room, const gloox::MUCRoomParticipant& p, const gloox::Presence& presence) {
    if (!p.nick) return;
    if ((p.flags & gloox::UserSelf) && presence.subtype() != gloox::Presence::Unavailable) {
      std::string place = room->name() + "@" + room->service();
      post([place](XmppAdapter& a) { a.session_joined(place, true); });
    }
    auto& occupants = occupants_[room->name() + "@" + room->service()];
    if (presence.subtype() == gloox::Presence::Unavailable) occupants.erase(p.nick->resource());
    // A real JID only from a MUC service we trust to tell the truth about it.
    else occupants[p.nick->resource()] = p.jid && trusted_service(room->service()) ? p.jid->bare() : std::string();
  }
  bool trusted_service(const std::string& service) {
    if (trusts_muc_service(config_, service)) return true;
    if (warned_services_.insert(service).second)
      log::warn(log::kNoJob, "xmpp: not trusting the real JIDs {} shows (not in xmpp.trusted_muc_domains); "
                "its occupants get the open commands only", service);
    return false;
  }
  void handleMUCMessage(gloox::MUCRoom* room, const gloox::Message& msg, bool priv) override {
    guard("room message", [&] { room_message(room, msg, priv); });
  }
  void room_message(gloox::MUCRoom* room, const gloox::Message& msg, bool priv) {
    if (priv || msg.body().empty()) return;
    if (msg.when()) return;  // history replayed on join: never run an old command again
    std::string nick = msg.from().resource();
    if (nick.empty() || nick == room->nick()) return;
    std::string room_jid = room->name() + "@" + room->service();
    ChatMessage m;
    m.room = room_jid;
    m.sender.protocol = "xmpp";
    m.sender.name = nick;
    auto& occupants = occupants_[room_jid];
    if (auto it = occupants.find(nick); it != occupants.end() && !it->second.empty()) {
      m.sender.full = it->second;  // the room shows real JIDs: the ACL sees the account
    } else {
      m.sender.full = room_jid + "/" + nick;
      m.sender.anonymous = true;  // no real JID: open commands only
    }
    m.text = msg.body();
    post([m](XmppAdapter& a) { a.session_message(m); });
  }
  bool handleMUCRoomCreation(gloox::MUCRoom* room) override {
    // The room vanished between disco#info and the join, so joining created it: undo that.
    log::error(log::kNoJob, "xmpp: room {}@{} did not exist and joining created it; destroying it "
               "(the bot never creates rooms)", room->name(), room->service());
    room->destroy("jarvis does not create rooms");
    return false;
  }
  void handleMUCSubject(gloox::MUCRoom*, const std::string&, const std::string&) override {}
  void handleMUCInviteDecline(gloox::MUCRoom*, const gloox::JID&, const std::string&) override {}
  // A join or a message the room refused (forbidden, not-acceptable when not an occupant,
  // registration-required for a members-only room ...).
  void handleMUCError(gloox::MUCRoom* room, gloox::StanzaError error) override {
    std::string place = room->name() + "@" + room->service();
    std::string why = stanza_error_name(error);
    post([place, why](XmppAdapter& a) { a.session_refused(place, why); });
  }
  void handleMUCInfo(gloox::MUCRoom*, int, const std::string&, const gloox::DataForm*) override {}
  void handleMUCItems(gloox::MUCRoom*, const gloox::Disco::ItemList&) override {}

  // gloox::LogHandler
  void handleLog(gloox::LogLevel level, gloox::LogArea, const std::string& message) override {
    if (level == gloox::LogLevelError) log::error(log::kNoJob, "xmpp: gloox: {}", utf8_prefix(message, 300));
    else log::warn(log::kNoJob, "xmpp: gloox: {}", utf8_prefix(message, 300));
  }

 private:
  template <typename F>
  void post(F f) {
    // Runs later on the loop, and only if this connection is still the adapter's current one.
    asio::post(io_, [&a = adapter_, gen = gen_, current = current_, f = std::move(f)] {
      if (*current == gen) f(a);
    });
  }

  XmppAdapter& adapter_;
  asio::io_context& io_;
  const XmppConfig& config_;
  int gen_;
  std::shared_ptr<int> current_;
  gloox::Client client_;
  std::map<std::string, std::unique_ptr<gloox::MUCRoom>> rooms_;
  std::map<std::string, std::map<std::string, std::string>> occupants_;  // room -> nick -> real JID
  std::string cert_problem_;
  std::map<int, std::string> asked_rooms_;  // disco#info context -> room
  int next_context_ = 0;
  std::set<std::string> wanted_rooms_;  // configured rooms, joined or not yet
  std::map<std::string, std::deque<std::string>> waiting_lines_;  // for rooms not joined yet
  std::vector<std::string> missing_rooms_;  // to look for again at the next ping
  std::set<std::string> reported_rooms_;
  std::set<std::string> warned_services_;
};

XmppAdapter::XmppAdapter(asio::io_context& io, XmppConfig config)
    : io_(io), config_(std::move(config)), resolver_(io), connect_timer_(io), keepalive_timer_(io) {}

XmppAdapter::~XmppAdapter() {
  active_ = false;
  ++generation_;
  if (watcher_) {
    boost::system::error_code ignored;
    watcher_->cancel(ignored);
    watcher_->release();  // gloox owns the socket and closes it
  }
  session_.reset();
}

void XmppAdapter::connect() {
  if (active_) return;
  active_ = true;
  int gen = ++generation_;
  std::string host = config_.server.empty() ? config_.jid.substr(config_.jid.find('@') + 1) : config_.server;
  connect_timer_.expires_after(config_.connect_timeout);
  connect_timer_.async_wait([this, gen](const boost::system::error_code& ec) {
    if (ec || gen != generation_ || connected_) return;
    teardown("no XMPP session after " + format_duration(config_.connect_timeout));
  });
  resolver_.async_resolve(host, std::to_string(config_.port),
                          [this, gen, host](const boost::system::error_code& ec, tcp::resolver::results_type results) {
    if (gen != generation_) return;
    if (ec || results.empty()) return teardown("cannot resolve " + host + ": " + ec.message());
    connecting_ = std::make_unique<tcp::socket>(io_);
    asio::async_connect(*connecting_, results, [this, gen](const boost::system::error_code& ec, const tcp::endpoint&) {
      if (gen != generation_) return;
      if (ec) return teardown("cannot connect: " + ec.message());
      auto socket = std::move(*connecting_);
      connecting_.reset();
      start_session(std::move(socket));
    });
  });
}

void XmppAdapter::start_session(tcp::socket socket) {
  int fd = socket.release();
  // gloox writes with plain blocking send(); the loop only ever waits for readability.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  current_gen_ = std::make_shared<int>(generation_);
  session_ = std::make_unique<XmppSession>(*this, io_, config_, fd, generation_, current_gen_);
  watcher_ = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
  read_armed_ = false;
  last_heard_ = std::chrono::steady_clock::now();
  if (!session_->start()) return teardown("gloox could not start the stream");
  watch();
  keepalive();
}

void XmppAdapter::watch() {
  if (!watcher_ || read_armed_) return;
  read_armed_ = true;
  int gen = generation_;
  watcher_->async_wait(asio::posix::stream_descriptor::wait_read, [this, gen](const boost::system::error_code& ec) {
    if (gen != generation_) return;
    read_armed_ = false;
    if (ec || !session_) return;
    last_heard_ = std::chrono::steady_clock::now();
    session_->read();  // gloox reads what is there and calls back (through the loop)
    watch();
  });
}

void XmppAdapter::keepalive() {
  int gen = generation_;
  keepalive_timer_.expires_after(config_.ping_interval);
  keepalive_timer_.async_wait([this, gen](const boost::system::error_code& ec) {
    if (ec || gen != generation_ || !session_) return;
    // Nothing heard for two pings and a half: the link is dead even if TCP has not noticed.
    auto quiet = std::chrono::steady_clock::now() - last_heard_;
    if (connected_ && quiet > config_.ping_interval * 5 / 2)
      return teardown("no answer from the server for " +
                      format_duration(std::chrono::duration_cast<Millis>(quiet)));
    if (connected_) session_->ping();
    keepalive();
  });
}

void XmppAdapter::session_connected() {
  connected_ = true;
  connect_timer_.cancel();
  log::info(log::kNoJob, "xmpp: logged in as {}/{}", config_.jid, config_.resource);
  if (listener_) listener_->on_connected();
}

void XmppAdapter::session_disconnected(const std::string& reason) { teardown(reason); }

void XmppAdapter::session_message(const ChatMessage& message) {
  if (listener_) listener_->on_message(message);
}

void XmppAdapter::session_joined(const std::string& place, bool as_room) {
  if (listener_) listener_->on_joined(place, as_room);
}

void XmppAdapter::session_refused(const std::string& place, const std::string& reason) {
  if (listener_) listener_->on_refused(place, reason);
}

void XmppAdapter::join(const std::string& room) {
  if (session_ && connected_) session_->join(room);
}

void XmppAdapter::send(const std::string& target, const std::string& line) {
  if (session_ && connected_) session_->send(target, line);
}

void XmppAdapter::disconnect() {
  if (!active_) return;
  if (session_ && connected_) session_->close();
  teardown("disconnected");
}

void XmppAdapter::teardown(const std::string& reason) {
  if (!active_) return;
  active_ = false;
  bool was_connected = connected_;
  connected_ = false;
  ++generation_;
  if (current_gen_) *current_gen_ = -1;
  boost::system::error_code ignored;
  resolver_.cancel();
  connect_timer_.cancel();
  keepalive_timer_.cancel();
  if (connecting_) connecting_->close(ignored);
  connecting_.reset();
  if (watcher_) {
    watcher_->cancel(ignored);
    watcher_->release();
    watcher_.reset();
  }
  session_.reset();  // gloox closes its socket
  log::warn(log::kNoJob, "xmpp: {}{}", was_connected ? "disconnected: " : "cannot log in: ", reason);
  if (listener_) listener_->on_disconnected(reason);
}

}  // namespace jarvis
