#pragma once
// LISTEN on a PostgreSQL channel without blocking the loop: its own libpq connection whose
// socket is watched by asio; each NOTIFY calls on_notify on the loop. A lost connection is
// made again every few seconds; notifications are only a hint (readers poll their cursor too),
// so one missed while it was down loses nothing.
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

struct pg_conn;

namespace jarvis {

class PgListener {
 public:
  PgListener(boost::asio::io_context& io, std::string url, std::string channel, std::function<void()> on_notify);
  ~PgListener();
  void start();
  void stop();
  bool connected() const { return conn_ != nullptr; }

 private:
  void connect();
  void wait();
  void drop(const std::string& why);
  boost::asio::io_context& io_;
  std::string url_, channel_;
  std::function<void()> on_notify_;
  pg_conn* conn_ = nullptr;
  std::unique_ptr<boost::asio::posix::stream_descriptor> socket_;
  boost::asio::steady_timer retry_;
  bool stopped_ = false;
  bool said_down_ = false;
};

}  // namespace jarvis
