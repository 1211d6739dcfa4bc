#include "bot/chat/irc/irc_relay.h"

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>

#include "bot/chat/chat_text.h"
#include "bot/commands/mask.h"
#include "bot/util/log.h"

namespace jarvis {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kMaxServerLine = 16 * 1024;  // tags (8 KB) and a 512-byte line, with room
constexpr size_t kMaxDelivered = 512;         // PRIVMSGs forwarded, not yet taken

const char* mechanism_name(SaslMechanism m) { return m == SaslMechanism::External ? "EXTERNAL" : "PLAIN"; }

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string nick_of(std::string_view prefix) { return std::string(prefix.substr(0, prefix.find('!'))); }

std::string last(const IrcLine& l) { return l.params.empty() ? "" : l.params.back(); }

}  // namespace

std::optional<IrcLine> parse_irc_line(std::string_view s) {
  IrcLine l;
  auto word = [&]() {
    auto sp = s.find(' ');
    std::string_view w = s.substr(0, sp);
    s = sp == std::string_view::npos ? std::string_view{} : s.substr(sp + 1);
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    return w;
  };
  if (!s.empty() && s.front() == '@') l.tags = std::string(word().substr(1));
  if (!s.empty() && s.front() == ':') l.prefix = std::string(word().substr(1));
  l.command = std::string(word());
  if (l.command.empty()) return std::nullopt;
  while (!s.empty()) {
    if (s.front() == ':') {
      l.params.emplace_back(s.substr(1));
      break;
    }
    l.params.emplace_back(word());
  }
  return l;
}

std::optional<std::string> irc_tag(std::string_view tags, std::string_view key) {
  size_t pos = 0;
  while (pos <= tags.size()) {
    size_t end = tags.find(';', pos);
    std::string_view t = tags.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    auto eq = t.find('=');
    if (t.substr(0, eq) == key) {
      std::string out;
      if (eq == std::string_view::npos) return out;
      std::string_view v = t.substr(eq + 1);
      for (size_t i = 0; i < v.size(); ++i) {
        if (v[i] != '\\' || i + 1 == v.size()) {
          if (v[i] != '\\') out += v[i];
          continue;
        }
        char c = v[++i];
        out += c == ':' ? ';' : c == 's' ? ' ' : c == 'r' ? '\r' : c == 'n' ? '\n' : c;
      }
      return out;
    }
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return std::nullopt;
}

std::string checked_account(std::string_view a) {
  if (a.empty() || a.size() > 64 || a == "*" || a[0] == ':') return "";
  for (unsigned char c : a)
    if (c <= ' ' || c == 0x7f) return "";
  return std::string(a);
}

std::vector<std::string> sasl_plain_chunks(const std::string& user, const std::string& password) {
  std::string blob = base64(user + '\0' + user + '\0' + password);
  std::vector<std::string> out;
  for (size_t i = 0; i < blob.size(); i += 400) out.push_back(blob.substr(i, 400));
  if (out.empty() || out.back().size() == 400) out.push_back("+");
  return out;
}

IrcRelay::IrcRelay(asio::io_context& io, asio::ssl::context* tls, Ircv3 v3)
    : plain_(io), acceptor_(io), local_(io), v3_(std::move(v3)) {
  if (tls) tls_.emplace(io, *tls);
  if (v3_.caps) phase_ = Phase::Listing;
}

tcp::socket& IrcRelay::upstream_socket() { return tls_ ? tls_->next_layer() : plain_; }

template <typename F>
void IrcRelay::read_upstream(asio::mutable_buffer b, F f) {
  if (tls_) tls_->async_read_some(b, std::move(f));
  else plain_.async_read_some(b, std::move(f));
}

template <typename F>
void IrcRelay::write_upstream(asio::const_buffer b, F f) {
  if (tls_) asio::async_write(*tls_, b, std::move(f));
  else asio::async_write(plain_, b, std::move(f));
}

void IrcRelay::start(const tcp::endpoint& server, const std::string& host_name, bool verify,
                     Ready ready, Closed closed) {
  closed_ = std::move(closed);
  auto self = shared_from_this();
  auto listen = [self, ready]() {
    boost::system::error_code lec;
    self->acceptor_.open(tcp::v4(), lec);
    if (!lec) self->acceptor_.bind(tcp::endpoint(asio::ip::address_v4::loopback(), 0), lec);
    if (!lec) self->acceptor_.listen(1, lec);
    if (lec) return ready("cannot open the loopback relay: " + lec.message(), 0);
    if (self->v3_.caps) {
      // Before any byte of libircclient's: the server now holds registration until CAP END.
      self->send_up("CAP LS 302\r\n");
      self->read_down();
    }
    ready("", self->acceptor_.local_endpoint().port());
  };
  if (tls_) {
    // SNI, and the name the certificate must carry.
    SSL_set_tlsext_host_name(tls_->native_handle(), host_name.c_str());
    if (verify) {
      tls_->set_verify_mode(asio::ssl::verify_peer);
      tls_->set_verify_callback(asio::ssl::host_name_verification(host_name));
    } else {
      tls_->set_verify_mode(asio::ssl::verify_none);
    }
  }
  upstream_socket().async_connect(server, [self, ready, listen](const boost::system::error_code& ec) {
    if (ec) return ready("cannot connect: " + ec.message(), 0);
    // IRC lines are small and someone waits for each: no Nagle delay (40 ms behind an ACK).
    boost::system::error_code nec;
    self->upstream_socket().set_option(tcp::no_delay(true), nec);
    if (!self->tls_) return listen();
    self->tls_->async_handshake(asio::ssl::stream_base::client,
                                [self, ready, listen](const boost::system::error_code& ec) {
      if (ec) {
        std::string why = ec.message();
        long verify = SSL_get_verify_result(self->tls_->native_handle());
        if (verify != X509_V_OK) why = X509_verify_cert_error_string(verify);
        return ready("TLS handshake failed: " + why, 0);
      }
      listen();
    });
  });
}

void IrcRelay::accept_from(unsigned short client_port) {
  expected_port_ = client_port;
  accept();
}

void IrcRelay::accept() {
  auto self = shared_from_this();
  acceptor_.async_accept(local_, [self](const boost::system::error_code& ec) {
    if (ec) {
      if (ec != asio::error::operation_aborted) self->fail("relay accept failed: " + ec.message());
      return;
    }
    boost::system::error_code pec;
    auto peer = self->local_.remote_endpoint(pec);
    if (pec || !peer.address().is_loopback() || peer.port() != self->expected_port_) {
      // Someone else on this machine raced for the port: not our client, drop it.
      self->local_.close(pec);
      self->accept();
      return;
    }
    self->acceptor_.close(pec);
    self->local_.set_option(tcp::no_delay(true), pec);
    self->read_up();
    if (!self->v3_.caps) self->read_down();
    self->flush_down();  // what the server said before libircclient was there
  });
}

void IrcRelay::read_up() {
  auto self = shared_from_this();
  local_.async_read_some(asio::buffer(up_buf_), [self](const boost::system::error_code& ec, size_t n) {
    if (ec) return self->fail("the IRC client closed the connection");
    self->send_up(std::string(self->up_buf_.data(), n));
    self->read_up();
  });
}

void IrcRelay::read_down() {
  auto self = shared_from_this();
  read_upstream(asio::buffer(down_buf_), [self](const boost::system::error_code& ec, size_t n) {
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
      // Pass the end on rather than cutting the client off: libircclient then reads the
      // server's last words (an ERROR line says why) before it sees the close.
      self->send_down("");
      return;
    }
    if (ec) return self->fail(std::string(self->tls_ ? "TLS read failed: " : "read failed: ") + ec.message());
    if (!self->v3_.caps) {
      self->send_down(std::string(self->down_buf_.data(), n));
    } else {
      self->server_buf_.append(self->down_buf_.data(), n);
      size_t start = 0, nl;
      while (!self->closing_ && (nl = self->server_buf_.find('\n', start)) != std::string::npos) {
        std::string line = self->server_buf_.substr(start, nl - start);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        start = nl + 1;
        self->on_server_line(std::move(line));
      }
      self->server_buf_.erase(0, start);
      if (self->server_buf_.size() > kMaxServerLine) return self->fail("the server sent a line over 16 KB");
    }
    if (self->closing_) return;
    // Back-pressure: read again once what we have is on its way to libircclient.
    if (self->down_q_.size() > 64) return;
    self->read_down();
  });
}

void IrcRelay::send_up(std::string bytes) {
  if (closing_) return;
  up_q_.push_back(std::move(bytes));
  flush_up();
}

void IrcRelay::flush_up() {
  if (up_writing_ || up_q_.empty() || closing_) return;
  up_writing_ = true;
  auto self = shared_from_this();
  write_upstream(asio::buffer(up_q_.front()), [self](const boost::system::error_code& ec, size_t) {
    self->up_writing_ = false;
    if (ec) return self->fail(std::string(self->tls_ ? "TLS write failed: " : "write failed: ") + ec.message());
    self->up_q_.pop_front();
    self->flush_up();
  });
}

// "" queued = the server closed: pass the end on once everything before it is written.
void IrcRelay::send_down(std::string bytes) {
  if (closing_) return;
  down_q_.push_back(std::move(bytes));
  flush_down();
}

void IrcRelay::flush_down() {
  if (down_writing_ || down_q_.empty() || closing_ || !local_.is_open() || acceptor_.is_open()) return;
  if (down_q_.front().empty()) {
    boost::system::error_code sec;
    local_.shutdown(tcp::socket::shutdown_send, sec);
    down_q_.clear();
    return;
  }
  down_writing_ = true;
  auto self = shared_from_this();
  asio::async_write(local_, asio::buffer(down_q_.front()), [self](const boost::system::error_code& ec, size_t) {
    self->down_writing_ = false;
    if (ec) return self->fail("the IRC client went away");
    self->down_q_.pop_front();
    bool was_full = self->down_q_.size() == 64;
    self->flush_down();
    if (was_full) self->read_down();
  });
}

void IrcRelay::on_server_line(std::string raw) {
  auto parsed = parse_irc_line(raw);
  if (!parsed) return;
  IrcLine& l = *parsed;
  if (negotiate(l)) return;
  if (l.command == "CAP" && l.params.size() >= 3 && l.params[1] == "DEL") {
    // cap-notify (implied by CAP LS 302): a capability went away, e.g. with the services.
    std::string list = last(l);
    for (size_t pos = 0; pos < list.size();) {
      size_t end = list.find(' ', pos);
      std::string cap = list.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      pos = end == std::string::npos ? list.size() : end + 1;
      if (acked_.erase(cap)) log::warn(log::kNoJob, "irc: the server withdrew the {} capability", chat_safe_text(cap));
      if (cap == "account-notify") accounts_.clear();  // nobody keeps them true any more
    }
  }
  learn(l);
  // libircclient knows no tags and no extended JOIN; ACCOUNT, CAP and the SASL replies are ours.
  if (l.command == "ACCOUNT" || l.command == "CAP" || l.command == "AUTHENTICATE") return;
  std::string out;
  if (!l.tags.empty()) {
    auto sp = raw.find(' ');
    out = sp == std::string::npos ? "" : raw.substr(sp + 1);
    while (!out.empty() && out.front() == ' ') out.erase(0, 1);
  } else {
    out = raw;
  }
  if (l.command == "JOIN" && l.params.size() >= 2 && acked_.count("extended-join"))
    out = ":" + l.prefix + " JOIN " + l.params[0];
  send_down(out + "\r\n");
}

bool IrcRelay::negotiate(const IrcLine& l) {
  if (phase_ == Phase::Off || phase_ == Phase::Done) return false;
  const std::string& c = l.command;
  auto sasl_failed = [&](const std::string& why) {
    std::string what = std::string("SASL ") + mechanism_name(v3_.sasl) + " login" +
                       (v3_.sasl == SaslMechanism::Plain ? " as " + chat_safe_text(v3_.sasl_username) : "");
    if (v3_.sasl_required)
      return fail(what + " failed: " + why + "; not registering without it (irc.sasl.required: false would)");
    log::error(log::kNoJob, "irc: {} failed: {}; registering without it (irc.sasl.required is false)", what, why);
    if (logged_in_) logged_in_("");
    cap_end();
  };
  if (c == "CAP" && l.params.size() >= 3) {
    const std::string& sub = l.params[1];
    if (sub == "LS" && phase_ == Phase::Listing) {
      bool more = l.params.size() >= 4 && l.params[2] == "*";
      std::string list = last(l);
      size_t pos = 0;
      while (pos < list.size()) {
        size_t end = list.find(' ', pos);
        std::string cap = list.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
        pos = end == std::string::npos ? list.size() : end + 1;
        if (cap.empty()) continue;
        auto eq = cap.find('=');
        offered_[cap.substr(0, eq)] = eq == std::string::npos ? "" : cap.substr(eq + 1);
      }
      if (more) return true;
      std::string want;
      if (v3_.accounts)
        for (const char* cap : {"account-notify", "extended-join", "account-tag"})
          if (offered_.count(cap)) want += std::string(want.empty() ? "" : " ") + cap;
      if (v3_.sasl != SaslMechanism::None) {
        auto s = offered_.find("sasl");
        if (s == offered_.end()) {
          sasl_failed("the server offers no SASL (its CAP LS has no sasl)");
          return true;
        }
        if (!s->second.empty() && ("," + s->second + ",").find(std::string(",") + mechanism_name(v3_.sasl) + ",") ==
                                      std::string::npos) {
          sasl_failed("the server offers SASL " + chat_safe_text(s->second) + ", not " + mechanism_name(v3_.sasl));
          return true;
        }
        want += std::string(want.empty() ? "" : " ") + "sasl";
      }
      if (want.empty()) {
        cap_end();
        return true;
      }
      phase_ = Phase::Requesting;
      send_up("CAP REQ :" + want + "\r\n");
      return true;
    }
    if ((sub == "ACK" || sub == "NAK") && phase_ == Phase::Requesting) {
      std::string list = last(l);
      size_t pos = 0;
      while (pos < list.size()) {
        size_t end = list.find(' ', pos);
        std::string cap = list.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
        pos = end == std::string::npos ? list.size() : end + 1;
        if (!cap.empty() && sub == "ACK" && cap[0] != '-') acked_[cap] = true;
      }
      if (sub == "NAK")
        log::warn(log::kNoJob, "irc: the server refused the capabilities {}", chat_safe_text(list));
      if (v3_.accounts && !acked_.count("account-tag"))
        log::warn(log::kNoJob, "irc: no account-tag from this server; accounts come from {}",
                  acked_.count("account-notify") && acked_.count("extended-join")
                      ? "extended-join, account-notify and WHOIS" : "WHOIS (330) only");
      if (v3_.sasl != SaslMechanism::None) {
        if (!acked_.count("sasl")) {
          sasl_failed("the server refused the sasl capability");
          return true;
        }
        phase_ = Phase::Authenticating;
        if (v3_.sasl == SaslMechanism::Plain) plain_chunks_ = sasl_plain_chunks(v3_.sasl_username, v3_.sasl_password);
        send_up(std::string("AUTHENTICATE ") + mechanism_name(v3_.sasl) + "\r\n");
        return true;
      }
      cap_end();
      return true;
    }
    return true;  // other CAP lines during negotiation are ours
  }
  if (c == "AUTHENTICATE" && phase_ == Phase::Authenticating) {
    if (!l.params.empty() && l.params[0] == "+") {
      if (v3_.sasl == SaslMechanism::External) {
        send_up("AUTHENTICATE +\r\n");
      } else {
        for (const auto& chunk : plain_chunks_) send_up("AUTHENTICATE " + chunk + "\r\n");
        plain_chunks_.clear();
      }
    }
    return true;
  }
  if (c == "900") {  // RPL_LOGGEDIN: me nick!user@host account :You are now logged in as ...
    std::string account = l.params.size() >= 3 ? l.params[2] : "";
    log::info(log::kNoJob, "irc: logged in with SASL {} as account {}", mechanism_name(v3_.sasl),
              chat_safe_text(account));
    if (logged_in_) logged_in_(account);
    return true;
  }
  if (c == "903") {  // RPL_SASLSUCCESS
    cap_end();
    return true;
  }
  if (c == "902" || c == "904" || c == "905" || c == "906" || c == "908") {
    if (c == "908") return true;  // RPL_SASLMECHS comes with a 904
    sasl_failed(chat_safe_text(last(l)) + " (" + c + ")");
    return true;
  }
  if (c == "907") return true;  // already authenticated
  if (c == "421" && l.params.size() >= 2 && (l.params[1] == "CAP" || l.params[1] == "AUTHENTICATE")) {
    // A server without IRCv3: it registers us as soon as it has NICK and USER.
    phase_ = Phase::Done;
    if (v3_.sasl != SaslMechanism::None) sasl_failed("the server knows no CAP command");
    else if (v3_.accounts) log::warn(log::kNoJob, "irc: the server knows no IRCv3 CAP; accounts come from WHOIS (330) only");
    return true;
  }
  if (c == "001") {
    // Registered before our CAP END: the server ignored CAP LS.
    phase_ = Phase::Done;
    if (v3_.accounts && v3_.sasl == SaslMechanism::None)
      log::warn(log::kNoJob, "irc: the server ignored CAP LS; accounts come from WHOIS (330) only");
    if (v3_.sasl != SaslMechanism::None && v3_.sasl_required) {
      fail(std::string("SASL ") + mechanism_name(v3_.sasl) +
           " login impossible: the server registered the bot without CAP negotiation; disconnecting "
           "(irc.sasl.required: false would stay)");
      return true;
    }
    return false;
  }
  return false;
}

void IrcRelay::cap_end() {
  phase_ = Phase::Done;
  send_up("CAP END\r\n");
}

std::string IrcRelay::fold(std::string_view nick) const { return casefold(nick, casemapping_); }

void IrcRelay::learn(const IrcLine& l) {
  const std::string& c = l.command;
  std::string nick = nick_of(l.prefix);
  bool notify = acked_.count("account-notify") > 0;
  if (c == "001" && !l.params.empty()) {
    own_nick_ = l.params[0];
  } else if (c == "005") {
    for (const auto& token : l.params)
      if (token.rfind("CASEMAPPING=", 0) == 0)
        if (auto m = parse_casemapping(std::string_view(token).substr(12))) casemapping_ = *m;
  } else if (c == "ACCOUNT" && !l.params.empty()) {
    accounts_[fold(nick)] = checked_account(l.params[0]);
  } else if (c == "JOIN" && l.params.size() >= 2 && acked_.count("extended-join") && notify) {
    // extended-join says the account at the join; account-notify keeps it true after.
    if (fold(nick) != fold(own_nick_)) accounts_[fold(nick)] = checked_account(l.params[1]);
  } else if (c == "NICK" && !l.params.empty()) {
    if (fold(nick) == fold(own_nick_)) own_nick_ = l.params[0];
    auto it = accounts_.find(fold(nick));
    std::optional<std::string> account;
    if (it != accounts_.end()) {
      account = it->second;
      accounts_.erase(it);
    }
    accounts_.erase(fold(l.params[0]));
    if (account) accounts_[fold(l.params[0])] = *account;
  } else if (c == "QUIT" || c == "PART") {
    // Parted from one channel they may share no other with us: ask again rather than trust
    // an account nobody keeps true any more.
    if (fold(nick) == fold(own_nick_)) accounts_.clear();
    else accounts_.erase(fold(nick));
  } else if (c == "KICK" && l.params.size() >= 2) {
    if (fold(l.params[1]) == fold(own_nick_)) accounts_.clear();
    else accounts_.erase(fold(l.params[1]));
  } else if (c == "PRIVMSG" && v3_.accounts && l.params.size() >= 2 && !l.prefix.empty() &&
             (l.params[1].empty() || l.params[1][0] != '\x01')) {
    Delivered d{l.prefix, l.params[0], l.params[1], std::nullopt};
    if (acked_.count("account-tag")) {
      // With account-tag, a message without the tag is from someone logged out.
      d.account = checked_account(irc_tag(l.tags, "account").value_or(""));
    } else if (auto it = accounts_.find(fold(nick)); it != accounts_.end()) {
      d.account = it->second;
    }
    if (delivered_.size() >= kMaxDelivered) delivered_.pop_front();
    delivered_.push_back(std::move(d));
  }
}

std::optional<std::string> IrcRelay::account_of(const std::string& origin, const std::string& target,
                                                const std::string& text) {
  while (!delivered_.empty()) {
    Delivered d = std::move(delivered_.front());
    delivered_.pop_front();
    if (d.origin == origin && d.target == target && d.text == text) return d.account;
  }
  return std::nullopt;
}

void IrcRelay::fail(const std::string& reason) {
  if (closing_) return;
  close();
  if (closed_) closed_(reason);
}

void IrcRelay::close() {
  closing_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  local_.close(ec);
  upstream_socket().close(ec);
}

}  // namespace jarvis
