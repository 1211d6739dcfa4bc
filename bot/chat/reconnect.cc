#include "bot/chat/reconnect.h"

#include "bot/util/log.h"

namespace jarvis {

ReconnectSupervisor::ReconnectSupervisor(boost::asio::io_context& io, ChatAdapter& adapter,
                                         std::vector<std::string> rooms,
                                         ChatAdapter::Listener& front, Backoff backoff)
    : adapter_(adapter), rooms_(std::move(rooms)), front_(front), backoff_(backoff),
      next_delay_(backoff.initial), timer_(io) {
  adapter_.set_listener(this);
}

void ReconnectSupervisor::start() {
  stopped_ = false;
  adapter_.connect();
}

void ReconnectSupervisor::stop() {
  stopped_ = true;
  timer_.cancel();
  adapter_.disconnect();
}

void ReconnectSupervisor::stop_with(const std::string& reason) {
  stopped_ = true;
  timer_.cancel();
  adapter_.quit(reason);
}

void ReconnectSupervisor::on_connected() {
  next_delay_ = backoff_.initial;
  for (const auto& room : rooms_) adapter_.join(room);
  log::info(log::kNoJob, "{}: connected as {}, joined {} rooms", adapter_.protocol(),
            adapter_.own_name(), rooms_.size());
  front_.on_connected();
}

void ReconnectSupervisor::on_disconnected(const std::string& reason) {
  front_.on_disconnected(reason);
  if (stopped_) return;
  std::uniform_real_distribution<double> jitter(1.0 - backoff_.jitter, 1.0 + backoff_.jitter);
  auto delay = Millis(static_cast<int64_t>(static_cast<double>(next_delay_.count()) * jitter(rng_)));
  next_delay_ = std::min(backoff_.max, next_delay_ * 2);
  log::warn(log::kNoJob, "{}: disconnected ({}); reconnecting in {}", adapter_.protocol(), reason,
            format_duration(delay));
  timer_.expires_after(delay);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    ++reconnects_;
    adapter_.connect();
  });
}

}  // namespace jarvis
