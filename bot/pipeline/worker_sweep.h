#pragma once
// Finds and kills worker processes by the marker variables the engine puts in their
// environment (JARVIS_ENGINE, JARVIS_JOB, ...). A marker reaches what a pid or a process
// group cannot: a worker whose pid was never stored because its engine died right after the
// spawn, and a `setsid` grandchild that left the worker's process group.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace jarvis {

struct MarkedProcess {
  int pid = 0;
  int pgid = 0;
};

// Live (not zombie) processes of this user whose environment holds every one of `all` and
// none of `none` ("NAME=value" entries). Never throws: an unreadable /proc entry is skipped.
std::vector<MarkedProcess> find_marked_processes(const std::vector<std::string>& all,
                                                 const std::vector<std::string>& none = {},
                                                 const std::string& proc_root = "/proc");

// SIGKILLs each process found and its process group; returns how many were found.
int kill_marked_processes(const std::vector<std::string>& all,
                          const std::vector<std::string>& none = {},
                          const std::string& proc_root = "/proc");

// What a worker leaves behind when it exits. The bot is a child subreaper
// (PR_SET_CHILD_SUBREAPER), so anything a worker started that outlives its parent — a
// `setsid` daemon that left the process group — becomes the bot's own child instead of
// init's. Every run gets a token in its environment (JARVIS_RUN=<sweeper id>-<n>); looking
// at the bot's children is cheap (a few /proc/self/task/*/children files), so at every
// worker's exit a child carrying one of this sweeper's tokens whose run has ended is killed
// and reaped. Other children (without a token of ours) are not the sweeper's business.
class OrphanSweeper : public std::enable_shared_from_this<OrphanSweeper> {
 public:
  explicit OrphanSweeper(boost::asio::io_context& io);
  // "JARVIS_RUN=..." for the next worker's environment. From now until run_started (or
  // run_abandoned) a process carrying it is a worker being spawned, not an orphan.
  std::string next_token();
  void run_started(int leader_pid, const std::string& token);
  void run_abandoned(const std::string& token);  // its spawn failed
  // After the leader is reaped: sweeps now, and again shortly after for what its group's
  // SIGKILL orphans a moment later.
  void run_ended(int leader_pid);
  void sweep();

 private:
  void sweep_later();
  boost::asio::steady_timer timer_;
  bool timer_pending_ = false;
  std::string prefix_;                 // "JARVIS_RUN=<pid>-<random>-"
  unsigned long long issued_ = 0;
  std::map<int, std::string> active_;  // leader pid -> its run's token
  std::set<std::string> starting_;     // tokens of runs whose spawn has not returned yet
  std::set<int> orphans_;              // ours to reap once they are gone
};

}  // namespace jarvis
