#include "bot/chat/memory/memory_adapter.h"

#include <boost/asio/post.hpp>

namespace jarvis {

MemoryAdapter::MemoryAdapter(boost::asio::io_context& io, std::string own_name)
    : io_(io), own_name_(std::move(own_name)) {}

void MemoryAdapter::connect() {
  ++connect_attempts;
  boost::asio::post(io_, [this] {
    if (refuse_connect) {
      if (listener_) listener_->on_disconnected("connection refused");
      return;
    }
    connected_ = true;
    if (listener_) listener_->on_connected();
  });
}

void MemoryAdapter::disconnect() { connected_ = false; }

void MemoryAdapter::send(const std::string& target, const std::string& line) {
  sent.push_back({target, line});
}

void MemoryAdapter::receive(const std::string& from, const std::string& room,
                            const std::string& text) {
  ChatMessage m;
  m.sender = Identity{"memory", from, from + "!" + from + "@test", ""};
  m.room = room;
  m.text = text;
  if (listener_) listener_->on_message(m);
}

void MemoryAdapter::receive_as(const Identity& from, const std::string& room, const std::string& text) {
  ChatMessage m;
  m.sender = from;
  m.room = room;
  m.text = text;
  if (listener_) listener_->on_message(m);
}

void MemoryAdapter::drop(const std::string& reason) {
  connected_ = false;
  if (listener_) listener_->on_disconnected(reason);
}

std::vector<std::string> MemoryAdapter::lines_to(const std::string& target) const {
  std::vector<std::string> out;
  for (const auto& s : sent)
    if (s.target == target) out.push_back(s.line);
  return out;
}

}  // namespace jarvis
