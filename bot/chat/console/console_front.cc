#include "bot/chat/console/console_front.h"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/read_until.hpp>

#include "bot/util/log.h"

namespace jarvis {

ConsoleFront::ConsoleFront(boost::asio::io_context& io, CommandService& commands,
                           Requester requester, Output output)
    : commands_(commands), requester_(std::move(requester)), output_(std::move(output)),
      input_(io), buffer_(kMaxCommandLength + 2) {}

bool ConsoleFront::start(int fd, std::string& reason) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode))) {
    reason = "stdin is not a terminal, pipe or socket";
    return false;
  }
  int copy = ::dup(fd);
  boost::system::error_code ec;
  input_.assign(copy, ec);
  if (!ec) {
    // /dev/null is a character device that epoll refuses; find out now, not on first read.
    input_.non_blocking(true, ec);
  }
  if (ec) {
    reason = ec.message();
    ::close(copy);
    return false;
  }
  read_line();
  return true;
}

void ConsoleFront::stop() {
  boost::system::error_code ignored;
  input_.close(ignored);
}

void ConsoleFront::read_line() {
  boost::asio::async_read_until(
      input_, buffer_, '\n', [this](const boost::system::error_code& ec, size_t n) {
        if (ec == boost::asio::error::not_found) {
          // A line longer than any command: drop it whole rather than run a piece of it.
          output_("that command is too long (over " + std::to_string(kMaxCommandLength) +
                  " characters)");
          buffer_.consume(buffer_.size());
          read_line();
          return;
        }
        if (ec) {
          if (ec != boost::asio::error::operation_aborted)
            log::info(log::kNoJob, "console input closed ({}); still serving", ec.message());
          return;
        }
        std::string line(boost::asio::buffers_begin(buffer_.data()),
                         boost::asio::buffers_begin(buffer_.data()) + static_cast<long>(n));
        buffer_.consume(n);
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
        if (!line.empty()) {
          commands_.handle(line, requester_, [this](Reply reply) {
            for (const auto& l : reply.lines) output_(l);
          });
        }
        read_line();
      });
}

void ConsoleFront::announce(const EngineEvent& event) {
  std::string line = describe_event(event);
  if (!line.empty()) output_(line);
}

}  // namespace jarvis
