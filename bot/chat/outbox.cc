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
  send(target, OutLine{text, progress ? OutLine::Kind::Progress : OutLine::Kind::Notice});
}

void Outbox::send(const std::string& target, OutLine line) {
  using K = OutLine::Kind;
  auto it = targets_.find(target);
  if (it == targets_.end()) {
    if (targets_.size() >= limits_.max_targets)
      std::erase_if(targets_, [](const auto& t) { return t.second.size() == 0; });
    if (targets_.size() >= limits_.max_targets) {
      log::warn(log::kNoJob, "{}: {} targets have lines waiting; not queuing one for {}",
                adapter_.protocol(), targets_.size(), target);
      return;
    }
    it = targets_.try_emplace(target).first;
    it->second.bucket = TokenBucket(limits_.target_per_second, limits_.target_burst);
  }
  Target& t = it->second;
  line.text = chat_safe_text(line.text);
  if (line.kind == K::Reply) {
    t.replies.push_back(std::move(line));
  } else {
    auto& queue = t.queue;
    queue.push_back(std::move(line));
  }
  if (t.size() > limits_.max_queued) {
    // Far behind: a progress line is the first to go (a later one says more), else the oldest.
    auto& queue = t.queue.empty() ? t.replies : t.queue;
    auto old = std::find_if(queue.begin(), queue.end(), [](const Entry& e) { return e.kind == K::Progress; });
    queue.erase(old != queue.end() ? old : queue.begin());
    if (dropped_++ % 100 == 0)
      log::warn(log::kNoJob, "{}: {} is {} lines behind; dropping the oldest ({} so far)",
                adapter_.protocol(), target, t.size(), dropped_);
  }
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
  for (const auto& [name, t] : targets_) n += t.size();
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

// Behind: the lines of `first`'s group still queued join it, in the order they came, as
// many as fit in a line ("alice: ready: web01, web02 (jobs 3, 4)"); the rest wait.
std::string Outbox::merge(std::deque<Entry>& queue, Entry first) {
  if (first.group.empty() || first.item.empty()) return std::move(first.text);
  std::vector<std::string> items{first.item};
  std::vector<int64_t> jobs{first.job};
  auto text = [&] {
    std::string s = first.group + " ";
    for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
    s += jobs.size() == 1 ? " (job " : " (jobs ";
    for (size_t i = 0; i < jobs.size(); ++i) s += (i ? ", " : "") + std::to_string(jobs[i]);
    return s + ")";
  };
  const size_t max = adapter_.max_line_bytes();
  for (auto it = queue.begin(); it != queue.end();) {
    if (it->group != first.group || it->item.empty()) { ++it; continue; }
    items.push_back(it->item);
    jobs.push_back(it->job);
    if (text().size() > max) {
      items.pop_back();
      jobs.pop_back();
      break;
    }
    it = queue.erase(it);
  }
  return items.size() == 1 ? std::move(first.text) : text();
}

// Behind: a job's progress line with a newer line about the same job queued after it is
// stale, and goes (the newer one keeps its own place, so the order never changes).
void Outbox::compact(Target& t) {
  using K = OutLine::Kind;
  auto& q = t.queue;
  for (auto it = q.begin(); it != q.end();) {
    bool stale = it->kind == K::Progress && !it->key.empty() &&
                 std::any_of(std::next(it), q.end(), [&](const Entry& later) {
                   return later.key == it->key && (later.kind == K::Progress || later.kind == K::Final);
                 });
    it = stale ? q.erase(it) : std::next(it);
  }
}

std::string Outbox::next_line(Target& t, bool behind) {
  if (behind) compact(t);
  auto& queue = t.replies.empty() ? t.queue : t.replies;
  Entry first = std::move(queue.front());
  queue.pop_front();
  std::string line = behind ? merge(queue, std::move(first)) : std::move(first.text);
  auto pieces = split_line(line, adapter_.max_line_bytes());
  // The rest of a long line goes next, ahead of anything else for this target.
  for (size_t i = pieces.size(); i-- > 1;) queue.push_front({std::move(pieces[i]), OutLine::Kind::Notice});
  return pieces.front();
}

void Outbox::flush() {
  if (paused_ || !adapter_.connected()) return;
  auto now = TokenBucket::Clock::now();
  TokenBucket::Clock::duration soonest = TokenBucket::Clock::duration::max();
  // Replies first, on every target, then announcements; round-robin over targets within
  // each, so one busy room does not starve the others.
  bool reply_waiting = false;
  for (bool replies : {true, false}) {
    if (!replies)
      for (const auto& [name, t] : targets_) reply_waiting |= !t.replies.empty();
    bool sent_any = true;
    while (sent_any) {
      sent_any = false;
      auto start = targets_.upper_bound(last_target_);
      for (size_t n = 0; n < targets_.size(); ++n, ++start) {
        if (start == targets_.end()) start = targets_.begin();
        auto& [name, t] = *start;
        if (replies ? t.replies.empty() : t.size() == 0) continue;
        auto wait_total = total_.wait(now);
        // A reply waiting for its room's token keeps the connection's last one for itself.
        if (!replies && reply_waiting && total_.available(now) < 2.0)
          wait_total = std::max(wait_total, std::chrono::duration_cast<TokenBucket::Clock::duration>(
                                                std::chrono::milliseconds(50)));
        if (wait_total > TokenBucket::Clock::duration::zero()) {
          schedule(wait_total);
          return;
        }
        auto wait_target = t.bucket.wait(now);
        if (wait_target > TokenBucket::Clock::duration::zero()) {
          soonest = std::min(soonest, wait_target);
          continue;
        }
        // Behind: more is queued here than the tokens at hand can send now.
        bool behind = static_cast<double>(t.size()) > std::min(t.bucket.available(now), total_.available(now));
        t.bucket.take(now);
        total_.take(now);
        adapter_.send(name, next_line(t, behind));
        last_target_ = name;
        sent_any = true;
        break;
      }
    }
  }
  if (soonest != TokenBucket::Clock::duration::max()) schedule(soonest);
}

}  // namespace jarvis
