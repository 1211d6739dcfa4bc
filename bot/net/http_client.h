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

struct sockaddr;

namespace jarvis {

// A URL as curl reads it (the same parser that fetches it, so a check cannot be fooled by a
// URL two parsers read differently). Host lower-cased, IPv6 without brackets; port always set.
struct UrlParts {
  std::string scheme;
  std::string host;
  long port = 0;
  bool has_userinfo = false;
};
std::optional<UrlParts> parse_url(const std::string& url);

// Why an address must not be fetched from when private addresses are refused: "loopback",
// "private (RFC 1918)", "link-local", "the cloud metadata service", ...; empty if it is public.
std::string private_address_kind(const struct sockaddr* address);
std::string private_address_kind(const std::string& numeric_ip);  // for tests and config

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
  // Redirects are followed here, not by curl: this is asked about the first URL and every
  // Location before anything is sent there. "" allows it; anything else is why not (for the
  // log). Unset: every URL is allowed. Credentials (Authorization, Cookie) never follow a
  // redirect to another scheme, host or port.
  std::function<std::string(const UrlParts&)> check_url;
  // Refuse to connect to loopback, private, link-local, CGNAT, metadata, multicast and
  // unspecified addresses, checked on the address actually connected to (after name
  // resolution, so DNS rebinding cannot get around it). Proxies are not used then.
  bool refuse_private_addresses = false;
};

struct HttpResponse {
  long status = 0;         // 0 when the transfer failed (see error)
  std::string body;
  std::string content_type;
  std::optional<long> retry_after_s;  // from a 429 or 503
  std::string error;       // a transport failure in words: timeout, TLS, too big, ...
  bool timed_out = false;
  bool too_big = false;
  bool too_many_redirects = false;
  // A check said no before anything was sent there: check_url (for the first URL or a
  // redirect) or refuse_private_addresses. `error` says what, for the log.
  enum class Refusal { None, Url, Redirect, Address };
  Refusal refused = Refusal::None;
  int redirects = 0;       // followed
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
  void start(std::unique_ptr<Transfer> t);
  void complete(std::unique_ptr<Transfer> t);
  bool follow_redirect(std::unique_ptr<Transfer>& t, const std::string& location);
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
