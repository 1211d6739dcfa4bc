#include "bot/chat/irc/irc_adapter.h"

#include <libircclient.h>
#include <libirc_rfcnumeric.h>
#include <strings.h>
#include <poll.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <boost/asio/post.hpp>

#include "bot/chat/chat_text.h"
#include "bot/chat/irc/irc_relay.h"
#include "bot/commands/mask.h"
#include "bot/util/log.h"
#include "bot/util/text.h"

namespace jarvis {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

std::string clean_irc_text(std::string_view text) { return chat_safe_text(text); }

bool is_server_qualified_target(std::string_view t) {
  auto at = t.find('@');
  return is_safe_irc_target(t) && at != std::string_view::npos && at > 0 && at + 1 < t.size() &&
         t.find('!') == std::string_view::npos && t.find('.', at) != std::string_view::npos &&
         t[0] != '#' && t[0] != '&';
}

std::vector<std::pair<std::string, std::string>> parse_userhost_reply(std::string_view reply) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < reply.size()) {
    size_t end = reply.find(' ', pos);
    std::string_view word = reply.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    pos = end == std::string_view::npos ? reply.size() : end + 1;
    auto eq = word.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 2 > word.size()) continue;
    std::string_view nick = word.substr(0, eq);
    if (nick.back() == '*') nick.remove_suffix(1);  // an operator
    std::string_view userhost = word.substr(eq + 1);
    if (userhost.front() == '+' || userhost.front() == '-') userhost.remove_prefix(1);  // away or not
    out.emplace_back(std::string(nick), std::string(userhost));
  }
  return out;
}

bool is_safe_irc_target(std::string_view t) {
  if (t.empty() || t.size() > 64 || t[0] == ':') return false;
  for (unsigned char c : t)
    if (c <= ' ' || c == ',' || c == 0x7f) return false;
  return true;
}

namespace {

IrcAdapter* self_of(irc_session_t* s) { return static_cast<IrcAdapter*>(irc_get_ctx(s)); }
const char* param(const char** params, unsigned count, unsigned i) {
  return i < count && params[i] ? params[i] : "";
}

// libircclient is C: nothing may unwind through it. A callback that throws is logged and the
// connection carries on with the next line.
template <typename F>
void guarded(irc_session_t* s, const char* what, F f) {
  try {
    f(self_of(s));
  } catch (const std::exception& e) {
    log::error(log::kNoJob, "irc: handling a {} failed inside jarvis: {}", what, e.what());
  }
}

void cb_connect(irc_session_t* s, const char*, const char*, const char** params, unsigned count) {
  guarded(s, "welcome", [&](IrcAdapter* a) { a->on_connect_event(param(params, count, 0)); });
}
void cb_nick(irc_session_t* s, const char*, const char* origin, const char** params, unsigned count) {
  guarded(s, "NICK", [&](IrcAdapter* a) { a->on_nick_event(origin ? origin : "", param(params, count, 0)); });
}
// libircclient tells channel and private messages apart by a prefix match on a nick it
// tracks wrongly; one handler decides from the target itself.
void cb_message(irc_session_t* s, const char*, const char* origin, const char** params, unsigned count) {
  guarded(s, "message", [&](IrcAdapter* a) {
    a->on_message_event(origin ? origin : "", param(params, count, 0), param(params, count, 1));
  });
}
void cb_numeric(irc_session_t* s, unsigned int code, const char*, const char** params, unsigned count) {
  guarded(s, "numeric reply", [&](IrcAdapter* a) { a->on_numeric_event(code, params, count); });
}
void cb_unknown(irc_session_t* s, const char* event, const char*, const char** params, unsigned count) {
  guarded(s, "server line", [&](IrcAdapter* a) { a->on_unknown_event(event ? event : "", params, count); });
}
void cb_join(irc_session_t* s, const char*, const char* origin, const char** params, unsigned count) {
  guarded(s, "JOIN", [&](IrcAdapter* a) { a->on_join_event(origin ? origin : "", param(params, count, 0)); });
}
void cb_kick(irc_session_t* s, const char*, const char*, const char** params, unsigned count) {
  guarded(s, "KICK", [&](IrcAdapter* a) { a->on_kick_event(param(params, count, 0), param(params, count, 1)); });
}
// Our own handler, so libircclient does not answer CTCP requests outside our flood control.
void cb_ignore(irc_session_t*, const char*, const char*, const char**, unsigned) {}

bool same_nick(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

IrcAdapter::IrcAdapter(asio::io_context& io, IrcConfig config)
    : io_(io), config_(std::move(config)), resolver_(io), keepalive_timer_(io), nick_timer_(io),
      quit_timer_(io), whois_timer_(io), own_nick_(config_.nick) {
  if (config_.tls) {
    tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1);
    if (!config_.tls_ca_file.empty()) tls_->load_verify_file(config_.tls_ca_file);
    else tls_->set_default_verify_paths();
    if (!config_.tls_client_cert.empty()) {  // for SASL EXTERNAL: services know its fingerprint
      tls_->use_certificate_chain_file(config_.tls_client_cert);
      tls_->use_private_key_file(config_.tls_client_key.empty() ? config_.tls_client_cert : config_.tls_client_key,
                                 asio::ssl::context::pem);
    }
  }
}

IrcAdapter::~IrcAdapter() {
  ++generation_;
  if (socket_) socket_->release();
  if (session_) irc_destroy_session(session_);
  if (relay_) relay_->close();
}

void IrcAdapter::connect() {
  if (active_) return;
  active_ = true;
  ++generation_;
  int gen = generation_;
  last_error_.clear();
  // libircclient would resolve with a blocking gethostbyname; asio's resolver does not block.
  resolver_.async_resolve(config_.server, std::to_string(config_.port),
                          [this, gen](const boost::system::error_code& ec,
                                      tcp::resolver::results_type results) {
    if (gen != generation_) return;
    if (ec || results.empty())
      return teardown("cannot resolve " + config_.server + ": " + ec.message());
    tcp::endpoint server = results.begin()->endpoint();
    Ircv3 v3;
    v3.accounts = config_.accounts;
    v3.sasl = config_.sasl;
    v3.caps = v3.accounts || v3.sasl != SaslMechanism::None;
    v3.sasl_username = config_.sasl_username.empty() ? config_.nick : config_.sasl_username;
    v3.sasl_password = config_.sasl_password;
    v3.sasl_required = config_.sasl_required;
    // Plaintext without IRCv3: libircclient talks to the server itself, as it always did.
    if (!config_.tls && !v3.caps) return start_session(server.address().to_string(), server.port());
    if (config_.tls && !config_.tls_verify) log::warn(log::kNoJob, "irc: TLS certificate verification is OFF");
    relay_ = std::make_shared<IrcRelay>(io_, tls_.get(), std::move(v3));
    std::string name = config_.tls_server_name.empty() ? config_.server : config_.tls_server_name;
    relay_->start(server, name, config_.tls_verify,
                   [this, gen](const std::string& error, unsigned short port) {
                     if (gen != generation_) return;
                     if (!error.empty()) return teardown(error);
                     start_session("127.0.0.1", port);
                   },
                   [this, gen](const std::string& reason) {
                     if (gen == generation_) teardown(reason);
                   });
  });
}

void IrcAdapter::start_session(const std::string& address, unsigned short port) {
  irc_callbacks_t cb{};
  cb.event_connect = cb_connect;
  cb.event_nick = cb_nick;
  cb.event_kick = cb_kick;
  cb.event_join = cb_join;
  cb.event_channel = cb_message;
  cb.event_privmsg = cb_message;
  cb.event_unknown = cb_unknown;
  cb.event_numeric = cb_numeric;
  cb.event_ctcp_req = cb_ignore;
  session_ = irc_create_session(&cb);
  if (!session_) return teardown("cannot create an IRC session");
  irc_set_ctx(session_, this);
  own_nick_ = config_.nick;
  nick_attempt_ = 0;
  registered_ = false;
  casemapping_ = CaseMapping::Rfc1459;
  const char* pass = config_.server_password.empty() ? nullptr : config_.server_password.c_str();
  int rc = address.find(':') == std::string::npos
               ? irc_connect(session_, address.c_str(), port, pass, config_.nick.c_str(),
                             config_.username.c_str(), config_.realname.c_str())
               : irc_connect6(session_, address.c_str(), port, pass, config_.nick.c_str(),
                              config_.username.c_str(), config_.realname.c_str());
  if (rc != 0) return teardown(std::string("cannot connect: ") + irc_strerror(irc_errno(session_)));
  Wants w = wants();
  if (!w.ok || w.fd < 0) return teardown("libircclient has no socket after connecting");
  // A reply is one small segment that someone is waiting for: Nagle would hold it until the
  // previous one is acknowledged (up to the peer's 40 ms delayed ACK).
  int one = 1;
  if (::setsockopt(w.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    log::warn(log::kNoJob, "irc: cannot set TCP_NODELAY: {}", std::strerror(errno));
  socket_ = std::make_unique<asio::posix::stream_descriptor>(io_, w.fd);
  if (relay_) {
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    ::getsockname(w.fd, reinterpret_cast<sockaddr*>(&local), &len);
    relay_->accept_from(ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port));
  }
  last_heard_ = std::chrono::steady_clock::now();
  ping_sent_ = false;
  keepalive();
  watch();
}

IrcAdapter::Wants IrcAdapter::wants() const {
  Wants w;
  if (!session_) return w;
  fd_set in, out;
  FD_ZERO(&in);
  FD_ZERO(&out);
  int maxfd = 0;
  w.ok = irc_add_select_descriptors(session_, &in, &out, &maxfd) == 0;
  // Only the session socket is ever set (no DCC), so the highest fd is that socket.
  w.fd = w.ok ? maxfd : -1;
  w.read = w.ok && FD_ISSET(maxfd, &in);
  w.write = w.ok && FD_ISSET(maxfd, &out);
  return w;
}

// Asks libircclient what it wants (read, write) and waits for exactly that on the loop.
// asio watches descriptors edge-triggered, and libircclient reads or writes at most one
// buffer per call, so readiness left over from an earlier edge is checked with poll() first:
// otherwise the rest of a burst from the server would sit unread until the next packet.
void IrcAdapter::watch() {
  if (!session_ || !socket_) return;
  Wants w = wants();
  if (!w.ok) return;
  int fd = socket_->native_handle();
  bool want_read = w.read, want_write = w.write;
  pollfd p{fd, static_cast<short>((want_read ? POLLIN : 0) | (want_write ? POLLOUT : 0)), 0};
  int gen = generation_;
  if (p.events && ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLOUT | POLLHUP | POLLERR))) {
    bool r = want_read && (p.revents & (POLLIN | POLLHUP | POLLERR));
    bool w = want_write && (p.revents & POLLOUT);
    if (r || w) {
      if (!process_posted_) {
        process_posted_ = true;
        asio::post(io_, [this, gen, r, w] {
          if (gen != generation_) return;
          process_posted_ = false;
          process(r, w);
        });
      }
      return;
    }
  }
  if (want_read && !read_armed_) {
    read_armed_ = true;
    socket_->async_wait(asio::posix::descriptor_base::wait_read,
                        [this, gen](const boost::system::error_code& ec) {
                          if (gen != generation_) return;
                          read_armed_ = false;
                          if (!ec) process(true, false);
                        });
  }
  if (want_write && !write_armed_) {
    write_armed_ = true;
    socket_->async_wait(asio::posix::descriptor_base::wait_write,
                        [this, gen](const boost::system::error_code& ec) {
                          if (gen != generation_) return;
                          write_armed_ = false;
                          if (!ec) process(false, true);
                        });
  }
}

void IrcAdapter::process(bool readable, bool writable) {
  if (!session_ || !socket_) return;
  // Only directions that are ready at this very moment: a read bit without data makes
  // libircclient spin on EAGAIN, a write bit with nothing queued makes it drop the
  // connection. Readiness reported a moment ago may be gone (another handler read first).
  int fd = socket_->native_handle();
  Wants w = wants();
  readable = readable && w.read;
  writable = writable && w.write;
  pollfd p{fd, static_cast<short>((readable ? POLLIN : 0) | (writable ? POLLOUT : 0)), 0};
  if (::poll(&p, 1, 0) <= 0) p.revents = 0;
  readable = readable && (p.revents & (POLLIN | POLLHUP | POLLERR));
  writable = writable && (p.revents & POLLOUT);
  if (!readable && !writable) return watch();
  fd_set in, out;
  FD_ZERO(&in);
  FD_ZERO(&out);
  if (readable) {
    FD_SET(fd, &in);
    last_heard_ = std::chrono::steady_clock::now();
    ping_sent_ = false;
  }
  if (writable) FD_SET(fd, &out);
  int gen = generation_;
  int rc = irc_process_select_descriptors(session_, &in, &out);
  if (gen != generation_) return;
  if (rc != 0 || !irc_is_connected(session_)) {
    std::string why = last_error_.empty() ? irc_strerror(irc_errno(session_)) : last_error_;
    // Not inside libircclient's call stack any more, but keep teardown off this frame anyway.
    asio::post(io_, [this, gen, why] {
      if (gen == generation_) teardown(why);
    });
    return;
  }
  feed();
  watch();
}

void IrcAdapter::feed() {
  while (session_ && registered_ && !raw_queue_.empty()) {
    // One line at a time, and only into an empty buffer: libircclient's output buffer is
    // 1 KB and its own PONG replies are silently dropped when it is full.
    if (wants().write) break;
    if (irc_send_raw(session_, "%s", raw_queue_.front().c_str()) != 0) break;
    raw_queue_.pop_front();
  }
}

void IrcAdapter::send(const std::string& target, const std::string& line) {
  if (target.find('!') != std::string::npos) return queue_direct(target, line);
  if (!is_safe_irc_target(target)) {
    log::warn(log::kNoJob, "irc: not sending to unsafe target '{}'", clean_irc_text(target));
    return;
  }
  raw_queue_.push_back("PRIVMSG " + target + " :" + clean_irc_text(line));
  feed();
  watch();
}

void IrcAdapter::queue_direct(const std::string& mask, const std::string& line) {
  auto bang = mask.find('!');
  std::string nick = mask.substr(0, bang);
  if (!is_safe_irc_target(mask) || !is_safe_irc_target(nick) || mask.find('@', bang) == std::string::npos) {
    log::warn(log::kNoJob, "irc: not sending to unsafe target '{}'", clean_irc_text(mask));
    return;
  }
  // Bounded: a person who never answers (or a server that never replies) cannot pile up lines.
  constexpr size_t kMaxPeopleWaiting = 100, kMaxLinesEach = 50;
  auto it = direct_waiting_.find(mask);
  if (it == direct_waiting_.end()) {
    if (direct_waiting_.size() >= kMaxPeopleWaiting) {
      log::warn(log::kNoJob, "irc: {} people have direct lines waiting; not queuing one for {}",
                direct_waiting_.size(), nick);
      return;
    }
    it = direct_waiting_.try_emplace(mask).first;
  }
  if (it->second.size() >= kMaxLinesEach) it->second.pop_front();
  it->second.push_back(line);
  if (std::find(userhost_asked_.begin(), userhost_asked_.end(), mask) != userhost_asked_.end()) return;
  userhost_asked_.push_back(mask);
  raw_queue_.push_back("USERHOST " + nick);
  feed();
  watch();
}

void IrcAdapter::on_userhost(const std::string& reply) {
  if (userhost_asked_.empty()) return;
  std::string mask = userhost_asked_.front();  // the server answers in order
  userhost_asked_.pop_front();
  auto waiting = direct_waiting_.extract(mask);
  if (waiting.empty()) return;
  auto& lines = waiting.mapped();
  auto bang = mask.find('!');
  std::string nick = mask.substr(0, bang), userhost = mask.substr(bang + 1);
  std::string holder;
  for (const auto& [n, uh] : parse_userhost_reply(reply))
    if (casefold(n, casemapping_) == casefold(nick, casemapping_)) holder = uh;
  if (holder.empty()) {
    log::warn(log::kNoJob, "irc: {} has left IRC; {} lines for them not sent", mask, lines.size());
    return;
  }
  if (lower(holder) != lower(userhost)) {
    log::warn(log::kNoJob, "irc: the nick {} is now {}, not {}; {} lines for {} not sent", nick, holder,
              userhost, lines.size(), mask);
    return;
  }
  for (const auto& line : lines) raw_queue_.push_back("PRIVMSG " + nick + " :" + clean_irc_text(line));
  feed();
  watch();
}

void IrcAdapter::join(const std::string& room) {
  if (!is_safe_irc_target(room)) return;
  if (std::find(rooms_.begin(), rooms_.end(), room) == rooms_.end()) rooms_.push_back(room);
  std::erase_if(joining_, [&](const auto& j) { return j.first == room; });
  joining_.emplace_back(room, std::chrono::steady_clock::now());
  raw_queue_.push_back("JOIN " + room);
  feed();
  watch();
}

size_t IrcAdapter::unsent() const {
  size_t waiting = raw_queue_.size();
  for (const auto& [mask, lines] : direct_waiting_) waiting += lines.size();
  return waiting;
}

void IrcAdapter::quit(const std::string& reason) {
  quit_reason_ = clean_irc_text(reason);
  if (!session_ || !registered_) return disconnect();
  raw_queue_.push_back("QUIT :" + quit_reason_);
  feed();
  watch();
  // The server answers QUIT by closing the connection (teardown, no reconnect: stopped).
  int gen = generation_;
  quit_timer_.expires_after(std::chrono::seconds(2));
  quit_timer_.async_wait([this, gen](const boost::system::error_code& ec) {
    if (!ec && gen == generation_) disconnect();
  });
}

void IrcAdapter::disconnect() {
  quit_timer_.cancel();
  if (session_ && registered_) {
    irc_send_raw(session_, "QUIT :%s", quit_reason_.c_str());
    process(false, true);
  }
  active_ = false;
  ++generation_;
  keepalive_timer_.cancel();
  nick_timer_.cancel();
  if (socket_) socket_->release();
  socket_.reset();
  // Handlers of the old connection return early (generation), so reset what they would have.
  read_armed_ = write_armed_ = process_posted_ = false;
  joining_.clear();
  direct_waiting_.clear();  // unconfirmed direct lines die with the connection
  userhost_asked_.clear();
  held_.clear();  // commands from a connection that is gone: their sender can ask again
  whois_asked_.clear();
  whois_timer_.cancel();
  whois_timer_armed_ = false;
  if (session_) irc_destroy_session(session_);
  session_ = nullptr;
  if (relay_) relay_->close();
  relay_.reset();
  registered_ = false;
}

void IrcAdapter::teardown(const std::string& reason) {
  bool was_active = active_;
  disconnect();
  raw_queue_.clear();  // the outbox above still holds everything not yet handed over
  if (was_active && listener_) listener_->on_disconnected(reason);
}

void IrcAdapter::keepalive() {
  int gen = generation_;
  keepalive_timer_.expires_after(std::min(config_.ping_interval, config_.register_timeout) / 2);
  keepalive_timer_.async_wait([this, gen](const boost::system::error_code& ec) {
    if (ec || gen != generation_) return;
    auto quiet = std::chrono::steady_clock::now() - last_heard_;
    if (!registered_ && quiet > config_.register_timeout) return teardown("registration timed out");
    if (quiet > config_.ping_timeout) return teardown("ping timeout: the server has been silent for " +
                                                      format_duration(std::chrono::duration_cast<Millis>(quiet)));
    auto now = std::chrono::steady_clock::now();
    for (auto& [room, asked] : joining_) {
      if (registered_ && now - asked > std::chrono::seconds(10)) {
        log::warn(log::kNoJob, "irc: no confirmation of JOIN {} after 10s; asking again", room);
        asked = now;
        raw_queue_.push_back("JOIN " + room);
        feed();
        watch();
      }
    }
    if (registered_ && quiet > config_.ping_interval && !ping_sent_) {
      // libircclient answers the server's PINGs but never asks: we do, to notice a dead link.
      ping_sent_ = true;
      irc_send_raw(session_, "PING :jarvis-keepalive");
      watch();
    }
    keepalive();
  });
}

void IrcAdapter::on_connect_event(const char* nick) {
  own_nick_ = nick;
  registered_ = true;
  log::info(log::kNoJob, "irc: registered as {}", own_nick_);
  if (!config_.nickserv_password.empty()) identify();
  if (!same_nick(own_nick_, config_.nick)) recover_nick();
  // Tell the listener from the loop, not from inside libircclient's processing.
  int gen = generation_;
  asio::post(io_, [this, gen] {
    if (gen == generation_ && listener_) listener_->on_connected();
  });
}

void IrcAdapter::identify() {
  if (!is_server_qualified_target(config_.nickserv_target)) {
    log::error(log::kNoJob, "irc: not identifying: irc.nickserv.target '{}' names no services server",
               clean_irc_text(config_.nickserv_target));
    return;
  }
  if ((!config_.tls || !config_.tls_verify) && !config_.allow_plaintext_identify) {
    log::error(log::kNoJob, "irc: not identifying to {}: the connection is not verified TLS "
               "(irc.nickserv.allow_plaintext_identify: true would send the password anyway)",
               config_.nickserv_target);
    return;
  }
  log::info(log::kNoJob, "irc: identifying to {}", config_.nickserv_target);
  raw_queue_.push_front("PRIVMSG " + config_.nickserv_target + " :IDENTIFY " +
                        clean_irc_text(config_.nickserv_password));
}

void IrcAdapter::recover_nick() {
  int gen = generation_;
  nick_timer_.expires_after(config_.nick_recover_interval);
  nick_timer_.async_wait([this, gen](const boost::system::error_code& ec) {
    if (ec || gen != generation_ || !session_ || same_nick(own_nick_, config_.nick)) return;
    raw_queue_.push_back("NICK " + config_.nick);
    feed();
    watch();
    recover_nick();
  });
}

void IrcAdapter::on_nick_event(const char* origin, const char* new_nick) {
  std::string o(origin);
  std::string nick = o.substr(0, o.find('!'));
  if (same_nick(nick, own_nick_)) own_nick_ = new_nick;
}

void IrcAdapter::on_numeric_event(unsigned int code, const char** params, unsigned int count) {
  if (code == 5) {  // ISUPPORT: how this server folds nicks and channels
    for (unsigned i = 1; i < count; ++i) {
      std::string_view token = param(params, count, i);
      if (token.rfind("CASEMAPPING=", 0) != 0) continue;
      if (auto m = parse_casemapping(token.substr(12))) casemapping_ = *m;
      else log::warn(log::kNoJob, "irc: unknown CASEMAPPING {}; folding as rfc1459", clean_irc_text(token.substr(12)));
    }
    return;
  }
  if (code == 302) return on_userhost(param(params, count, 1));
  if (!whois_asked_.empty() && (code == 311 || code == 330 || code == 318 || code == 401)) {
    Whois& w = whois_asked_.front();
    if (casefold(param(params, count, 1), casemapping_) == casefold(w.nick, casemapping_)) {
      if (code == 311) {  // RPL_WHOISUSER: me nick user host * :realname
        w.seen_user = true;
        w.userhost = std::string(param(params, count, 2)) + "@" + param(params, count, 3);
      } else if (code == 330) {  // RPL_WHOISACCOUNT: me nick account :is logged in as
        w.account = checked_account(param(params, count, 2));
      } else if (code == 318) {  // RPL_ENDOFWHOIS
        resolve_whois(true);
      }
      return;  // a 401 (gone) is followed by its 318
    }
  }
  if (code == LIBIRC_RFC_ERR_NOSUCHNICK && !config_.nickserv_target.empty() &&
      ::strcasecmp(param(params, count, 1), config_.nickserv_target.c_str()) == 0) {
    log::error(log::kNoJob, "irc: {} is not on the network: not identified", config_.nickserv_target);
    return;
  }
  // The server will not deliver to (or let the bot into) a place: say where and why, once
  // per line the listener counts. 401 for a nick that left, 403/404 for a channel, 471-477
  // for a join refused (full, invite only, banned, a key, needs a registered nick ...).
  if (code == 401 || code == 403 || code == 404 || (code >= 471 && code <= 477)) {
    std::string place = clean_irc_text(param(params, count, 1));
    std::string why = clean_irc_text(param(params, count, count > 2 ? count - 1 : 2));
    if (listener_ && !place.empty())
      listener_->on_refused(place, why + " (" + std::to_string(code) + ")");
    if (code >= 471) std::erase_if(joining_, [&](const auto& j) { return ::strcasecmp(j.first.c_str(), place.c_str()) == 0; });
    return;
  }
  if (code == LIBIRC_RFC_ERR_NICKNAMEINUSE || code == LIBIRC_RFC_ERR_ERRONEUSNICKNAME ||
      code == LIBIRC_RFC_ERR_NICKCOLLISION || code == 437) {
    if (registered_) return;  // a recovery attempt failed; the timer tries again later
    // Taken at registration: fall back to jarvis_, jarvis__, jarvis1, jarvis2 ...
    ++nick_attempt_;
    std::string alt = nick_attempt_ <= 2 ? config_.nick + std::string(static_cast<size_t>(nick_attempt_), '_')
                                         : config_.nick + std::to_string(nick_attempt_ - 2);
    own_nick_ = alt;
    irc_send_raw(session_, "NICK %s", alt.c_str());
  }
}

void IrcAdapter::on_unknown_event(const char* event, const char** params, unsigned int count) {
  if (std::string_view(event) == "ERROR") last_error_ = std::string("server: ") + param(params, count, 0);
}

void IrcAdapter::on_kick_event(const char* channel, const char* kicked) {
  if (!same_nick(kicked, own_nick_)) return;
  log::warn(log::kNoJob, "irc: kicked from {}; rejoining", channel);
  join(channel);
}

std::string IrcAdapter::identity_source() const {
  if (!config_.accounts) return "nick!user@host masks (irc.accounts is off; masks can be spoofed without accounts)";
  if (!relay_) return "WHOIS (330) only";
  if (relay_->has_account_tag()) return "services accounts from account-tag";
  if (relay_->has_account_notify() && relay_->has_extended_join())
    return "services accounts from extended-join and account-notify (WHOIS for the rest)";
  return "services accounts from WHOIS (330) only (the server offers no account-tag)";
}

void IrcAdapter::on_join_event(const char* origin, const char* channel) {
  std::string o(origin);
  if (!same_nick(o.substr(0, o.find('!')), own_nick_)) return;
  std::erase_if(joining_, [&](const auto& j) { return ::strcasecmp(j.first.c_str(), channel) == 0; });
  log::info(log::kNoJob, "irc: joined {}", channel);
  if (listener_) listener_->on_joined(channel, true);
}

void IrcAdapter::on_message_event(const char* origin, const char* target, const char* text) {
  if (!listener_ || !*origin) return;
  std::string o(origin);
  auto bang = o.find('!');
  ChatMessage m;
  m.sender.protocol = "irc";
  m.sender.name = o.substr(0, bang);
  m.sender.full = o;
  m.sender.casemapping = casemapping_;
  // Direct replies and announcements go to this mask, checked before each send.
  if (bang != std::string::npos && o.find('@', bang) != std::string::npos) m.sender.direct = o;
  std::string t(target);
  bool room = !t.empty() && (t[0] == '#' || t[0] == '&' || t[0] == '+' || t[0] == '!');
  if (room) m.room = t;
  m.text = text;
  if (!config_.accounts) return listener_->on_message(m);
  // The account the server gave with this very line (account-tag), or that extended-join
  // and account-notify said before it; else WHOIS says, and the message waits (in order).
  std::optional<std::string> account = relay_ ? relay_->account_of(o, t, m.text) : std::nullopt;
  if (account && held_.empty()) {
    m.sender.account = *account;
    return deliver(std::move(m));
  }
  constexpr size_t kMaxHeld = 200;
  if (held_.size() >= kMaxHeld) {
    log::warn(log::kNoJob, "irc: {} messages wait for WHOIS; taking {}'s as from no account",
              held_.size(), held_.front().message.sender.full);
    held_.front().resolved = true;
    held_.front().message.sender.account.clear();
    resolve_whois(false);
  }
  Held h{std::move(m), account.has_value(), std::chrono::steady_clock::now()};
  if (account) h.message.sender.account = *account;
  std::string nick = h.message.sender.name;
  bool asking = std::any_of(whois_asked_.begin(), whois_asked_.end(), [&](const Whois& w) {
    return casefold(w.nick, casemapping_) == casefold(nick, casemapping_);
  });
  held_.push_back(std::move(h));
  expire_held();
  if (!account && !asking && is_safe_irc_target(nick)) {
    whois_asked_.push_back(Whois{nick, {}, {}, false});
    raw_queue_.push_front("WHOIS " + nick);
    feed();
    watch();
  }
}

void IrcAdapter::expire_held() {
  auto now = std::chrono::steady_clock::now();
  constexpr auto kWhoisWait = std::chrono::seconds(10);
  if (!held_.empty() && now - held_.front().since >= kWhoisWait) {
    log::warn(log::kNoJob, "irc: no WHOIS answer about {} after 10s; taking their message as from no account",
              held_.front().message.sender.full);
    for (auto& h : held_)
      if (now - h.since >= kWhoisWait) h.resolved = true;
    whois_asked_.clear();
    resolve_whois(false);
  }
  if (held_.empty() || whois_timer_armed_) return;
  whois_timer_armed_ = true;
  int gen = generation_;
  whois_timer_.expires_at(held_.front().since + kWhoisWait);
  whois_timer_.async_wait([this, gen](const boost::system::error_code& ec) {
    if (gen != generation_) return;
    whois_timer_armed_ = false;
    if (!ec) expire_held();
  });
}

void IrcAdapter::deliver(ChatMessage m) {
  // Tell the listener from the loop, not from inside libircclient's processing.
  int gen = generation_;
  asio::post(io_, [this, gen, m = std::move(m)] {
    if (gen == generation_ && listener_) listener_->on_message(m);
  });
}

// The oldest WHOIS has its answer (found: a 318 for it; else it gave up): the held messages
// of that nick from the same user@host get its account, others none; then everything at
// the front that is resolved goes, in order.
void IrcAdapter::resolve_whois(bool found) {
  if (found && !whois_asked_.empty()) {
    Whois w = std::move(whois_asked_.front());
    whois_asked_.pop_front();
    for (auto& h : held_) {
      const Identity& who = h.message.sender;
      if (h.resolved || casefold(who.name, casemapping_) != casefold(w.nick, casemapping_)) continue;
      auto bang = who.full.find('!');
      std::string userhost = bang == std::string::npos ? "" : who.full.substr(bang + 1);
      h.message.sender.account = w.seen_user && lower(userhost) == lower(w.userhost) ? w.account : "";
      h.resolved = true;
    }
  }
  while (!held_.empty() && held_.front().resolved) {
    deliver(std::move(held_.front().message));
    held_.pop_front();
  }
}

}  // namespace jarvis
