// What only the PostgreSQL store has: schema migrations, and the server's failures mapped to
// the StoreError kinds the engine acts on, each caused for real on a real server.
#include <gtest/gtest.h>

#include <libpq-fe.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>

#include "bot/store/postgres/postgres_job_store.h"
#include "tests/pg_support.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

class PgStore : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    server = PgServer::shared(&why);
    if (!server) GTEST_SKIP() << why;
    url = server->create_database();
    db = url.substr(url.rfind('/') + 1);
  }
  NewJob job(const std::string& host) {
    NewJob j;
    j.host = host;
    j.design_ref = host + ".yaml";
    j.pipeline = "p";
    j.tasks = {Harness::task("m:t0"), Harness::task("m:t1")};
    j.requested_by = "alice";
    j.origin = "cli:tty";
    j.clipboard = "instance: {hostname: " + host + "}\n";
    return j;
  }
  StoreError::Kind kind_of(const std::function<void()>& f, std::string* what = nullptr) {
    try {
      f();
    } catch (const StoreError& e) {
      if (what) *what = e.what();
      return e.kind();
    }
    ADD_FAILURE() << "no StoreError";
    return StoreError::Kind::Other;
  }
  PgServer* server = nullptr;
  std::string url, db;
};

TEST_F(PgStore, AFreshDatabaseIsMigratedOnceAndReopeningKeepsEverything) {
  int64_t id;
  {
    PostgresJobStore store(url);
    EXPECT_EQ(store.schema_version(), PostgresJobStore::kSchemaVersion);
    id = store.create_job(job("loki"), "e1").id;
  }
  PostgresJobStore again(url);
  EXPECT_EQ(server->sql(db, "SELECT count(*) FROM schema_version"), std::to_string(PostgresJobStore::kSchemaVersion))
      << "each migration recorded once";
  EXPECT_EQ(again.job(id)->host, "loki");
}

TEST_F(PgStore, AStoreAtVersion3GetsTheHttpApiAndHookTablesAndKeepsItsJobs) {
  int64_t id;
  {
    PostgresJobStore store(url);
    id = store.create_job(job("loki"), "e1").id;
  }
  // As a jarvis with the safety catch but before the HTTP API left it: version 3, without
  // the tables of version 4.
  server->sql(db, "DROP TABLE api_tokens; DROP TABLE hook_deliveries; DROP TABLE hook_cursor; "
                  "DROP TABLE dashboard_sessions; DROP INDEX jobs_by_requester; "
                  "DELETE FROM schema_version WHERE version >= 4");
  ASSERT_EQ(server->sql(db, "SELECT max(version) FROM schema_version"), "3");
  PostgresJobStore store(url);
  EXPECT_EQ(store.schema_version(), PostgresJobStore::kSchemaVersion);
  EXPECT_EQ(store.job(id)->host, "loki");
  EXPECT_TRUE(store.add_token({"ci", "read", "abc", 1}));
  int64_t e = store.append_event(1, id, "job_ready", "{}");
  EXPECT_EQ(store.hook_cursor(), e) << "hooks new to the store start after its history";
  JobQuery q;
  q.requested_by = "alice";
  EXPECT_EQ(store.find_jobs(q).size(), 1u);
  store.add_session({"sid", "abc", 5000}, 1000);
  EXPECT_TRUE(store.session("sid", 1000)) << "version 5: dashboard sessions";
}

TEST_F(PgStore, NodesQueueingTheSameEventsTogetherQueueEachOnceAndSkipNone) {
  std::vector<int64_t> events;
  {
    PostgresJobStore store(url);
    store.queue_hook_deliveries(store.hook_cursor(), {}, 0);  // pinned before the events
    for (int i = 0; i < 40; ++i) events.push_back(store.append_event(i, 1, "job_ready", "{}"));
  }
  // Four nodes catch up at once, each reading every event past the cursor in order.
  std::vector<std::thread> nodes;
  std::atomic<int> failed{0};
  for (int n = 0; n < 4; ++n)
    nodes.emplace_back([&] {
      try {
        PostgresJobStore s(url);
        for (int64_t e : events) s.queue_hook_deliveries(e, {"a", "b"}, 0);
      } catch (const std::exception&) {
        ++failed;
      }
    });
  for (auto& t : nodes) t.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(server->sql(db, "SELECT count(*) FROM hook_deliveries"), std::to_string(2 * events.size()));
  EXPECT_EQ(server->sql(db, "SELECT count(DISTINCT event_id) FROM hook_deliveries"), std::to_string(events.size()))
      << "no event skipped by a node that saw the cursor past it";
  EXPECT_EQ(server->sql(db, "SELECT event_id FROM hook_cursor"), std::to_string(events.back()));
}

TEST_F(PgStore, NodesStartingTogetherMigrateOnce) {
  std::vector<std::thread> nodes;
  std::atomic<int> failed{0};
  for (int i = 0; i < 4; ++i)
    nodes.emplace_back([&] {
      try {
        PostgresJobStore s(url);
      } catch (const std::exception&) {
        ++failed;
      }
    });
  for (auto& t : nodes) t.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(server->sql(db, "SELECT count(*) FROM schema_version"), std::to_string(PostgresJobStore::kSchemaVersion));
}

TEST_F(PgStore, ASchemaNewerThanTheBinaryIsRefusedAndLeftAlone) {
  { PostgresJobStore store(url); }
  server->sql(db, "INSERT INTO schema_version VALUES (" + std::to_string(PostgresJobStore::kSchemaVersion + 1) + ")");
  std::string what;
  EXPECT_EQ(kind_of([&] { PostgresJobStore s(url); }, &what), StoreError::Kind::Other);
  EXPECT_NE(what.find("schema version " + std::to_string(PostgresJobStore::kSchemaVersion + 1) + ", newer than this jarvis"),
            std::string::npos)
      << what;
  EXPECT_EQ(what.find("pg-test-secret"), std::string::npos) << "no password in messages: " << what;
  EXPECT_EQ(server->sql(db, "SELECT max(version) FROM schema_version"), std::to_string(PostgresJobStore::kSchemaVersion + 1));
}

TEST_F(PgStore, ALockHeldPastTheStatementTimeoutIsBusyNotAHang) {
  PostgresOptions o;
  o.statement_timeout_ms = 200;
  PostgresJobStore store(url, o);
  int64_t id = store.create_job(job("locked"), "e1").id;
  // Another session holds the table lock (a real second connection, in a thread).
  std::atomic<bool> held{false}, release{false};
  std::thread holder([&] {
    PGconn* c = PQconnectdb(url.c_str());
    PQclear(PQexec(c, "BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"));
    held = true;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
  });
  while (!held) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto t0 = std::chrono::steady_clock::now();
  std::string what;
  EXPECT_EQ(kind_of([&] { store.mark_running(id, 5); }, &what), StoreError::Kind::Busy);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_NE(what.find("busy"), std::string::npos) << what;
  release = true;
  holder.join();
  store.mark_running(id, 5);  // the same connection works again
  EXPECT_EQ(store.job(id)->state, JobState::Running);
}

// A node stopped inside a transaction (SIGSTOP, a paused VM) holds its row and advisory locks:
// past the statement timeout the server ends that session, the other nodes go on, and the
// stopped node's commit fails instead of reporting writes that were rolled back.
TEST_F(PgStore, ANodeStoppedInATransactionLosesItAndTheOthersAreNotBlocked) {
  PostgresOptions o;
  o.statement_timeout_ms = 300;
  PostgresJobStore paused(url, o), other(url, o);
  int64_t id = paused.create_job(job("paused"), "e1").id;
  paused.begin_group();
  paused.mark_running(id, 5);                             // the job's row lock
  paused.append_event(5, id, "stage_started", "{}");      // the cluster-wide event lock
  std::this_thread::sleep_for(std::chrono::milliseconds(900));  // the node is stopped
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_GT(other.append_event(6, id, "stage_started", "{}"), 0);
  other.mark_running(id, 6);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250)) << "the others waited on its locks";
  std::string what;
  EXPECT_EQ(kind_of([&] { paused.commit_group(); }, &what), StoreError::Kind::Unreachable);
  EXPECT_NE(what.find("idle-in-transaction"), std::string::npos) << what;
  paused.rollback_group();
  auto events = other.events_after(0, 10);
  ASSERT_EQ(events.size(), 1u) << "the stopped node's event was stored";
  EXPECT_EQ(events[0].at_ms, 6);
  EXPECT_EQ(paused.job(id)->started_ms, 6) << "the stopped node reconnects and sees the others' writes";
}

// PostgreSQL answers the COMMIT of a transaction in which a statement failed with ROLLBACK,
// and no error: here a token name taken twice (add_token says false and goes on) inside a
// group. The group's commit must fail, not report the log line it dropped as stored.
TEST_F(PgStore, AGroupThePostgresServerRolledBackIsNotReportedCommitted) {
  PostgresJobStore store(url);
  int64_t id = store.create_job(job("rolled"), "e1").id;
  ASSERT_TRUE(store.add_token({"ci", "read", std::string(64, 'a'), 1}));
  store.begin_group();
  store.append_log(id, 1, "in the group");
  EXPECT_FALSE(store.add_token({"ci", "read", std::string(64, 'b'), 2}));
  std::string what;
  EXPECT_EQ(kind_of([&] { store.commit_group(); }, &what), StoreError::Kind::Other);
  EXPECT_NE(what.find("rolled the transaction back"), std::string::npos) << what;
  store.rollback_group();
  EXPECT_TRUE(store.log(id, 10).empty()) << "the line is not stored, as the failed commit says";
  store.append_log(id, 1, "after");  // the connection goes on
  EXPECT_EQ(store.log(id, 10).size(), 1u);
}

TEST_F(PgStore, AReadOnlyDatabaseIsReadOnlyAndAMissingGrantIsDenied) {
  PostgresJobStore store(url);
  int64_t id = store.create_job(job("ro"), "e1").id;
  server->sql(db, "ALTER DATABASE " + db + " SET default_transaction_read_only = on");
  PostgresJobStore ro(url);  // settings apply to new sessions
  EXPECT_EQ(kind_of([&] { ro.mark_running(id, 1); }), StoreError::Kind::ReadOnly);
  EXPECT_EQ(ro.job(id)->host, "ro") << "reads still work";
  server->sql("postgres", "ALTER DATABASE " + db + " SET default_transaction_read_only = off");

  server->sql(db, "CREATE ROLE reader LOGIN PASSWORD 'r'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader");
  std::string reader_url = url;
  reader_url.replace(reader_url.find("jarvis:pg-test-secret-7f3a"), std::string("jarvis:pg-test-secret-7f3a").size(), "reader:r");
  PostgresJobStore reader(reader_url);
  EXPECT_EQ(kind_of([&] { reader.mark_running(id, 1); }), StoreError::Kind::Denied);
}

TEST_F(PgStore, DroppedOrReplacedTablesAreGone) {
  PostgresJobStore store(url);
  store.check_identity();
  server->sql(db, "UPDATE jarvis_meta SET store_id = 'another'");
  std::string what;
  EXPECT_EQ(kind_of([&] { store.check_identity(); }, &what), StoreError::Kind::Gone);
  EXPECT_NE(what.find("replaced"), std::string::npos) << what;
  server->sql(db, "DROP TABLE jarvis_meta");
  EXPECT_EQ(kind_of([&] { store.check_identity(); }), StoreError::Kind::Gone);
}

TEST_F(PgStore, AServerRestartIsUnreachableThenTheStoreReconnectsByItself) {
  PostgresJobStore store(url);
  int64_t id = store.create_job(job("restart"), "e1").id;
  server->stop();
  std::string what;
  EXPECT_EQ(kind_of([&] { store.mark_running(id, 1); }, &what), StoreError::Kind::Unreachable);
  EXPECT_EQ(what.find("pg-test-secret"), std::string::npos) << what;
  EXPECT_EQ(kind_of([&] { store.probe_write(10); }), StoreError::Kind::Unreachable) << "still down";
  server->start();
  store.probe_write(100);  // what the engine's recovery probe does
  store.mark_running(id, 1);
  EXPECT_EQ(store.job(id)->state, JobState::Running);
  EXPECT_TRUE(store.job(id)->clipboard.find("restart") != std::string::npos);
}

TEST_F(PgStore, TheWrongPasswordIsDeniedWithoutEchoingIt) {
  std::string bad = url;
  bad.replace(bad.find("pg-test-secret-7f3a"), std::string("pg-test-secret-7f3a").size(), "wrong-guess-99");
  std::string what;
  EXPECT_EQ(kind_of([&] { PostgresJobStore s(bad); }, &what), StoreError::Kind::Denied);
  EXPECT_EQ(what.find("wrong-guess-99"), std::string::npos) << what;
  EXPECT_NE(what.find("127.0.0.1"), std::string::npos) << "says which server: " << what;
}

}  // namespace
}  // namespace jarvis::testing

namespace jarvis::testing {
namespace {

TEST_F(PgStore, QueuedJobsAreClaimedOnceWithinTheClusterWideBound) {
  PostgresJobStore a(url), b(url);
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(a.create_job(job("h" + std::to_string(i)), "").id);
  auto first = a.claim_queued("eA", 10, 3);
  EXPECT_EQ(first, (std::vector<int64_t>{ids[0], ids[1], ids[2]})) << "oldest first, up to the bound";
  EXPECT_TRUE(b.claim_queued("eB", 10, 3).empty()) << "3 owned across the cluster: no room";
  a.fence_writes("eA");
  a.mark_running(ids[0], 1);
  a.stage_started(ids[0], 0, 1, "m:t0", 1, 0);
  a.stage_failed(ids[0], 0, 1, 2, "boom");
  EXPECT_EQ(b.claim_queued("eB", 10, 3), std::vector<int64_t>{ids[3]});
  EXPECT_EQ(a.claim_queued("eA", 1, 10), std::vector<int64_t>{ids[4]});
  EXPECT_TRUE(b.claim_queued("eB", 10, 10).empty()) << "nothing unowned is left";
  EXPECT_EQ(b.job(ids[3])->owner, "eB");
}

TEST_F(PgStore, AStaleNodesStageResultIsRefusedAfterAnotherAdoptedTheJob) {
  PostgresJobStore a(url), b(url);
  a.fence_writes("eA");
  b.fence_writes("eB");
  int64_t id = a.create_job(job("fenced"), "eA").id;
  a.mark_running(id, 1);
  a.stage_started(id, 0, 1, "m:t0", 1, 0);
  // eA's lease ran out; eB adopts the job (compare-and-set of the owner) and runs stage 1.
  ASSERT_TRUE(b.claim(id, "eA", "eB"));
  b.mark_queued(id);
  b.mark_running(id, 2);
  b.stage_started(id, 0, 2, "m:t0", 2, 0);
  std::string adopter = "by: adopter\n";
  b.stage_succeeded(id, 0, 2, 3, &adopter);
  // eA wakes up with its worker's late result.
  std::string stale = "by: stale node\n";
  std::string what;
  EXPECT_EQ(kind_of([&] { a.stage_succeeded(id, 0, 1, 4, &stale); }, &what), StoreError::Kind::Fenced);
  EXPECT_NE(what.find("no longer run by this node"), std::string::npos) << what;
  EXPECT_EQ(kind_of([&] { a.stage_failed(id, 1, 1, 4, "late"); }), StoreError::Kind::Fenced);
  EXPECT_EQ(kind_of([&] { a.stage_started(id, 1, 1, "m:t1", 4, 0); }), StoreError::Kind::Fenced);
  auto j = b.job(id);
  EXPECT_EQ(j->clipboard, adopter) << "the adopter's work stands";
  EXPECT_EQ(j->stage, 1);
  EXPECT_EQ(j->state, JobState::Running);
  EXPECT_EQ(j->owner, "eB");
  PostgresJobStore cli(url);  // no fence: the CLI cancelling an orphan
  cli.job_cancelled(id, 5, "cancelled by bob");
  EXPECT_EQ(b.job(id)->state, JobState::Cancelled);
}

TEST_F(PgStore, LeasesExpireOnTheServersClockAndRenewalSaysSo) {
  PostgresJobStore a(url);
  EXPECT_TRUE(a.renew_lease("eA", "runner-1", Millis(60000)));
  EXPECT_TRUE(a.renew_lease("eC", "runner-3", Millis(100)));
  auto live = a.live_engines();
  EXPECT_EQ(live.size(), 2u);
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  live = a.live_engines();
  EXPECT_EQ(live, std::vector<std::string>{"eA"}) << "eC's lease ran out";
  EXPECT_FALSE(a.renew_lease("eC", "runner-3", Millis(60000))) << "renewal tells it its lease had expired";
  EXPECT_TRUE(a.renew_lease("eA", "runner-1", Millis(60000)));
  a.drop_lease("eA");
  EXPECT_EQ(a.live_engines(), std::vector<std::string>{"eC"});
}

}  // namespace
}  // namespace jarvis::testing

namespace jarvis::testing {
namespace {

using K = EngineEvent::Kind;
int count_events(const std::vector<EngineEvent>& events, K kind, int stage = 0) {
  int n = 0;
  for (const auto& e : events) n += e.kind == kind && (!stage || e.stage == stage);
  return n;
}

// The engine on a real PostgreSQL that goes away mid-stage: nothing announced that was not
// stored, deploys refused with the reason, and the job finishes once the server is back.
TEST_F(PgStore, TheEngineWaitsOutAServerRestartAndRerunsTheStageWhoseResultWasNotStored) {
  Harness h;
  PostgresOptions o;
  o.statement_timeout_ms = 500;
  h.store = std::make_unique<PostgresJobStore>(url, o);
  std::string runs = h.tmp.file("runs"), hold = h.tmp.file("hold");
  write_file(hold, "");
  for (int i = 1; i <= 3; ++i) {
    std::string n = std::to_string(i);
    // Stage 2's first run waits for the hold file to go: the server is stopped meanwhile.
    h.worker("pg:s" + n, "c=$(cat); echo s" + n + " >> " + runs +
                             (i == 2 ? "; while [ -e " + hold + " ]; do sleep 0.05; done" : "") +
                             "; printf '%s\\ns" + n + ": done\\n' \"$c\"");
  }
  auto p = h.pipeline({Harness::task("pg:s1"), Harness::task("pg:s2"), Harness::task("pg:s3")});
  h.start();
  auto s = h.submit("pgjob", p);
  ASSERT_GT(s.job, 0);
  ASSERT_TRUE(h.run_until([&] { return read_file(runs) == "s1\ns2\n"; }, std::chrono::seconds(10)));
  server->stop();  // while stage 2 runs
  ASSERT_TRUE(h.run_until([&] { return count_events(h.events, K::StoreFailed) == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(count_events(h.events, K::StageSucceeded, 2), 0) << "stage 2 announced done but not stored";
  EXPECT_NE(h.engine->store_problem().find("cannot be reached"), std::string::npos) << h.engine->store_problem();
  auto refused = h.submit("other", p);
  EXPECT_EQ(refused.job, 0);
  EXPECT_EQ(refused.error.rfind("cannot accept deploys: the job store PostgreSQL 127.0.0.1:", 0), 0u) << refused.error;
  EXPECT_EQ(refused.error.find("pg-test-secret"), std::string::npos) << refused.error;
  std::filesystem::remove(hold);  // stage 2 ends while the server is down: its result cannot be stored
  h.run_until([] { return false; }, std::chrono::milliseconds(300));
  server->start();
  auto j = h.wait(s.job);
  ASSERT_EQ(j.state, JobState::Ready) << j.reason;
  EXPECT_EQ(read_file(runs), "s1\ns2\ns2\ns3\n") << "stage 2 ran again, not skipped";
  EXPECT_EQ(count_events(h.events, K::StoreRecovered), 1);
  for (const char* mark : {"s1: done", "s2: done", "s3: done"})
    EXPECT_NE(j.clipboard.find(mark), std::string::npos) << mark << " missing from " << j.clipboard;
  EXPECT_EQ(h.stage_clipboards(s.job).size(), 3u);
}

}  // namespace
}  // namespace jarvis::testing
