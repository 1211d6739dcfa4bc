#pragma once
// Test helpers: temp dirs, workers written as scripts, and an engine on a real loop with
// real child processes and a real SQLite store.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "bot/design/design.h"
#include "bot/pipeline/engine.h"
#include "bot/pipeline/process_runner.h"
#include "bot/store/postgres/postgres_job_store.h"
#include "bot/store/sqlite_job_store.h"

namespace jarvis::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);
bool process_exists(int pid);

// A billion-laughs document: anchor `a` is a list of `width` scalars, each next letter up to
// `last` a list of `width` aliases to the one before; it expands to width^levels nodes.
std::string alias_bomb(char last, int width, const std::string& head = "");

// A design for `host` with optional extra top-level YAML.
Design make_design(const std::string& host, const std::string& extra = "");

struct Harness {
  explicit Harness(int max_running = 8);
  ~Harness();

  // Writes <first workers dir>/<module>/<task> as a /bin/sh script with `body`.
  void worker(const std::string& task_name, const std::string& body);
  Pipeline pipeline(const std::vector<TaskSpec>& tasks, const std::string& name = "test");
  static TaskSpec task(const std::string& name, Millis timeout = std::chrono::seconds(20),
                       int retries = 0);

  // Creates the engine (after any config tweaks) and starts it.
  void start();
  SubmitResult submit(const std::string& host, const Pipeline& p, const std::string& extra = "");
  // Runs the loop until the job has ended (or the deadline passes); returns its record.
  JobRecord wait(int64_t job, std::chrono::seconds deadline = std::chrono::seconds(30));
  // Runs the loop until `pred` holds.
  bool run_until(const std::function<bool()>& pred,
                 std::chrono::milliseconds deadline = std::chrono::seconds(30));
  std::vector<std::string> log_lines(int64_t job);
  // The clipboards saved after each stage (SQLite or PostgreSQL store).
  std::vector<std::string> stage_clipboards(int64_t job);

  TempDir tmp;
  boost::asio::io_context io;
  std::unique_ptr<JobStore> store;  // SQLite in tmp unless a test puts another there
  JobStore* engine_store = nullptr;  // what the engine uses, when not `store` (a fault injector)
  ProcessLimits limits;
  EngineConfig config;
  std::unique_ptr<ProcessWorkerRunner> runner;
  std::unique_ptr<Engine> engine;
  std::vector<EngineEvent> events;
};

}  // namespace jarvis::testing
