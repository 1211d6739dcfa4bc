#include "bot/pipeline/engine.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include <boost/asio/post.hpp>

#include "bot/pipeline/process_runner.h"
#include "bot/pipeline/worker_path.h"
#include "bot/pipeline/worker_sweep.h"
#include "bot/util/json.h"
#include "bot/util/duration.h"
#include "bot/util/log.h"

namespace jarvis {
namespace fs = std::filesystem;
using Kind = EngineEvent::Kind;

struct Engine::ActiveJob {
  explicit ActiveJob(boost::asio::io_context& io) : retry_timer(io) {}
  JobRecord rec;                          // the engine's working copy; the store has the truth
  bool has_slot = false;
  bool cancelling = false;
  std::string cancelled_by;
  int failures = 0;                       // failed attempts of the current stage
  std::shared_ptr<RunningWorker> worker;  // set while a worker runs
  boost::asio::steady_timer retry_timer;  // waiting to retry a failed attempt
  bool waiting_retry = false;
  bool waiting_confirm = false;  // before a destructive stage; retry_timer holds the deadline
  bool stalled = false;  // a write it needed failed; reloaded from the store on recovery
  std::chrono::steady_clock::time_point stage_start;
  Redactor redactor;  // secret values seen on this job's clipboards, never forgotten
};

namespace {

std::string random_suffix() {
  std::random_device rd;
  std::ostringstream out;
  out << std::hex << rd() << rd();
  return out.str();
}

// Cuts a stderr line to a length that fits in a one-line failure reason; redacted first, so
// the cut never leaves the start of a secret.
std::string short_line(std::string s, const Redactor* redactor, size_t max = 200) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  if (redactor) return redactor->redact_cut(s, max);
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

// The marker every worker of `job` in this store carries, whichever engine started it (job
// ids are per store: another state dir's job 7 is none of ours).
std::vector<std::string> job_marker(const std::string& state_dir, int64_t job) {
  return {"JARVIS_JOB=" + std::to_string(job), "JARVIS_STATE_DIR=" + state_dir};
}

}  // namespace

std::string describe_failure(const WorkerOutcome& o, Millis timeout, const YamlLimits& limits,
                             const Redactor* redactor) {
  std::string reason;
  switch (o.kind) {
    case WorkerOutcome::Kind::SpawnFailed: return o.error;
    case WorkerOutcome::Kind::TimedOut:
      reason = "timed out after " + format_duration(timeout) + " and was killed";
      break;
    case WorkerOutcome::Kind::OutputTooLarge:
      reason = "printed more than " + format_bytes(limits.max_bytes) +
               " on stdout (the clipboard cap) and was killed";
      break;
    case WorkerOutcome::Kind::Cancelled: reason = "cancelled"; break;
    case WorkerOutcome::Kind::Signaled:
      reason = "killed by " + signal_name(o.code);
      break;
    case WorkerOutcome::Kind::Exited:
      if (o.code == 0 && is_blank(o.output)) return {};  // printed nothing: unchanged
      if (o.code != 0) {
        reason = "exit code " + std::to_string(o.code);
        break;
      }
      if (auto problem = check_mapping_document(o.output, limits))
        return "exited 0 but its output is not a YAML mapping: " + *problem +
               "; the clipboard is unchanged";
      return {};
  }
  // The worker's own last words say most about why.
  std::string tail;
  size_t from = o.stderr_tail.size() > 3 ? o.stderr_tail.size() - 3 : 0;
  for (size_t i = from; i < o.stderr_tail.size(); ++i) {
    std::string line = short_line(o.stderr_tail[i], redactor);
    if (line.empty()) continue;
    tail += (tail.empty() ? "" : " / ") + line;
  }
  if (!tail.empty()) reason += ": " + tail;
  return reason;
}

Engine::Engine(boost::asio::io_context& io, JobStore& store, WorkerRunner& runner,
               EngineConfig config)
    : io_(io), store_(store), runner_(runner), config_(std::move(config)), watch_timer_(io),
      probe_timer_(io) {
  id_ = "engine-" + std::to_string(::getpid()) + "-" + random_suffix();
}

Engine::~Engine() {
  if (lock_fd_ >= 0) {
    ::unlink((config_.state_dir + "/engines/" + id_ + ".lock").c_str());
    ::close(lock_fd_);
  }
}

void Engine::start() {
  // The lock file is how other processes tell that this engine is alive: the kernel drops
  // the flock when the process dies, however it dies.
  std::string dir = config_.state_dir + "/engines";
  fs::create_directories(dir);
  std::string path = dir + "/" + id_ + ".lock";
  lock_fd_ = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0)
    throw std::runtime_error("cannot lock " + path + ": " + std::strerror(errno));
  shared_ = store_.shared();
  if (shared_) {
    // Other nodes see this engine alive by its lease, and this connection writes only about
    // the jobs this engine owns (the fencing).
    store_.fence_writes(id_);
    try {
      store_.renew_lease(id_, config_.node_name, config_.lease);
    } catch (const StoreError& e) {
      store_failed(e, 0);
    }
    log::info(log::kNoJob, "node {}: engine {} on a shared store, lease {}", config_.node_name, id_,
              format_duration(config_.lease));
  }
  watch();
}

// Someone deleting our lock file would make every other process think this engine dead and
// adopt its jobs under it: put it back, locked, as soon as it is noticed.
void Engine::keep_engine_lock() {
  std::string path = config_.state_dir + "/engines/" + id_ + ".lock";
  struct stat by_path {}, held {};
  if (::stat(path.c_str(), &by_path) == 0 && ::fstat(lock_fd_, &held) == 0 &&
      by_path.st_ino == held.st_ino && by_path.st_dev == held.st_dev)
    return;
  std::error_code ec;
  fs::create_directories(config_.state_dir + "/engines", ec);
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (fd >= 0) ::close(fd);
    log::error(log::kNoJob, "the engine lock {} was removed and cannot be made again: {}", path,
               std::strerror(errno));
    return;
  }
  ::close(lock_fd_);
  lock_fd_ = fd;
  log::warn(log::kNoJob, "the engine lock {} was removed by someone; made it again", path);
}

void Engine::stop() {
  flush_logs();  // the lines workers printed so far belong to the stage that resumes
  stopping_ = true;
  watch_timer_.cancel();
  probe_timer_.cancel();
  for (auto& [id, job] : jobs_) {
    job->retry_timer.cancel();
    if (job->worker) {
      log::info(id, "stopping: worker of stage {} stopped; the job resumes at this stage on the "
                    "next start", job->rec.stage + 1);
      job->worker->cancel();
    }
  }
}

SubmitResult Engine::submit(const Design& design, const Pipeline& pipeline,
                            const std::string& requested_by, const std::string& origin,
                            const std::string& requester_key) {
  SubmitResult result;
  auto missing = missing_workers(config_.workers_path, pipeline);
  if (!missing.empty()) {
    result.error = "pipeline " + pipeline.name + " names tasks with no worker on the workers path: ";
    for (size_t i = 0; i < missing.size(); ++i) result.error += (i ? ", " : "") + missing[i];
    return result;
  }
  if (!store_problem_.empty()) {
    result.error = "cannot accept deploys: " + store_problem_;
    return result;
  }
  NewJob job{design.hostname, design.ref, pipeline.name, pipeline.tasks, requested_by, origin,
             design.text, design.cluster, requester_key};
  CreateResult created;
  try {
    // On a shared store a serve's job is nobody's yet: whichever node has a slot claims it.
    // A `jarvis run` runs its own job.
    created = store_.create_job(job, shared_ && config_.adopt_orphans ? std::string() : id_);
  } catch (const StoreError& e) {
    store_failed(e, design.text.size() * 2);
    result.error = "cannot accept deploys: " + std::string(e.what());
    return result;
  }
  if (!created.id) {
    result.conflict = created.conflict;
    return result;
  }
  result.job = created.id;
  log::info(created.id, "{} asked to deploy {} ({}) with pipeline {} from {}", requested_by,
            design.hostname, design.ref, pipeline.name, origin);
  if (shared_ && config_.adopt_orphans) {
    int free = config_.max_running - running_ - static_cast<int>(queue_.size());
    int claimed = 0;
    try {
      claimed = claim_some();
    } catch (const StoreError& e) {
      store_failed(e, 0);  // in the store, unowned: this node or another claims it later
    }
    // Claimed here, or by another node (oldest first); it waits only when nobody has it
    // after a claim this node had room for: the cluster-wide bound is reached.
    if (jobs_.count(created.id)) {
      result.queued = static_cast<int>(queue_.size()) > config_.max_running - running_;
    } else if (free > 0 && claimed == 0) {
      try {
        auto rec = store_.job(created.id);
        result.queued = rec && rec->owner.empty();
      } catch (const StoreError& e) {
        store_failed(e, 0);
      }
    }
    return result;
  }
  enqueue(created.id);
  result.queued = static_cast<int>(queue_.size()) > config_.max_running - running_;
  return result;
}

bool Engine::owner_alive(const std::string& owner) const {
  if (shared_) return live_.count(owner) > 0;
  return engine_alive(config_.state_dir, owner);
}

void Engine::keep_lease() {
  if (!store_.renew_lease(id_, config_.node_name, config_.lease))
    log::warn(log::kNoJob, "node {}: this engine's lease had expired (the node was stopped or cut off for "
                           "longer than {}); jobs other nodes adopted meanwhile are theirs",
              config_.node_name, format_duration(config_.lease));
  auto live = store_.live_engines();
  live_ = std::set<std::string>(live.begin(), live.end());
  live_.insert(id_);
}

int Engine::claim_some() {
  if (stopping_ || !store_problem_.empty()) return 0;
  int free = config_.max_running - running_ - static_cast<int>(queue_.size());
  if (free <= 0) return 0;
  auto ids = store_.claim_queued(id_, free, config_.max_running);
  for (int64_t id : ids) {
    log::info(id, "claimed by node {} ({})", config_.node_name, id_);
    enqueue(id);
  }
  return static_cast<int>(ids.size());
}

void Engine::drop_lost_jobs() {
  std::vector<int64_t> stalled;
  for (auto& [id, job] : jobs_)
    if (job->stalled && !job->worker) stalled.push_back(id);
  for (int64_t id : stalled) {
    std::optional<JobRecord> rec;
    try {
      rec = store_.job(id);
    } catch (const StoreError& e) {
      store_failed(e, 0);
      return;
    }
    if (rec && is_active(rec->state) && rec->owner == id_) continue;  // still ours: recovery resumes it
    log::warn(id, "job {} is run by {} now: this node's write about stage {} was refused and it lets go",
              id, rec ? rec->owner : std::string("nobody"), jobs_[id]->rec.stage + 1);
    std::erase(queue_, id);
    foreign_.erase(id);
    jobs_.erase(id);
  }
  if (store_problem_.empty()) {
    // Jobs stalled only because they were fenced: nothing to recover from.
    for (auto& [id, job] : jobs_)
      if (job->stalled && !job->worker) {
        job->stalled = false;
        if (std::find(queue_.begin(), queue_.end(), id) == queue_.end()) queue_.push_back(id);
      }
    pump();
  }
}

void Engine::enqueue(int64_t id) {
  std::optional<JobRecord> rec;
  try {
    rec = store_.job(id);
  } catch (const StoreError& e) {
    // Committed but not readable now: it is in the store, and is resumed when the store is.
    store_failed(e, 0);
    auto job = std::make_unique<ActiveJob>(io_);
    job->rec.id = id;
    job->stalled = true;
    jobs_[id] = std::move(job);
    return;
  }
  if (!rec) return;
  auto job = std::make_unique<ActiveJob>(io_);
  job->rec = std::move(*rec);
  // The bot's own secrets and what it passes to workers from its environment, then the
  // clipboard's.
  job->redactor.add(config_.secrets);
  for (const auto& name : config_.env_allow)
    if (const char* v = std::getenv(name.c_str())) job->redactor.add({v});
  job->redactor.add(secret_values(job->rec.clipboard, config_.secret_patterns));
  ActiveJob& ref = *job;
  jobs_[id] = std::move(job);
  queue_.push_back(id);
  if (static_cast<int>(queue_.size()) > config_.max_running - running_)
    emit(event_for(ref, Kind::JobQueued));
  // Started from the loop, not inline, so the caller's reply ("deploying, job 17") goes out
  // before the first stage's announcements.
  boost::asio::post(io_, [this] { pump(); });
}

void Engine::pump() {
  // A few jobs per turn of the loop, like spawns: a thousand queued jobs starting at once
  // must not stall everything else for the length of a thousand store writes.
  constexpr int kStartsPerTurn = 8;
  if (!store_problem_.empty()) return;  // recover() pumps again
  for (int n = 0; n < kStartsPerTurn && !stopping_ && running_ < config_.max_running && !queue_.empty(); ++n) {
    int64_t id = queue_.front();
    queue_.pop_front();
    start_job(id);
  }
  if (!stopping_ && store_problem_.empty() && running_ < config_.max_running && !queue_.empty())
    boost::asio::post(io_, [this] { pump(); });
}

void Engine::start_job(int64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  ActiveJob& job = *it->second;
  job.has_slot = true;
  ++running_;
  int64_t now = now_ms();
  try {
    store_.mark_running(id, now);
  } catch (const StoreError& e) {
    store_failed(e, 0);
    return stall(job);
  }
  job.rec.state = JobState::Running;
  if (!job.rec.started_ms) job.rec.started_ms = now;
  emit(event_for(job, Kind::JobStarted));
  run_stage(job);
}

std::vector<std::string> Engine::worker_env(const ActiveJob& job) const {
  const auto& rec = job.rec;
  std::vector<std::string> env = {
      "JARVIS_JOB=" + std::to_string(rec.id),
      // Which engine started it: an adopter kills a dead engine's workers by this marker,
      // even one whose pid never reached the store.
      "JARVIS_ENGINE=" + id_,
      "JARVIS_TASK=" + rec.tasks[static_cast<size_t>(rec.stage)].name,
      "JARVIS_STAGE=" + std::to_string(rec.stage + 1),
      "JARVIS_STAGES=" + std::to_string(rec.stage_count()),
      "JARVIS_ATTEMPT=" + std::to_string(rec.attempt),
      "JARVIS_HOST=" + rec.host,
      "JARVIS_STATE_DIR=" + config_.state_dir,
  };
  for (const auto& e : config_.env_set) env.push_back(e);
  // Only what the config names explicitly crosses over from the bot's own environment.
  for (const auto& name : config_.env_allow) {
    if (const char* v = std::getenv(name.c_str())) env.push_back(name + "=" + v);
  }
  return env;
}

void Engine::run_stage(ActiveJob& job) {
  // Workers start one per turn of the loop: under heavy load a burst of spawns must not
  // hold up commands waiting behind them (`status` answers between two spawns).
  spawn_queue_.push_back(job.rec.id);
  post_once(spawning_, &Engine::spawn_next);
}

// Posts `step` to the loop unless it is posted already: a queue worked through a piece per turn.
void Engine::post_once(bool& posted, void (Engine::*step)()) {
  if (posted) return;
  posted = true;
  boost::asio::post(io_, [this, &posted, step] {
    posted = false;
    (this->*step)();
  });
}

void Engine::spawn_next() {
  while (!spawn_queue_.empty()) {
    int64_t id = spawn_queue_.front();
    spawn_queue_.pop_front();
    auto it = jobs_.find(id);
    if (it == jobs_.end() || stopping_) continue;
    start_worker(*it->second);
    break;
  }
  if (!spawn_queue_.empty() && !stopping_) post_once(spawning_, &Engine::spawn_next);
}

void Engine::start_worker(ActiveJob& job) {
  auto& rec = job.rec;
  if (job.cancelling) return finish(rec.id, JobState::Cancelled, job.cancelled_by);
  if (!store_problem_.empty()) return stall(job);
  const TaskSpec& task = rec.tasks[static_cast<size_t>(rec.stage)];
  // The safety catch: nothing destructive starts on a production host unconfirmed.
  if (task.destructive && rec.stage >= rec.confirmed_until) {
    auto fact = production_fact(rec.clipboard, rec.host, config_.safety);
    if (fact.production) return await_confirmation(job, fact);
  }
  int64_t id = rec.id;
  int stage_number = rec.stage + 1;
  int64_t started_ms = now_ms();
  // The intent is committed before the spawn: if this process dies in between, the adopter
  // sees the stage running and looks for its worker by marker, whether or not a pid was stored.
  try {
    store_.stage_started(id, rec.stage, rec.attempt + 1, task.name, started_ms, 0);
  } catch (const StoreError& e) {
    store_failed(e, 0);
    return stall(job);
  }
  ++rec.attempt;
  job.stage_start = std::chrono::steady_clock::now();
  rec.stage_started_ms = started_ms;

  auto path = resolve_worker(config_.workers_path, task.name);
  WorkerInvocation inv;
  inv.timeout = task.timeout;
  inv.input = rec.clipboard;
  if (path) {
    inv.executable = *path;
    inv.argv = {*path, task.task()};
    inv.env = worker_env(job);
    job.worker = runner_.start(
        std::move(inv),
        [this, id, stage_number](std::string_view line) {
          auto it = jobs_.find(id);
          if (it == jobs_.end()) return;
          auto ev = event_for(*it->second, Kind::StageLog);
          ev.text = it->second->redactor.redact(line);
          ev.at_ms = now_ms();
          pending_logs_.push_back({stage_number, std::move(ev)});
          post_once(flush_posted_, &Engine::flush_logs);
        },
        [this, id](WorkerOutcome outcome) { stage_done(id, std::move(outcome)); },
        [this, id](int pid) { worker_started(id, pid); });
  } else {
    // The worker vanished since the job was validated (a resumed job, a removed file).
    job.worker = nullptr;
    WorkerOutcome missing;
    missing.kind = WorkerOutcome::Kind::SpawnFailed;
    missing.error = "no executable " + task.module() + "/" + task.task() + " on the workers path";
    boost::asio::post(io_, [this, id, missing]() mutable { stage_done(id, std::move(missing)); });
    worker_started(id, -1);
  }
}

// Once the worker exists (or could not be started): its pid and the event that tells of the
// start are one commit.
void Engine::worker_started(int64_t id, int pid) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  ActiveJob& job = *it->second;
  const JobRecord& rec = job.rec;
  log::info(id, "stage {}/{} {} started (attempt {})", rec.stage + 1, rec.stage_count(),
            rec.tasks[static_cast<size_t>(rec.stage)].name, rec.attempt);
  flush_logs();
  auto ev = event_for(job, Kind::StageStarted);
  try {
    WriteGroup group(store_);
    if (pid > 0) store_.set_worker_pid(id, rec.stage, rec.attempt, pid);
    record(ev);
    group.commit();
  } catch (const StoreError& e) {
    ev.id = 0;
    store_failed(e, 0);  // the marker still finds this worker after a crash
  }
  publish(ev);
}

void Engine::stage_done(int64_t id, WorkerOutcome outcome) {
  // Results are taken one per turn of the loop, like spawns: a wave of workers that end
  // together (a thousand jobs started at once) must not hold up the requests queued behind it.
  results_.push_back({id, std::move(outcome), std::chrono::steady_clock::now()});
  post_once(taking_results_, &Engine::take_result);
}

void Engine::take_result() {
  if (results_.empty()) return;
  EndedWorker ended = std::move(results_.front());
  results_.pop_front();
  handle_result(ended.job, std::move(ended.outcome), ended.ended);
  if (!results_.empty()) post_once(taking_results_, &Engine::take_result);
}

void Engine::handle_result(int64_t id, WorkerOutcome outcome,
                           std::chrono::steady_clock::time_point ended) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  ActiveJob& job = *it->second;
  job.worker = nullptr;
  if (stopping_) return;  // left in flight on purpose; the next start resumes this stage
  auto& rec = job.rec;
  const TaskSpec& task = rec.tasks[static_cast<size_t>(rec.stage)];
  auto elapsed = std::chrono::duration_cast<Millis>(ended - job.stage_start);
  if (job.cancelling) return finish(id, JobState::Cancelled, job.cancelled_by);
  // The result cannot be stored: the stage runs again once the store can take it, rather
  // than being announced done and forgotten.
  if (!store_problem_.empty()) return stall(job);

  flush_logs();  // its stderr lines come before its result
  // Secrets this stage printed on stdout may be on its stderr too, stored before they were
  // known: learn them (even from output that fails the check) and redact the stored lines.
  if (!is_blank(outcome.output)) {
    Redactor learned = job.redactor;
    auto fresh = learned.add(secret_values(outcome.output, config_.secret_patterns));
    if (!fresh.empty()) {
      try {
        store_.redact_log(id, rec.stage + 1, fresh);
      } catch (const StoreError& e) {
        store_failed(e, 0);
        return stall(job);  // the stage runs again, and its output teaches them again
      }
      job.redactor = std::move(learned);
    }
  }
  std::string reason = job.redactor.redact(
      describe_failure(outcome, task.timeout, config_.output_limits, &job.redactor));
  int64_t now = now_ms();
  if (reason.empty()) {
    // Blank output means "unchanged"; otherwise the worker's text is passed on as printed.
    bool changed = !is_blank(outcome.output) && outcome.output != rec.clipboard;
    auto ev = event_for(job, Kind::StageSucceeded);
    ev.elapsed = elapsed;
    // The result and its event are one commit: nobody hears of a result that was not stored.
    try {
      WriteGroup group(store_);
      store_.stage_succeeded(id, rec.stage, rec.attempt, now, changed ? &outcome.output : nullptr);
      record(ev);
      group.commit();
    } catch (const StoreError& e) {
      store_failed(e, changed ? outcome.output.size() * 2 : 0);
      return stall(job);
    }
    if (changed) rec.clipboard = std::move(outcome.output);
    log::info(id, "stage {}/{} {} done in {}", rec.stage + 1, rec.stage_count(), task.name,
              format_duration(elapsed));
    publish(ev);
    ++rec.stage;
    rec.attempt = 0;
    job.failures = 0;
    if (rec.stage >= rec.stage_count()) return finish(id, JobState::Ready, "");
    return run_stage(job);
  }

  ++job.failures;
  log::warn(id, "stage {}/{} {} failed (attempt {}): {}", rec.stage + 1, rec.stage_count(),
            task.name, rec.attempt, reason);
  try {
    store_.append_log(id, rec.stage + 1, "stage failed: " + reason);
    if (job.failures <= task.retries) {
      Millis delay = config_.retry_backoff * (1 << std::min(job.failures - 1, 16));
      delay = std::min(delay, config_.retry_backoff_max);
      store_.stage_will_retry(id, rec.stage, rec.attempt, now, reason, now + delay.count());
      rec.reason = reason;
      rec.retry_at_ms = now + delay.count();
      auto ev = event_for(job, Kind::StageRetrying);
      ev.text = reason;
      ev.delay = delay;
      emit(std::move(ev));
      job.waiting_retry = true;
      job.retry_timer.expires_after(delay);
      job.retry_timer.async_wait([this, id](const boost::system::error_code& ec) {
        auto it = jobs_.find(id);
        if (ec || it == jobs_.end() || stopping_ || it->second->stalled) return;
        it->second->waiting_retry = false;
        run_stage(*it->second);
      });
      return;
    }
    // A failed check after a complete deploy is not a failed deploy: say which it is.
    // Exit 1 is a check that failed; its own words say how ("... answered 503, expected 200").
    if (task.verify) {
      if (reason.rfind("exit code 1: ", 0) == 0) reason.erase(0, 13);
      reason = std::string(kNotVerified) + reason;
    }
    store_.stage_failed(id, rec.stage, rec.attempt, now, reason);
  } catch (const StoreError& e) {
    store_failed(e, reason.size());
    return stall(job);
  }
  finish(id, JobState::Failed, reason);
}

void Engine::finish(int64_t id, JobState state, const std::string& text) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  if (state == JobState::Cancelled) {
    try {
      store_.job_cancelled(id, now_ms(), "cancelled by " + text);
    } catch (const StoreError& e) {
      // The cancel request is stored; the reload after recovery finishes the job.
      store_failed(e, 0);
      return stall(*it->second);
    }
  }
  std::unique_ptr<ActiveJob> job = std::move(it->second);
  jobs_.erase(it);
  auto& rec = job->rec;
  Kind kind = Kind::JobFailed;
  if (state == JobState::Cancelled) {
    kind = Kind::JobCancelled;
    log::info(id, "cancelled by {} at stage {}/{}", text, rec.stage + 1, rec.stage_count());
  } else if (state == JobState::Ready) {
    kind = Kind::JobReady;
    log::info(id, "{} ready: {} stages", rec.host, rec.stage_count());
  } else {
    log::warn(id, "{} failed at stage {}/{}: {}", rec.host, rec.stage + 1, rec.stage_count(), text);
  }
  auto ev = event_for(*job, kind);
  ev.text = text;
  if (state == JobState::Ready) {
    ev.stage = rec.stage_count();
    ev.elapsed = Millis(now_ms() - rec.started_ms);
  }
  if (job->has_slot) --running_;
  std::erase(queue_, id);
  emit(std::move(ev));
  pump();
}

void Engine::audit_engine(const JobRecord& rec, const std::string& what, const std::string& outcome) {
  AuditEntry e;
  e.at_ms = now_ms();
  e.who = "jarvis (" + id_ + ")";
  e.protocol = "engine";
  e.place = rec.origin;
  e.command = what + " " + rec.host + " (job " + std::to_string(rec.id) + ", stage " +
              std::to_string(rec.stage + 1) + "/" + std::to_string(rec.stage_count()) + ")";
  e.outcome = outcome;
  try {
    store_.audit(e);
  } catch (const StoreError& error) {
    log::error(rec.id, "cannot write the audit trail: {}", error.what());
  }
}

void Engine::await_confirmation(ActiveJob& job, const ProductionFact& fact) {
  auto& rec = job.rec;
  int64_t id = rec.id;
  int64_t now = now_ms();
  bool resumed = rec.confirm_until_ms > 0;  // it waited before a restart: the same deadline
  if (!resumed) {
    int through = destructive_run_end(rec.tasks, rec.stage);
    std::string prompt = confirmation_prompt(rec, through, fact, config_.safety.confirm_timeout);
    int64_t until = now + config_.safety.confirm_timeout.count();
    try {
      store_.await_confirmation(id, rec.stage, through, until, prompt);
    } catch (const StoreError& e) {
      store_failed(e, prompt.size());
      return stall(job);
    }
    rec.confirm_until_ms = until;
    rec.confirm_prompt = prompt;
    log::warn(id, "waiting for a confirmation until {}: {}", utc_time_of_day(until), prompt);
    audit_engine(rec, "confirmation requested for", "waiting until " + utc_time_of_day(until) + ": " + fact.source);
  } else {
    log::info(id, "still waiting for a confirmation (until {})", utc_time_of_day(rec.confirm_until_ms));
  }
  job.waiting_confirm = true;
  auto ev = event_for(job, Kind::ConfirmationNeeded);
  ev.text = rec.confirm_prompt;
  ev.delay = Millis(std::max<int64_t>(0, rec.confirm_until_ms - now));
  emit(std::move(ev));
  job.retry_timer.expires_after(Millis(std::max<int64_t>(0, rec.confirm_until_ms - now)));
  job.retry_timer.async_wait([this, id](const boost::system::error_code& ec) {
    if (!ec) confirmation_due(id);
  });
}

// The deadline passed: confirmed meanwhile (from another process), or the job fails here.
void Engine::confirmation_due(int64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || stopping_ || it->second->stalled || !it->second->waiting_confirm) return;
  ActiveJob& job = *it->second;
  std::optional<JobRecord> rec;
  try {
    rec = store_.job(id);
  } catch (const StoreError& e) {
    store_failed(e, 0);
    return stall(job);
  }
  if (rec && rec->confirmed_until > job.rec.stage) return confirmed(job, *rec);
  if (rec && rec->cancel_requested) return;  // the watch cancels it
  std::string reason = "not confirmed within " + round_duration(config_.safety.confirm_timeout) +
                       "; nothing was done";
  job.waiting_confirm = false;
  try {
    store_.stage_failed(id, job.rec.stage, job.rec.attempt, now_ms(), reason);
  } catch (const StoreError& e) {
    store_failed(e, reason.size());
    return stall(job);
  }
  audit_engine(job.rec, "confirmation timed out for", "failed: " + reason);
  finish(id, JobState::Failed, reason);
}

void Engine::confirmed(ActiveJob& job, const JobRecord& rec) {
  job.waiting_confirm = false;
  job.retry_timer.cancel();
  job.rec.confirmed_until = rec.confirmed_until;
  job.rec.confirmed_by = rec.confirmed_by;
  job.rec.confirm_until_ms = 0;
  log::info(job.rec.id, "confirmed by {}; stage {}/{} starts", rec.confirmed_by, job.rec.stage + 1,
            job.rec.stage_count());
  auto ev = event_for(job, Kind::Confirmed);
  ev.text = rec.confirmed_by;
  emit(std::move(ev));
  run_stage(job);
}

bool Engine::confirm(int64_t id, const std::string& by, std::string& error) {
  bool ok = false;
  try {
    ok = store_.confirm(id, by, now_ms());
  } catch (const StoreError& e) {
    store_failed(e, 0);
    error = "cannot confirm now: " + std::string(e.what());
    return false;
  }
  if (!ok) {
    error = "job " + std::to_string(id) + " is not waiting for a confirmation (its time may have run out)";
    return false;
  }
  auto it = jobs_.find(id);
  if (it != jobs_.end() && it->second->waiting_confirm) {
    if (auto rec = store_.job(id)) confirmed(*it->second, *rec);
  }
  return true;
}

void Engine::announce(const std::string& text, const std::string& origin, int64_t job,
                      const std::string& host) {
  EngineEvent ev;
  ev.kind = Kind::Notice;
  ev.text = text;
  ev.origin = origin;
  ev.job = job;
  ev.host = host;
  emit(std::move(ev));
}

bool Engine::cancel(int64_t id, const std::string& by) {
  try {
    if (!store_.request_cancel(id, by)) return false;
  } catch (const StoreError& e) {
    store_failed(e, 0);
    throw;  // not cancelled: the caller tells whoever asked
  }
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return true;  // another engine runs it and will notice
  ActiveJob& job = *it->second;
  if (job.cancelling) return true;
  job.cancelling = true;
  job.cancelled_by = by;
  if (job.worker) {
    job.worker->cancel();  // stage_done finishes the job once the worker is gone
  } else {
    // Queued, waiting to retry or for a confirmation: nothing runs, so finish now (on the
    // loop, not inline).
    job.retry_timer.cancel();
    job.waiting_confirm = false;
    boost::asio::post(io_, [this, id, by] {
      auto it = jobs_.find(id);
      if (it != jobs_.end() && !it->second->worker) finish(id, JobState::Cancelled, by);
    });
  }
  return true;
}

RequeueResult Engine::retry(int64_t id) {
  if (!store_problem_.empty()) {
    RequeueResult refused;
    refused.error = "cannot retry now: " + store_problem_;
    return refused;
  }
  RequeueResult r;
  try {
    r = store_.requeue(id, id_);
  } catch (const StoreError& e) {
    store_failed(e, 0);
    r.error = "cannot retry now: " + std::string(e.what());
    return r;
  }
  if (r.ok) {
    log::info(id, "retry: back in line at its failed stage");
    enqueue(id);
  }
  return r;
}

void Engine::follow_foreign(const std::vector<JobStore::Watched>& watched) {
  std::set<int64_t> seen;
  for (const auto& w : watched) {
    if (w.owner == id_ || jobs_.count(w.id)) continue;
    seen.insert(w.id);
    auto it = foreign_.find(w.id);
    if (it != foreign_.end() && it->second.state == w.state && it->second.stage == w.stage) continue;
    bool first = it == foreign_.end();
    foreign_[w.id] = {w.state, w.stage};
    if (w.state != JobState::Running) continue;  // queued: nothing to say yet
    auto rec = store_.job(w.id);
    if (!rec) continue;
    if (first) emit(event_for(*rec, Kind::JobStarted));
    if (rec->stage < rec->stage_count()) emit(event_for(*rec, Kind::StageStarted));
  }
  // Gone from the jobs in flight: it ended; say how.
  for (auto it = foreign_.begin(); it != foreign_.end();) {
    if (seen.count(it->first)) {
      ++it;
      continue;
    }
    int64_t id = it->first;
    it = foreign_.erase(it);
    if (jobs_.count(id)) continue;  // adopted here: this engine announces it from now on
    auto rec = store_.job(id);
    if (!rec) continue;
    EngineEvent ev = event_for(*rec, Kind::JobFailed);
    if (rec->state == JobState::Ready) {
      ev.kind = Kind::JobReady;
      ev.stage = rec->stage_count();
      ev.elapsed = Millis(rec->ended_ms - rec->started_ms);
    } else if (rec->state == JobState::Cancelled) {
      ev.kind = Kind::JobCancelled;
      ev.text = rec->cancelled_by.empty() ? "someone" : rec->cancelled_by;
    } else if (rec->state == JobState::Failed) {
      ev.text = rec->reason;
    } else {
      continue;
    }
    emit(std::move(ev));
  }
}

bool Engine::take_over(int64_t id, std::string& error) {
  auto rec = store_.job(id);
  if (!rec || !is_active(rec->state)) {
    error = "job " + std::to_string(id) + " is not in flight";
    return false;
  }
  if (shared_) keep_lease();
  if (owner_alive(rec->owner)) {
    error = "job " + std::to_string(id) + " is still run by a live jarvis (" + rec->owner + ")";
    return false;
  }
  adopt(id, rec->owner);
  if (!jobs_.count(id)) {
    error = "job " + std::to_string(id) + " was taken over by another jarvis meanwhile";
    return false;
  }
  return true;
}

void Engine::watch() {
  if (stopping_) return;
  try {
    store_.check_identity();
    keep_engine_lock();
    if (shared_) keep_lease();
    auto watched = store_.jobs_to_watch();
    bool may_adopt = config_.adopt_orphans && store_problem_.empty() &&
                     std::chrono::steady_clock::now() >= adopt_after_;
    for (const auto& w : watched) {
      if (w.owner == id_) {
        auto it = jobs_.find(w.id);
        if (w.cancel_requested && it != jobs_.end() && !it->second->cancelling) {
          auto rec = store_.job(w.id);
          cancel(w.id, rec ? rec->cancelled_by : "someone");
        } else if (it != jobs_.end() && it->second->waiting_confirm && !it->second->stalled) {
          // A `jarvis confirm` from a shell is a write to the store: continue when it is there.
          if (auto rec = store_.job(w.id); rec && rec->confirmed_until > it->second->rec.stage)
            confirmed(*it->second, *rec);
        }
      } else if (shared_ && w.owner.empty()) {
        continue;  // unowned and queued: claimed below, within the bounds
      } else if (auto it = jobs_.find(w.id); shared_ && it != jobs_.end() && !it->second->stalled) {
        // Ours in memory, another's in the store: this node was cut off past its lease and the
        // job was adopted. Its worker stops; whatever it would write is refused anyway.
        log::warn(w.id, "job {} was adopted by {} while this node was cut off; stopping its worker here",
                  w.id, w.owner);
        if (it->second->worker) it->second->worker->cancel();
        stall(*it->second);
        boost::asio::post(io_, [this] { drop_lost_jobs(); });
      } else if (may_adopt && !owner_alive(w.owner)) {
        adopt(w.id, w.owner);
      }
    }
    if (shared_ && config_.adopt_orphans) claim_some();
    // On a shared store other engines' events come through the event table instead.
    if (config_.adopt_orphans && !shared_) follow_foreign(watched);
  } catch (const StoreError& e) {
    store_failed(e, 0);
  } catch (const std::exception& e) {
    log::error(log::kNoJob, "watching the job store failed: {}", e.what());
  }
  if (stopping_) return;
  watch_timer_.expires_after(config_.watch_interval);
  watch_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) watch();
  });
}

// Adoption is all or nothing: once the claim is ours, a failure anywhere gives the job back
// to its dead owner, so that the next look at the store adopts it again from the start.
void Engine::adopt(int64_t id, const std::string& previous_owner) {
  if (jobs_.count(id) || !store_.claim(id, previous_owner, id_)) return;  // someone was quicker
  try {
    adopt_claimed(id, previous_owner);
  } catch (const std::exception& e) {
    log::error(id, "adopting the job from {} failed: {}; it is given back and adopted again",
               previous_owner, e.what());
    jobs_.erase(id);
    std::erase(queue_, id);
    try {
      store_.claim(id, id_, previous_owner);
    } catch (const StoreError& se) {
      // Ours and cannot be given back: hold it stalled; recovery reloads and runs it.
      auto job = std::make_unique<ActiveJob>(io_);
      job->rec.id = id;
      job->stalled = true;
      jobs_[id] = std::move(job);
      store_failed(se, 0);
    }
  }
}

void Engine::adopt_claimed(int64_t id, const std::string& previous_owner) {
  auto rec = store_.job(id);
  if (!rec) return;
  if (rec->cancel_requested) {
    // Cancelled while nobody ran it: record that instead of running the stage again.
    kill_left_workers(id);
    store_.job_cancelled(id, now_ms(), "cancelled by " + rec->cancelled_by);
    log::info(id, "cancelled by {} while no engine ran it", rec->cancelled_by);
    return;
  }
  if (rec->state == JobState::Running) {
    // Until it gets a slot here it is waiting, and status should say so.
    store_.mark_queued(id);
    std::string note = "resumed by " + id_ + " at stage " + std::to_string(rec->stage + 1) + "/" +
                       std::to_string(rec->stage_count()) +
                       (rec->awaiting_confirmation()
                            ? ", still waiting for a confirmation (nothing of the stage ran)"
                            : " with the clipboard saved before it (the stage runs again)");
    store_.append_log(id, rec->stage + 1, note);
    log::info(id, "{}", note);
  }
  // The dead engine's worker of this job (found by marker, stored pid or not) must be gone
  // before the stage runs again here: two workers of one stage never run at once.
  if (int killed = kill_left_workers(id)) {
    log::warn(id, "killed {} worker process(es) left by {}", killed, previous_owner);
    auto placeholder = std::make_unique<ActiveJob>(io_);
    placeholder->rec = std::move(*rec);
    placeholder->stalled = true;  // not runnable until the old worker is confirmed gone
    jobs_[id] = std::move(placeholder);
    resume_adopted(id, 50);
    return;
  }
  enqueue(id);
}

// Waits (on timers, not on the loop) until no process of the dead engine's worker is left.
void Engine::resume_adopted(int64_t id, int attempts_left) {
  auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::milliseconds(20));
  timer->async_wait([this, id, attempts_left, timer](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    if (kill_left_workers(id) > 0 && attempts_left > 0)
      return resume_adopted(id, attempts_left - 1);
    jobs_.erase(it);
    enqueue(id);
  });
}

// SIGKILLs whatever of job `id` other engines left running in this store; how many.
int Engine::kill_left_workers(int64_t id) const {
  return kill_marked_processes(job_marker(config_.state_dir, id), {"JARVIS_ENGINE=" + id_});
}

void Engine::store_failed(const StoreError& error, size_t bytes) {
  if (error.fenced()) {
    // Not a store problem: the job is another node's now. The caller stalls it; the stalled
    // job is dropped from the loop (the adopter announces it from now on).
    log::warn(log::kNoJob, "{}", error.what());
    fenced_ = true;  // the stall that follows is not a wait for the store
    boost::asio::post(io_, [this] { drop_lost_jobs(); });
    return;
  }
  probe_bytes_ = std::max(probe_bytes_, bytes);
  if (error.kind() == StoreError::Kind::Gone) {
    if (store_lost_) return;
    store_lost_ = true;
    store_problem_ = error.what();
    log::error(log::kNoJob, "{}; stopping so that nothing more is written to a file nobody will read",
               error.what());
    EngineEvent ev;
    ev.kind = Kind::StoreLost;
    ev.text = error.what();
    emit(std::move(ev));
    stop();
    return;
  }
  bool first = store_problem_.empty();
  store_problem_ = error.what();
  if (!first) return;
  log::error(log::kNoJob, "{}: no stage starts and no deploy is accepted until it can be written; "
             "retrying by itself", error.what());
  EngineEvent ev;
  ev.kind = Kind::StoreFailed;
  ev.text = error.what();
  emit(std::move(ev));
  probe_delay_ = Millis(500);
  probe_store();
}

void Engine::stall(ActiveJob& job) {
  if (job.has_slot) {
    job.has_slot = false;
    --running_;
  }
  job.retry_timer.cancel();
  job.waiting_retry = false;
  job.waiting_confirm = false;  // reloaded from the store: start_worker waits again if it must
  if (!job.stalled && !fenced_) log::warn(job.rec.id, "waiting for the job store; the job resumes from what it holds");
  fenced_ = false;
  job.stalled = true;
}

void Engine::probe_store() {
  if (stopping_ || store_problem_.empty()) return;
  probe_timer_.expires_after(probe_delay_);
  probe_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    try {
      // As large as the write that failed: on a full disk small writes succeed long before
      // a clipboard fits again.
      store_.probe_write(probe_bytes_);
    } catch (const StoreError& e) {
      if (e.kind() == StoreError::Kind::Gone) return store_failed(e, 0);
      if (store_problem_ != e.what()) {
        log::warn(log::kNoJob, "the job store still cannot be written: {}", e.what());
        store_problem_ = e.what();
      }
      probe_delay_ = std::min(probe_delay_ * 2, Millis(5000));
      return probe_store();
    }
    recover();
  });
}

void Engine::recover() {
  // Other nodes' leases may have run out during the outage only because they could not renew:
  // give them one lease to do so before adopting anything.
  if (shared_) adopt_after_ = std::chrono::steady_clock::now() + config_.lease;
  std::string was = store_problem_;
  store_problem_.clear();
  probe_bytes_ = 0;
  int resumed = 0;
  std::vector<int64_t> stalled;
  for (auto& [id, job] : jobs_)
    if (job->stalled && !job->worker) stalled.push_back(id);
  for (int64_t id : stalled) {
    auto it = jobs_.find(id);
    ActiveJob& job = *it->second;
    std::optional<JobRecord> rec;
    try {
      rec = store_.job(id);
    } catch (const StoreError& e) {
      store_failed(e, 0);
      return;
    }
    if (!rec || !is_active(rec->state) || rec->owner != id_) {
      // Finished or taken over meanwhile (a CLI cancel): nothing left for this engine to do.
      std::erase(queue_, id);
      jobs_.erase(it);
      continue;
    }
    job.stalled = false;
    if (rec->cancel_requested) {
      job.cancelling = true;
      job.cancelled_by = rec->cancelled_by;
    }
    int failures = job.failures;
    job.rec = std::move(*rec);
    job.failures = failures;
    job.redactor.add(secret_values(job.rec.clipboard, config_.secret_patterns));
    if (job.cancelling) {
      boost::asio::post(io_, [this, id, by = job.cancelled_by] { finish(id, JobState::Cancelled, by); });
    } else if (std::find(queue_.begin(), queue_.end(), id) == queue_.end()) {
      queue_.push_back(id);
    }
    ++resumed;
  }
  std::string summary = "the job store can be written again (it was: " + was + "); " +
                        std::to_string(resumed) + (resumed == 1 ? " job resumes" : " jobs resume") +
                        " from what it holds";
  if (log_lines_lost_) {
    summary += "; " + std::to_string(log_lines_lost_) + " worker log lines could not be stored";
    log_lines_lost_ = 0;
  }
  log::info(log::kNoJob, "{}", summary);
  EngineEvent ev;
  ev.kind = Kind::StoreRecovered;
  ev.text = summary;
  emit(std::move(ev));
  pump();
}

bool engine_alive(const std::string& state_dir, const std::string& engine_id) {
  if (engine_id.empty() || engine_id.find('/') != std::string::npos) return false;
  std::string path = state_dir + "/engines/" + engine_id + ".lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  bool alive = ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  if (!alive) ::unlink(path.c_str());
  ::close(fd);
  return alive;
}

EngineEvent Engine::event_for(const JobRecord& rec, Kind kind) const {
  EngineEvent ev;
  ev.kind = kind;
  ev.job = rec.id;
  ev.host = rec.host;
  ev.stage = rec.stage + 1;
  ev.stage_count = rec.stage_count();
  if (rec.stage < rec.stage_count()) ev.task = rec.tasks[static_cast<size_t>(rec.stage)].name;
  ev.attempt = rec.attempt;
  ev.requested_by = rec.requested_by;
  ev.pipeline = rec.pipeline;
  ev.origin = rec.origin;
  return ev;
}

EngineEvent Engine::event_for(const ActiveJob& job, Kind kind) const { return event_for(job.rec, kind); }

std::string_view event_kind_name(EngineEvent::Kind kind) {
  using K = EngineEvent::Kind;
  switch (kind) {
    case K::JobQueued: return "job_queued";
    case K::JobStarted: return "job_started";
    case K::StageStarted: return "stage_started";
    case K::StageLog: return "stage_log";
    case K::StageSucceeded: return "stage_succeeded";
    case K::StageRetrying: return "stage_retrying";
    case K::JobReady: return "job_ready";
    case K::JobFailed: return "job_failed";
    case K::JobCancelled: return "job_cancelled";
    case K::StoreFailed: return "store_failed";
    case K::StoreRecovered: return "store_recovered";
    case K::StoreLost: return "store_lost";
    case K::ConfirmationNeeded: return "confirmation_needed";
    case K::Confirmed: return "confirmed";
    case K::Notice: return "notice";
  }
  return "unknown";
}

std::string event_json(const EngineEvent& e) {
  std::string out = "{\"kind\":\"" + std::string(event_kind_name(e.kind)) + "\",\"at_ms\":" +
                    std::to_string(e.at_ms) + ",\"job\":" + std::to_string(e.job) +
                    ",\"host\":" + json_quote(e.host) + ",\"stage\":" + std::to_string(e.stage) +
                    ",\"stage_count\":" + std::to_string(e.stage_count) + ",\"task\":" + json_quote(e.task) +
                    ",\"attempt\":" + std::to_string(e.attempt) + ",\"text\":" + json_quote(e.text) +
                    ",\"elapsed_ms\":" + std::to_string(e.elapsed.count()) +
                    ",\"delay_ms\":" + std::to_string(e.delay.count()) +
                    ",\"requested_by\":" + json_quote(e.requested_by) +
                    ",\"pipeline\":" + json_quote(e.pipeline) + ",\"origin\":" + json_quote(e.origin) + "}";
  return out;
}

// Every event goes to the store first (the API's event stream resumes from it), like any
// other write. A store that cannot be written is not asked to record that it cannot.
void Engine::record(EngineEvent& event) {
  if (event.kind == Kind::StoreFailed || event.kind == Kind::StoreLost || store_lost_) return;
  if (!event.at_ms) event.at_ms = now_ms();
  event.id = store_.append_event(event.at_ms, event.job, std::string(event_kind_name(event.kind)),
                                 event_json(event));
}

void Engine::publish(const EngineEvent& event) {
  for (const auto& o : observers_) o(event);
}

// An event whose write fails takes the store-failure path and is still heard live.
void Engine::emit(EngineEvent event) {
  flush_logs();  // the table keeps events in the order they happened
  event.at_ms = now_ms();
  try {
    record(event);
  } catch (const StoreError& e) {
    event.id = 0;
    store_failed(e, event.text.size() + 256);
  }
  publish(event);
}

// The stderr lines of a turn of the loop, with their events, in one commit: a thousand
// workers each printing a line cost one commit, not two thousand.
void Engine::flush_logs() {
  if (pending_logs_.empty()) return;
  std::vector<PendingLog> batch = std::move(pending_logs_);
  pending_logs_.clear();
  try {
    WriteGroup group(store_);
    for (auto& line : batch) {
      store_.append_log(line.event.job, line.stage, line.event.text);
      record(line.event);
    }
    group.commit();
  } catch (const StoreError& e) {
    // Lost log lines stall nothing, but they do mean the store is failing.
    log_lines_lost_ += batch.size();
    size_t bytes = 0;
    for (auto& line : batch) {
      bytes += line.event.text.size();
      line.event.id = 0;
    }
    store_failed(e, bytes);
  }
  for (const auto& line : batch) publish(line.event);
}

}  // namespace jarvis
