#pragma once
// Debian's libircclient has no TLS, and a deploy bot must not talk in plaintext. The bridge
// makes the TLS connection itself (asio::ssl, certificate verified against the server name
// by default), listens on an ephemeral loopback port for exactly the one connection
// libircclient makes, checks it really is that socket (by its port), and splices the two.
// Everything runs on the bot's io_context.
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

namespace jarvis {

class TlsBridge : public std::enable_shared_from_this<TlsBridge> {
 public:
  using Ready = std::function<void(const std::string& error, unsigned short local_port)>;
  using Closed = std::function<void(const std::string& reason)>;

  TlsBridge(boost::asio::io_context& io, boost::asio::ssl::context& tls);
  // Connects and completes the handshake with `server`, verifying its certificate for
  // `host_name` (unless `verify` is false), then opens the loopback listener; `ready` gets
  // its port or an error.
  void start(const boost::asio::ip::tcp::endpoint& server, const std::string& host_name,
             bool verify, Ready ready, Closed closed);
  // Accepts the loopback connection whose client port is `client_port`, then splices.
  void accept_from(unsigned short client_port);
  void close();

 private:
  void accept();
  void pump_up();    // local -> server
  void pump_down();  // server -> local
  void fail(const std::string& reason);

  boost::asio::ssl::stream<boost::asio::ip::tcp::socket> upstream_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::socket local_;
  unsigned short expected_port_ = 0;
  std::array<char, 8192> up_buf_{}, down_buf_{};
  Closed closed_;
  bool closing_ = false;
};

}  // namespace jarvis
