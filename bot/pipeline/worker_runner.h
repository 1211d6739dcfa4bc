#pragma once
// The seam between deciding what runs (the engine) and running it (a child process).
// The engine talks only to WorkerRunner; tests of scheduling use a fake.
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bot/util/duration.h"

namespace jarvis {

struct WorkerInvocation {
  std::string executable;             // absolute path
  std::vector<std::string> argv;      // argv[0] included
  std::vector<std::string> env;       // "NAME=value", the whole environment
  std::string input;                  // the worker's whole stdin, in place before it starts
  Millis timeout{std::chrono::minutes(10)};
};

struct WorkerOutcome {
  enum class Kind {
    Exited,          // code = exit status
    Signaled,        // code = signal number
    TimedOut,        // killed after the timeout
    OutputTooLarge,  // stdout over the cap; killed
    Cancelled,       // cancel() was called; killed
    SpawnFailed,     // error says why
  };
  Kind kind = Kind::Exited;
  int code = 0;
  std::string output;                    // stdout
  std::vector<std::string> stderr_tail;  // the last few stderr lines
  std::string error;

  bool succeeded() const { return kind == Kind::Exited && code == 0; }
};

class RunningWorker {
 public:
  virtual ~RunningWorker() = default;
  // Stops the worker (its whole process group); the done handler still runs once.
  virtual void cancel() = 0;
  virtual int pid() const = 0;
};

class WorkerRunner {
 public:
  using LineHandler = std::function<void(std::string_view line)>;
  using DoneHandler = std::function<void(WorkerOutcome)>;
  using StartedHandler = std::function<void(int pid)>;
  virtual ~WorkerRunner() = default;
  // Starts a worker; `on_stderr` gets each stderr line, `on_done` runs exactly once, on the
  // loop, after the process is reaped and its pipes are closed. The process may come to
  // exist after start() returns: `on_started` runs on the loop once it does, with its pid
  // (or -1 when it could not be started, before on_done), and before any line. Until then
  // the worker's pid() is -1, and cancel() stops it as soon as it exists.
  virtual std::shared_ptr<RunningWorker> start(WorkerInvocation invocation, LineHandler on_stderr,
                                               DoneHandler on_done, StartedHandler on_started) = 0;
  std::shared_ptr<RunningWorker> start(WorkerInvocation invocation, LineHandler on_stderr,
                                       DoneHandler on_done) {
    return start(std::move(invocation), std::move(on_stderr), std::move(on_done), nullptr);
  }
};

}  // namespace jarvis
