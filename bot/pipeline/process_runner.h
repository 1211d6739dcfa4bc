#pragma once
// Runs workers as child processes on the asio loop: vfork+execve into their own process group
// (on one spawner thread), pipes as asio descriptors, exit noticed through a pidfd, no thread
// per child.
#include <boost/asio/io_context.hpp>

#include <memory>

#include "bot/pipeline/worker_runner.h"

namespace jarvis {

struct ProcessLimits {
  size_t stdout_cap = 8u << 20;       // bytes of stdout accepted
  size_t stderr_line_max = 4096;      // longer lines are cut, with a note of how much
  size_t stderr_lines_max = 1000;     // lines passed on per run; the rest are counted
  size_t stderr_tail_lines = 5;       // kept for the failure reason
  Millis kill_grace{5000};            // SIGTERM -> SIGKILL
  Millis pipe_drain_grace{1000};      // after exit, wait this long for pipes held elsewhere
  int nice = 19;                      // workers.nice; above 0 also SCHED_BATCH (see Spawner)
  // RLIMIT_NPROC of each worker (0: inherited). Counted per user by the kernel, so it caps
  // a fork bomb, not one worker's children exactly; root is exempt.
  unsigned max_processes = 0;
};

class OrphanSweeper;
class Spawner;

class ProcessWorkerRunner : public WorkerRunner {
 public:
  ProcessWorkerRunner(boost::asio::io_context& io, ProcessLimits limits);
  ~ProcessWorkerRunner() override;
  std::shared_ptr<RunningWorker> start(WorkerInvocation invocation, LineHandler on_stderr,
                                       DoneHandler on_done, StartedHandler on_started) override;
  using WorkerRunner::start;

 private:
  boost::asio::io_context& io_;
  ProcessLimits limits_;
  std::shared_ptr<OrphanSweeper> sweeper_;
  std::unique_ptr<Spawner> spawner_;  // vfork+execve off the loop (the vfork waits for the exec)
};

// Raises the soft open-files limit to the hard limit (each running worker holds four fds).
void raise_fd_limit();

// "SIGSEGV" for 11, etc.
std::string signal_name(int sig);

}  // namespace jarvis
