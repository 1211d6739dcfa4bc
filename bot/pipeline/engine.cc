#include "bot/pipeline/engine.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <boost/asio/post.hpp>

#include "bot/pipeline/process_runner.h"
#include "bot/pipeline/worker_path.h"
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

// True if /proc/<pid>/environ holds JARVIS_JOB=<job>: the process is that job's worker.
bool has_job_env(int pid, int64_t job) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  if (!in) return false;
  std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string needle = "JARVIS_JOB=" + std::to_string(job);
  size_t pos = 0;
  while ((pos = env.find(needle, pos)) != std::string::npos) {
    bool starts = pos == 0 || env[pos - 1] == '\0';
    size_t end = pos + needle.size();
    if (starts && (end == env.size() || env[end] == '\0')) return true;
    pos = end;
  }
  return false;
}

// A process group left by a crashed engine is killed only if one of its members really is
// this job's worker (the leader may be gone while its children still run).
bool kill_stale_worker_group(int pgid, int64_t job) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    auto paren = text.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream fields(text.substr(paren + 2));
    std::string state;
    int ppid = 0, pgrp = 0;
    fields >> state >> ppid >> pgrp;
    if (pgrp != pgid || !has_job_env(std::stoi(name), job)) continue;
    ::kill(-pgid, SIGKILL);
    return true;
  }
  return false;
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
    : io_(io), store_(store), runner_(runner), config_(std::move(config)), watch_timer_(io) {
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
    throw std::runtime_error("cannot lock " + path);
  watch();
}

void Engine::stop() {
  stopping_ = true;
  watch_timer_.cancel();
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
                            const std::string& requested_by, const std::string& origin) {
  SubmitResult result;
  auto missing = missing_workers(config_.workers_path, pipeline);
  if (!missing.empty()) {
    result.error = "pipeline " + pipeline.name + " names tasks with no worker on the workers path: ";
    for (size_t i = 0; i < missing.size(); ++i) result.error += (i ? ", " : "") + missing[i];
    return result;
  }
  NewJob job{design.hostname, design.ref, pipeline.name, pipeline.tasks, requested_by, origin,
             design.text, design.cluster};
  auto created = store_.create_job(job, id_);
  if (!created.id) {
    result.conflict = created.conflict;
    return result;
  }
  result.job = created.id;
  log::info(created.id, "{} asked to deploy {} ({}) with pipeline {} from {}", requested_by,
            design.hostname, design.ref, pipeline.name, origin);
  enqueue(created.id);
  result.queued = static_cast<int>(queue_.size()) > config_.max_running - running_;
  return result;
}

void Engine::enqueue(int64_t id) {
  auto rec = store_.job(id);
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
  for (int n = 0; n < kStartsPerTurn && !stopping_ && running_ < config_.max_running && !queue_.empty(); ++n) {
    int64_t id = queue_.front();
    queue_.pop_front();
    start_job(id);
  }
  if (!stopping_ && running_ < config_.max_running && !queue_.empty())
    boost::asio::post(io_, [this] { pump(); });
}

void Engine::start_job(int64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  ActiveJob& job = *it->second;
  job.has_slot = true;
  ++running_;
  int64_t now = now_ms();
  store_.mark_running(id, now);
  job.rec.state = JobState::Running;
  if (!job.rec.started_ms) job.rec.started_ms = now;
  emit(event_for(job, Kind::JobStarted));
  run_stage(job);
}

std::vector<std::string> Engine::worker_env(const ActiveJob& job) const {
  const auto& rec = job.rec;
  std::vector<std::string> env = {
      "JARVIS_JOB=" + std::to_string(rec.id),
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
  if (!spawning_) {
    spawning_ = true;
    boost::asio::post(io_, [this] { spawn_next(); });
  }
}

void Engine::spawn_next() {
  spawning_ = false;
  while (!spawn_queue_.empty()) {
    int64_t id = spawn_queue_.front();
    spawn_queue_.pop_front();
    auto it = jobs_.find(id);
    if (it == jobs_.end() || stopping_) continue;
    start_worker(*it->second);
    break;
  }
  if (!spawn_queue_.empty() && !stopping_) {
    spawning_ = true;
    boost::asio::post(io_, [this] { spawn_next(); });
  }
}

void Engine::start_worker(ActiveJob& job) {
  auto& rec = job.rec;
  if (job.cancelling) return finish(rec.id, JobState::Cancelled, job.cancelled_by);
  const TaskSpec& task = rec.tasks[static_cast<size_t>(rec.stage)];
  ++rec.attempt;
  job.stage_start = std::chrono::steady_clock::now();
  rec.stage_started_ms = now_ms();

  auto path = resolve_worker(config_.workers_path, task.name);
  WorkerInvocation inv;
  inv.timeout = task.timeout;
  inv.input = rec.clipboard;
  int64_t id = rec.id;
  int stage_number = rec.stage + 1;
  if (path) {
    inv.executable = *path;
    inv.argv = {*path, task.task()};
    inv.env = worker_env(job);
    job.worker = runner_.start(
        std::move(inv),
        [this, id, stage_number](std::string_view line) {
          auto it = jobs_.find(id);
          if (it == jobs_.end()) return;
          std::string text = it->second->redactor.redact(line);
          store_.append_log(id, stage_number, text);
          auto ev = event_for(*it->second, Kind::StageLog);
          ev.text = std::move(text);
          emit(std::move(ev));
        },
        [this, id](WorkerOutcome outcome) { stage_done(id, std::move(outcome)); });
  } else {
    // The worker vanished since the job was validated (a resumed job, a removed file).
    job.worker = nullptr;
    WorkerOutcome missing;
    missing.kind = WorkerOutcome::Kind::SpawnFailed;
    missing.error = "no executable " + task.module() + "/" + task.task() + " on the workers path";
    boost::asio::post(io_, [this, id, missing]() mutable { stage_done(id, std::move(missing)); });
  }
  store_.stage_started(id, rec.stage, rec.attempt, task.name, rec.stage_started_ms,
                       job.worker ? job.worker->pid() : 0);
  log::info(id, "stage {}/{} {} started (attempt {})", stage_number, rec.stage_count(), task.name,
            rec.attempt);
  emit(event_for(job, Kind::StageStarted));
}

void Engine::stage_done(int64_t id, WorkerOutcome outcome) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  ActiveJob& job = *it->second;
  job.worker = nullptr;
  if (stopping_) return;  // left in flight on purpose; the next start resumes this stage
  auto& rec = job.rec;
  const TaskSpec& task = rec.tasks[static_cast<size_t>(rec.stage)];
  auto elapsed = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() -
                                                    job.stage_start);
  if (job.cancelling) return finish(id, JobState::Cancelled, job.cancelled_by);

  // Secrets this stage printed on stdout may be on its stderr too, stored before they were
  // known: learn them (even from output that fails the check) and redact the stored lines.
  if (!is_blank(outcome.output)) {
    auto fresh = job.redactor.add(secret_values(outcome.output, config_.secret_patterns));
    if (!fresh.empty()) store_.redact_log(id, rec.stage + 1, fresh);
  }
  std::string reason = job.redactor.redact(
      describe_failure(outcome, task.timeout, config_.output_limits, &job.redactor));
  int64_t now = now_ms();
  if (reason.empty()) {
    // Blank output means "unchanged"; otherwise the worker's text is passed on as printed.
    bool changed = !is_blank(outcome.output) && outcome.output != rec.clipboard;
    if (changed) rec.clipboard = std::move(outcome.output);
    store_.stage_succeeded(id, rec.stage, rec.attempt, now, changed ? &rec.clipboard : nullptr);
    log::info(id, "stage {}/{} {} done in {}", rec.stage + 1, rec.stage_count(), task.name,
              format_duration(elapsed));
    auto ev = event_for(job, Kind::StageSucceeded);
    ev.elapsed = elapsed;
    emit(std::move(ev));
    ++rec.stage;
    rec.attempt = 0;
    job.failures = 0;
    if (rec.stage >= rec.stage_count()) return finish(id, JobState::Ready, "");
    return run_stage(job);
  }

  ++job.failures;
  log::warn(id, "stage {}/{} {} failed (attempt {}): {}", rec.stage + 1, rec.stage_count(),
            task.name, rec.attempt, reason);
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
      if (ec || it == jobs_.end() || stopping_) return;
      it->second->waiting_retry = false;
      run_stage(*it->second);
    });
    return;
  }
  store_.stage_failed(id, rec.stage, rec.attempt, now, reason);
  finish(id, JobState::Failed, reason);
}

void Engine::finish(int64_t id, JobState state, const std::string& text) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  std::unique_ptr<ActiveJob> job = std::move(it->second);
  jobs_.erase(it);
  auto& rec = job->rec;
  Kind kind = Kind::JobFailed;
  if (state == JobState::Cancelled) {
    kind = Kind::JobCancelled;
    store_.job_cancelled(id, now_ms(), "cancelled by " + text);
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

bool Engine::cancel(int64_t id, const std::string& by) {
  if (!store_.request_cancel(id, by)) return false;
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return true;  // another engine runs it and will notice
  ActiveJob& job = *it->second;
  if (job.cancelling) return true;
  job.cancelling = true;
  job.cancelled_by = by;
  if (job.worker) {
    job.worker->cancel();  // stage_done finishes the job once the worker is gone
  } else {
    // Queued, or waiting to retry: nothing runs, so finish now (on the loop, not inline).
    job.retry_timer.cancel();
    boost::asio::post(io_, [this, id, by] {
      auto it = jobs_.find(id);
      if (it != jobs_.end() && !it->second->worker) finish(id, JobState::Cancelled, by);
    });
  }
  return true;
}

RequeueResult Engine::retry(int64_t id) {
  auto r = store_.requeue(id, id_);
  if (r.ok) {
    log::info(id, "retry: back in line at its failed stage");
    enqueue(id);
  }
  return r;
}

void Engine::watch() {
  if (stopping_) return;
  try {
    for (const auto& w : store_.jobs_to_watch()) {
      if (w.owner == id_) {
        auto it = jobs_.find(w.id);
        if (w.cancel_requested && it != jobs_.end() && !it->second->cancelling) {
          auto rec = store_.job(w.id);
          cancel(w.id, rec ? rec->cancelled_by : "someone");
        }
      } else if (config_.adopt_orphans && !engine_alive(config_.state_dir, w.owner)) {
        adopt(w.id, w.owner);
      }
    }
  } catch (const std::exception& e) {
    log::error(log::kNoJob, "watching the job store failed: {}", e.what());
  }
  watch_timer_.expires_after(config_.watch_interval);
  watch_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) watch();
  });
}

void Engine::adopt(int64_t id, const std::string& previous_owner) {
  if (!store_.claim(id, previous_owner, id_)) return;  // someone else was quicker
  auto rec = store_.job(id);
  if (!rec) return;
  if (rec->worker_pid > 0 && kill_stale_worker_group(rec->worker_pid, id)) {
    // The previous engine died with this worker running: it is stopped before the stage reruns.
    log::warn(id, "killed worker process group {} left by {}", rec->worker_pid, previous_owner);
  }
  if (rec->state == JobState::Running) {
    // Until it gets a slot here it is waiting, and status should say so.
    store_.mark_queued(id);
    std::string note = "resumed by " + id_ + " at stage " + std::to_string(rec->stage + 1) + "/" +
                       std::to_string(rec->stage_count()) +
                       " with the clipboard saved before it (the stage runs again)";
    store_.append_log(id, rec->stage + 1, note);
    log::info(id, "{}", note);
  }
  if (rec->cancel_requested) {
    // Cancelled while nobody ran it: record that instead of running the stage again.
    store_.job_cancelled(id, now_ms(), "cancelled by " + rec->cancelled_by);
    log::info(id, "cancelled by {} while no engine ran it", rec->cancelled_by);
    return;
  }
  enqueue(id);
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

EngineEvent Engine::event_for(const ActiveJob& job, Kind kind) const {
  EngineEvent ev;
  ev.kind = kind;
  ev.job = job.rec.id;
  ev.host = job.rec.host;
  ev.stage = job.rec.stage + 1;
  ev.stage_count = job.rec.stage_count();
  if (job.rec.stage < job.rec.stage_count())
    ev.task = job.rec.tasks[static_cast<size_t>(job.rec.stage)].name;
  ev.attempt = job.rec.attempt;
  ev.requested_by = job.rec.requested_by;
  ev.pipeline = job.rec.pipeline;
  ev.origin = job.rec.origin;
  return ev;
}

void Engine::emit(EngineEvent event) {
  for (const auto& o : observers_) o(event);
}

}  // namespace jarvis
