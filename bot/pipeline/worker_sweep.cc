#include "bot/pipeline/worker_sweep.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

}  // namespace jarvis
