#pragma once
// HTTP(S) requests through libcurl's multi interface, driven by the asio loop: curl tells us
// which sockets to watch and when its timer is due; the loop tells curl what became ready.
// Nothing here blocks (name resolution runs in curl's threaded resolver).
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/util/duration.h"

namespace jarvis {

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // sent for POST
  size_t max_bytes = 1u << 20;       // a longer body fails the request ("too big")
  Millis timeout{15000};             // the whole transfer, redirects included
  Millis connect_timeout{5000};
  long max_redirects = 3;
  std::string ca_file;               // trust this CA bundle instead of the system's
  bool allow_http = false;           // plain http:// (tests, a local mirror); https only otherwise
};

struct HttpResponse {
  long status = 0;         // 0 when the transfer failed (see error)
  std::string body;
  std::string content_type;
  std::optional<long> retry_after_s;  // from a 429 or 503
  std::string error;       // a transport failure in words: timeout, TLS, too big, ...
  bool timed_out = false;
  bool too_big = false;
  bool ok() const { return error.empty() && status >= 200 && status < 300; }
};

class HttpClient {
 public:
  using Done = std::function<void(HttpResponse)>;

  explicit HttpClient(boost::asio::io_context& io);
  ~HttpClient();  // abandons transfers in flight; their callbacks never run
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Starts the request; `done` runs later on the loop, exactly once.
  void fetch(HttpRequest request, Done done);
  size_t in_flight() const { return transfers_.size(); }
  boost::asio::io_context& io() { return io_; }

  struct Transfer;  // one request in flight (defined in the .cc)
  struct Socket;    // one socket curl asked the loop to watch

 private:
  static int on_socket(void* easy, int fd, int what, void* self, void* socket_data);
  static int on_timer(void* multi, long timeout_ms, void* self);
  static int on_close_socket(void* self, int fd);
  void watch(const std::shared_ptr<Socket>& socket);
  void socket_ready(int fd, int curl_flag);
  void finish_transfers();

  boost::asio::io_context& io_;
  void* multi_;  // CURLM*, kept out of the header so curl.h stays in one translation unit
  boost::asio::steady_timer timer_;
  std::map<int, std::shared_ptr<Socket>> sockets_;
  std::map<void*, std::unique_ptr<Transfer>> transfers_;  // by CURL* handle
};

}  // namespace jarvis
