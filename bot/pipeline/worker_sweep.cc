#include "bot/pipeline/worker_sweep.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

namespace jarvis {
namespace {

// Reads a whole small /proc file with plain syscalls: a process that exits while it is read
// gives a short or failed read (ESRCH), never an exception.
bool read_file(const std::string& path, std::string& out, size_t cap = 1u << 20) {
  out.clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[8192];
  while (out.size() < cap) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return !out.empty();
}

bool has_entry(const std::string& env, const std::string& entry) {
  size_t pos = 0;
  while ((pos = env.find(entry, pos)) != std::string::npos) {
    size_t end = pos + entry.size();
    if ((pos == 0 || env[pos - 1] == '\0') && (end == env.size() || env[end] == '\0')) return true;
    pos = end;
  }
  return false;
}

// True if some entry of the NUL-separated environment starts with `prefix`.
bool has_entry_prefix(const std::string& env, const std::string& prefix) {
  size_t pos = 0;
  while ((pos = env.find(prefix, pos)) != std::string::npos) {
    if (pos == 0 || env[pos - 1] == '\0') return true;
    pos += prefix.size();
  }
  return false;
}

}  // namespace

std::vector<MarkedProcess> find_marked_processes(const std::vector<std::string>& all,
                                                 const std::vector<std::string>& none,
                                                 const std::string& proc_root) {
  std::vector<MarkedProcess> found;
  DIR* dir = ::opendir(proc_root.c_str());
  if (!dir) return found;
  const int self = static_cast<int>(::getpid());
  std::string env, stat;
  while (dirent* e = ::readdir(dir)) {
    const char* name = e->d_name;
    if (!*name || std::strspn(name, "0123456789") != std::strlen(name)) continue;
    int pid = std::atoi(name);
    if (pid == self) continue;
    std::string base = proc_root + "/" + name;
    if (!read_file(base + "/environ", env)) continue;
    if (!std::all_of(all.begin(), all.end(), [&](const auto& m) { return has_entry(env, m); }))
      continue;
    if (std::any_of(none.begin(), none.end(), [&](const auto& m) { return has_entry(env, m); }))
      continue;
    if (!read_file(base + "/stat", stat)) continue;
    auto paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size()) continue;
    char state = stat[paren + 2];
    if (state == 'Z' || state == 'X') continue;  // already dead, only not reaped
    int ppid = 0, pgrp = 0;
    if (std::sscanf(stat.c_str() + paren + 3, "%d %d", &ppid, &pgrp) != 2) continue;
    found.push_back({pid, pgrp});
  }
  ::closedir(dir);
  return found;
}

int kill_marked_processes(const std::vector<std::string>& all, const std::vector<std::string>& none,
                          const std::string& proc_root) {
  auto found = find_marked_processes(all, none, proc_root);
  for (const auto& p : found) {
    ::kill(p.pid, SIGKILL);
    // Its group too (a worker's children that scrubbed their environment), but never ours.
    if (p.pgid > 1 && p.pgid != ::getpgrp()) ::kill(-p.pgid, SIGKILL);
  }
  return static_cast<int>(found.size());
}

OrphanSweeper::OrphanSweeper(boost::asio::io_context& io) : timer_(io) {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof buf, "JARVIS_RUN=%d-%08x-", static_cast<int>(::getpid()), rd());
  prefix_ = buf;
}

std::string OrphanSweeper::next_token() {
  std::string token = prefix_ + std::to_string(++issued_);
  starting_.insert(token);
  return token;
}

void OrphanSweeper::run_started(int leader_pid, const std::string& token) {
  starting_.erase(token);
  active_[leader_pid] = token;
}

void OrphanSweeper::run_abandoned(const std::string& token) { starting_.erase(token); }

void OrphanSweeper::run_ended(int leader_pid) {
  active_.erase(leader_pid);
  sweep();
  sweep_later();
}

void OrphanSweeper::sweep_later() {
  if (timer_pending_) return;
  timer_pending_ = true;
  timer_.expires_after(std::chrono::milliseconds(200));
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    self->timer_pending_ = false;
    if (ec) return;
    self->sweep();
    if (!self->orphans_.empty()) self->sweep_later();
  });
}

void OrphanSweeper::sweep() {
  std::vector<int> children;
  std::string text;
  if (DIR* tasks = ::opendir("/proc/self/task")) {
    while (dirent* t = ::readdir(tasks)) {
      if (t->d_name[0] == '.') continue;
      if (!read_file(std::string("/proc/self/task/") + t->d_name + "/children", text)) continue;
      const char* p = text.c_str();
      char* end = nullptr;
      for (long pid = std::strtol(p, &end, 10); end != p; pid = std::strtol(p, &end, 10)) {
        children.push_back(static_cast<int>(pid));
        p = end;
      }
    }
    ::closedir(tasks);
  }
  std::string env, stat;
  for (int pid : children) {
    if (active_.count(pid)) continue;  // a worker still running its stage
    std::string base = "/proc/" + std::to_string(pid);
    if (!read_file(base + "/stat", stat)) continue;
    auto paren = stat.rfind(')');
    char state = paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
    if (state == 'Z') {
      // Any finished child that is not a running worker's leader: an orphan reparented to
      // us (with or without our token) that nobody else will ever reap.
      orphans_.erase(pid);
      ::waitpid(pid, nullptr, WNOHANG);
      continue;
    }
    if (!read_file(base + "/environ", env) || !has_entry_prefix(env, prefix_)) continue;
    // A worker whose spawn has not returned yet: its pid is not known here so far.
    if (std::any_of(starting_.begin(), starting_.end(),
                    [&](const std::string& token) { return has_entry(env, token); }))
      continue;
    bool running_stage = std::any_of(active_.begin(), active_.end(),
                                     [&](const auto& run) { return has_entry(env, run.second); });
    orphans_.insert(pid);
    if (running_stage) continue;  // its stage still runs: it goes when that stage ends
    int ppid = 0, pgrp = 0;
    ::kill(pid, SIGKILL);
    if (std::sscanf(stat.c_str() + paren + 3, "%d %d", &ppid, &pgrp) == 2 && pgrp > 1 &&
        pgrp != ::getpgrp())
      ::kill(-pgrp, SIGKILL);
  }
  if (!orphans_.empty()) sweep_later();
}

}  // namespace jarvis
