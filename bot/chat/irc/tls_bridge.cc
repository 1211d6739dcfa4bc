#include "bot/chat/irc/tls_bridge.h"

#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>

namespace jarvis {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

TlsBridge::TlsBridge(asio::io_context& io, asio::ssl::context& tls)
    : upstream_(io, tls), acceptor_(io), local_(io) {}

void TlsBridge::start(const tcp::endpoint& server, const std::string& host_name, bool verify,
                      Ready ready, Closed closed) {
  closed_ = std::move(closed);
  auto self = shared_from_this();
  // SNI, and the name the certificate must carry.
  SSL_set_tlsext_host_name(upstream_.native_handle(), host_name.c_str());
  if (verify) {
    upstream_.set_verify_mode(asio::ssl::verify_peer);
    upstream_.set_verify_callback(asio::ssl::host_name_verification(host_name));
  } else {
    upstream_.set_verify_mode(asio::ssl::verify_none);
  }
  upstream_.lowest_layer().async_connect(server, [self, ready](const boost::system::error_code& ec) {
    if (ec) return ready("cannot connect: " + ec.message(), 0);
    // IRC lines are small and someone waits for each: no Nagle delay (40 ms behind an ACK).
    boost::system::error_code nec;
    self->upstream_.lowest_layer().set_option(tcp::no_delay(true), nec);
    self->upstream_.async_handshake(asio::ssl::stream_base::client,
                                    [self, ready](const boost::system::error_code& ec) {
      if (ec) {
        std::string why = ec.message();
        long verify = SSL_get_verify_result(self->upstream_.native_handle());
        if (verify != X509_V_OK) why = X509_verify_cert_error_string(verify);
        return ready("TLS handshake failed: " + why, 0);
      }
      boost::system::error_code lec;
      self->acceptor_.open(tcp::v4(), lec);
      if (!lec) self->acceptor_.bind(tcp::endpoint(asio::ip::address_v4::loopback(), 0), lec);
      if (!lec) self->acceptor_.listen(1, lec);
      if (lec) return ready("cannot open the loopback bridge: " + lec.message(), 0);
      ready("", self->acceptor_.local_endpoint().port());
    });
  });
}

void TlsBridge::accept_from(unsigned short client_port) {
  expected_port_ = client_port;
  accept();
}

void TlsBridge::accept() {
  auto self = shared_from_this();
  acceptor_.async_accept(local_, [self](const boost::system::error_code& ec) {
    if (ec) {
      if (ec != asio::error::operation_aborted) self->fail("bridge accept failed: " + ec.message());
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
    self->pump_up();
    self->pump_down();
  });
}

void TlsBridge::pump_up() {
  auto self = shared_from_this();
  local_.async_read_some(asio::buffer(up_buf_), [self](const boost::system::error_code& ec, size_t n) {
    if (ec) return self->fail("the IRC client closed the connection");
    asio::async_write(self->upstream_, asio::buffer(self->up_buf_.data(), n),
                      [self](const boost::system::error_code& ec, size_t) {
                        if (ec) return self->fail("TLS write failed: " + ec.message());
                        self->pump_up();
                      });
  });
}

void TlsBridge::pump_down() {
  auto self = shared_from_this();
  upstream_.async_read_some(asio::buffer(down_buf_), [self](const boost::system::error_code& ec, size_t n) {
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
      // Pass the end on rather than cutting the client off: libircclient then reads the
      // server's last words (an ERROR line says why) before it sees the close.
      boost::system::error_code sec;
      self->local_.shutdown(tcp::socket::shutdown_send, sec);
      return;
    }
    if (ec) return self->fail("TLS read failed: " + ec.message());
    asio::async_write(self->local_, asio::buffer(self->down_buf_.data(), n),
                      [self](const boost::system::error_code& ec, size_t) {
                        if (ec) return self->fail("the IRC client went away");
                        self->pump_down();
                      });
  });
}

void TlsBridge::fail(const std::string& reason) {
  if (closing_) return;
  close();
  if (closed_) closed_(reason);
}

void TlsBridge::close() {
  closing_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  local_.close(ec);
  upstream_.lowest_layer().close(ec);
}

}  // namespace jarvis
