#pragma once
// The console front of `jarvis serve`: commands on stdin, replies and announcements on stdout.
// It is the simplest chat front; IRC, XMPP and Slack follow the same shape.
#include <functional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/streambuf.hpp>

#include "bot/commands/command_service.h"

namespace jarvis {

class ConsoleFront {
 public:
  using Output = std::function<void(const std::string& line)>;
  ConsoleFront(boost::asio::io_context& io, CommandService& commands, Requester requester,
               Output output);
  // Starts reading commands from `fd`; false (and a reason) if it cannot be watched
  // (a regular file or /dev/null cannot be polled).
  bool start(int fd, std::string& reason);
  void stop();
  // Progress announcements go to the console as they happen.
  void announce(const EngineEvent& event);

 private:
  void read_line();

  CommandService& commands_;
  Requester requester_;
  Output output_;
  boost::asio::posix::stream_descriptor input_;
  boost::asio::streambuf buffer_;
};

}  // namespace jarvis
