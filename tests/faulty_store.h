#pragma once
// A JobStore that forwards to the real SQLite store and throws where a test says so: how the
// engine's handling of a failing store is tested without waiting for a real disk to fill.
// (The fault-injection suite in tests/integration fills a real tmpfs as well.)
#include <functional>
#include <string>

#include "bot/store/sqlite_job_store.h"

namespace jarvis::testing {

class FaultyStore : public JobStore {
 public:
  explicit FaultyStore(JobStore& real) : real_(real) {}
  // Called with the operation's name before it is forwarded; throw to make it fail.
  std::function<void(const std::string& op)> fault;
  int calls(const std::string& op) const {
    auto it = counts_.find(op);
    return it == counts_.end() ? 0 : it->second;
  }

  CreateResult create_job(const NewJob& job, const std::string& owner) override {
    hit("create_job");
    return real_.create_job(job, owner);
  }
  std::optional<JobRecord> job(int64_t id) override {
    hit("job");
    return real_.job(id);
  }
  std::optional<JobRecord> latest_for_host(const std::string& host) override {
    return real_.latest_for_host(host);
  }
  std::vector<JobRecord> active_jobs() override { return real_.active_jobs(); }
  std::vector<JobRecord> recent_finished(int limit) override { return real_.recent_finished(limit); }
  int queued_ahead(int64_t id) override { return real_.queued_ahead(id); }
  std::vector<JobRecord> latest_in_group(const std::string& g) override { return real_.latest_in_group(g); }
  void mark_running(int64_t id, int64_t now) override {
    hit("mark_running");
    real_.mark_running(id, now);
  }
  void mark_queued(int64_t id) override {
    hit("mark_queued");
    real_.mark_queued(id);
  }
  void stage_started(int64_t id, int stage, int attempt, const std::string& task, int64_t now,
                     int pid) override {
    hit("stage_started");
    real_.stage_started(id, stage, attempt, task, now, pid);
  }
  void set_worker_pid(int64_t id, int stage, int attempt, int pid) override {
    hit("set_worker_pid");
    real_.set_worker_pid(id, stage, attempt, pid);
  }
  void stage_will_retry(int64_t id, int stage, int attempt, int64_t now, const std::string& reason,
                        int64_t retry_at) override {
    hit("stage_will_retry");
    real_.stage_will_retry(id, stage, attempt, now, reason, retry_at);
  }
  void stage_succeeded(int64_t id, int stage, int attempt, int64_t now,
                       const std::string* clipboard) override {
    hit("stage_succeeded:" + std::to_string(stage + 1));
    real_.stage_succeeded(id, stage, attempt, now, clipboard);
  }
  void stage_failed(int64_t id, int stage, int attempt, int64_t now, const std::string& reason) override {
    hit("stage_failed");
    real_.stage_failed(id, stage, attempt, now, reason);
  }
  void job_cancelled(int64_t id, int64_t now, const std::string& reason) override {
    hit("job_cancelled");
    real_.job_cancelled(id, now, reason);
  }
  void await_confirmation(int64_t id, int stage, int through, int64_t until,
                          const std::string& prompt) override {
    hit("await_confirmation");
    real_.await_confirmation(id, stage, through, until, prompt);
  }
  bool confirm(int64_t id, const std::string& by, int64_t now) override {
    hit("confirm");
    return real_.confirm(id, by, now);
  }
  int64_t add_freeze(const Freeze& f) override {
    hit("add_freeze");
    return real_.add_freeze(f);
  }
  int lift_freezes(const std::string& scope, const std::string& by, int64_t now) override {
    hit("lift_freezes");
    return real_.lift_freezes(scope, by, now);
  }
  std::vector<Freeze> freezes_in_force(int64_t now) override { return real_.freezes_in_force(now); }
  std::vector<WalkState> walk_states() override { return real_.walk_states(); }
  void record_walk(const WalkState& s) override {
    hit("record_walk");
    real_.record_walk(s);
  }
  void append_log(int64_t id, int stage, const std::string& line) override {
    hit("append_log");
    real_.append_log(id, stage, line);
  }
  std::vector<LogLine> log(int64_t id, int limit) override { return real_.log(id, limit); }
  void redact_log(int64_t id, int stage, const std::vector<std::string>& values) override {
    hit("redact_log");
    real_.redact_log(id, stage, values);
  }
  void audit(const AuditEntry& e) override {
    hit("audit");
    real_.audit(e);
  }
  std::vector<AuditEntry> audit_trail(int limit) override { return real_.audit_trail(limit); }
  bool request_cancel(int64_t id, const std::string& by) override {
    hit("request_cancel");
    return real_.request_cancel(id, by);
  }
  RequeueResult requeue(int64_t id, const std::string& owner) override {
    hit("requeue");
    return real_.requeue(id, owner);
  }
  bool claim(int64_t id, const std::string& expected, const std::string& owner) override {
    hit("claim");
    return real_.claim(id, expected, owner);
  }
  std::vector<Watched> jobs_to_watch() override { return real_.jobs_to_watch(); }
  void add_session(const DashboardSession& session, int64_t now) override { real_.add_session(session, now); }
  std::optional<DashboardSession> session(const std::string& id_hash, int64_t now) override {
    return real_.session(id_hash, now);
  }
  void end_session(const std::string& id_hash) override { real_.end_session(id_hash); }
  void check_identity() override { real_.check_identity(); }
  void begin_group() override {
    hit("begin_group");
    real_.begin_group();
  }
  void commit_group() override {
    hit("commit_group");
    real_.commit_group();
  }
  void rollback_group() noexcept override { real_.rollback_group(); }
  PruneResult prune_finished(int64_t before_ms) override { return real_.prune_finished(before_ms); }
  void probe_write(size_t bytes) override {
    hit("probe_write");
    real_.probe_write(bytes);
  }
  std::vector<JobRecord> find_jobs(const JobQuery& q) override { return real_.find_jobs(q); }
  std::vector<StageRecord> stages(int64_t id) override { return real_.stages(id); }
  std::optional<std::string> clipboard_after(int64_t id, int stage) override {
    return real_.clipboard_after(id, stage);
  }
  std::vector<AuditEntry> find_audit(const AuditQuery& q) override { return real_.find_audit(q); }
  std::map<JobState, int64_t> job_counts() override { return real_.job_counts(); }
  int64_t append_event(int64_t at_ms, int64_t job, const std::string& kind, const std::string& json) override {
    hit("append_event");
    return real_.append_event(at_ms, job, kind, json);
  }
  std::vector<StoredEvent> events_after(int64_t after, int limit) override { return real_.events_after(after, limit); }
  void queue_hook_deliveries(int64_t event, const std::vector<std::string>& hooks, int64_t now) override {
    hit("queue_hook_deliveries");
    real_.queue_hook_deliveries(event, hooks, now);
  }
  int64_t hook_cursor() override { return real_.hook_cursor(); }
  std::vector<HookDelivery> due_hook_deliveries(int64_t now, int limit) override {
    return real_.due_hook_deliveries(now, limit);
  }
  void hook_attempt_done(int64_t id, const std::string& state, int64_t next, const std::string& error) override {
    hit("hook_attempt_done");
    real_.hook_attempt_done(id, state, next, error);
  }
  std::vector<HookDelivery> dead_hook_deliveries(int limit) override { return real_.dead_hook_deliveries(limit); }
  bool add_token(const ApiToken& t) override { return real_.add_token(t); }
  std::vector<ApiToken> tokens() override { return real_.tokens(); }
  bool revoke_token(const std::string& name) override { return real_.revoke_token(name); }

 private:
  void hit(const std::string& op) {
    ++counts_[op];
    if (fault) fault(op);
  }
  JobStore& real_;
  std::map<std::string, int> counts_;
};

}  // namespace jarvis::testing
