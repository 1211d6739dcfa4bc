#pragma once
// An in-memory chat adapter: tests push messages in and read what the bot sent.
#include <boost/asio/io_context.hpp>
#include <string>
#include <vector>

#include "bot/chat/chat_adapter.h"

namespace jarvis {

class MemoryAdapter : public ChatAdapter {
 public:
  struct Sent {
    std::string target;
    std::string line;
  };

  MemoryAdapter(boost::asio::io_context& io, std::string own_name = "jarvis");
  std::string protocol() const override { return "memory"; }
  std::string own_name() const override { return own_name_; }
  void set_listener(Listener* l) override { listener_ = l; }
  void connect() override;
  void disconnect() override;
  bool connected() const override { return connected_; }
  void join(const std::string& room) override { joined.push_back(room); }
  void send(const std::string& target, const std::string& line) override;
  size_t max_line_bytes() const override { return max_line; }

  // Test side.
  void receive(const std::string& from, const std::string& room, const std::string& text);
  void receive_as(const Identity& from, const std::string& room, const std::string& text);
  void drop(const std::string& reason);  // as if the server went away
  std::vector<std::string> lines_to(const std::string& target) const;

  std::vector<Sent> sent;
  std::vector<std::string> joined;
  size_t max_line = 200;
  bool refuse_connect = false;
  int connect_attempts = 0;

 private:
  boost::asio::io_context& io_;
  std::string own_name_;
  Listener* listener_ = nullptr;
  bool connected_ = false;
};

}  // namespace jarvis
