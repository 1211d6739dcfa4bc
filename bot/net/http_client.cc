#include "bot/net/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <curl/curl.h>

#include "bot/util/log.h"
#include "bot/util/text.h"

namespace jarvis {
namespace asio = boost::asio;

struct HttpClient::Transfer {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  HttpRequest request;
  HttpResponse response;
  Done done;
  char error[CURL_ERROR_SIZE] = {};
  bool too_big = false;
  std::chrono::steady_clock::time_point deadline;  // of the whole request, redirects included
  int hops = 0;                                    // redirects followed to get here
  std::string refused_address;                     // an address open_socket refused, in words
};

// One socket curl asked us to watch. A fresh descriptor each time curl changes what it wants:
// curl may close a socket and get the same number back for a new one, and a stale epoll
// registration would never fire.
struct HttpClient::Socket {
  Socket(asio::io_context& io, int fd_) : descriptor(io, fd_), fd(fd_) {}
  ~Socket() {
    boost::system::error_code ignored;
    descriptor.cancel(ignored);
    descriptor.release();  // curl owns the file descriptor
  }
  asio::posix::stream_descriptor descriptor;
  int fd;
  int what = 0;  // CURL_POLL_IN / OUT / INOUT
  bool reading = false, writing = false;
};

namespace {

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<HttpClient::Transfer*>(user);
  size_t bytes = size * n;
  if (t->response.body.size() + bytes > t->request.max_bytes) {
    t->too_big = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  t->response.body.append(data, bytes);
  return bytes;
}

// What went wrong, in words for a chat reply; never the request's headers (they hold tokens).
std::string describe(CURLcode code, const HttpClient::Transfer& t) {
  const auto& r = t.request;
  std::string detail = t.error[0] ? t.error : curl_easy_strerror(code);
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT: return "timed out after " + format_duration(r.timeout);
    case CURLE_FILESIZE_EXCEEDED:
      return "too big: over the " + std::to_string(r.max_bytes) + "-byte limit";
    case CURLE_TOO_MANY_REDIRECTS:
      return "too many redirects (more than " + std::to_string(r.max_redirects) + ")";
    case CURLE_UNSUPPORTED_PROTOCOL:
      return r.allow_http ? "unsupported URL scheme" : "only https:// URLs are allowed";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
      return "TLS failed: " + detail;
    case CURLE_COULDNT_RESOLVE_HOST: return "cannot resolve the host: " + detail;
    case CURLE_COULDNT_CONNECT: return "cannot connect: " + detail;
    default: return detail;
  }
}


bool in_v4(uint32_t a, uint32_t net, int bits) {
  uint32_t mask = bits == 0 ? 0 : ~uint32_t(0) << (32 - bits);
  return (a & mask) == (net & mask);
}

constexpr uint32_t v4(int a, int b, int c, int d) {
  return (uint32_t(a) << 24) | (uint32_t(b) << 16) | (uint32_t(c) << 8) | uint32_t(d);
}

std::string v4_kind(uint32_t a) {
  if (a == v4(169, 254, 169, 254)) return "the cloud metadata service";
  if (in_v4(a, v4(0, 0, 0, 0), 8)) return "unspecified (0.0.0.0/8)";
  if (in_v4(a, v4(127, 0, 0, 0), 8)) return "loopback";
  if (in_v4(a, v4(10, 0, 0, 0), 8) || in_v4(a, v4(172, 16, 0, 0), 12) || in_v4(a, v4(192, 168, 0, 0), 16))
    return "private (RFC 1918)";
  if (in_v4(a, v4(100, 64, 0, 0), 10)) return "shared address space (CGNAT, RFC 6598)";
  if (in_v4(a, v4(169, 254, 0, 0), 16)) return "link-local";
  if (in_v4(a, v4(192, 0, 0, 0), 24)) return "IETF protocol assignments (192.0.0.0/24)";
  if (in_v4(a, v4(198, 18, 0, 0), 15)) return "benchmarking (198.18.0.0/15)";
  if (in_v4(a, v4(224, 0, 0, 0), 4)) return "multicast";
  if (in_v4(a, v4(240, 0, 0, 0), 4)) return "reserved (240.0.0.0/4, broadcast)";
  return {};
}

std::string v6_kind(const unsigned char* b) {
  static const unsigned char metadata[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};
  if (std::memcmp(b, metadata, 16) == 0) return "the cloud metadata service";
  bool zero10 = std::all_of(b, b + 10, [](unsigned char c) { return c == 0; });
  auto embedded = [&](int at) {
    return (uint32_t(b[at]) << 24) | (uint32_t(b[at + 1]) << 16) | (uint32_t(b[at + 2]) << 8) | b[at + 3];
  };
  if (zero10 && b[10] == 0xff && b[11] == 0xff) {  // ::ffff:a.b.c.d, an IPv4 address
    std::string k = v4_kind(embedded(12));
    return k.empty() ? k : k + " (IPv4-mapped)";
  }
  if (zero10 && b[10] == 0 && b[11] == 0) {
    bool all_zero = std::all_of(b + 12, b + 16, [](unsigned char c) { return c == 0; });
    if (all_zero) return "unspecified (::)";
    if (b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] == 1) return "loopback";
    return "IPv4-compatible (deprecated)";
  }
  // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address that may be internal.
  static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::memcmp(b, nat64, 12) == 0) {
    std::string k = v4_kind(embedded(12));
    if (!k.empty()) return k + " (NAT64)";
  }
  if (b[0] == 0x20 && b[1] == 0x02) {
    std::string k = v4_kind(embedded(2));
    if (!k.empty()) return k + " (6to4)";
  }
  if ((b[0] & 0xfe) == 0xfc) return "unique local (fc00::/7)";
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "link-local";
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return "site-local (deprecated)";
  if (b[0] == 0xff) return "multicast";
  return {};
}

std::string address_text(const sockaddr* a) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (a->sa_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a)->sin_addr, buf, sizeof buf);
  else if (a->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr, buf, sizeof buf);
  return buf;
}

// Every socket curl opens for a transfer goes through here, after name resolution: the
// address is the one it is about to connect to.
curl_socket_t open_socket(void* user, curlsocktype, curl_sockaddr* address) {
  auto* t = static_cast<HttpClient::Transfer*>(user);
  if (t->request.refuse_private_addresses) {
    std::string kind = private_address_kind(&address->addr);
    if (!kind.empty()) {
      t->refused_address = address_text(&address->addr) + " is " + kind;
      return CURL_SOCKET_BAD;
    }
  }
  return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

bool is_redirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

std::optional<UrlParts> parse_url(const std::string& url) {
  CURLU* u = curl_url();
  if (!u) return std::nullopt;
  std::optional<UrlParts> out;
  if (curl_url_set(u, CURLUPART_URL, url.c_str(), CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK) {
    char* scheme = nullptr;
    char* host = nullptr;
    char* port = nullptr;
    char* user = nullptr;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
      UrlParts p;
      p.scheme = lower(scheme);
      p.host = lower(host);
      if (p.host.size() > 2 && p.host.front() == '[' && p.host.back() == ']')
        p.host = p.host.substr(1, p.host.size() - 2);
      p.port = std::strtol(port, nullptr, 10);
      p.has_userinfo = curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK;
      out = p;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
  }
  curl_url_cleanup(u);
  return out;
}

std::string private_address_kind(const sockaddr* a) {
  if (a->sa_family == AF_INET)
    return v4_kind(ntohl(reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr));
  if (a->sa_family == AF_INET6)
    return v6_kind(reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr.s6_addr);
  return "not an IP address";
}

std::string private_address_kind(const std::string& ip) {
  sockaddr_in in4{};
  sockaddr_in6 in6{};
  if (inet_pton(AF_INET, ip.c_str(), &in4.sin_addr) == 1) {
    in4.sin_family = AF_INET;
    return private_address_kind(reinterpret_cast<sockaddr*>(&in4));
  }
  if (inet_pton(AF_INET6, ip.c_str(), &in6.sin6_addr) == 1) {
    in6.sin6_family = AF_INET6;
    return private_address_kind(reinterpret_cast<sockaddr*>(&in6));
  }
  return "not an IP address";
}

HttpClient::HttpClient(asio::io_context& io) : io_(io), timer_(io) {
  global_init();
  multi_ = curl_multi_init();
  auto* m = static_cast<CURLM*>(multi_);
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, &HttpClient::on_socket);
  curl_multi_setopt(m, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, &HttpClient::on_timer);
  curl_multi_setopt(m, CURLMOPT_TIMERDATA, this);
}

HttpClient::~HttpClient() {
  auto* m = static_cast<CURLM*>(multi_);
  for (auto& [easy, t] : transfers_) {
    curl_multi_remove_handle(m, t->easy);
    curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
  }
  transfers_.clear();
  curl_multi_cleanup(m);  // closes cached connections through on_close_socket
  sockets_.clear();
}

void HttpClient::fetch(HttpRequest request, Done done) {
  auto t = std::make_unique<Transfer>();
  t->request = std::move(request);
  t->done = std::move(done);
  t->deadline = std::chrono::steady_clock::now() + t->request.timeout;
  start(std::move(t));
}

void HttpClient::start(std::unique_ptr<Transfer> t) {
  const auto& r = t->request;
  if (r.check_url) {
    auto parts = parse_url(r.url);
    std::string why = parts ? r.check_url(*parts) : "not a URL";
    if (!why.empty()) {
      t->response.refused = t->hops ? HttpResponse::Refusal::Redirect : HttpResponse::Refusal::Url;
      t->response.error = (t->hops ? "redirect refused: " : "URL refused: ") + why;
      t->response.redirects = t->hops;
      complete(std::move(t));
      return;
    }
  }
  auto left = std::chrono::duration_cast<Millis>(t->deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) {
    t->response.timed_out = true;
    t->response.error = "timed out after " + format_duration(r.timeout);
    t->response.redirects = t->hops;
    complete(std::move(t));
    return;
  }
  CURL* e = curl_easy_init();
  t->easy = e;
  const char* protocols = r.allow_http ? "http,https" : "https";
  curl_easy_setopt(e, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, protocols);
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);  // followed in finish_transfers, checked
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, left.count())));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(r.connect_timeout.count()));
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(r.max_bytes));
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!r.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, r.ca_file.c_str());
  curl_easy_setopt(e, CURLOPT_USERAGENT, "jarvis/0.1 (+chat-ops bot)");
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");  // gzip; the limit counts decoded bytes
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
  curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &open_socket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t.get());
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, &HttpClient::on_close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, this);
  // A proxy would be the address connected to, and the check would be about the proxy.
  if (r.refuse_private_addresses) curl_easy_setopt(e, CURLOPT_PROXY, "");
  if (r.method == "POST") {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r.body.c_str());
  } else if (r.method != "GET") {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
  }
  for (const auto& h : r.headers) t->headers = curl_slist_append(t->headers, h.c_str());
  if (t->headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);

  auto* m = static_cast<CURLM*>(multi_);
  transfers_[e] = std::move(t);
  if (CURLMcode rc = curl_multi_add_handle(m, e); rc != CURLM_OK) {
    auto failed = std::move(transfers_[e]);
    transfers_.erase(e);
    failed->response.error = curl_multi_strerror(rc);
    curl_easy_cleanup(e);
    curl_slist_free_all(failed->headers);
    failed->easy = nullptr;
    failed->headers = nullptr;
    complete(std::move(failed));
  }
  // curl asks for a timeout of 0 from add_handle; on_timer starts the transfer from the loop.
}

void HttpClient::complete(std::unique_ptr<Transfer> t) {
  // From the loop, not from inside curl's bookkeeping: `done` may start another request. And
  // whatever `done` throws ends here, logged, not in the loop's run().
  asio::post(io_, [t = std::shared_ptr<Transfer>(std::move(t))]() {
    try {
      t->done(std::move(t->response));
    } catch (const std::exception& e) {
      log::error(log::kNoJob, "http: a completion handler failed: {}", e.what());
    }
  });
}

// A 3xx with a Location: the next hop is a new transfer, checked like the first one.
bool HttpClient::follow_redirect(std::unique_ptr<Transfer>& t, const std::string& location) {
  if (t->hops >= t->request.max_redirects) {
    t->response = HttpResponse{};
    t->response.too_many_redirects = true;
    t->response.redirects = t->hops;
    t->response.error = "too many redirects (more than " + std::to_string(t->request.max_redirects) + ")";
    return false;
  }
  auto next = std::make_unique<Transfer>();
  next->request = t->request;
  next->done = std::move(t->done);
  next->deadline = t->deadline;
  next->hops = t->hops + 1;
  long status = t->response.status;
  auto& r = next->request;
  if (status == 303 || ((status == 301 || status == 302) && r.method == "POST")) {
    r.method = "GET";
    r.body.clear();
  }
  auto from = parse_url(r.url), to = parse_url(location);
  bool same_origin = from && to && from->scheme == to->scheme && from->host == to->host && from->port == to->port;
  if (!same_origin) {
    std::vector<std::string> kept;
    for (const auto& h : r.headers) {
      std::string name = lower(h.substr(0, h.find(':')));
      if (name != "authorization" && name != "cookie" && name != "proxy-authorization") kept.push_back(h);
    }
    r.headers = std::move(kept);
  }
  r.url = location;
  start(std::move(next));
  return true;
}

int HttpClient::on_socket(void*, int fd, int what, void* self_ptr, void*) {
  auto* self = static_cast<HttpClient*>(self_ptr);
  self->sockets_.erase(fd);
  if (what == CURL_POLL_REMOVE) return 0;
  auto socket = std::make_shared<Socket>(self->io_, fd);
  socket->what = what;
  self->sockets_[fd] = socket;
  self->watch(socket);
  return 0;
}

int HttpClient::on_close_socket(void* self_ptr, int fd) {
  static_cast<HttpClient*>(self_ptr)->sockets_.erase(fd);
  return ::close(fd);
}

void HttpClient::watch(const std::shared_ptr<Socket>& socket) {
  std::weak_ptr<Socket> weak = socket;
  if ((socket->what & CURL_POLL_IN) && !socket->reading) {
    socket->reading = true;
    socket->descriptor.async_wait(asio::posix::stream_descriptor::wait_read,
                                  [this, weak](const boost::system::error_code& ec) {
                                    auto s = weak.lock();
                                    if (!s) return;  // curl is done with it
                                    s->reading = false;
                                    int fd = s->fd;
                                    s.reset();  // curl may replace this socket from inside
                                    if (!ec) socket_ready(fd, CURL_CSELECT_IN);
                                  });
  }
  if ((socket->what & CURL_POLL_OUT) && !socket->writing) {
    socket->writing = true;
    socket->descriptor.async_wait(asio::posix::stream_descriptor::wait_write,
                                  [this, weak](const boost::system::error_code& ec) {
                                    auto s = weak.lock();
                                    if (!s) return;
                                    s->writing = false;
                                    int fd = s->fd;
                                    s.reset();  // curl may replace this socket from inside
                                    if (!ec) socket_ready(fd, CURL_CSELECT_OUT);
                                  });
  }
}

void HttpClient::socket_ready(int fd, int curl_flag) {
  int running = 0;
  curl_multi_socket_action(static_cast<CURLM*>(multi_), fd, curl_flag, &running);
  finish_transfers();
  // Still wanted and unchanged: wait for the next readiness.
  if (auto it = sockets_.find(fd); it != sockets_.end()) watch(it->second);
}

int HttpClient::on_timer(void*, long timeout_ms, void* self_ptr) {
  auto* self = static_cast<HttpClient*>(self_ptr);
  self->timer_.cancel();
  if (timeout_ms < 0) return 0;
  self->timer_.expires_after(Millis(timeout_ms));
  self->timer_.async_wait([self](const boost::system::error_code& ec) {
    if (ec) return;
    int running = 0;
    curl_multi_socket_action(static_cast<CURLM*>(self->multi_), CURL_SOCKET_TIMEOUT, 0, &running);
    self->finish_transfers();
  });
  return 0;
}

void HttpClient::finish_transfers() {
  auto* m = static_cast<CURLM*>(multi_);
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(m, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* e = msg->easy_handle;
    CURLcode code = msg->data.result;
    auto it = transfers_.find(e);
    if (it == transfers_.end()) continue;
    auto t = std::move(it->second);
    transfers_.erase(it);
    auto& resp = t->response;
    std::string location;
    if (code == CURLE_OK) {
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &resp.status);
      char* type = nullptr;
      if (curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &type) == CURLE_OK && type) resp.content_type = type;
      curl_off_t retry = 0;
      if (curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &retry) == CURLE_OK && retry > 0)
        resp.retry_after_s = static_cast<long>(retry);
      char* redirect = nullptr;
      if (is_redirect(resp.status) && curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK && redirect)
        location = redirect;
    } else {
      resp.status = 0;
      resp.timed_out = code == CURLE_OPERATION_TIMEDOUT;
      resp.too_big = t->too_big || code == CURLE_FILESIZE_EXCEEDED;
      if (!t->refused_address.empty() && code == CURLE_COULDNT_CONNECT) {
        resp.refused = HttpResponse::Refusal::Address;
        resp.error = "address refused: " + t->refused_address;
      } else {
        // Our write callback's abort reads as a write error to curl: say what it was.
        resp.error = describe(resp.too_big ? CURLE_FILESIZE_EXCEEDED : code, *t);
      }
      resp.body.clear();
    }
    resp.redirects = t->hops;
    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    curl_slist_free_all(t->headers);
    t->easy = nullptr;
    t->headers = nullptr;
    if (!location.empty() && follow_redirect(t, location)) continue;
    complete(std::move(t));
  }
}

}  // namespace jarvis
