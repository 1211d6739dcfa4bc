// Engine benchmarks, each against a baseline measured in the same run.
//
//   jarvis_bench overhead SOURCE_DIR [JOBS]  per-stage cost of the engine (spawn, pipes, YAML
//                                            check, SQLite writes) vs a bare spawn loop
//   jarvis_bench load SOURCE_DIR [JOBS]      JOBS concurrent 5-stage jobs of a 50 ms worker:
//                                            wall time, peak RSS, status latency under load
#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/commands/command_service.h"
#include "bot/design/file_design_source.h"
#include "bot/pipeline/engine.h"
#include "bot/pipeline/process_runner.h"
#include "bot/pipeline/worker_path.h"
#include "bot/store/postgres/postgres_job_store.h"
#include "bot/store/sqlite_job_store.h"
#include "bot/util/log.h"

namespace fs = std::filesystem;
using namespace jarvis;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream b;
  b << in.rdbuf();
  return b.str();
}

// A state dir, the shipped pipelines and the loki design, and an engine on a loop with the
// real process runner and SQLite store: what both benchmarks run on.
struct Setup {
  std::string source;
  std::string state;
  PipelineSet pipelines;
  std::string design_text;
  boost::asio::io_context io;
  std::unique_ptr<JobStore> store;
  std::unique_ptr<ProcessWorkerRunner> runner;
  EngineConfig cfg;
  std::unique_ptr<Engine> engine;
  int finished = 0, failed = 0;

  explicit Setup(const std::string& source_dir) : source(source_dir) {
    state = (fs::temp_directory_path() / ("jarvis-bench-" + std::to_string(::getpid()))).string();
    fs::remove_all(state);
    fs::create_directories(state);
    std::vector<std::string> errors;
    pipelines = PipelineSet::load_dir(source + "/pipelines", PipelineDefaults{}, errors);
    for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
    design_text = read_all(source + "/config/designs/loki.yaml");
    // JARVIS_BENCH_PG_URL: the same benchmark on PostgreSQL (bench/postgres.py sets it).
    if (const char* url = std::getenv("JARVIS_BENCH_PG_URL")) store = std::make_unique<PostgresJobStore>(url);
    else store = std::make_unique<SqliteJobStore>(state + "/jarvis.db");
    runner = std::make_unique<ProcessWorkerRunner>(io, ProcessLimits{});
    cfg.workers_path = {source + "/workers"};
    cfg.state_dir = state;
  }
  ~Setup() {
    if (engine) {
      engine->stop();
      io.run();
      engine.reset();
    }
    store.reset();
    fs::remove_all(state);
  }

  void start_engine(int max_running) {
    cfg.max_running = max_running;
    engine = std::make_unique<Engine>(io, *store, *runner, cfg);
    engine->add_observer([this](const EngineEvent& e) {
      if (e.kind == EngineEvent::Kind::JobReady) ++finished;
      if (e.kind == EngineEvent::Kind::JobFailed) { ++finished; ++failed; }
    });
    engine->start();
  }

  Design design(int i) const {
    std::string host = "bench" + std::to_string(i);
    std::string text = design_text;
    text.replace(text.find("hostname: loki"), 14, "hostname: " + host);
    text.replace(text.find("fqdn: loki."), 11, "fqdn: " + host + ".");  // must start with the hostname
    std::string error;
    auto d = parse_design(host, text, error);
    if (!d) {
      std::fprintf(stderr, "jarvis_bench: the bench design does not parse: %s\n", error.c_str());
      std::exit(2);
    }
    return *d;
  }
};

// The floor: spawn the same worker with the same three pipes, feed it the same clipboard,
// read its output to EOF, reap it. No engine, no store, no YAML.
double floor_per_stage_ms(const std::string& worker, const std::string& clipboard, int runs) {
  auto start = Clock::now();
  for (int i = 0; i < runs; ++i) {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC)) std::abort();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    // The same child hygiene as the engine's runner: own group, signals reset, no fd leaks.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    sigset_t empty, defaults;
    sigemptyset(&empty);
    posix_spawnattr_setsigmask(&attr, &empty);
    sigemptyset(&defaults);
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) sigaddset(&defaults, sig);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    std::string task = "noop";
    char* argv[] = {const_cast<char*>(worker.c_str()), task.data(), nullptr};
    // The environment the engine gives a worker (JARVIS_* values are placeholders).
    std::vector<std::string> env = {"JARVIS_JOB=1", "JARVIS_TASK=noop:noop", "JARVIS_STAGE=1",
                                    "JARVIS_STAGES=10", "JARVIS_ATTEMPT=1", "JARVIS_HOST=bench0",
                                    "JARVIS_STATE_DIR=/tmp"};
    for (const auto& e : EngineConfig{}.env_set) env.push_back(e);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid;
    if (::posix_spawn(&pid, worker.c_str(), &fa, &attr, argv, envp.data()) != 0) std::abort();
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    // The engine's workers are batch work at its nice (inherited from its spawner thread).
    sched_param batch{};
    ::sched_setscheduler(pid, SCHED_BATCH, &batch);
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(pid), ProcessLimits{}.nice);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    size_t off = 0;
    while (off < clipboard.size()) {
      ssize_t n = ::write(in[1], clipboard.data() + off, clipboard.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::close(in[1]);
    char buf[65536];
    while (::read(out[0], buf, sizeof buf) > 0) {}
    while (::read(err[0], buf, sizeof buf) > 0) {}
    ::close(out[0]);
    ::close(err[0]);
    int status;
    ::waitpid(pid, &status, 0);
  }
  return ms_since(start) / runs;
}

int overhead(const std::string& source, int jobs) {
  Setup s(source);
  const Pipeline* noop = s.pipelines.find("noop");
  if (!noop) return 1;
  s.start_engine(EngineConfig{}.max_running);
  auto& io = s.io;
  int& finished = s.finished;
  std::string worker = *resolve_worker(s.cfg.workers_path, "noop:noop");
  const int rounds = 10;
  int per_round = std::max(1, jobs / rounds);
  int stages = per_round * static_cast<int>(noop->tasks.size());
  // Warm both paths (page cache, dynamic loader), then alternate floor and engine in rounds
  // so that drift on the machine hits both alike; the median round is reported.
  floor_per_stage_ms(worker, s.design_text, 20);
  std::vector<double> floors, engines, ratios;
  int host = 0;
  for (int round = 0; round < rounds; ++round) {
    double floor_ms = floor_per_stage_ms(worker, s.design_text, stages);
    auto start = Clock::now();
    for (int i = 0; i < per_round; ++i) {
      // One job at a time: this measures the cost per stage, not parallelism.
      s.engine->submit(s.design(host++), *noop, "bench", "bench");
      int want = finished + 1;
      while (finished < want) io.run_one();
    }
    double engine_ms = ms_since(start) / stages;
    floors.push_back(floor_ms);
    engines.push_back(engine_ms);
    ratios.push_back(engine_ms / floor_ms);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("overhead: %d rounds of %d jobs x %zu stages of noop:noop, one job at a time\n",
              rounds, per_round, noop->tasks.size());
  std::printf("  floor (posix_spawn + the same pipes + waitpid): median %.3f ms per stage\n", median(floors));
  std::printf("  engine (spawn, asio pipes, pidfd, YAML check, %s): median %.3f ms per stage\n", std::getenv("JARVIS_BENCH_PG_URL") ? "PostgreSQL" : "SQLite", median(engines));
  // noop:noop prints nothing; a worker that prints the clipboard back also pays for the
  // streaming YAML check of its output, measured here on the same document.
  auto check_start = Clock::now();
  for (int i = 0; i < 1000; ++i)
    if (check_mapping_document(s.design_text, YamlLimits{})) std::abort();
  std::printf("  YAML check of a %zu-byte clipboard: %.1f us (added to a stage that prints one)\n",
              s.design_text.size(), ms_since(check_start));
  std::printf("  ratio engine/floor: median %.2fx, best %.2fx, worst %.2fx (target <= 1.3x)\n",
              median(ratios), *std::min_element(ratios.begin(), ratios.end()),
              *std::max_element(ratios.begin(), ratios.end()));
  return 0;
}

int load(const std::string& source, int jobs) {
  Setup s(source);
  const Pipeline* sleep5 = s.pipelines.find("sleep5");
  if (!sleep5) return 1;
  raise_fd_limit();
  s.start_engine(jobs);
  auto& io = s.io;
  int& finished = s.finished;
  FileDesignSource designs(io, std::nullopt);
  CommandService commands(*s.store, s.pipelines, designs, s.cfg.workers_path, s.engine.get());
  Requester who{"bench", "bench", "loop"};

  // Ask `status <host>` every 5 ms through the same command path a chat front uses, until
  // `done()`. Latency counts from when the request was due, so time spent waiting behind
  // other work on the loop is included.
  boost::asio::steady_timer timer(io);
  int next_host = 0;
  auto probe = [&](std::vector<double>& latencies, const std::function<bool()>& done) {
    std::function<void()> ask = [&] {
      timer.expires_after(std::chrono::milliseconds(5));
      timer.async_wait([&](const boost::system::error_code& ec) {
        if (ec || done()) return;
        auto due = timer.expiry();
        std::string host = "bench" + std::to_string(next_host++ % jobs);
        commands.handle("status " + host, who, [&, due](Reply r) {
          if (r.lines.empty()) std::abort();
          latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - due).count());
        });
        ask();
      });
    };
    ask();
    while (!done()) io.run_one();
    timer.cancel();
    io.poll();
  };
  auto pct = [](std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
  };
  auto rss_mb = [] {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
  };

  // Baseline in the same process: the same status requests with nothing running.
  std::vector<double> idle;
  probe(idle, [&] { return idle.size() >= 200; });
  double idle_rss = rss_mb();

  auto start = Clock::now();
  for (int i = 0; i < jobs; ++i) s.engine->submit(s.design(i), *sleep5, "bench", "bench");
  std::vector<double> latencies;
  probe(latencies, [&] { return finished >= jobs; });
  double wall = ms_since(start);

  int ready = 0;
  for (int i = 1; i <= jobs; ++i) {
    auto j = s.store->job(i);
    ready += j && j->state == JobState::Ready;
  }
  double ideal = 5 * 50.0;
  std::printf("load: %d concurrent jobs x 5 stages of a 50 ms worker\n", jobs);
  std::printf("  wall time: %.0f ms (one job alone sleeps %.0f ms; bench/run times the same\n"
              "             workers run by plain shell loops as the machine's baseline)\n", wall, ideal);
  std::printf("  jobs ready: %d of %d, failed: %d, lost: %d\n", ready, jobs, s.failed,
              jobs - ready - s.failed);
  std::printf("  status latency idle (baseline, %zu requests): p50 %.2f ms, p99 %.2f ms\n",
              idle.size(), pct(idle, 0.50), pct(idle, 0.99));
  std::printf("  status latency under load (%zu requests): p50 %.2f ms, p99 %.2f ms, max %.2f ms (target p99 < 20 ms)\n",
              latencies.size(), pct(latencies, 0.50), pct(latencies, 0.99), pct(latencies, 1.0));
  std::printf("  RSS of the bot: %.1f MB idle (baseline), %.1f MB peak under load (target < 150 MB)\n",
              idle_rss, rss_mb());
  return ready == jobs ? 0 : 1;
}

// One synchronous store call as the engine makes it on its loop: a read (queued_ahead) and a
// write (append_log, one INSERT committed), each timed alone.
int roundtrip(int calls) {
  std::unique_ptr<JobStore> store;
  std::string dir;
  if (const char* url = std::getenv("JARVIS_BENCH_PG_URL")) {
    store = std::make_unique<PostgresJobStore>(url);
  } else {
    dir = (fs::temp_directory_path() / ("jarvis-rt-" + std::to_string(::getpid()))).string();
    fs::create_directories(dir);
    store = std::make_unique<SqliteJobStore>(dir + "/jarvis.db");
  }
  NewJob j;
  j.host = "rt" + std::to_string(::getpid());
  j.design_ref = j.pipeline = "rt";
  j.tasks = {TaskSpec{}};
  j.clipboard = "a: 1\n";
  int64_t id = store->create_job(j, "bench").id;
  auto pct = [](std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
  };
  std::vector<double> reads, writes;
  for (int i = 0; i < calls; ++i) {
    auto t = Clock::now();
    store->queued_ahead(id);
    reads.push_back(ms_since(t) * 1000);
    t = Clock::now();
    store->append_log(id, 1, "a line of a worker's stderr");
    writes.push_back(ms_since(t) * 1000);
  }
  std::printf("roundtrip (%s): read p50 %.0f us p99 %.0f us; committed write p50 %.0f us p99 %.0f us (%d calls)\n",
              std::getenv("JARVIS_BENCH_PG_URL") ? "postgres" : "sqlite", pct(reads, 0.5), pct(reads, 0.99),
              pct(writes, 0.5), pct(writes, 0.99), calls);
  store.reset();
  if (!dir.empty()) fs::remove_all(dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: jarvis_bench overhead|load SOURCE_DIR [JOBS]\n");
    return 2;
  }
  log::init(log::Format::Text, log::Level::Warn);
  std::string mode = argv[1];
  int jobs = argc > 3 ? std::atoi(argv[3]) : (mode == "load" ? 1000 : 100);
  if (mode == "overhead") return overhead(argv[2], jobs);
  if (mode == "load") return load(argv[2], jobs);
  if (mode == "roundtrip") return roundtrip(jobs);
  std::fprintf(stderr, "unknown benchmark %s\n", mode.c_str());
  return 2;
}
