#pragma once
// An HTTP/1.1 server on the bot's io_context (Boost.Beast), plain or TLS, with bounds on
// everything a client controls: header and body size, connections, how long a request may
// take to arrive, how far behind an event stream may fall. It knows nothing of jarvis: a
// Handler maps each request to a response (or to an event stream).
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "bot/util/duration.h"

namespace jarvis::http {

struct Limits {
  size_t max_body = 64 * 1024;
  size_t max_header = 8 * 1024;  // request line and headers
  size_t max_connections = 256;
  Millis request_timeout{10000};  // for a whole request to arrive (and the TLS handshake)
  Millis idle_timeout{30000};     // between requests on a kept-alive connection
  Millis handler_timeout{120000}; // for the answer (a deploy fetching a gist)
  Millis write_timeout{30000};
  size_t max_stream_backlog = 4u << 20;  // bytes an event stream may fall behind; then it is closed
};

struct Request {
  std::string method;  // GET, POST, ...
  std::string path;    // without the query, as sent (percent-escapes left in)
  std::multimap<std::string, std::string> query;  // decoded
  std::map<std::string, std::string> headers;     // names lower-cased
  std::string body;
  std::string remote;  // client address
  bool tls = false;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
  // The first value of a query parameter; `present` says whether it was there at all.
  std::string param(const std::string& name, bool* present = nullptr) const {
    auto it = query.find(name);
    if (present) *present = it != query.end();
    return it == query.end() ? std::string() : it->second;
  }
};

// The body of a streamed response (Server-Sent Events): whoever owns it pushes chunks; the
// connection writes them as fast as the client reads. A client too far behind is dropped.
class EventStream {
 public:
  explicit EventStream(size_t max_backlog) : max_backlog_(max_backlog) {}
  // False when the stream is closed (the client left, or fell too far behind).
  bool push(const std::string& chunk);
  void close();
  bool closed() const { return closed_; }
  // For the connection.
  std::string take() { return std::exchange(pending_, std::string()); }
  bool has_pending() const { return !pending_.empty(); }
  void set_wake(std::function<void()> wake) { wake_ = std::move(wake); }

 private:
  size_t max_backlog_;
  std::string pending_;
  bool closed_ = false;
  std::function<void()> wake_;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::shared_ptr<EventStream> stream;  // set: the headers now, the stream's chunks after
};

using Respond = std::function<void(Response)>;
using Handler = std::function<void(const Request&, Respond)>;

struct ServerConfig {
  std::string address = "127.0.0.1";
  uint16_t port = 8088;
  std::string tls_cert_file, tls_key_file;  // both or neither
  Limits limits;
};

class SessionBase;

class Server {
 public:
  Server(boost::asio::io_context& io, ServerConfig config, Handler handler);
  ~Server();
  // Binds and listens; throws std::runtime_error saying what failed (the address in use, a
  // certificate that does not load).
  void start();
  void stop();
  uint16_t port() const { return port_; }
  bool tls() const { return tls_ != nullptr; }
  size_t connections() const { return *connections_; }
  uint64_t refused_connections() const { return refused_; }

 private:
  void accept();
  void track(const std::shared_ptr<SessionBase>& session);
  std::vector<std::weak_ptr<SessionBase>> sessions_;
  ServerConfig config_;
  Handler handler_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<size_t> connections_ = std::make_shared<size_t>(0);
  uint64_t refused_ = 0;
  uint16_t port_ = 0;
};

// "%2Fa+b" -> "/a b" (plus as space only when `plus`).
std::string percent_decode(const std::string& s, bool plus = false);
const char* status_text(int status);

}  // namespace jarvis::http
