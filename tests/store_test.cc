#include <gtest/gtest.h>
#include <sqlite3.h>

#include "bot/store/sqlite_job_store.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

NewJob new_job(const std::string& host, int stages = 3) {
  NewJob j;
  j.host = host;
  j.design_ref = host + ".yaml";
  j.pipeline = "p";
  for (int i = 0; i < stages; ++i) j.tasks.push_back(Harness::task("m:t" + std::to_string(i)));
  j.requested_by = "alice";
  j.origin = "cli:tty";
  j.clipboard = "instance: {hostname: " + host + "}\n";
  return j;
}

TEST(SqliteStore, AJobSurvivesReopeningTheStore) {
  TempDir dir;
  int64_t id;
  {
    SqliteJobStore store(dir.file("j.db"));
    id = store.create_job(new_job("loki"), "e1").id;
    store.mark_running(id, 1000);
    store.stage_started(id, 0, 1, "m:t0", 1000, 4242);
    std::string one = "after: one\n";
    store.stage_succeeded(id, 0, 1, 2000, &one);
    store.stage_started(id, 1, 1, "m:t1", 2000, 4343);
  }
  SqliteJobStore store(dir.file("j.db"));
  auto j = store.job(id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, JobState::Running);
  EXPECT_EQ(j->stage, 1);
  EXPECT_EQ(j->clipboard, "after: one\n") << "the clipboard saved before the running stage";
  EXPECT_EQ(j->worker_pid, 4343);
  EXPECT_EQ(j->tasks.size(), 3u);
  EXPECT_EQ(j->tasks[2].name, "m:t2");
  EXPECT_EQ(store.stage_clipboards(id), std::vector<std::string>{"after: one\n"});
}

TEST(SqliteStore, OneJobInFlightPerHost) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  auto first = store.create_job(new_job("loki"), "e1");
  ASSERT_GT(first.id, 0);
  auto second = store.create_job(new_job("loki"), "e2");
  EXPECT_EQ(second.id, 0);
  ASSERT_TRUE(second.conflict);
  EXPECT_EQ(second.conflict->id, first.id);
  // A second process sharing the file sees the same lock.
  SqliteJobStore other(dir.file("j.db"));
  EXPECT_EQ(other.create_job(new_job("loki"), "e3").id, 0);
  store.stage_failed(first.id, 0, 1, 5, "boom");
  EXPECT_GT(other.create_job(new_job("loki"), "e3").id, 0) << "a failed job holds no lock";
}

TEST(SqliteStore, RequeueOnlyFailedOrCancelledAndOnlyWhenTheHostIsFree) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  auto id = store.create_job(new_job("loki"), "e1").id;
  EXPECT_FALSE(store.requeue(id, "e1").ok) << "still in flight";
  store.mark_running(id, 5);
  store.stage_started(id, 1, 1, "m:t1", 6, 0);
  store.stage_failed(id, 1, 1, 10, "dns refused");
  auto newer = store.create_job(new_job("loki"), "e2").id;
  auto r = store.requeue(id, "e1");
  EXPECT_FALSE(r.ok);
  ASSERT_TRUE(r.conflict);
  EXPECT_EQ(r.conflict->id, newer);
  store.job_cancelled(newer, 20, "cancelled by bob");
  r = store.requeue(id, "e1");
  EXPECT_TRUE(r.ok) << r.error;
  auto j = store.job(id);
  EXPECT_EQ(j->state, JobState::Queued);
  EXPECT_EQ(j->stage, 1) << "resumes where it failed";
  EXPECT_EQ(j->reason, "");
}

TEST(SqliteStore, ClaimIsCompareAndSet) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  auto id = store.create_job(new_job("loki"), "dead-engine").id;
  EXPECT_TRUE(store.claim(id, "dead-engine", "e2"));
  EXPECT_FALSE(store.claim(id, "dead-engine", "e3")) << "only one engine adopts an orphan";
  EXPECT_EQ(store.job(id)->owner, "e2");
}

TEST(SqliteStore, LastStageMakesTheJobReady) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  auto id = store.create_job(new_job("loki", 2), "e1").id;
  store.mark_running(id, 100);
  store.stage_started(id, 0, 1, "m:t0", 100, 0);
  store.stage_started(id, 1, 1, "m:t1", 100, 0);
  std::string a1 = "a: 1\n";
  store.stage_succeeded(id, 0, 1, 200, &a1);
  EXPECT_EQ(store.job(id)->state, JobState::Running);
  store.stage_succeeded(id, 1, 1, 300, nullptr);  // unchanged by stage 2
  auto j = store.job(id);
  EXPECT_EQ(j->state, JobState::Ready);
  EXPECT_EQ(j->ended_ms, 300);
  EXPECT_EQ(j->clipboard, "a: 1\n");
  EXPECT_EQ(store.stage_clipboards(id), (std::vector<std::string>{"a: 1\n", "a: 1\n"}));
  EXPECT_EQ(store.recent_finished(5).at(0).id, id);
}

TEST(SqliteStore, LogAndAuditKeepOrder) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  auto id = store.create_job(new_job("loki"), "e1").id;
  for (int i = 0; i < 30; ++i) store.append_log(id, 1, "line " + std::to_string(i));
  auto last = store.log(id, 3);
  ASSERT_EQ(last.size(), 3u);
  EXPECT_EQ(last[0].line, "line 27");
  EXPECT_EQ(last[2].line, "line 29");
  store.audit({0, "alice", "cli", "tty", "deploy loki", "ok"});
  store.audit({0, "mallory", "cli", "tty", "cancel loki", "refused: no"});
  auto trail = store.audit_trail(10);
  ASSERT_EQ(trail.size(), 2u);
  EXPECT_EQ(trail[1].who, "mallory");
  EXPECT_GT(trail[1].at_ms, 0);
}

TEST(SqliteStore, AGroupIsTheLatestJobOfEachOfItsHosts) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  auto member = [&](const std::string& host) {
    NewJob j = new_job(host);
    j.group = "web";
    return store.create_job(j, "e1").id;
  };
  int64_t a = member("web1");
  member("web2");
  store.create_job(new_job("db1"), "e1");
  store.stage_failed(a, 0, 1, 5, "boom");
  int64_t again = member("web1");
  auto members = store.latest_in_group("web");
  ASSERT_EQ(members.size(), 2u);
  EXPECT_EQ(members[0].host, "web1");
  EXPECT_EQ(members[0].id, again) << "the retry of web1, not the failed job";
  EXPECT_EQ(members[0].group, "web");
  EXPECT_EQ(members[1].host, "web2");
  EXPECT_TRUE(store.latest_in_group("db1").empty());
}

TEST(SqliteStore, AStoreFromBeforeGroupsGetsTheColumn) {
  TempDir dir;
  {
    SqliteJobStore store(dir.file("j.db"));
    store.create_job(new_job("loki"), "e1");
  }
  // Drop the column, as a store written by the previous version would be.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("j.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP INDEX jobs_by_group; ALTER TABLE jobs DROP COLUMN group_name", nullptr,
                         nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  SqliteJobStore store(dir.file("j.db"));
  auto j = store.latest_for_host("loki");
  ASSERT_TRUE(j);
  EXPECT_EQ(j->group, "");
  NewJob w = new_job("web1");
  w.group = "web";
  EXPECT_GT(store.create_job(w, "e1").id, 0);
  EXPECT_EQ(store.latest_in_group("web").size(), 1u);
}

TEST(SqliteStore, AStoreFromBeforeTheHttpApiGetsEventsAndTokens) {
  TempDir dir;
  {
    SqliteJobStore store(dir.file("j.db"));
    store.create_job(new_job("loki"), "e1");
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("j.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE events; DROP TABLE api_tokens; DROP INDEX jobs_by_requester; "
                             "DROP TABLE hook_deliveries; DROP TABLE hook_cursor", nullptr,
                         nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  SqliteJobStore store(dir.file("j.db"));
  EXPECT_TRUE(store.events_after(0, 10).empty());
  int64_t a = store.append_event(1, 1, "job_queued", "{}");
  int64_t b = store.append_event(2, 1, "job_started", "{\"x\":1}");
  EXPECT_LT(a, b);
  auto after = store.events_after(a, 10);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].id, b);
  EXPECT_EQ(after[0].kind, "job_started");
  EXPECT_EQ(after[0].json, "{\"x\":1}");
  EXPECT_TRUE(store.add_token({"ci", "operate", "abc", 5}));
  EXPECT_FALSE(store.add_token({"ci", "read", "def", 6})) << "a name is taken until revoked";
  ASSERT_EQ(store.tokens().size(), 1u);
  EXPECT_EQ(store.tokens()[0].role, "operate");
  EXPECT_TRUE(store.revoke_token("ci"));
  EXPECT_FALSE(store.revoke_token("ci"));
  EXPECT_TRUE(store.tokens().empty());
}

TEST(SqliteStore, HookDeliveriesAreQueuedOncePerEventAndKeptUntilDeliveredOrDead) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  int64_t e0 = store.append_event(1, 1, "job_queued", "{}");
  EXPECT_EQ(store.hook_cursor(), e0) << "hooks new to a store start after its history";
  int64_t e1 = store.append_event(1, 1, "job_ready", "{\"kind\":\"job_ready\"}");
  int64_t e2 = store.append_event(2, 1, "job_failed", "{}");
  store.queue_hook_deliveries(e1, {"a", "b"}, 100);
  store.queue_hook_deliveries(e1, {"a", "b"}, 100);  // again after a crash: nothing twice
  EXPECT_EQ(store.hook_cursor(), e1);
  store.queue_hook_deliveries(e2, {}, 100);  // matched no hook: the cursor still moves
  EXPECT_EQ(store.hook_cursor(), e2);
  auto due = store.due_hook_deliveries(100, 10);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].event_kind, "job_ready");
  EXPECT_TRUE(store.due_hook_deliveries(99, 10).empty()) << "not due before next_at";
  store.hook_attempt_done(due[0].id, "pending", 500, "HTTP status 500");
  store.hook_attempt_done(due[1].id, "dead", 0, "connection refused");
  EXPECT_TRUE(store.due_hook_deliveries(499, 10).empty());
  auto again = store.due_hook_deliveries(500, 10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempts, 1);
  EXPECT_EQ(again[0].last_error, "HTTP status 500");
  store.hook_attempt_done(again[0].id, "delivered", 0, "");
  EXPECT_TRUE(store.due_hook_deliveries(1 << 30, 10).empty());
  auto dead = store.dead_hook_deliveries(10);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].hook, "b");
}

TEST(SqliteStore, FindJobsFiltersAndPagesNewestFirst) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  std::vector<int64_t> ids;
  for (const char* host : {"a", "b", "a", "c"}) {
    NewJob j = new_job(host);
    if (std::string(host) == "c") j.requested_by = "bob";
    ids.push_back(store.create_job(j, "e").id);
    store.stage_failed(ids.back(), 0, 1, 10, "x");  // frees the host for the next one
  }
  JobQuery q;
  q.host = "a";
  auto a = store.find_jobs(q);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].id, ids[2]);
  EXPECT_EQ(a[1].id, ids[0]);
  q = {};
  q.requested_by = "bob";
  EXPECT_EQ(store.find_jobs(q).size(), 1u);
  q = {};
  q.limit = 2;
  auto page = store.find_jobs(q);
  ASSERT_EQ(page.size(), 2u);
  q.before_id = page.back().id;
  auto next = store.find_jobs(q);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0].id, ids[1]);
  q = {};
  q.latest_per_host = true;
  EXPECT_EQ(store.find_jobs(q).size(), 3u);
  q = {};
  q.state = JobState::Ready;
  EXPECT_TRUE(store.find_jobs(q).empty());
  auto counts = store.job_counts();
  EXPECT_EQ(counts[JobState::Failed], 4);
  EXPECT_EQ(counts.count(JobState::Ready), 0u);
}

TEST(SqliteStore, ClipboardAfterAStageIsTheLastOneAStageChanged) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  int64_t id = store.create_job(new_job("loki"), "e1").id;
  store.stage_started(id, 0, 1, "m:t0", 1, 0);
  std::string one = "one: 1\n";
  store.stage_succeeded(id, 0, 1, 2, &one);
  store.stage_started(id, 1, 1, "m:t1", 3, 0);
  store.stage_succeeded(id, 1, 1, 4, nullptr);  // unchanged
  EXPECT_EQ(store.clipboard_after(id, 0), "instance: {hostname: loki}\n");
  EXPECT_EQ(store.clipboard_after(id, 1), one);
  EXPECT_EQ(store.clipboard_after(id, 2), one);
  EXPECT_FALSE(store.clipboard_after(id, 3)) << "stage 3 has not run";
  auto stages = store.stages(id);
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[1].result, "ok");
  EXPECT_EQ(stages[1].started_ms, 3);
}

TEST(SqliteStore, FindAuditByWhoHostAndSince) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  store.audit({100, "http:op", "http", "127.0.0.1", "deploy loki", "ok"});
  store.audit({200, "irc:alice!a@h", "irc", "#ops", "deploy lokiX", "ok"});
  store.audit({300, "http:op", "http", "127.0.0.1", "cancel loki", "ok"});
  AuditQuery q;
  q.host = "loki";
  EXPECT_EQ(store.find_audit(q).size(), 2u) << "loki as a word, not lokiX";
  q.since_ms = 150;
  auto rows = store.find_audit(q);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].command, "cancel loki");
  q = {};
  q.who = "irc:alice!a@h";
  EXPECT_EQ(store.find_audit(q).size(), 1u);
}

TEST(SqliteStore, PruneRemovesOldFinishedJobsLogsAndClipboardsButKeepsWhatRanAndTheAudit) {
  TempDir dir;
  SqliteJobStore store(dir.file("j.db"));
  int64_t old_job = store.create_job(new_job("old"), "e1").id;
  store.mark_running(old_job, 1000);
  store.stage_started(old_job, 0, 1, "m:t0", 1000, 0);
  std::string clip = "after: one\npassword: hunter2\n";
  store.stage_succeeded(old_job, 0, 1, 2000, &clip);
  store.append_log(old_job, 1, "hello from stage 1");
  store.stage_failed(old_job, 1, 1, 3000, "boom");
  int64_t recent = store.create_job(new_job("recent"), "e1").id;
  store.append_log(recent, 1, "still wanted");
  store.stage_failed(recent, 0, 1, now_ms(), "boom");
  int64_t running = store.create_job(new_job("running"), "e1").id;
  store.mark_running(running, 1000);
  store.audit({1000, "alice", "cli", "tty", "deploy old", "ok"});

  auto r = store.prune_finished(now_ms() - 3600'000);
  EXPECT_EQ(r.jobs, 1);
  EXPECT_EQ(r.log_lines, 1);
  auto j = store.job(old_job);
  ASSERT_TRUE(j) << "the job row stays: what ran, when, and how it ended";
  EXPECT_EQ(j->state, JobState::Failed);
  EXPECT_EQ(j->reason, "boom");
  EXPECT_TRUE(j->clipboard.empty());
  EXPECT_TRUE(store.log(old_job, 10).empty());
  EXPECT_EQ(store.stage_clipboards(old_job), std::vector<std::string>{""});
  EXPECT_FALSE(store.requeue(old_job, "").ok) << "a pruned job has no clipboard to resume with";
  EXPECT_EQ(store.log(recent, 10).size(), 1u) << "recent jobs are kept whole";
  EXPECT_FALSE(store.job(running)->clipboard.empty()) << "jobs in flight are never pruned";
  EXPECT_EQ(store.audit_trail(10).size(), 1u) << "the audit trail stays";
}

}  // namespace
}  // namespace jarvis::testing
