#pragma once
// The job store: the single source of truth for jobs, their stages, clipboards, logs and the
// audit trail. Every front and every `jarvis` process reads and writes jobs through it.
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bot/pipeline/pipeline.h"

namespace jarvis {

enum class JobState { Queued, Running, Ready, Failed, Cancelled };
std::string_view to_string(JobState s);
std::optional<JobState> parse_job_state(std::string_view s);
inline bool is_active(JobState s) { return s == JobState::Queued || s == JobState::Running; }

struct JobRecord {
  int64_t id = 0;
  std::string host;
  std::string design_ref;  // what was asked for: a file, a URL, a DN
  std::string pipeline;
  std::vector<TaskSpec> tasks;  // snapshot taken when the job was created
  JobState state = JobState::Queued;
  int stage = 0;    // 0-based: the stage running, next to run, or where it failed
  int attempt = 0;  // attempt of that stage, 1-based once started
  std::string requested_by;
  std::string origin;  // "cli", "console", later "irc:#ops" ...
  int64_t created_ms = 0, started_ms = 0, ended_ms = 0, stage_started_ms = 0;
  int64_t retry_at_ms = 0;  // set while waiting to retry a failed attempt
  std::string reason;       // why the last attempt failed / why the job failed
  std::string owner;        // id of the engine running it; empty when nobody has it
  bool cancel_requested = false;
  std::string cancelled_by;
  std::string clipboard;  // the clipboard before `stage`
  int worker_pid = 0;     // process group of the running worker, for cleanup after a crash
  std::string group;      // the cluster this job deploys a host of ("" for a single host)
  std::string requester_key;  // the requester as a nick change keeps them ("irc:al@host")
  // A destructive stage on a production host waits for a confirmation (bot/safety/):
  int64_t confirm_until_ms = 0;  // > 0 while the job waits before `stage` until then
  int confirmed_until = 0;       // stages before this one (0-based) have been confirmed
  std::string confirmed_by;
  std::string confirm_prompt;    // what the bot said it was about to do

  bool awaiting_confirmation() const { return confirm_until_ms > 0 && is_active(state); }
  int stage_count() const { return static_cast<int>(tasks.size()); }
};

struct NewJob {
  std::string host, design_ref, pipeline;
  std::vector<TaskSpec> tasks;
  std::string requested_by, origin;
  std::string clipboard;
  std::string group;  // cluster name, when the design listed several instances
  std::string requester_key = {};  // as JobRecord::requester_key
};

struct CreateResult {
  int64_t id = 0;                     // the new job, or 0 when refused
  std::optional<JobRecord> conflict;  // the host's job already in flight
};

struct RequeueResult {
  bool ok = false;
  std::string error;                  // why not, for the user
  std::optional<JobRecord> conflict;  // another job of the host in flight
};

// A change freeze: no deploy into `scope` (a host, a cluster, or "all") while it is in force.
struct Freeze {
  int64_t id = 0;
  std::string scope;
  std::string by, reason;
  int64_t from_ms = 0;
  int64_t until_ms = 0;  // 0: until someone unfreezes it
};

// The last result of a walk (a scheduled pipeline) on one host.
struct WalkState {
  std::string walk, host;
  bool ok = true;
  std::string reason;     // why it failed, when it did
  int64_t last_run_ms = 0;
  int64_t since_ms = 0;   // when the result last changed
};

struct LogLine {
  int64_t at_ms = 0;
  int stage = 0;  // 1-based; 0 for lines about the job as a whole
  std::string line;
};

// One row of the event table: what happened to a job, in the order it was stored, read with a
// cursor (the id) by whoever announces or serves events: chat across nodes, the HTTP API's
// event stream (resumable by id) and hooks.
struct StoredEvent {
  int64_t id = 0;
  int64_t at_ms = 0;
  int64_t job_id = 0;
  std::string kind;
  std::string json;
};

struct AuditEntry {
  int64_t at_ms = 0;
  std::string who;       // identity as the front knows it
  std::string protocol;  // cli, console, irc, ...
  std::string place;     // channel, room, tty
  std::string command;   // the command as typed
  std::string outcome;   // accepted, refused: ..., error: ...
  int64_t id = 0;        // its row, for paging (set when read back)
};

// One attempt of one stage, as the stages table keeps it.
struct StageRecord {
  int stage = 0;  // 0-based, like JobRecord::stage
  int attempt = 0;
  std::string task;
  int64_t started_ms = 0, ended_ms = 0;
  std::string result;  // running, ok, failed, cancelled, interrupted
  std::string reason;
};

// Which jobs find_jobs returns: newest first, ids below `before_id` (0: from the newest).
struct JobQuery {
  std::string host, requested_by;  // exact; empty: any
  std::optional<JobState> state;
  bool latest_per_host = false;    // only each host's latest job (the host list)
  int64_t before_id = 0;
  int limit = 50;
};

// Which audit rows find_audit returns: newest first, ids below `before_id` (0: from the newest).
struct AuditQuery {
  std::string who;      // exact identity ("http:alice", "irc:alice!a@host")
  std::string host;     // the host as a word of the command
  int64_t since_ms = 0;
  int64_t before_id = 0;
  int limit = 100;
};

// One event to deliver to one hook (config `hooks:`), durable until delivered or dead.
struct HookDelivery {
  int64_t id = 0;
  std::string hook;
  int64_t event_id = 0;
  std::string state;  // pending, delivered, dead
  int attempts = 0;
  int64_t next_at_ms = 0;
  std::string last_error;
  std::string event_kind, event_json;  // the event's, from events
};

// An HTTP API token: only the SHA-256 of the secret is kept.
struct ApiToken {
  std::string name;
  std::string role;  // read, operate, admin
  std::string hash;  // hex SHA-256 of the token
  int64_t created_ms = 0;
};

// A dashboard login (docs/api.md): the SHA-256 of the cookie's random id and of the token it
// was made from (checked again at every request, so a revoke ends it). In the store, so that
// it survives a restart and holds on every node of a shared store.
struct DashboardSession {
  std::string id_hash;
  std::string token_hash;
  int64_t expires_ms = 0;
};

// A store operation that did not happen. Every write either completes (COMMIT included) or
// throws this; nothing is acknowledged that was not stored. what() is one line for people:
// "the job store is full (state dir /var/lib/jarvis, 0 bytes free)".
class StoreError : public std::runtime_error {
 public:
  enum class Kind {
    Full,      // disk or quota full
    ReadOnly,  // read-only file system or database
    Denied,    // permissions
    Busy,      // another process holds the lock past the bound
    Gone,      // the database file was deleted or replaced under us
    Io,        // an I/O error
    Unreachable,  // the database server cannot be reached (PostgreSQL down, connection lost)
    Fenced,    // the job is no longer this engine's (its lease expired and another node adopted it)
    Other,
  };
  StoreError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }
  // Transient problems clear by themselves (space freed, lock released); Gone never does.
  bool recoverable() const { return kind_ != Kind::Gone; }
  // About one job, not the store: nothing to pause or probe.
  bool fenced() const { return kind_ == Kind::Fenced; }

 private:
  Kind kind_;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Creates a job owned by `owner` (may be empty), unless the host already has one in flight.
  virtual CreateResult create_job(const NewJob& job, const std::string& owner) = 0;
  virtual std::optional<JobRecord> job(int64_t id) = 0;
  virtual std::optional<JobRecord> latest_for_host(const std::string& host) = 0;
  virtual std::vector<JobRecord> active_jobs() = 0;  // queued and running, oldest first
  virtual std::vector<JobRecord> recent_finished(int limit) = 0;
  virtual int queued_ahead(int64_t id) = 0;  // queued jobs created before this one
  // The latest job of each host deployed as part of cluster `group`, by host name.
  virtual std::vector<JobRecord> latest_in_group(const std::string& group) = 0;

  virtual void mark_running(int64_t id, int64_t now) = 0;
  // Back to waiting for a slot (an adopted job), keeping its stage and clipboard.
  virtual void mark_queued(int64_t id) = 0;
  // Recorded before the worker is spawned (worker_pid 0), so that an engine that dies between
  // the spawn and the next write leaves a trace an adopter can act on.
  virtual void stage_started(int64_t id, int stage, int attempt, const std::string& task,
                             int64_t now, int worker_pid) = 0;
  virtual void set_worker_pid(int64_t id, int stage, int attempt, int worker_pid) = 0;
  // The attempt failed and another follows at retry_at.
  virtual void stage_will_retry(int64_t id, int stage, int attempt, int64_t now,
                                const std::string& reason, int64_t retry_at) = 0;
  // Saves the clipboard (when the worker changed it; nullptr: unchanged) and moves on;
  // after the last stage the job is ready.
  virtual void stage_succeeded(int64_t id, int stage, int attempt, int64_t now,
                               const std::string* changed_clipboard) = 0;
  virtual void stage_failed(int64_t id, int stage, int attempt, int64_t now,
                            const std::string& reason) = 0;
  virtual void job_cancelled(int64_t id, int64_t now, const std::string& reason) = 0;

  // Confirmation of destructive stages. The job (running) waits before `stage` until
  // `until_ms`; a confirmation covers the stages up to (not including) `through`.
  virtual void await_confirmation(int64_t id, int stage, int through, int64_t until_ms,
                                  const std::string& prompt) = 0;
  // Compare-and-set: true when the job was waiting and its deadline is after `now`. Failing,
  // cancelling or requeueing a job clears what it waited for and what was confirmed.
  virtual bool confirm(int64_t id, const std::string& by, int64_t now) = 0;

  // Change freezes: add one (its id), lift those of `scope` in force (how many), list those
  // in force at `now`.
  virtual int64_t add_freeze(const Freeze& freeze) = 0;
  virtual int lift_freezes(const std::string& scope, const std::string& by, int64_t now) = 0;
  virtual std::vector<Freeze> freezes_in_force(int64_t now) = 0;

  // Walks: every walk's last result per host; record one (replacing the host's last).
  virtual std::vector<WalkState> walk_states() = 0;
  virtual void record_walk(const WalkState& state) = 0;

  virtual void append_log(int64_t id, int stage, const std::string& line) = 0;
  virtual std::vector<LogLine> log(int64_t id, int limit) = 0;  // the last `limit` lines
  // Redacts `values` in the stored lines of one stage: a stage's output can reveal secrets
  // that its stderr showed before they were known.
  virtual void redact_log(int64_t id, int stage, const std::vector<std::string>& values) = 0;

  virtual void audit(const AuditEntry& entry) = 0;
  virtual std::vector<AuditEntry> audit_trail(int limit) = 0;

  // Asks whoever runs the job to cancel it; false if it is not in flight.
  virtual bool request_cancel(int64_t id, const std::string& by) = 0;
  // A failed or cancelled job goes back to the queue at the stage where it stopped.
  virtual RequeueResult requeue(int64_t id, const std::string& new_owner) = 0;
  // Compare-and-set of the owner: how an engine adopts a job nobody runs.
  virtual bool claim(int64_t id, const std::string& expected_owner,
                     const std::string& new_owner) = 0;
  // In-flight jobs with their owners, for adopting orphans and noticing cancel requests.
  struct Watched {
    int64_t id = 0;
    std::string owner;
    bool cancel_requested = false;
    JobState state = JobState::Queued;
    int stage = 0;
  };
  virtual std::vector<Watched> jobs_to_watch() = 0;

  // Retention: the logs, designs and clipboards of jobs that finished before `before_ms` are
  // removed; their job rows (what ran, when, how it ended) and the audit trail stay.
  struct PruneResult {
    int64_t jobs = 0, log_lines = 0;
  };
  virtual PruneResult prune_finished(int64_t before_ms) = 0;

  // Read side of the HTTP API.
  virtual std::vector<JobRecord> find_jobs(const JobQuery& query) = 0;
  virtual std::vector<StageRecord> stages(int64_t id) = 0;  // every attempt, in order
  // The clipboard as it was after stage `stage` (1-based) succeeded; 0: the design as submitted.
  // Empty when the stage has not succeeded or the job was pruned.
  virtual std::optional<std::string> clipboard_after(int64_t id, int stage) = 0;
  virtual std::vector<AuditEntry> find_audit(const AuditQuery& query) = 0;
  // How many jobs the store holds in each state (for /metrics), without reading them.
  virtual std::map<JobState, int64_t> job_counts() = 0;

  // Hooks. queue_hook_deliveries queues event `event_id` for each of `hooks` and moves the
  // hooks' cursor (the last event looked at for hooks) to it, in one transaction; an event at
  // or before the cursor is ignored, so a crash between the event and this repeats nothing.
  virtual void queue_hook_deliveries(int64_t event_id, const std::vector<std::string>& hooks, int64_t now_ms) = 0;
  // The cursor; before the first queue_hook_deliveries, the newest event (a hook added to a
  // store with a history starts with what comes next).
  virtual int64_t hook_cursor() = 0;
  virtual std::vector<HookDelivery> due_hook_deliveries(int64_t now_ms, int limit) = 0;
  // After an attempt: state delivered, pending again (retry at next_at_ms) or dead.
  virtual void hook_attempt_done(int64_t id, const std::string& state, int64_t next_at_ms,
                                 const std::string& error) = 0;
  virtual std::vector<HookDelivery> dead_hook_deliveries(int limit) = 0;

  // HTTP API tokens. add_token is false when a token of that name exists already;
  // revoke_token false when there is none.
  virtual bool add_token(const ApiToken& token) = 0;
  virtual std::vector<ApiToken> tokens() = 0;
  virtual bool revoke_token(const std::string& name) = 0;
  // Dashboard sessions: add_session also drops the expired ones; session() finds one that
  // has not expired at `now_ms`.
  virtual void add_session(const DashboardSession& session, int64_t now_ms) = 0;
  virtual std::optional<DashboardSession> session(const std::string& id_hash, int64_t now_ms) = 0;
  virtual void end_session(const std::string& id_hash) = 0;

  // Health. check_identity throws StoreError(Gone) when the database file was deleted or
  // replaced since it was opened; probe_write commits (and removes) `bytes` of data, so a
  // store that failed a write of that size can tell when it would succeed again.
  virtual void check_identity() = 0;
  virtual void probe_write(size_t bytes) = 0;

  // Write groups: the writes between begin_group() and commit_group() are committed together,
  // in one transaction (so at the cost of one commit), or not at all after rollback_group()
  // or a failure. The engine groups a state change with the event that tells of it, and a
  // turn's log lines. A store without groups commits each write as it goes. Not nested.
  virtual void begin_group() {}
  virtual void commit_group() {}
  virtual void rollback_group() noexcept {}

  // The event table: appended in id order (an id is never seen after a higher one was read),
  // so a reader that remembers the last id it read misses nothing and sees nothing twice.
  // append_event throws StoreError like every write.
  virtual int64_t append_event(int64_t at_ms, int64_t job_id, const std::string& kind,
                               const std::string& json) = 0;
  virtual std::vector<StoredEvent> events_after(int64_t after_id, int limit) = 0;

  // Several nodes on one store (PostgreSQL; docs/scaling.md). A shared store keeps each
  // engine's liveness as a lease it renews; a store that is not shared (SQLite) leaves
  // liveness to the engine's lock file in the state dir, and these do nothing.
  virtual bool shared() const { return false; }
  // Renews `engine`'s lease for `ttl` from now (the server's clock); false when it had
  // expired, so other nodes may have adopted its jobs.
  virtual bool renew_lease(const std::string& /*engine*/, const std::string& /*node*/, Millis /*ttl*/) {
    return true;
  }
  virtual void drop_lease(const std::string& /*engine*/) {}
  // Engines whose lease has not expired.
  virtual std::vector<std::string> live_engines() { return {}; }
  // From now on this connection's writes about a job throw StoreError(Fenced) unless the job is
  // still owned by `engine`: a node whose lease was lost cannot overwrite its adopter's work.
  virtual void fence_writes(const std::string& /*engine*/) {}
  // Claims for `engine` up to `n` queued jobs nobody owns, oldest first, while fewer than
  // `max_total` jobs in flight are owned across all nodes; the ids claimed.
  virtual std::vector<int64_t> claim_queued(const std::string& /*engine*/, int /*n*/, int /*max_total*/) {
    return {};
  }
  // Leadership of a role ("chat": the chat connections) among nodes, as a lease row: true
  // while `holder` leads (taken when free or expired, renewed when held). With it goes the
  // cursor, the last event the leader announced, so the next leader continues after it.
  virtual bool lead(const std::string& /*role*/, const std::string& /*holder*/, Millis /*ttl*/) { return true; }
  virtual int64_t leader_cursor(const std::string& /*role*/) { return 0; }
  // Gives the role up at once (a clean stop), so another node need not wait for the lease.
  virtual void resign(const std::string& /*role*/, const std::string& /*holder*/) {}
  // Moves the cursor; false (and unmoved) when `holder` no longer leads.
  virtual bool save_leader_cursor(const std::string& /*role*/, const std::string& /*holder*/, int64_t /*cursor*/) {
    return true;
  }
};

// A write group for a scope: rolled back unless commit() returned.
class WriteGroup {
 public:
  explicit WriteGroup(JobStore& store) : store_(store) { store_.begin_group(); }
  ~WriteGroup() {
    if (!committed_) store_.rollback_group();
  }
  WriteGroup(const WriteGroup&) = delete;
  WriteGroup& operator=(const WriteGroup&) = delete;
  void commit() {
    store_.commit_group();
    committed_ = true;
  }

 private:
  JobStore& store_;
  bool committed_ = false;
};

}  // namespace jarvis
