#include "bot/net/http_client.h"

#include <unistd.h>

#include <mutex>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <curl/curl.h>

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

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

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
  CURL* e = curl_easy_init();
  t->easy = e;
  const auto& r = t->request;
  const char* protocols = r.allow_http ? "http,https" : "https";
  curl_easy_setopt(e, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, protocols);
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, r.max_redirects);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(r.timeout.count()));
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
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, &HttpClient::on_close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, this);
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
    asio::post(io_, [f = std::move(failed)]() mutable { f->done(std::move(f->response)); });
  }
  // curl asks for a timeout of 0 from add_handle; on_timer starts the transfer from the loop.
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
    if (code == CURLE_OK) {
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &resp.status);
      char* type = nullptr;
      if (curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &type) == CURLE_OK && type) resp.content_type = type;
      curl_off_t retry = 0;
      if (curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &retry) == CURLE_OK && retry > 0)
        resp.retry_after_s = static_cast<long>(retry);
    } else {
      resp.status = 0;
      resp.timed_out = code == CURLE_OPERATION_TIMEDOUT;
      resp.too_big = t->too_big || code == CURLE_FILESIZE_EXCEEDED;
      // Our write callback's abort reads as a write error to curl: say what it was.
      resp.error = describe(resp.too_big ? CURLE_FILESIZE_EXCEEDED : code, *t);
      resp.body.clear();
    }
    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    curl_slist_free_all(t->headers);
    t->easy = nullptr;
    t->headers = nullptr;
    // From the loop, not from inside curl's bookkeeping: `done` may start another request.
    asio::post(io_, [t = std::shared_ptr<Transfer>(std::move(t))]() { t->done(std::move(t->response)); });
  }
}

}  // namespace jarvis
