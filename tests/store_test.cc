#include <gtest/gtest.h>
#include <sqlite3.h>

#include "bot/store/postgres/postgres_job_store.h"
#include "bot/store/sqlite_job_store.h"
#include "tests/pg_support.h"
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

// The store suite, run against both stores: SQLite in a temp dir and a real PostgreSQL.
class Store : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgres") {
      std::string why;
      if (!PgServer::shared(&why)) GTEST_SKIP() << why;
      url_ = PgServer::shared()->create_database();
    }
  }
  // A new connection to the same store, as another process would open it.
  std::unique_ptr<JobStore> open() {
    if (GetParam() == "postgres") return std::make_unique<PostgresJobStore>(url_);
    return std::make_unique<SqliteJobStore>(dir.file("j.db"));
  }
  static std::vector<std::string> stage_clipboards(JobStore& s, int64_t id) {
    if (auto* pg = dynamic_cast<PostgresJobStore*>(&s)) return pg->stage_clipboards(id);
    return dynamic_cast<SqliteJobStore&>(s).stage_clipboards(id);
  }
  TempDir dir;
  std::string url_;
};

INSTANTIATE_TEST_SUITE_P(Stores, Store, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

TEST_P(Store, AJobSurvivesReopeningTheStore) {
  int64_t id;
  {
    auto owned = open();
    JobStore& store = *owned;
    id = store.create_job(new_job("loki"), "e1").id;
    store.mark_running(id, 1000);
    store.stage_started(id, 0, 1, "m:t0", 1000, 4242);
    std::string one = "after: one\n";
    store.stage_succeeded(id, 0, 1, 2000, &one);
    store.stage_started(id, 1, 1, "m:t1", 2000, 4343);
  }
  auto owned = open();
  JobStore& store = *owned;
  auto j = store.job(id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, JobState::Running);
  EXPECT_EQ(j->stage, 1);
  EXPECT_EQ(j->clipboard, "after: one\n") << "the clipboard saved before the running stage";
  EXPECT_EQ(j->worker_pid, 4343);
  EXPECT_EQ(j->tasks.size(), 3u);
  EXPECT_EQ(j->tasks[2].name, "m:t2");
  EXPECT_EQ(stage_clipboards(store, id), std::vector<std::string>{"after: one\n"});
}

TEST_P(Store, OneJobInFlightPerHost) {
  auto owned = open();
  JobStore& store = *owned;
  auto first = store.create_job(new_job("loki"), "e1");
  ASSERT_GT(first.id, 0);
  auto second = store.create_job(new_job("loki"), "e2");
  EXPECT_EQ(second.id, 0);
  ASSERT_TRUE(second.conflict);
  EXPECT_EQ(second.conflict->id, first.id);
  // A second process sharing the file sees the same lock.
  auto other = open();
  EXPECT_EQ(other->create_job(new_job("loki"), "e3").id, 0);
  store.stage_failed(first.id, 0, 1, 5, "boom");
  EXPECT_GT(other->create_job(new_job("loki"), "e3").id, 0) << "a failed job holds no lock";
}

TEST_P(Store, RequeueOnlyFailedOrCancelledAndOnlyWhenTheHostIsFree) {
  auto owned = open();
  JobStore& store = *owned;
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

TEST_P(Store, ClaimIsCompareAndSet) {
  auto owned = open();
  JobStore& store = *owned;
  auto id = store.create_job(new_job("loki"), "dead-engine").id;
  EXPECT_TRUE(store.claim(id, "dead-engine", "e2"));
  EXPECT_FALSE(store.claim(id, "dead-engine", "e3")) << "only one engine adopts an orphan";
  EXPECT_EQ(store.job(id)->owner, "e2");
}

TEST_P(Store, LastStageMakesTheJobReady) {
  auto owned = open();
  JobStore& store = *owned;
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
  EXPECT_EQ(stage_clipboards(store, id), (std::vector<std::string>{"a: 1\n", "a: 1\n"}));
  EXPECT_EQ(store.recent_finished(5).at(0).id, id);
}

TEST_P(Store, LogAndAuditKeepOrder) {
  auto owned = open();
  JobStore& store = *owned;
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

TEST_P(Store, AGroupIsTheLatestJobOfEachOfItsHosts) {
  auto owned = open();
  JobStore& store = *owned;
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

TEST_P(Store, ConfirmIsACompareAndSetBeforeTheDeadlineAndRetryForgetsIt) {
  auto opened = open();
  JobStore& store = *opened;
  NewJob nj;
  nj.host = "loki";
  nj.design_ref = nj.pipeline = "p";
  nj.tasks = {Harness::task("m:a"), Harness::task("m:b")};
  nj.requested_by = "alice";
  nj.requester_key = "irc:al@host";
  nj.clipboard = "instance: {hostname: loki}\n";
  int64_t id = store.create_job(nj, "e1").id;
  store.mark_running(id, 1000);
  EXPECT_FALSE(store.confirm(id, "bob", 1000)) << "not waiting";
  store.await_confirmation(id, 1, 2, 5000, "the prompt");
  auto j = store.job(id);
  EXPECT_TRUE(j->awaiting_confirmation());
  EXPECT_EQ(j->confirm_prompt, "the prompt");
  EXPECT_EQ(j->requester_key, "irc:al@host");
  EXPECT_FALSE(store.confirm(id, "bob", 5000)) << "at the deadline it is too late";
  EXPECT_TRUE(store.confirm(id, "bob", 4999));
  EXPECT_FALSE(store.confirm(id, "carol", 4999)) << "confirmed once";
  j = store.job(id);
  EXPECT_FALSE(j->awaiting_confirmation());
  EXPECT_EQ(j->confirmed_until, 2);
  EXPECT_EQ(j->confirmed_by, "bob");
  store.stage_failed(id, 1, 1, 6000, "boom");
  ASSERT_TRUE(store.requeue(id, "e2").ok);
  j = store.job(id);
  EXPECT_EQ(j->confirmed_until, 0) << "a retried job is confirmed again";
  EXPECT_EQ(j->confirmed_by, "");
}

TEST_P(Store, FreezesAreInForceUntilTheyEndOrAreLifted) {
  auto opened = open();
  JobStore& store = *opened;
  store.add_freeze({0, "loki", "alice", "release", 1000, 5000});
  store.add_freeze({0, "all", "bob", "", 1000, 0});
  EXPECT_EQ(store.freezes_in_force(999).size(), 0u);
  EXPECT_EQ(store.freezes_in_force(2000).size(), 2u);
  EXPECT_EQ(store.freezes_in_force(5000).size(), 1u) << "loki's ended";
  EXPECT_EQ(store.lift_freezes("loki", "carol", 6000), 0) << "nothing of loki's in force";
  EXPECT_EQ(store.lift_freezes("all", "carol", 6000), 1);
  EXPECT_EQ(store.freezes_in_force(6001).size(), 0u);
}

// Walks keep one last result per walk and host, replaced by the next run.
TEST_P(Store, AWalksLastResultPerHostIsReplacedByTheNext) {
  auto store = open();
  store->record_walk({"http", "web1", true, "", 1000, 1000});
  store->record_walk({"http", "web2", false, "HTTP 500", 1000, 1000});
  store->record_walk({"http", "web1", false, "timed out", 2000, 2000});
  auto again = open();  // as another process sees it
  auto states = again->walk_states();
  ASSERT_EQ(states.size(), 2u);
  EXPECT_EQ(states[0].host, "web1");
  EXPECT_FALSE(states[0].ok);
  EXPECT_EQ(states[0].reason, "timed out");
  EXPECT_EQ(states[0].last_run_ms, 2000);
  EXPECT_EQ(states[1].reason, "HTTP 500");
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
  EXPECT_TRUE(store.add_token({"ci", "operate", "abc", 5}));
  ASSERT_EQ(store.tokens().size(), 1u);
  store.queue_hook_deliveries(b, {"h"}, 10);
  EXPECT_EQ(store.due_hook_deliveries(10, 10).size(), 1u);
}

TEST_P(Store, ApiTokensAreKeptByNameWithTheirHashAndRevokedAtOnce) {
  auto owned = open();
  JobStore& store = *owned;
  EXPECT_TRUE(store.tokens().empty());
  EXPECT_TRUE(store.add_token({"ci", "operate", "abc", 5}));
  EXPECT_FALSE(store.add_token({"ci", "read", "def", 6})) << "a name is taken until revoked";
  EXPECT_FALSE(store.add_token({"other", "read", "abc", 6})) << "two tokens never share a hash";
  EXPECT_TRUE(store.add_token({"bob", "read", "0123", 0}));
  auto other = open();  // what another node or `jarvis token list` sees
  auto t = other->tokens();
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].name, "bob") << "listed by name";
  EXPECT_GT(t[0].created_ms, 0) << "stamped when added without a time";
  EXPECT_EQ(t[1].name, "ci");
  EXPECT_EQ(t[1].role, "operate");
  EXPECT_EQ(t[1].hash, "abc");
  EXPECT_EQ(t[1].created_ms, 5);
  EXPECT_TRUE(other->revoke_token("ci"));
  EXPECT_FALSE(store.revoke_token("ci"));
  ASSERT_EQ(store.tokens().size(), 1u) << "revoked on one connection is gone on every other";
  EXPECT_TRUE(store.add_token({"ci", "read", "def", 7})) << "the name is free again";
}

TEST_P(Store, HookDeliveriesAreQueuedOncePerEventAndKeptUntilDeliveredOrDead) {
  auto owned = open();
  JobStore& store = *owned;
  int64_t e0 = store.append_event(1, 1, "job_queued", "{}");
  EXPECT_EQ(store.hook_cursor(), e0) << "hooks new to a store start after its history";
  int64_t e1 = store.append_event(1, 1, "job_ready", "{\"kind\":\"job_ready\"}");
  int64_t e2 = store.append_event(2, 1, "job_failed", "{}");
  store.queue_hook_deliveries(e1, {"a", "b"}, 100);
  store.queue_hook_deliveries(e1, {"a", "b"}, 100);  // again after a crash: nothing twice
  open()->queue_hook_deliveries(e1, {"a", "b"}, 100);  // or from another node
  EXPECT_EQ(store.hook_cursor(), e1);
  store.queue_hook_deliveries(e2, {}, 100);  // matched no hook: the cursor still moves
  EXPECT_EQ(store.hook_cursor(), e2);
  store.queue_hook_deliveries(e1, {"late"}, 100);  // behind the cursor: ignored
  auto due = store.due_hook_deliveries(100, 10);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].hook, "a");
  EXPECT_EQ(due[0].event_id, e1);
  EXPECT_EQ(due[0].state, "pending");
  EXPECT_EQ(due[0].attempts, 0);
  EXPECT_EQ(due[0].event_kind, "job_ready");
  EXPECT_EQ(due[0].event_json, "{\"kind\":\"job_ready\"}");
  EXPECT_TRUE(store.due_hook_deliveries(99, 10).empty()) << "not due before next_at";
  EXPECT_EQ(store.due_hook_deliveries(100, 1).size(), 1u) << "the limit holds";
  store.hook_attempt_done(due[0].id, "pending", 500, "HTTP status 500");
  store.hook_attempt_done(due[1].id, "dead", 0, "connection refused");
  EXPECT_TRUE(store.due_hook_deliveries(499, 10).empty());
  {
    // Durable: a restarted serve (a new connection) finds the retry where it was left.
    auto reopened = open();
    EXPECT_EQ(reopened->hook_cursor(), e2);
    auto again = reopened->due_hook_deliveries(500, 10);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].attempts, 1);
    EXPECT_EQ(again[0].next_at_ms, 500);
    EXPECT_EQ(again[0].last_error, "HTTP status 500");
    reopened->hook_attempt_done(again[0].id, "delivered", 0, "");
  }
  EXPECT_TRUE(store.due_hook_deliveries(int64_t{1} << 40, 10).empty());
  auto dead = store.dead_hook_deliveries(10);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].hook, "b");
  EXPECT_EQ(dead[0].state, "dead");
  EXPECT_EQ(dead[0].attempts, 1);
  EXPECT_EQ(dead[0].last_error, "connection refused");
}

TEST_P(Store, FindJobsFiltersAndPagesNewestFirst) {
  auto owned = open();
  JobStore& store = *owned;
  std::vector<int64_t> ids;
  for (const char* host : {"a", "b", "a", "c"}) {
    NewJob j = new_job(host);
    if (std::string(host) == "c") j.requested_by = "bob";
    ids.push_back(store.create_job(j, "e").id);
    store.stage_failed(ids.back(), 0, 1, 10, "x");  // frees the host for the next one
  }
  int64_t running = store.create_job(new_job("d"), "e").id;
  store.mark_running(running, 20);
  JobQuery q;
  q.host = "a";
  auto a = store.find_jobs(q);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].id, ids[2]);
  EXPECT_EQ(a[1].id, ids[0]);
  EXPECT_EQ(a[0].reason, "x");
  q = {};
  q.requested_by = "bob";
  auto bob = store.find_jobs(q);
  ASSERT_EQ(bob.size(), 1u);
  EXPECT_EQ(bob[0].host, "c");
  q = {};
  q.limit = 2;
  auto page = store.find_jobs(q);
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].id, running);
  q.before_id = page.back().id;
  auto next = store.find_jobs(q);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0].id, ids[2]);
  EXPECT_EQ(next[1].id, ids[1]);
  q.before_id = next.back().id;
  auto last = store.find_jobs(q);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].id, ids[0]);
  q.before_id = last.back().id;
  EXPECT_TRUE(store.find_jobs(q).empty()) << "past the oldest: an empty page";
  q = {};
  q.latest_per_host = true;
  EXPECT_EQ(store.find_jobs(q).size(), 4u);
  q.host = "a";
  auto latest_a = store.find_jobs(q);
  ASSERT_EQ(latest_a.size(), 1u);
  EXPECT_EQ(latest_a[0].id, ids[2]);
  q = {};
  q.state = JobState::Ready;
  EXPECT_TRUE(store.find_jobs(q).empty());
  q.state = JobState::Running;
  ASSERT_EQ(store.find_jobs(q).size(), 1u);
  q = {};
  q.host = "a";
  q.requested_by = "bob";
  EXPECT_TRUE(store.find_jobs(q).empty()) << "filters combine";
  auto counts = store.job_counts();
  EXPECT_EQ(counts[JobState::Failed], 4);
  EXPECT_EQ(counts[JobState::Running], 1);
  EXPECT_EQ(counts.count(JobState::Ready), 0u);
}

TEST_P(Store, ClipboardAfterAStageIsTheLastOneAStageChanged) {
  auto owned = open();
  JobStore& store = *owned;
  int64_t id = store.create_job(new_job("loki"), "e1").id;
  store.mark_running(id, 1);
  store.stage_started(id, 0, 1, "m:t0", 1, 0);
  std::string one = "one: 1\n";
  store.stage_succeeded(id, 0, 1, 2, &one);
  store.stage_started(id, 1, 1, "m:t1", 3, 0);
  store.stage_will_retry(id, 1, 1, 4, "exit 1", 5);
  store.stage_started(id, 1, 2, "m:t1", 5, 0);
  store.stage_succeeded(id, 1, 2, 6, nullptr);  // unchanged
  EXPECT_EQ(store.clipboard_after(id, 0), "instance: {hostname: loki}\n");
  EXPECT_EQ(store.clipboard_after(id, 1), one);
  EXPECT_EQ(store.clipboard_after(id, 2), one);
  EXPECT_FALSE(store.clipboard_after(id, 3)) << "stage 3 has not run";
  EXPECT_FALSE(store.clipboard_after(id + 100, 0)) << "no such job";
  auto stages = store.stages(id);
  ASSERT_EQ(stages.size(), 3u) << "every attempt";
  EXPECT_EQ(stages[0].task, "m:t0");
  EXPECT_EQ(stages[1].stage, 1);
  EXPECT_EQ(stages[1].attempt, 1);
  EXPECT_NE(stages[1].result, "ok");
  EXPECT_EQ(stages[1].reason, "exit 1");
  EXPECT_EQ(stages[2].attempt, 2);
  EXPECT_EQ(stages[2].result, "ok");
  EXPECT_EQ(stages[2].started_ms, 5);
  EXPECT_EQ(stages[2].ended_ms, 6);
  EXPECT_TRUE(store.stages(id + 100).empty());
}

TEST_P(Store, FindAuditByWhoHostAndSince) {
  auto owned = open();
  JobStore& store = *owned;
  store.audit({100, "http:op", "http", "127.0.0.1", "deploy loki", "ok"});
  store.audit({200, "irc:alice!a@h", "irc", "#ops", "deploy lokiX", "ok"});
  store.audit({300, "http:op", "http", "127.0.0.1", "cancel loki", "ok"});
  AuditQuery q;
  q.host = "loki";
  auto both = store.find_audit(q);
  ASSERT_EQ(both.size(), 2u) << "loki as a word, not lokiX";
  EXPECT_EQ(both[0].command, "cancel loki") << "newest first";
  EXPECT_GT(both[0].id, both[1].id);
  q.before_id = both[0].id;
  auto older = store.find_audit(q);
  ASSERT_EQ(older.size(), 1u);
  EXPECT_EQ(older[0].command, "deploy loki");
  EXPECT_EQ(older[0].at_ms, 100);
  EXPECT_EQ(older[0].place, "127.0.0.1");
  q = {};
  q.host = "loki";
  q.since_ms = 150;
  auto rows = store.find_audit(q);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].command, "cancel loki");
  q = {};
  q.who = "irc:alice!a@h";
  EXPECT_EQ(store.find_audit(q).size(), 1u);
  q = {};
  q.limit = 1;
  EXPECT_EQ(store.find_audit(q).size(), 1u);
  q.host = "%";  // no pattern syntax: a word matches only itself
  EXPECT_TRUE(store.find_audit(q).empty());
}

TEST_P(Store, PruneRemovesOldFinishedJobsLogsAndClipboardsButKeepsWhatRanAndTheAudit) {
  auto owned = open();
  JobStore& store = *owned;
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
  EXPECT_EQ(stage_clipboards(store, old_job), std::vector<std::string>{""});
  EXPECT_FALSE(store.requeue(old_job, "").ok) << "a pruned job has no clipboard to resume with";
  EXPECT_EQ(store.log(recent, 10).size(), 1u) << "recent jobs are kept whole";
  EXPECT_FALSE(store.job(running)->clipboard.empty()) << "jobs in flight are never pruned";
  EXPECT_EQ(store.audit_trail(10).size(), 1u) << "the audit trail stays";
}

TEST_P(Store, EventsAreReadBackInOrderWithACursor) {
  auto owned = open();
  JobStore& store = *owned;
  auto other = open();
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back((i % 2 ? *other : store).append_event(1000 + i, 7, "stage", "{\"n\":" + std::to_string(i) + "}"));
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_GT(ids[i], ids[i - 1]);
  auto first = store.events_after(0, 3);
  ASSERT_EQ(first.size(), 3u);
  EXPECT_EQ(first[0].json, "{\"n\":0}");
  EXPECT_EQ(first[0].job_id, 7);
  EXPECT_EQ(first[0].kind, "stage");
  EXPECT_EQ(first[2].at_ms, 1002);
  auto rest = other->events_after(first.back().id, 100);
  ASSERT_EQ(rest.size(), 2u) << "the cursor resumes after the last event read, none twice";
  EXPECT_EQ(rest[1].json, "{\"n\":4}");
  EXPECT_TRUE(store.events_after(rest.back().id, 100).empty());
}

// A write group is one transaction: other connections see all of it after the commit and
// none of it before, and a rolled-back group leaves the store as it was.
TEST_P(Store, AWriteGroupIsCommittedWholeOrNotAtAll) {
  auto owned = open();
  JobStore& store = *owned;
  auto other = open();
  int64_t id = store.create_job(new_job("grp"), "e1").id;
  ASSERT_GT(id, 0);
  store.mark_running(id, 1);
  store.stage_started(id, 0, 1, "m:t0", 1, 0);
  {
    WriteGroup group(store);
    store.stage_succeeded(id, 0, 1, 2, nullptr);
    store.append_log(id, 1, "in the group");
    int64_t ev = store.append_event(2, id, "stage_succeeded", "{}");
    EXPECT_GT(ev, 0);
    EXPECT_EQ(other->job(id)->stage, 0) << "nothing of a group is seen before its commit";
    EXPECT_TRUE(other->log(id, 10).empty());
    group.commit();
  }
  EXPECT_EQ(other->job(id)->stage, 1);
  ASSERT_EQ(other->log(id, 10).size(), 1u);
  EXPECT_EQ(other->events_after(0, 10).size(), 1u);
  {
    WriteGroup group(store);
    store.stage_started(id, 1, 1, "m:t1", 3, 0);
    store.append_log(id, 2, "rolled back");
    store.append_event(3, id, "stage_started", "{}");
  }  // no commit
  EXPECT_EQ(store.job(id)->stage_started_ms, 2) << "a group without its commit changed the job";
  EXPECT_EQ(store.log(id, 10).size(), 1u);
  EXPECT_EQ(store.events_after(0, 10).size(), 1u);
  EXPECT_TRUE(store.stages(id).size() == 1u) << "the second stage row was rolled back";
  // And the connection is usable for writes of its own afterwards.
  store.append_log(id, 1, "after");
  EXPECT_EQ(other->log(id, 10).size(), 2u);
}

// Dashboard sessions: found until they expire or end, on every connection; a token keeps at
// most its 100 newest.
TEST_P(Store, DashboardSessionsLastUntilTheyExpireOrEndAndAreBoundedPerToken) {
  auto owned = open();
  JobStore& store = *owned;
  auto other = open();
  store.add_session({"s1", "tokA", 5000}, 1000);
  store.add_session({"s2", "tokA", 2000}, 1000);
  auto found = other->session("s1", 1500);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->token_hash, "tokA");
  EXPECT_EQ(found->expires_ms, 5000);
  EXPECT_TRUE(other->session("s2", 1999));
  EXPECT_FALSE(other->session("s2", 2000)) << "expired";
  EXPECT_FALSE(other->session("nope", 1000));
  other->end_session("s1");
  EXPECT_FALSE(store.session("s1", 1500)) << "ended on one connection, gone on the other";
  for (int i = 0; i < 105; ++i) store.add_session({"b" + std::to_string(i), "tokB", 10000 + i}, 3000);
  EXPECT_FALSE(store.session("b0", 3000)) << "the oldest of 105 logins of one token is dropped";
  EXPECT_FALSE(store.session("b4", 3000));
  EXPECT_TRUE(store.session("b5", 3000));
  EXPECT_TRUE(store.session("b104", 3000));
}

TEST_P(Store, AClipboardComesBackByteForByteAndBadLogTextIsStoredReadable) {
  auto owned = open();
  JobStore& store = *owned;
  NewJob j = new_job("bytes");
  j.clipboard = "odd: \xff\xfe caf\xc3\xa9\n";
  int64_t id = store.create_job(j, "e1").id;
  ASSERT_GT(id, 0);
  store.mark_running(id, 1);
  store.stage_started(id, 0, 1, "m:t0", 1, 0);
  std::string after = "next: \x01\x80\n";
  store.stage_succeeded(id, 0, 1, 2, &after);
  EXPECT_EQ(open()->job(id)->clipboard, after);
  store.append_log(id, 1, std::string("bad \xff utf-8 and a NUL \0 here", 28));
  auto lines = store.log(id, 5);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].line.substr(0, 4), "bad ");
  EXPECT_NE(lines[0].line.find("utf-8"), std::string::npos) << "the rest of the line is kept";
}

TEST_P(Store, CancelRequestsAndWatchedJobsAreSeenByEveryConnection) {
  auto owned = open();
  JobStore& store = *owned;
  auto other = open();
  int64_t id = store.create_job(new_job("watch"), "e1").id;
  EXPECT_TRUE(other->request_cancel(id, "bob"));
  auto w = store.jobs_to_watch();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].owner, "e1");
  EXPECT_TRUE(w[0].cancel_requested);
  store.job_cancelled(id, 5, "cancelled by bob");
  EXPECT_FALSE(other->request_cancel(id, "bob")) << "not in flight any more";
  EXPECT_TRUE(store.jobs_to_watch().empty());
  EXPECT_EQ(other->job(id)->state, JobState::Cancelled);
}

}  // namespace
}  // namespace jarvis::testing
