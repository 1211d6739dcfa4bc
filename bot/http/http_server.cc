#include "bot/http/http_server.h"

#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <stdexcept>

#include "bot/util/log.h"

namespace jarvis::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

bool EventStream::push(const std::string& chunk) {
  if (closed_) return false;
  if (pending_.size() + chunk.size() > max_backlog_) {
    close();
    return false;
  }
  pending_ += chunk;
  if (wake_) wake_();
  return true;
}

void EventStream::close() {
  if (closed_) return;
  closed_ = true;
  if (wake_) wake_();
}

const char* status_text(int status) {
  return bhttp::obsolete_reason(static_cast<bhttp::status>(status)).data();
}

std::string percent_decode(const std::string& s, bool plus) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else if (plus && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

namespace {

std::multimap<std::string, std::string> parse_query(const std::string& q) {
  std::multimap<std::string, std::string> out;
  size_t start = 0;
  while (start <= q.size() && !q.empty()) {
    size_t amp = q.find('&', start);
    std::string part = q.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
    if (!part.empty()) {
      size_t eq = part.find('=');
      out.emplace(percent_decode(part.substr(0, eq), true),
                  eq == std::string::npos ? std::string() : percent_decode(part.substr(eq + 1), true));
    }
    if (amp == std::string::npos) break;
    start = amp + 1;
  }
  return out;
}

}  // namespace

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void shutdown() = 0;
};

namespace {

// One connection. Stream is beast::tcp_stream or beast::ssl_stream<beast::tcp_stream>.
template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
 public:
  void shutdown() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] { self->close(); });
  }

  template <class... Args>
  Session(const Limits& limits, const Handler& handler, std::shared_ptr<size_t> count, std::string remote,
          Args&&... args)
      : stream_(std::forward<Args>(args)...), limits_(limits), handler_(handler), count_(std::move(count)),
        remote_(std::move(remote)) {
    ++*count_;
  }
  ~Session() { --*count_; }

  void start() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      read();
    } else {
      beast::get_lowest_layer(stream_).expires_after(limits_.request_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](const beast::error_code& ec) {
                                if (ec) return self->close();
                                self->read();
                              });
    }
  }

 private:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  void read() {
    parser_.emplace();
    parser_->body_limit(limits_.max_body);
    parser_->header_limit(static_cast<uint32_t>(limits_.max_header));
    // The first request must arrive whole within the request timeout; later ones may wait
    // the idle timeout to start (then they too have to arrive in time, roughly).
    beast::get_lowest_layer(stream_).expires_after(served_ ? limits_.idle_timeout : limits_.request_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = this->shared_from_this()](const beast::error_code& ec, size_t) { self->on_read(ec); });
  }

  void on_read(const beast::error_code& ec) {
    if (ec == bhttp::error::body_limit)
      return fail(413, "the request body is larger than " + std::to_string(limits_.max_body) + " bytes");
    if (ec == bhttp::error::header_limit)
      return fail(431, "the request headers are larger than " + std::to_string(limits_.max_header) + " bytes");
    if (ec == bhttp::error::end_of_stream) return close();
    // Not HTTP (a parse error): said once, then the connection closes. Anything else (a
    // timeout, a reset) just closes.
    if (ec && ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category())
      return fail(400, "the request is not valid HTTP/1.1 (" + ec.message() + ")");
    if (ec) return close();
    auto& req = parser_->get();
    Request r;
    r.method = std::string(req.method_string());
    std::string target(req.target());
    auto q = target.find('?');
    r.path = target.substr(0, q);
    if (q != std::string::npos) r.query = parse_query(target.substr(q + 1));
    for (const auto& f : req) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = std::string(f.value());
    }
    r.body = std::move(req.body());
    r.remote = remote_;
    r.tls = kTls;
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    served_ = true;
    beast::get_lowest_layer(stream_).expires_after(limits_.handler_timeout);
    // The answer may come later (a deploy fetches its design): the callback keeps the
    // connection alive until then.
    handler_(r, [self = this->shared_from_this()](Response resp) { self->write(std::move(resp)); });
  }

  void fail(int status, const std::string& message) {
    keep_alive_ = false;
    Response r;
    r.status = status;
    r.body = "{\"error\":{\"status\":" + std::to_string(status) + ",\"message\":\"" + message + "\"}}";
    write(std::move(r));
  }

  void write(Response r) {
    if (responded_) return;  // one answer per request
    responded_ = true;
    if (r.stream) return start_stream(std::move(r));
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(r.status), version_);
    res->set(bhttp::field::server, "jarvis");
    res->set(bhttp::field::content_type, r.content_type);
    res->set(bhttp::field::cache_control, "no-store");
    res->set("X-Content-Type-Options", "nosniff");
    for (const auto& [k, v] : r.headers) res->insert(k, v);
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(limits_.write_timeout);
    bhttp::async_write(stream_, *res, [self = this->shared_from_this(), res](const beast::error_code& ec, size_t) {
      if (ec) return self->close();
      if (!self->keep_alive_) return self->linger_close();
      self->responded_ = false;
      self->read();
    });
  }

  void start_stream(Response r) {
    stream_body_ = r.stream;
    std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + status_text(r.status) +
                       "\r\nServer: jarvis\r\nContent-Type: " + r.content_type +
                       "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n";
    for (const auto& [k, v] : r.headers) head += k + ": " + v + "\r\n";
    head += "\r\n";
    out_ = std::move(head) + stream_body_->take();
    std::weak_ptr<Session> weak = this->shared_from_this();
    stream_body_->set_wake([weak] {
      if (auto self = weak.lock()) self->pump();
    });
    // The client says nothing more on an event stream: a read that ends means it left.
    beast::get_lowest_layer(stream_).expires_never();
    stream_.async_read_some(asio::buffer(probe_), [self = this->shared_from_this()](const beast::error_code&, size_t) {
      if (self->stream_body_) self->stream_body_->close();
      self->close();
    });
    writing_ = true;
    asio::async_write(stream_, asio::buffer(out_), [self = this->shared_from_this()](const beast::error_code& ec, size_t) {
      self->on_stream_written(ec);
    });
  }

  void pump() {
    if (writing_ || closed_) return;
    if (!stream_body_->has_pending()) {
      if (stream_body_->closed()) close();
      return;
    }
    out_ = stream_body_->take();
    writing_ = true;
    asio::async_write(stream_, asio::buffer(out_), [self = this->shared_from_this()](const beast::error_code& ec, size_t) {
      self->on_stream_written(ec);
    });
  }

  void on_stream_written(const beast::error_code& ec) {
    writing_ = false;
    if (ec) {
      stream_body_->close();
      return close();
    }
    pump();
  }

  // After an answer to a request that was not read whole (too large): stop sending, read and
  // drop what the client still sends for a moment, then close. Closing at once with unread
  // data would reset the connection, and the client could lose the answer.
  void linger_close() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
    drain();
  }
  void drain() {
    beast::get_lowest_layer(stream_).async_read_some(
        asio::buffer(probe_), [self = this->shared_from_this()](const beast::error_code& ec, size_t) {
          if (ec) return self->close();
          self->drain();
        });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (stream_body_) {
      stream_body_->set_wake(nullptr);
      stream_body_->close();
    }
    beast::error_code ignored;
    auto& socket = beast::get_lowest_layer(stream_).socket();
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).close();
  }

  Stream stream_;
  const Limits& limits_;
  const Handler& handler_;
  std::shared_ptr<size_t> count_;
  std::string remote_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool keep_alive_ = false, served_ = false, responded_ = false, writing_ = false, closed_ = false;
  unsigned version_ = 11;
  std::shared_ptr<EventStream> stream_body_;
  std::string out_;
  char probe_[64];
};

}  // namespace

Server::Server(asio::io_context& io, ServerConfig config, Handler handler)
    : config_(std::move(config)), handler_(std::move(handler)), acceptor_(io) {}

Server::~Server() { stop(); }

void Server::start() {
  if (!config_.tls_cert_file.empty()) {
    tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
    boost::system::error_code ec;
    tls_->use_certificate_chain_file(config_.tls_cert_file, ec);
    if (ec) throw std::runtime_error("http: cannot load tls_cert_file " + config_.tls_cert_file + ": " + ec.message());
    tls_->use_private_key_file(config_.tls_key_file, asio::ssl::context::pem, ec);
    if (ec) throw std::runtime_error("http: cannot load tls_key_file " + config_.tls_key_file + ": " + ec.message());
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(config_.address, ec);
  if (ec) throw std::runtime_error("http: listen address '" + config_.address + "' is not an IP address");
  tcp::endpoint ep(address, config_.port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("http: cannot listen on " + config_.address + ":" + std::to_string(config_.port) +
                             ": " + ec.message());
  port_ = acceptor_.local_endpoint().port();
  accept();
}

void Server::stop() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (auto& weak : sessions_)
    if (auto s = weak.lock()) s->shutdown();
  sessions_.clear();
}

void Server::track(const std::shared_ptr<SessionBase>& session) {
  std::erase_if(sessions_, [](const auto& w) { return w.expired(); });
  sessions_.push_back(session);
}

void Server::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      boost::system::error_code e2;
      auto peer = socket.remote_endpoint(e2);
      std::string remote = e2 ? "unknown" : peer.address().to_string();
      socket.set_option(tcp::no_delay(true), e2);
      if (*connections_ >= config_.limits.max_connections) {
        // Over the bound: said plainly to a plain client, the TLS one just sees the close.
        ++refused_;
        if (refused_ == 1 || refused_ % 100 == 0)
          log::warn(log::kNoJob, "http: {} connections open (http.max_connections); refused one from {} ({} so far)",
                    *connections_, remote, refused_);
        if (!tls_) {
          static const std::string body =
              "{\"error\":{\"status\":503,\"message\":\"too many connections; try again in a second\"}}";
          static const std::string busy =
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
          socket.non_blocking(true, e2);
          socket.write_some(asio::buffer(busy), e2);
        }
        socket.close(e2);
      } else if (tls_) {
        auto s = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
            config_.limits, handler_, connections_, remote, std::move(socket), *tls_);
        track(s);
        s->start();
      } else {
        auto s = std::make_shared<Session<beast::tcp_stream>>(config_.limits, handler_, connections_, remote,
                                                               std::move(socket));
        track(s);
        s->start();
      }
    }
    accept();
  });
}

}  // namespace jarvis::http
