#include "bot/pipeline/process_runner.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/write.hpp>

#include "bot/pipeline/worker_sweep.h"

namespace jarvis {
namespace asio = boost::asio;
using Kind = WorkerOutcome::Kind;

namespace {

int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// The worker's stdin: an anonymous in-memory file holding the whole clipboard before the
// spawn. Unlike a pipe fed after it, a worker never sees a short or empty stdin because the
// bot died (or was slow) between the spawn and the write.
int clipboard_file(const std::string& input, std::string& error) {
  int fd = static_cast<int>(::syscall(SYS_memfd_create, "jarvis-clipboard", MFD_CLOEXEC));
  if (fd < 0) {
    error = std::string("cannot create the worker's stdin: ") + std::strerror(errno);
    return -1;
  }
  size_t written = 0;
  while (written < input.size()) {
    ssize_t n = ::write(fd, input.data() + written, input.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = std::string("cannot write the worker's stdin: ") + std::strerror(errno);
      ::close(fd);
      return -1;
    }
    written += static_cast<size_t>(n);
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

// Owns the descriptors of one child while they are being set up.
struct Pipes {
  int in = -1, out[2] = {-1, -1}, err[2] = {-1, -1};
  bool open() { return ::pipe2(out, O_CLOEXEC) == 0 && ::pipe2(err, O_CLOEXEC) == 0; }
  static void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  void close_child_ends() {
    close_fd(in);
    close_fd(out[1]);
    close_fd(err[1]);
  }
  ~Pipes() {
    for (int* fd : {&in, &out[0], &out[1], &err[0], &err[1]}) close_fd(*fd);
  }
};

// The signals a worker starts with at their default disposition even where the bot ignores
// them (an ignored signal stays ignored across execve).
constexpr std::array kDefaultSignals{SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};

// What the child does between vfork and execve. It shares the spawner's memory and stack, so it
// only makes system calls on what the plan prepared, allocates nothing and never returns; the
// address sanitizer's stack bookkeeping stays out of it (the parent resumes on that stack).
struct ChildSetup {
  int in = -1, out = -1, err = -1;
  const char* executable = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  rlim_t max_processes = 0;
  volatile int error = 0;  // set by the child when a step or execve fails (vfork: shared memory)
};

#define JARVIS_VFORK_CHILD __attribute__((no_sanitize("address", "undefined")))

[[noreturn]] JARVIS_VFORK_CHILD void child_failed(ChildSetup& s) noexcept {
  s.error = errno ? errno : EINVAL;
  ::_exit(127);
}

[[noreturn]] JARVIS_VFORK_CHILD void exec_child(ChildSetup& s) noexcept {
  // The bot's handlers must not run here: every caught signal goes back to its default before
  // the mask (all blocked, from the spawner's thread) is emptied.
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction sa;
    if (::sigaction(sig, nullptr, &sa) != 0) continue;  // the C library's own (32, 33)
    bool reset = sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN;
    for (int d : kDefaultSignals) reset = reset || (sig == d && sa.sa_handler != SIG_DFL);
    if (!reset) continue;
    sa = {};
    sa.sa_handler = SIG_DFL;
    ::sigaction(sig, &sa, nullptr);
  }
  // Own process group, so a timeout or cancel reaches the worker's children too.
  if (::setpgid(0, 0) != 0) child_failed(s);
  const int from[3] = {s.in, s.out, s.err};
  for (int target = 0; target < 3; ++target) {
    int fd = from[target];
    // dup2 onto itself keeps close-on-exec set: clear it instead.
    if (fd == target ? ::fcntl(fd, F_SETFD, 0) != 0 : ::dup2(fd, target) != target) child_failed(s);
  }
  // Whatever a library opened without O_CLOEXEC must not leak into workers.
  if (::close_range(3, ~0U, 0) != 0) child_failed(s);
  // No core dumps (a worker's memory holds the clipboard and its secrets) and, when configured,
  // a bound on processes: set here, before the worker's first instruction, not after the spawn.
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) child_failed(s);
  if (s.max_processes) {
    const rlimit nproc{s.max_processes, s.max_processes};
    if (::setrlimit(RLIMIT_NPROC, &nproc) != 0) child_failed(s);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(s.executable, s.argv, s.envp);
  child_failed(s);
}

// vfork: like posix_spawn's clone, the parent thread waits until the child has exec'd (or
// failed), and nothing of the bot's memory is copied.
pid_t vfork_exec(ChildSetup& s) {
  pid_t pid = ::vfork();
  if (pid == 0) exec_child(s);
  return pid;
}

// What the spawner's thread needs for one spawn, and what it found.
struct SpawnPlan {
  Pipes pipes;
  std::string executable;
  std::vector<std::string> argv, env;
  unsigned max_processes = 0;  // RLIMIT_NPROC, 0: inherited
  pid_t pid = -1;
  int error = 0;  // errno of the failed step, 0 when the worker runs

  // On the spawner's thread, whose signals are all blocked: touches nothing but this plan.
  void run() {
    std::vector<char*> argvp, envp;
    for (auto& a : argv) argvp.push_back(a.data());
    argvp.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    ChildSetup setup;
    setup.in = pipes.in;
    setup.out = pipes.out[1];
    setup.err = pipes.err[1];
    setup.executable = executable.c_str();
    setup.argv = argvp.data();
    setup.envp = envp.data();
    setup.max_processes = max_processes;
    pid = vfork_exec(setup);
    if (pid < 0) {
      error = errno;
      return;
    }
    if (setup.error != 0) {
      error = setup.error;
      ::waitpid(pid, nullptr, 0);  // it _exit'ed already: reaped here, never seen by the loop
      pid = -1;
    }
  }
};

}  // namespace

// One thread that starts the workers for the loop, in the order asked.
class Spawner {
 public:
  explicit Spawner(int nice) {
    // Signals are the loop's business: none is delivered to this thread.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    thread_ = std::thread([this, nice] {
      // The workers' priority, on this thread: a child inherits it from the clone on, so
      // no worker (nor its vfork'd start) ever competes with the loop as an equal. Batch:
      // a worker that wakes never preempts the loop; nice: it yields the CPU to it.
      if (nice > 0) {
        sched_param param{};
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice);
      }
      work();
    });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  ~Spawner() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void submit(std::function<void()> spawn) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(spawn));
    }
    wake_.notify_one();
  }

 private:
  void work() {
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;  // what is left is dropped: nobody would watch those workers
      auto spawn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      spawn();
      spawn = nullptr;  // its resources go on this thread, before the next spawn
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

namespace {

class ChildProcess : public RunningWorker, public std::enable_shared_from_this<ChildProcess> {
 public:
  ChildProcess(asio::io_context& io, const ProcessLimits& limits, std::shared_ptr<OrphanSweeper> sweeper,
               WorkerRunner::LineHandler on_stderr, WorkerRunner::DoneHandler on_done)
      : io_(io), limits_(limits), sweeper_(std::move(sweeper)), on_stderr_(std::move(on_stderr)),
        on_done_(std::move(on_done)),
        stdout_(io), stderr_(io), pidfd_(io), timeout_timer_(io), kill_timer_(io),
        drain_timer_(io), poll_timer_(io) {}

  // Prepares the spawn on the loop (pipes, the stdin file, argv and environment) and hands
  // the vfork and execve to the spawner's thread: the vfork holds the caller until the child
  // has exec'd, a millisecond or more when hundreds of workers compete for the CPU,
  // and the loop must not wait that long per worker. On failure returns the reason and
  // nothing is left running.
  std::optional<std::string> spawn(const WorkerInvocation& inv, Spawner& spawner) {
    auto plan = std::make_shared<SpawnPlan>();
    if (!plan->pipes.open()) return std::string("cannot create pipes: ") + std::strerror(errno);
    std::string error;
    plan->pipes.in = clipboard_file(inv.input, error);
    if (plan->pipes.in < 0) return error;
    plan->executable = inv.executable;
    plan->argv = inv.argv;
    plan->env = inv.env;
    // This run's token: whatever the worker leaves running after it exits carries it.
    token_ = sweeper_->next_token();
    plan->env.push_back(token_);
    plan->max_processes = limits_.max_processes;
    timeout_ = inv.timeout;
    auto self = shared_from_this();
    // Everything moves on to the loop: nothing of this child is released on the spawner's thread.
    spawner.submit([self, plan, work = asio::make_work_guard(io_)]() mutable {
      plan->run();
      auto executor = work.get_executor();
      asio::post(executor, [self = std::move(self), plan = std::move(plan), work = std::move(work)] {
        self->started(*plan);
      });
    });
    return std::nullopt;
  }

  void on_started(WorkerRunner::StartedHandler handler) { on_started_ = std::move(handler); }

  // On the loop, for a worker that could not be started: on_started(-1), then the outcome.
  void start_failed(const std::string& reason) {
    if (auto on_started = std::move(on_started_)) on_started(-1);
    WorkerOutcome out;
    out.kind = Kind::SpawnFailed;
    out.error = reason;
    on_stderr_ = nullptr;
    done_ = true;
    auto done = std::move(on_done_);
    done(std::move(out));
  }

  // Back on the loop once the spawn returned.
  void started(SpawnPlan& plan) {
    if (plan.error != 0) {
      sweeper_->run_abandoned(token_);
      return start_failed("cannot start " + plan.executable + ": " + std::strerror(plan.error));
    }
    auto on_started = std::move(on_started_);
    pid_ = plan.pid;
    sweeper_->run_started(pid_, token_);
    plan.pipes.close_child_ends();
    stdout_.assign(std::exchange(plan.pipes.out[0], -1));
    stderr_.assign(std::exchange(plan.pipes.err[0], -1));
    int pidfd = pidfd_open(pid_);
    if (pidfd >= 0) pidfd_.assign(pidfd);
    if (on_started) on_started(pid_);
    begin(timeout_);
    if (cancel_requested_) terminate(Kind::Cancelled);
  }

  void begin(Millis timeout) {
    auto self = shared_from_this();
    read_stdout();
    read_stderr();
    wait_exit();
    timeout_timer_.expires_after(timeout);
    timeout_timer_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec && !self->reaped_) self->terminate(Kind::TimedOut);
    });
  }

  void cancel() override {
    if (pid_ < 0) {
      cancel_requested_ = true;  // still being spawned: stopped as soon as it exists
      return;
    }
    if (!reaped_) terminate(Kind::Cancelled);
  }
  int pid() const override { return pid_; }

 private:
  // Straight into the output, which grows with what arrives: a thousand workers running at
  // once hold what they printed, not a fixed buffer each.
  void read_stdout() {
    auto self = shared_from_this();
    size_t have = output_.size();
    size_t room = std::clamp(have, size_t{4096}, size_t{1} << 20);
    output_.resize(have + room);
    stdout_.async_read_some(asio::buffer(output_.data() + have, room),
                            [self, have](const boost::system::error_code& ec, size_t n) {
      self->output_.resize(have + (ec ? 0 : n));
      if (!ec) {
        if (have + n > self->limits_.stdout_cap) {
          self->output_.resize(have);
          self->close(self->stdout_, self->stdout_open_);
          self->terminate(Kind::OutputTooLarge);
          self->maybe_finish();
          return;
        }
        self->read_stdout();
        return;
      }
      self->close(self->stdout_, self->stdout_open_);
      self->maybe_finish();
    });
  }

  void read_stderr() {
    auto self = shared_from_this();
    stderr_.async_read_some(asio::buffer(err_buf_), [self](const boost::system::error_code& ec,
                                                          size_t n) {
      if (!ec) {
        self->take_stderr(self->err_buf_.data(), n);
        self->read_stderr();
        return;
      }
      self->close(self->stderr_, self->stderr_open_);
      self->maybe_finish();
    });
  }

  void take_stderr(const char* p, size_t n) {
    const char* end = p + n;
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      const char* stop = nl ? nl : end;
      size_t len = static_cast<size_t>(stop - p);
      size_t room = limits_.stderr_line_max > err_line_.size()
                        ? limits_.stderr_line_max - err_line_.size() : 0;
      err_line_.append(p, std::min(len, room));
      if (len > room) err_line_cut_ += len - room;
      if (!nl) break;
      emit_stderr_line();
      p = nl + 1;
    }
  }

  void emit_stderr_line() {
    if (!err_line_.empty() && err_line_.back() == '\r') err_line_.pop_back();
    std::string line = std::move(err_line_);
    err_line_.clear();
    if (err_line_cut_) {
      line += " [line cut: " + std::to_string(err_line_cut_) + " more bytes]";
      err_line_cut_ = 0;
    }
    tail_.push_back(line);
    if (tail_.size() > limits_.stderr_tail_lines) tail_.pop_front();
    if (err_lines_ < limits_.stderr_lines_max) {
      ++err_lines_;
      if (on_stderr_) on_stderr_(line);
    } else {
      ++err_lines_dropped_;
    }
  }

  void wait_exit() {
    auto self = shared_from_this();
    if (pidfd_.is_open()) {
      pidfd_.async_wait(asio::posix::descriptor_base::wait_read,
                        [self](const boost::system::error_code& ec) {
                          if (ec == asio::error::operation_aborted) return;
                          self->try_reap();
                        });
    } else {
      // Kernels without pidfd: poll waitpid for this one child (never waitpid(-1)).
      poll_timer_.expires_after(std::chrono::milliseconds(20));
      poll_timer_.async_wait([self](const boost::system::error_code& ec) {
        if (!ec) self->try_reap();
      });
    }
  }

  void try_reap() {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid == 0) {
      wait_exit();  // not exited yet
      return;
    }
    // While the exited leader is unreaped its process-group id cannot be reused, so this is
    // the moment to clear out anything the worker left behind (grandchildren holding pipes).
    ::kill(-pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);  // does not block: the child has exited
    reaped_ = true;
    wait_status_ = status;
    timeout_timer_.cancel();
    kill_timer_.cancel();
    boost::system::error_code ignored;
    pidfd_.close(ignored);
    // Whatever left the group (a setsid'd daemon) is the bot's child now (it is a subreaper)
    // and still carries this run's marker: it goes the way of its group.
    sweeper_->run_ended(pid_);
    if (stdout_open_ || stderr_open_) {
      // Something outside the group may still hold the pipes.
      auto self = shared_from_this();
      drain_timer_.expires_after(limits_.pipe_drain_grace);
      drain_timer_.async_wait([self](const boost::system::error_code& ec) {
        if (ec) return;
        self->close(self->stdout_, self->stdout_open_);
        self->close(self->stderr_, self->stderr_open_);
        self->maybe_finish();
      });
    }
    maybe_finish();
  }

  void terminate(Kind why) {
    if (!forced_) forced_ = why;
    if (reaped_ || terminating_) return;
    terminating_ = true;
    ::kill(-pid_, SIGTERM);
    auto self = shared_from_this();
    kill_timer_.expires_after(limits_.kill_grace);
    kill_timer_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec && !self->reaped_) ::kill(-self->pid_, SIGKILL);
    });
  }

  void close(asio::posix::stream_descriptor& d, bool& open_flag) {
    boost::system::error_code ignored;
    d.close(ignored);
    open_flag = false;
  }

  void maybe_finish() {
    if (done_ || !reaped_ || stdout_open_ || stderr_open_) return;
    done_ = true;
    drain_timer_.cancel();
    if (!err_line_.empty() || err_line_cut_) emit_stderr_line();
    if (err_lines_dropped_) {
      std::string note = "[" + std::to_string(err_lines_dropped_) +
                         " more stderr lines not kept in the log]";
      if (on_stderr_) on_stderr_(note);
    }
    WorkerOutcome out;
    if (WIFEXITED(wait_status_)) {
      out.kind = Kind::Exited;
      out.code = WEXITSTATUS(wait_status_);
    } else if (WIFSIGNALED(wait_status_)) {
      out.kind = Kind::Signaled;
      out.code = WTERMSIG(wait_status_);
    }
    if (forced_) out.kind = *forced_;
    out.output = std::move(output_);
    out.stderr_tail.assign(tail_.begin(), tail_.end());
    auto done = std::move(on_done_);
    on_stderr_ = nullptr;
    done(std::move(out));
  }

  asio::io_context& io_;
  ProcessLimits limits_;
  std::shared_ptr<OrphanSweeper> sweeper_;
  WorkerRunner::LineHandler on_stderr_;
  WorkerRunner::DoneHandler on_done_;
  WorkerRunner::StartedHandler on_started_;
  std::string token_;
  Millis timeout_{0};
  bool cancel_requested_ = false;
  pid_t pid_ = -1;
  asio::posix::stream_descriptor stdout_, stderr_, pidfd_;
  asio::steady_timer timeout_timer_, kill_timer_, drain_timer_, poll_timer_;
  std::array<char, 4096> err_buf_;  // stderr is read a line or so at a time
  std::string output_;
  std::string err_line_;
  size_t err_line_cut_ = 0;
  size_t err_lines_ = 0;
  size_t err_lines_dropped_ = 0;
  std::deque<std::string> tail_;
  bool stdout_open_ = true, stderr_open_ = true;
  bool reaped_ = false, terminating_ = false, done_ = false;
  int wait_status_ = 0;
  std::optional<Kind> forced_;
};

// Stands in for a worker that never started, so the engine sees one shape of failure.
class NotStarted : public RunningWorker {
 public:
  void cancel() override {}
  int pid() const override { return -1; }
};

}  // namespace

ProcessWorkerRunner::ProcessWorkerRunner(asio::io_context& io, ProcessLimits limits)
    : io_(io), limits_(limits), sweeper_(std::make_shared<OrphanSweeper>(io)),
      spawner_(std::make_unique<Spawner>(limits.nice)) {
  // A worker that exits without reading stdin must not kill the bot with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
}

ProcessWorkerRunner::~ProcessWorkerRunner() = default;

std::shared_ptr<RunningWorker> ProcessWorkerRunner::start(WorkerInvocation inv,
                                                          LineHandler on_stderr,
                                                          DoneHandler on_done,
                                                          StartedHandler on_started) {
  auto child = std::make_shared<ChildProcess>(io_, limits_, sweeper_, std::move(on_stderr),
                                              std::move(on_done));
  child->on_started(std::move(on_started));
  if (auto error = child->spawn(inv, *spawner_)) {
    asio::post(io_, [child, reason = *error] { child->start_failed(reason); });
    return std::make_shared<NotStarted>();
  }
  return child;
}

void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    case SIGPIPE: return "SIGPIPE";
    case SIGQUIT: return "SIGQUIT";
    default: return "signal " + std::to_string(sig);
  }
}

}  // namespace jarvis
