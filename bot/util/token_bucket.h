#pragma once
#include <algorithm>
#include <chrono>

namespace jarvis {

// A token bucket: `burst` tokens at most, refilled at `rate` per second.
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  TokenBucket(double rate = 1.0, double burst = 1.0)
      : rate_(rate), burst_(burst), tokens_(burst), last_(Clock::now()) {}

  bool take(Clock::time_point now = Clock::now()) {
    refill(now);
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }
  double available(Clock::time_point now = Clock::now()) {
    refill(now);
    return tokens_;
  }
  // How long until a token is there (zero if one is).
  Clock::duration wait(Clock::time_point now = Clock::now()) {
    refill(now);
    if (tokens_ >= 1.0) return Clock::duration::zero();
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>((1.0 - tokens_) / rate_));
  }

 private:
  void refill(Clock::time_point now) {
    double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
  }
  double rate_, burst_, tokens_;
  Clock::time_point last_;
};

}  // namespace jarvis
