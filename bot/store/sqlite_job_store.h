#pragma once
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <sys/types.h>
#include <string>
#include <thread>

#include "bot/store/job_store.h"

struct sqlite3;

namespace jarvis {

struct SqliteOptions {
  // How long a write waits for another process's lock before failing as Busy. The bot's loop
  // waits this long at most, so serve keeps it short and retries; the CLI can afford more.
  int busy_timeout_ms = 5000;
};

// The embedded default: one SQLite file in WAL mode, safe to share between a running
// `jarvis serve` and `jarvis status` from a shell.
class SqliteJobStore : public JobStore {
 public:
  // Opens (creating if needed) the database; throws std::runtime_error on failure.
  explicit SqliteJobStore(const std::string& path, SqliteOptions options = {});
  ~SqliteJobStore() override;
  SqliteJobStore(const SqliteJobStore&) = delete;
  SqliteJobStore& operator=(const SqliteJobStore&) = delete;

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
  void await_confirmation(int64_t id, int stage, int through, int64_t until_ms,
                          const std::string& prompt) override;
  bool confirm(int64_t id, const std::string& by, int64_t now) override;
  int64_t add_freeze(const Freeze& freeze) override;
  int lift_freezes(const std::string& scope, const std::string& by, int64_t now) override;
  std::vector<Freeze> freezes_in_force(int64_t now) override;
  std::vector<WalkState> walk_states() override;
  void record_walk(const WalkState& state) override;
  void append_log(int64_t id, int stage, const std::string& line) override;
  std::vector<LogLine> log(int64_t id, int limit) override;
  void redact_log(int64_t id, int stage, const std::vector<std::string>& values) override;
  void audit(const AuditEntry& entry) override;
  std::vector<AuditEntry> audit_trail(int limit) override;
  bool request_cancel(int64_t id, const std::string& by) override;
  RequeueResult requeue(int64_t id, const std::string& new_owner) override;
  bool claim(int64_t id, const std::string& expected_owner, const std::string& new_owner) override;
  std::vector<Watched> jobs_to_watch() override;
  void check_identity() override;
  void begin_group() override;
  void commit_group() override;
  void rollback_group() noexcept override;
  PruneResult prune_finished(int64_t before_ms) override;
  void probe_write(size_t bytes) override;
  std::vector<JobRecord> find_jobs(const JobQuery& query) override;
  std::vector<StageRecord> stages(int64_t id) override;
  std::optional<std::string> clipboard_after(int64_t id, int stage) override;
  std::vector<AuditEntry> find_audit(const AuditQuery& query) override;
  std::map<JobState, int64_t> job_counts() override;
  int64_t append_event(int64_t at_ms, int64_t job_id, const std::string& kind,
                       const std::string& json) override;
  std::vector<StoredEvent> events_after(int64_t after_id, int limit) override;
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

  // The clipboards saved after each completed stage, in order (for tests and `log`).
  std::vector<std::string> stage_clipboards(int64_t id);
  // The design document as the job was created with it.
  std::string initial_clipboard(int64_t id);

 private:
  class Statement;
  class Transaction;
  [[noreturn]] void fail(int sqlite_code) const;
  Statement& prepare(const char* sql);
  void exec(const char* sql);
  // A transaction's three steps, for Transaction and for a write group alike.
  void begin_transaction();
  void commit_transaction();
  void rollback_transaction() noexcept;
  void migrate();
  std::vector<JobRecord> query_jobs(const char* sql, std::optional<int64_t> arg);

  void checkpoint_loop(std::string path);

  std::string path_;
  int busy_timeout_ms_;
  dev_t dev_ = 0;  // the file opened, to notice it being deleted or replaced
  ino_t ino_ = 0;
  std::optional<std::string> gone_;
  sqlite3* db_ = nullptr;
  bool group_open_ = false;  // between begin_group and its commit or rollback
  struct Cache;
  std::unique_ptr<Cache> cache_;
  // WAL checkpoints fsync; they run on their own thread and connection so that the loop
  // that writes the store never waits for the disk.
  std::mutex checkpoint_mutex_;
  std::condition_variable checkpoint_wake_;
  bool checkpoint_stop_ = false;
  std::thread checkpointer_;
};

}  // namespace jarvis
