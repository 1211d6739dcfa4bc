#pragma once
// The engine: runs jobs (a design through a pipeline of workers) on one io_context.
// It decides what runs next; a WorkerRunner runs it; the JobStore remembers everything, so
// any engine can resume a job another one left behind.
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/design/design.h"
#include "bot/pipeline/pipeline.h"
#include "bot/pipeline/worker_runner.h"
#include "bot/safety/safety.h"
#include "bot/store/job_store.h"
#include "bot/util/secrets.h"
#include "bot/util/yaml_doc.h"

namespace jarvis {

// How the reason of a job whose deploy stages all succeeded but whose verification failed
// starts: "deployed but not verified: verify:http: https://... answered 503, expected 200".
inline constexpr const char* kNotVerified = "deployed but not verified: ";

struct EngineConfig {
  std::vector<std::string> workers_path;
  std::string state_dir;
  int max_running = 32;                  // jobs running at once; the rest queue
  std::vector<std::string> env_allow;    // variables passed through from the bot's environment
  std::vector<std::string> env_set = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"};
  YamlLimits output_limits;              // what a worker may print as the next clipboard
  Millis retry_backoff{2000};            // first retry; doubles each time
  Millis retry_backoff_max{std::chrono::minutes(2)};
  Millis watch_interval{500};            // how often the store is checked for cancel requests
  bool adopt_orphans = true;             // resume jobs whose engine is gone (serve does)
  SecretPatterns secret_patterns;        // clipboard keys whose values never leave the bot
  // Values redacted in every job besides the clipboards' secrets: the bot's own configured
  // passwords and tokens. The values of env_allow variables are added too.
  std::vector<std::string> secrets;
  // Several nodes on a shared store (PostgreSQL): this node's name, and how long its lease
  // lasts without renewal before other nodes adopt its jobs (renewed every watch_interval).
  std::string node_name;
  Millis lease{5000};
  // Destructive stages on production hosts wait for a confirmation (safety: in the config).
  SafetyConfig safety;
};

struct EngineEvent {
  enum class Kind {
    JobQueued,      // waiting for a free slot
    JobStarted,     // first stage about to run (or resumed)
    StageStarted,
    StageLog,       // a line the worker wrote on stderr (text)
    StageSucceeded,
    StageRetrying,  // the attempt failed (text = reason); another follows after `delay`
    JobReady,
    JobFailed,      // text = reason
    JobCancelled,   // text = who
    StoreFailed,    // the job store cannot be written (text = why); no stage starts meanwhile
    StoreRecovered, // writes succeed again; stalled jobs resume (text = summary)
    StoreLost,      // the database file was deleted or replaced: the engine stops (text = why)
    ConfirmationNeeded,  // a destructive stage on a production host waits (text = the prompt)
    Confirmed,           // the wait is over; the stage starts now (text = who confirmed)
    Notice,              // something every place should hear (text = the line): a forced deploy
  };
  Kind kind = Kind::JobQueued;
  int64_t job = 0;
  std::string host;
  int stage = 0;  // 1-based
  int stage_count = 0;
  std::string task;
  int attempt = 0;
  std::string text;
  Millis elapsed{0};  // of the stage, or of the whole job for JobReady
  Millis delay{0};
  std::string requested_by;
  std::string pipeline;
  std::string origin;  // where the job was asked for: "irc:#ops", "irc:@alice", "cli:tty"
  int64_t id = 0;      // its row in the store's events (0: not stored, e.g. StoreFailed)
  int64_t at_ms = 0;   // when it was emitted
};

// "stage_succeeded": the event's kind as the API and the store name it.
std::string_view event_kind_name(EngineEvent::Kind kind);
// The event as one JSON object (without its id), as stored and sent to API clients.
std::string event_json(const EngineEvent& event);

struct SubmitResult {
  int64_t job = 0;                    // 0 when refused
  std::string error;                  // validation failure, for the user
  std::optional<JobRecord> conflict;  // the host's job already in flight
  bool queued = false;                // created but waiting for a slot
};

class Engine {
 public:
  using Observer = std::function<void(const EngineEvent&)>;

  Engine(boost::asio::io_context& io, JobStore& store, WorkerRunner& runner, EngineConfig config);
  ~Engine();

  // Takes the engine's lock file, resumes the jobs it should own, starts watching the store.
  void start();
  // Stops workers but leaves their jobs in flight in the store, to resume on the next start.
  void stop();

  void add_observer(Observer observer) { observers_.push_back(std::move(observer)); }

  // Checks the pipeline's workers, takes the host's lock in the store and starts or queues.
  // `requester_key`: who asked, as a nick change keeps them (for two-person confirmation).
  SubmitResult submit(const Design& design, const Pipeline& pipeline,
                      const std::string& requested_by, const std::string& origin,
                      const std::string& requester_key = "");
  // Cancels a job in flight wherever it runs (another engine notices through the store).
  bool cancel(int64_t job, const std::string& by);
  // Puts a failed or cancelled job back in line at the stage where it stopped.
  RequeueResult retry(int64_t job);
  // Confirms a job waiting before a destructive stage (the caller checked who may); false with
  // the reason when it is not waiting or its time ran out. Another engine's job is confirmed
  // in the store and continues when that engine next looks.
  bool confirm(int64_t job, const std::string& by, std::string& error);
  // Announces a line everywhere announcements go (a forced deploy, a freeze).
  void announce(const std::string& text, const std::string& origin, int64_t job = 0,
                const std::string& host = "");
  // Adopts a job in flight whose engine is gone (a `jarvis retry` with no serve running);
  // false with the reason when its engine is alive or another took it first.
  bool take_over(int64_t job, std::string& error);

  const std::string& id() const { return id_; }
  // Why the store cannot be written right now, or empty: deploys are refused meanwhile.
  const std::string& store_problem() const { return store_problem_; }
  const EngineConfig& config() const { return config_; }
  int running() const { return running_; }
  size_t queued() const { return queue_.size(); }
  size_t in_flight() const { return jobs_.size(); }

 private:
  struct ActiveJob;

  void enqueue(int64_t id);
  void pump();
  void start_job(int64_t id);
  void run_stage(ActiveJob& job);
  void post_once(bool& posted, void (Engine::*step)());
  void spawn_next();
  void start_worker(ActiveJob& job);
  void worker_started(int64_t id, int pid);  // pid -1: it could not be started
  void stage_done(int64_t id, WorkerOutcome outcome);  // queues the result for take_result
  void take_result();
  void handle_result(int64_t id, WorkerOutcome outcome, std::chrono::steady_clock::time_point ended);
  // A destructive stage on a production host: wait (persisted) for a confirmation.
  void await_confirmation(ActiveJob& job, const ProductionFact& fact);
  void confirmation_due(int64_t id);
  void confirmed(ActiveJob& job, const JobRecord& rec);
  void audit_engine(const JobRecord& rec, const std::string& what, const std::string& outcome);
  void finish(int64_t id, JobState state, const std::string& text);
  void watch();
  void adopt(int64_t id, const std::string& previous_owner);
  void adopt_claimed(int64_t id, const std::string& previous_owner);
  void resume_adopted(int64_t id, int attempts_left);
  int kill_left_workers(int64_t id) const;
  // Store health: a failed write stalls what depended on it and pauses the engine until a
  // probe write of the same size succeeds; then stalled jobs are reloaded from the store.
  void store_failed(const StoreError& error, size_t bytes);
  void stall(ActiveJob& job);
  void probe_store();
  void recover();
  void keep_engine_lock();
  // Shared store: renews this engine's lease, then claims queued jobs for the free slots.
  void keep_lease();
  int claim_some();
  // A write about a job was refused because another node owns it now: forget it here.
  void drop_lost_jobs();
  bool owner_alive(const std::string& owner) const;
  // Jobs other live engines run (a `jarvis run` from a shell): their progress is announced
  // here too, from what the store says, so chat sees every job.
  void follow_foreign(const std::vector<JobStore::Watched>& watched);
  std::vector<std::string> worker_env(const ActiveJob& job) const;
  // emit = record (to the store; throws StoreError) + publish (to the observers).
  void emit(EngineEvent event);
  void record(EngineEvent& event);
  void publish(const EngineEvent& event);
  void flush_logs();
  EngineEvent event_for(const JobRecord& rec, EngineEvent::Kind kind) const;
  EngineEvent event_for(const ActiveJob& job, EngineEvent::Kind kind) const;

  boost::asio::io_context& io_;
  JobStore& store_;
  WorkerRunner& runner_;
  EngineConfig config_;
  std::string id_;
  int lock_fd_ = -1;
  bool stopping_ = false;
  int running_ = 0;
  std::map<int64_t, std::unique_ptr<ActiveJob>> jobs_;  // every job this engine owns
  std::deque<int64_t> queue_;                           // owned, waiting for a slot
  std::deque<int64_t> spawn_queue_;                     // stages about to start a worker
  bool spawning_ = false;
  struct EndedWorker {
    int64_t job;
    WorkerOutcome outcome;
    std::chrono::steady_clock::time_point ended;
  };
  std::deque<EndedWorker> results_;  // workers that ended, results not yet taken
  bool taking_results_ = false;
  struct PendingLog {
    int stage;  // 1-based, as the log table keeps it
    EngineEvent event;
  };
  std::vector<PendingLog> pending_logs_;  // stderr lines of this turn, written by flush_logs
  bool flush_posted_ = false;
  boost::asio::steady_timer watch_timer_;
  std::string store_problem_;   // non-empty while the store cannot be written
  bool store_lost_ = false;
  size_t probe_bytes_ = 0;
  Millis probe_delay_{0};
  boost::asio::steady_timer probe_timer_;
  size_t log_lines_lost_ = 0;
  struct Foreign {
    JobState state;
    int stage;
  };
  std::map<int64_t, Foreign> foreign_;
  bool shared_ = false;
  bool fenced_ = false;
  std::set<std::string> live_;  // engines whose lease holds, as of the last watch
  std::chrono::steady_clock::time_point adopt_after_{};  // no adoption before (after an outage)
  std::vector<Observer> observers_;
};

// True while the engine `engine_id` (a process using the same state dir) is alive.
bool engine_alive(const std::string& state_dir, const std::string& engine_id);

// Describes why a worker's run failed, for people ("exit code 3: <stderr>"). With a redactor,
// each stderr line is redacted before it is cut to fit.
std::string describe_failure(const WorkerOutcome& outcome, Millis timeout,
                             const YamlLimits& limits, const Redactor* redactor = nullptr);

}  // namespace jarvis
