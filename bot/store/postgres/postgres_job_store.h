#pragma once
// The job store on PostgreSQL, for several jarvis nodes sharing one database (see
// docs/scaling.md). Same contract as the SQLite store: every write completes (COMMIT included)
// or throws StoreError; nothing is acknowledged that was not stored.
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "bot/store/job_store.h"

struct pg_conn;
struct pg_result;

namespace jarvis {

struct PostgresOptions {
  // Every statement is cancelled by the server past this, and the write fails as Busy: the
  // engine calls the store on its loop, so serve keeps it short and retries instead.
  int statement_timeout_ms = 5000;
  int connect_timeout_s = 3;
};

class PostgresJobStore : public JobStore {
 public:
  // The schema version this binary writes; a database at a newer one is refused.
  static constexpr int kSchemaVersion = 5;

  // Connects (libpq URL or key=value string) and brings the schema up to kSchemaVersion.
  // Throws StoreError: Unreachable when the server cannot be reached, Other when the schema is
  // newer than this binary.
  explicit PostgresJobStore(const std::string& url, PostgresOptions options = {});
  ~PostgresJobStore() override;
  PostgresJobStore(const PostgresJobStore&) = delete;
  PostgresJobStore& operator=(const PostgresJobStore&) = delete;

  CreateResult create_job(const NewJob& job, const std::string& owner) override;
  std::optional<JobRecord> job(int64_t id) override;
  std::optional<JobRecord> latest_for_host(const std::string& host) override;
  std::vector<JobRecord> latest_in_group(const std::string& group) override;
  std::vector<JobRecord> active_jobs() override;
  std::vector<JobRecord> recent_finished(int limit) override;
  int queued_ahead(int64_t id) override;
  void mark_running(int64_t id, int64_t now) override;
  void mark_queued(int64_t id) override;
  void stage_started(int64_t id, int stage, int attempt, const std::string& task, int64_t now,
                     int worker_pid) override;
  void set_worker_pid(int64_t id, int stage, int attempt, int worker_pid) override;
  void stage_will_retry(int64_t id, int stage, int attempt, int64_t now,
                        const std::string& reason, int64_t retry_at) override;
  void stage_succeeded(int64_t id, int stage, int attempt, int64_t now,
                       const std::string* changed_clipboard) override;
  void stage_failed(int64_t id, int stage, int attempt, int64_t now,
                    const std::string& reason) override;
  void job_cancelled(int64_t id, int64_t now, const std::string& reason) override;
  void append_log(int64_t id, int stage, const std::string& line) override;
  std::vector<LogLine> log(int64_t id, int limit) override;
  void redact_log(int64_t id, int stage, const std::vector<std::string>& values) override;
  void audit(const AuditEntry& entry) override;
  std::vector<AuditEntry> audit_trail(int limit) override;
  bool request_cancel(int64_t id, const std::string& by) override;
  RequeueResult requeue(int64_t id, const std::string& new_owner) override;
  bool claim(int64_t id, const std::string& expected_owner, const std::string& new_owner) override;
  std::vector<Watched> jobs_to_watch() override;
  PruneResult prune_finished(int64_t before_ms) override;
  void check_identity() override;
  void probe_write(size_t bytes) override;
  void begin_group() override;
  void commit_group() override;
  void rollback_group() noexcept override;
  void await_confirmation(int64_t id, int stage, int through, int64_t until_ms,
                          const std::string& prompt) override;
  bool confirm(int64_t id, const std::string& by, int64_t now) override;
  int64_t add_freeze(const Freeze& freeze) override;
  int lift_freezes(const std::string& scope, const std::string& by, int64_t now) override;
  std::vector<Freeze> freezes_in_force(int64_t now) override;
  std::vector<WalkState> walk_states() override;
  void record_walk(const WalkState& state) override;
  int64_t append_event(int64_t at_ms, int64_t job_id, const std::string& kind,
                       const std::string& json) override;
  std::vector<StoredEvent> events_after(int64_t after_id, int limit) override;
  std::vector<JobRecord> find_jobs(const JobQuery& query) override;
  std::vector<StageRecord> stages(int64_t id) override;
  std::optional<std::string> clipboard_after(int64_t id, int stage) override;
  std::vector<AuditEntry> find_audit(const AuditQuery& query) override;
  std::map<JobState, int64_t> job_counts() override;
  void queue_hook_deliveries(int64_t event_id, const std::vector<std::string>& hooks, int64_t now_ms) override;
  int64_t hook_cursor() override;
  std::vector<HookDelivery> due_hook_deliveries(int64_t now_ms, int limit) override;
  void hook_attempt_done(int64_t id, const std::string& state, int64_t next_at_ms, const std::string& error) override;
  std::vector<HookDelivery> dead_hook_deliveries(int limit) override;
  bool add_token(const ApiToken& token) override;
  std::vector<ApiToken> tokens() override;
  bool revoke_token(const std::string& name) override;
  void add_session(const DashboardSession& session, int64_t now_ms) override;
  std::optional<DashboardSession> session(const std::string& id_hash, int64_t now_ms) override;
  void end_session(const std::string& id_hash) override;
  bool shared() const override { return true; }
  bool renew_lease(const std::string& engine, const std::string& node, Millis ttl) override;
  void drop_lease(const std::string& engine) override;
  std::vector<std::string> live_engines() override;
  void fence_writes(const std::string& engine) override { fence_ = engine; }
  std::vector<int64_t> claim_queued(const std::string& engine, int n, int max_total) override;
  bool lead(const std::string& role, const std::string& holder, Millis ttl) override;
  int64_t leader_cursor(const std::string& role) override;
  void resign(const std::string& role, const std::string& holder) override;
  bool save_leader_cursor(const std::string& role, const std::string& holder, int64_t cursor) override;
  // The channel append_event notifies (LISTEN jarvis_events; the payload is the event id).
  static constexpr const char* kEventChannel = "jarvis_events";
  const std::string& url() const { return url_; }

  // The clipboards saved after each completed stage, in order (for tests and `log`).
  std::vector<std::string> stage_clipboards(int64_t id);
  std::string initial_clipboard(int64_t id);
  // `jarvis store migrate --from sqlite:PATH`: copies every row of a SQLite store (jobs with
  // their ids, documents, stages, logs, audit, events; the API's tokens as their hashes; hook
  // deliveries and the hooks' cursor) into this one, which must hold no jobs,
  // in one transaction: all of it or nothing. Jobs in flight lose their owner, so the first
  // node that starts adopts them at their stage. Throws StoreError or std::runtime_error.
  struct ImportResult {
    int64_t jobs = 0, stages = 0, log_lines = 0, audit = 0, events = 0, in_flight = 0;
    int64_t tokens = 0, hook_deliveries = 0;
  };
  ImportResult import_sqlite(const std::string& sqlite_path);
  // The server's schema version (for `jarvis store migrate` and tests).
  int schema_version();
  // Where the store is, without the password, for messages.
  const std::string& where() const { return where_; }

  class Result;
  struct Params;

 private:
  class Transaction;
  Result run(const char* sql, const Params& params);
  Result run(const char* sql);
  Result check(pg_result* raw, const char* sql);
  // A transaction's three steps, for Transaction and for a write group alike.
  void begin_transaction();
  void commit_transaction();
  void rollback_transaction() noexcept;
  void connect();
  void ensure_connected();
  [[noreturn]] void fail_connection(const std::string& detail);
  void migrate();
  std::vector<JobRecord> query_jobs(const char* sql, const Params& params);

  std::string url_;
  std::string where_;
  PostgresOptions options_;
  pg_conn* conn_ = nullptr;
  std::string store_id_;  // jarvis_meta.store_id, to notice being pointed at another database
  std::map<std::string, std::string> prepared_;  // sql -> statement name, per connection
  int next_statement_ = 0;
  bool in_transaction_ = false;
  bool group_open_ = false;  // between begin_group and its commit or rollback
  std::string fence_;
  int64_t renewals_ = 0;  // the engine whose jobs this connection may write; empty: any
  void fence(int64_t job);
};

}  // namespace jarvis
