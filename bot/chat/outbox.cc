#include "bot/chat/outbox.h"

#include <algorithm>

#include <boost/asio/post.hpp>

#include "bot/chat/chat_text.h"
#include "bot/util/log.h"

namespace jarvis {

std::vector<std::string> split_line(const std::string& text, size_t max_bytes) {
  std::string clean = text;
  for (char& c : clean)
    if (c == '\r' || c == '\n' || c == '\0') c = ' ';
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < clean.size()) {
    size_t len = std::min(max_bytes, clean.size() - pos);
    if (pos + len < clean.size()) {
      // Prefer the last space in the window; otherwise back off to a character boundary.
      size_t space = clean.rfind(' ', pos + len);
      if (space != std::string::npos && space > pos + max_bytes / 2) {
        len = space - pos;
      } else {
        while (len > 1 && (static_cast<unsigned char>(clean[pos + len]) & 0xC0) == 0x80) --len;
      }
    }
    out.push_back(clean.substr(pos, len));
    pos += len;
    while (pos < clean.size() && clean[pos] == ' ') ++pos;
  }
  if (out.empty()) out.push_back("");
  return out;
}

Outbox::Outbox(boost::asio::io_context& io, ChatAdapter& adapter, OutboxLimits limits)
    : adapter_(adapter), limits_(limits), total_(limits.per_second, limits.burst), timer_(io) {}

void Outbox::send(const std::string& target, const std::string& text, bool progress) {
  auto it = targets_.find(target);
  if (it == targets_.end()) {
    if (targets_.size() >= limits_.max_targets)
      std::erase_if(targets_, [](const auto& t) { return t.second.queue.empty(); });
    if (targets_.size() >= limits_.max_targets) {
      log::warn(log::kNoJob, "{}: {} targets have lines waiting; not queuing one for {}",
                adapter_.protocol(), targets_.size(), target);
      return;
    }
    it = targets_.try_emplace(target).first;
    it->second.bucket = TokenBucket(limits_.target_per_second, limits_.target_burst);
  }
  auto& queue = it->second.queue;
  if (queue.size() >= limits_.max_queued) {
    // Far behind: a progress line is the first to go (a later one says more), else the oldest.
    auto old = std::find_if(queue.begin(), queue.end(), [](const Entry& e) { return e.progress; });
    queue.erase(old != queue.end() ? old : queue.begin());
    if (dropped_++ % 100 == 0)
      log::warn(log::kNoJob, "{}: {} is {} lines behind; dropping the oldest ({} so far)",
                adapter_.protocol(), target, queue.size(), dropped_);
  }
  queue.push_back({chat_safe_text(text), progress});
  schedule(TokenBucket::Clock::duration::zero());
}

void Outbox::pause() {
  paused_ = true;
  timer_.cancel();
  scheduled_ = false;
}

void Outbox::resume() {
  paused_ = false;
  schedule(TokenBucket::Clock::duration::zero());
}

size_t Outbox::pending() const {
  size_t n = 0;
  for (const auto& [name, t] : targets_) n += t.queue.size();
  return n;
}

void Outbox::schedule(TokenBucket::Clock::duration delay) {
  if (paused_ || scheduled_) return;
  scheduled_ = true;
  timer_.expires_after(delay);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    // Aborted: cancelled by pause() (which resets scheduled_ itself) or the outbox is being
    // destroyed, when `this` must not be touched.
    if (ec == boost::asio::error::operation_aborted) return;
    scheduled_ = false;
    if (!ec) flush();
  });
}

std::string Outbox::next_line(Target& t) {
  Entry first = std::move(t.queue.front());
  t.queue.pop_front();
  std::string line = std::move(first.line);
  if (first.progress) {
    size_t queued_progress = 1;
    for (const auto& e : t.queue) queued_progress += e.progress;
    if (queued_progress >= limits_.coalesce_at) {
      // Behind: queued progress lines join this one, in order, as many as fit in a line;
      // the rest wait for the next one. Nothing is dropped and no event is cut in two.
      const size_t max = adapter_.max_line_bytes();
      for (auto it = t.queue.begin(); it != t.queue.end();) {
        if (!it->progress) { ++it; continue; }
        if (line.size() + 3 + it->line.size() > max) break;
        line += " | " + it->line;
        it = t.queue.erase(it);
      }
    }
  }
  auto pieces = split_line(line, adapter_.max_line_bytes());
  for (size_t i = pieces.size(); i-- > 1;) t.queue.push_front({std::move(pieces[i]), false});
  return pieces.front();
}

void Outbox::flush() {
  if (paused_ || !adapter_.connected()) return;
  auto now = TokenBucket::Clock::now();
  TokenBucket::Clock::duration soonest = TokenBucket::Clock::duration::max();
  bool sent_any = true;
  while (sent_any) {
    sent_any = false;
    // Round-robin over targets so one busy room does not starve the others.
    auto start = targets_.upper_bound(last_target_);
    for (size_t n = 0; n < targets_.size(); ++n, ++start) {
      if (start == targets_.end()) start = targets_.begin();
      auto& [name, t] = *start;
      if (t.queue.empty()) continue;
      auto wait_target = t.bucket.wait(now);
      auto wait_total = total_.wait(now);
      if (wait_total > TokenBucket::Clock::duration::zero()) {
        schedule(wait_total);
        return;
      }
      if (wait_target > TokenBucket::Clock::duration::zero()) {
        soonest = std::min(soonest, wait_target);
        continue;
      }
      t.bucket.take(now);
      total_.take(now);
      adapter_.send(name, next_line(t));
      last_target_ = name;
      sent_any = true;
      break;
    }
  }
  if (soonest != TokenBucket::Clock::duration::max()) schedule(soonest);
}

}  // namespace jarvis
