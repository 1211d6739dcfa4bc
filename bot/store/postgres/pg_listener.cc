#include "bot/store/postgres/pg_listener.h"

#include <libpq-fe.h>

#include "bot/util/log.h"

namespace jarvis {

PgListener::PgListener(boost::asio::io_context& io, std::string url, std::string channel,
                       std::function<void()> on_notify)
    : io_(io), url_(std::move(url)), channel_(std::move(channel)), on_notify_(std::move(on_notify)), retry_(io) {}

PgListener::~PgListener() { stop(); }

void PgListener::start() { connect(); }

void PgListener::stop() {
  stopped_ = true;
  retry_.cancel();
  if (socket_) {
    socket_->cancel();
    socket_->release();  // libpq owns the descriptor
    socket_.reset();
  }
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
}

void PgListener::drop(const std::string& why) {
  if (!said_down_) log::warn(log::kNoJob, "event notifications off ({}); polling the event table until back", why);
  said_down_ = true;
  if (socket_) {
    socket_->cancel();
    socket_->release();
    socket_.reset();
  }
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  if (stopped_) return;
  retry_.expires_after(std::chrono::seconds(3));
  retry_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) connect();
  });
}

void PgListener::connect() {
  // A connect is bounded by connect_timeout (2 s); on loopback it takes about a millisecond.
  const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
  const char* values[] = {url_.c_str(), "2", "jarvis-listen", nullptr};
  conn_ = PQconnectdbParams(keys, values, 1);
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) return drop("cannot connect");
  std::string listen = "LISTEN " + channel_;
  PGresult* r = PQexec(conn_, listen.c_str());
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  if (!ok || PQsetnonblocking(conn_, 1) != 0) return drop("LISTEN failed");
  if (said_down_) log::info(log::kNoJob, "event notifications on again");
  said_down_ = false;
  socket_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, PQsocket(conn_));
  on_notify_();  // whatever was missed while down is read now
  wait();
}

void PgListener::wait() {
  socket_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec || stopped_ || !conn_) return;
    if (!PQconsumeInput(conn_)) return drop("connection lost");
    bool any = false;
    while (PGnotify* n = PQnotifies(conn_)) {
      any = true;
      PQfreemem(n);
    }
    if (any) on_notify_();
    wait();
  });
}

}  // namespace jarvis
