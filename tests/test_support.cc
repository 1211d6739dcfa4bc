#include "tests/test_support.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace jarvis::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "jarvis-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void write_file(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

bool process_exists(int pid) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno != EPERM)) return false;
  // A zombie waiting for init to reap it is dead already.
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto paren = stat.rfind(')');
  return !(paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z');
}

std::string alias_bomb(char last, int width, const std::string& head) {
  std::string bomb = head + "a: &a [";
  for (int i = 0; i < width; ++i) bomb += i ? ", x" : "x";
  bomb += "]\n";
  for (char c = 'b'; c <= last; ++c) {
    bomb += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < width; ++i) bomb += std::string(i ? ", *" : "*") + static_cast<char>(c - 1);
    bomb += "]\n";
  }
  return bomb;
}

Design make_design(const std::string& host, const std::string& extra) {
  std::string text = "instance:\n  hostname: " + host + "\n  provider: test\n" + extra;
  std::string error;
  auto d = parse_design(host + ".yaml", text, error);
  if (!d) throw std::runtime_error("bad test design: " + error);
  return *d;
}

Harness::Harness(int max_running) {
  store = std::make_unique<SqliteJobStore>(tmp.file("jarvis.db"));
  limits.kill_grace = std::chrono::milliseconds(300);
  limits.pipe_drain_grace = std::chrono::milliseconds(300);
  config.workers_path = {tmp.file("workers")};
  config.state_dir = tmp.path();
  config.max_running = max_running;
  config.retry_backoff = std::chrono::milliseconds(20);
  config.watch_interval = std::chrono::milliseconds(50);
  fs::create_directories(tmp.file("workers"));
}

Harness::~Harness() {
  if (engine) {
    engine->stop();
    io.restart();
    io.run_for(std::chrono::seconds(2));
  }
}

void Harness::worker(const std::string& task_name, const std::string& body) {
  auto colon = task_name.find(':');
  std::string path = config.workers_path.front() + "/" + task_name.substr(0, colon) + "/" +
                     task_name.substr(colon + 1);
  write_file(path, "#!/bin/sh\n" + body + "\n");
  ::chmod(path.c_str(), 0755);
}

TaskSpec Harness::task(const std::string& name, Millis timeout, int retries) {
  TaskSpec t;
  t.name = name;
  t.timeout = timeout;
  t.retries = retries;
  return t;
}

Pipeline Harness::pipeline(const std::vector<TaskSpec>& tasks, const std::string& name) {
  Pipeline p;
  p.name = name;
  p.tasks = tasks;
  return p;
}

void Harness::start() {
  runner = std::make_unique<ProcessWorkerRunner>(io, limits);
  engine = std::make_unique<Engine>(io, engine_store ? *engine_store : *store, *runner, config);
  engine->add_observer([this](const EngineEvent& e) { events.push_back(e); });
  engine->start();
}

SubmitResult Harness::submit(const std::string& host, const Pipeline& p, const std::string& extra) {
  return engine->submit(make_design(host, extra), p, "tester", "test:unit");
}

bool Harness::run_until(const std::function<bool()>& pred, std::chrono::milliseconds deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    io.restart();
    io.run_for(std::chrono::milliseconds(10));
  }
  return true;
}

JobRecord Harness::wait(int64_t job, std::chrono::seconds deadline) {
  run_until([&] { auto j = store->job(job); return j && !is_active(j->state); }, deadline);
  return *store->job(job);
}

std::vector<std::string> Harness::log_lines(int64_t job) {
  std::vector<std::string> out;
  for (const auto& l : store->log(job, 100000)) out.push_back(l.line);
  return out;
}

}  // namespace jarvis::testing

namespace jarvis::testing {
std::vector<std::string> Harness::stage_clipboards(int64_t job) {
  if (auto* pg = dynamic_cast<PostgresJobStore*>(store.get())) return pg->stage_clipboards(job);
  return dynamic_cast<SqliteJobStore&>(*store).stage_clipboards(job);
}
}  // namespace jarvis::testing
