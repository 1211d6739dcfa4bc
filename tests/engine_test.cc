// The engine with real workers and a real store: fidelity, environment, retries, per-host
// lock, the concurrency limit, cancel, and resuming a job another engine left behind.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "bot/commands/command_service.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

using namespace std::chrono_literals;

TEST(Engine, WhatAWorkerPrintsIsWhatTheNextWorkerReads) {
  Harness h;
  std::string seen = h.tmp.file("seen.yaml");
  // Quoted scalars that a re-emit would turn into a number, a boolean and a float.
  h.worker("fid:emit",
           "cat >/dev/null; cat <<'EOF'\n"
           "instance:\n  hostname: fid\n  provider: test\n"
           "code: '007'\nanswer: 'yes'\nsci: \"1e3\"\nport: 22\nlist: [a, 'b']\n"
           "EOF");
  h.worker("fid:read", "cat > " + seen);
  h.start();
  auto s = h.submit("fid", h.pipeline({Harness::task("fid:emit"), Harness::task("fid:read")}));
  auto j = h.wait(s.job);
  ASSERT_EQ(j.state, JobState::Ready) << j.reason;
  std::string emitted = h.stage_clipboards(s.job).at(0);
  EXPECT_EQ(read_file(seen), emitted) << "the next worker reads exactly what was printed";
  EXPECT_NE(emitted.find("code: '007'"), std::string::npos);
  EXPECT_NE(emitted.find("answer: 'yes'"), std::string::npos);
  EXPECT_NE(emitted.find("sci: \"1e3\""), std::string::npos);
  EXPECT_EQ(j.clipboard, emitted) << "blank output from fid:read leaves it unchanged";
}

TEST(Engine, WorkersGetTheContractEnvironmentAndNothingElse) {
  Harness h;
  ::setenv("JARVIS_TEST_SECRET_TOKEN", "hunter2", 1);
  ::setenv("JARVIS_TEST_ALLOWED", "visible", 1);
  h.config.env_allow = {"JARVIS_TEST_ALLOWED"};
  std::string out = h.tmp.file("env.txt");
  h.worker("env:dump", "cat >/dev/null; env > " + out + "; echo \"argv1=$1\" >> " + out);
  h.start();
  auto s = h.submit("envhost", h.pipeline({Harness::task("env:dump")}));
  ASSERT_EQ(h.wait(s.job).state, JobState::Ready);
  std::string env = read_file(out);
  EXPECT_EQ(env.find("hunter2"), std::string::npos) << "the bot's own environment leaked";
  EXPECT_NE(env.find("JARVIS_TEST_ALLOWED=visible"), std::string::npos);
  EXPECT_NE(env.find("JARVIS_JOB=" + std::to_string(s.job)), std::string::npos);
  EXPECT_NE(env.find("JARVIS_TASK=env:dump"), std::string::npos);
  EXPECT_NE(env.find("JARVIS_STAGE=1"), std::string::npos);
  EXPECT_NE(env.find("JARVIS_HOST=envhost"), std::string::npos);
  EXPECT_NE(env.find("argv1=dump"), std::string::npos);
  ::unsetenv("JARVIS_TEST_SECRET_TOKEN");
}

TEST(Engine, RetriesWithBackoffThenSucceeds) {
  Harness h;
  std::string counter = h.tmp.file("attempts");
  h.worker("flaky:step", "cat >/dev/null; echo x >> " + counter +
                             "; [ $(wc -l < " + counter + ") -ge 3 ] || { echo 'not yet' >&2; exit 1; }");
  h.start();
  auto s = h.submit("flaky", h.pipeline({Harness::task("flaky:step", 20s, 2)}));
  auto j = h.wait(s.job);
  EXPECT_EQ(j.state, JobState::Ready) << j.reason;
  EXPECT_EQ(read_file(counter), "x\nx\nx\n");
  int retrying = 0;
  for (const auto& e : h.events) retrying += e.kind == EngineEvent::Kind::StageRetrying;
  EXPECT_EQ(retrying, 2);
}

TEST(Engine, RetriesRunOutAndTheJobFails) {
  Harness h;
  h.worker("flaky:never", "cat >/dev/null; echo 'still broken' >&2; exit 1");
  h.start();
  auto s = h.submit("never", h.pipeline({Harness::task("flaky:never", 20s, 1)}));
  auto j = h.wait(s.job);
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_EQ(j.attempt, 2);
  EXPECT_NE(j.reason.find("still broken"), std::string::npos);
}

TEST(Engine, SecondDeployOfAHostInFlightIsRefusedWithTheRunningJob) {
  Harness h;
  h.worker("slow:step", "cat >/dev/null; sleep 30");
  h.start();
  auto p = h.pipeline({Harness::task("slow:step"), Harness::task("slow:step")});
  auto first = h.submit("loki", p);
  ASSERT_GT(first.job, 0);
  h.run_until([&] { return h.store->job(first.job)->state == JobState::Running; });
  auto second = h.submit("loki", p);
  EXPECT_EQ(second.job, 0);
  ASSERT_TRUE(second.conflict);
  EXPECT_EQ(second.conflict->id, first.job);
  EXPECT_EQ(second.conflict->stage, 0);
  std::string line = describe_job(*second.conflict, 0, now_ms());
  EXPECT_NE(line.find("running stage 1/2 slow:step"), std::string::npos) << line;
  EXPECT_NE(line.find("job " + std::to_string(first.job)), std::string::npos) << line;
  // Another host is not affected by loki's lock.
  EXPECT_GT(h.submit("thor", p).job, 0);
}

TEST(Engine, ConcurrencyLimitQueuesTheRestAndStatusSaysSo) {
  Harness h(2);
  h.worker("nap:step", "cat >/dev/null; sleep 0.3");
  int most = 0;
  h.start();
  h.engine->add_observer([&](const EngineEvent&) { most = std::max(most, h.engine->running()); });
  auto p = h.pipeline({Harness::task("nap:step")});
  std::vector<int64_t> ids;
  for (auto host : {"a1", "a2", "a3", "a4", "a5"}) ids.push_back(h.submit(host, p).job);
  h.run_until([&] { return h.engine->running() == 2; });
  auto fourth = *h.store->job(ids[3]);
  EXPECT_EQ(fourth.state, JobState::Queued);
  std::string line = describe_job(fourth, h.store->queued_ahead(ids[3]), now_ms());
  EXPECT_NE(line.find("a4: queued, waiting for a free slot (1 job ahead"), std::string::npos) << line;
  for (auto id : ids) EXPECT_EQ(h.wait(id).state, JobState::Ready);
  EXPECT_EQ(most, 2);
}

TEST(Engine, CancelKillsTheRunningWorker) {
  Harness h;
  std::string pidfile = h.tmp.file("pid");
  h.worker("slow:cancel", "cat >/dev/null; echo $$ > " + pidfile + "; exec sleep 60");
  h.start();
  auto s = h.submit("cancelme", h.pipeline({Harness::task("slow:cancel")}));
  ASSERT_TRUE(h.run_until([&] { return !read_file(pidfile).empty(); }));
  int pid = std::stoi(read_file(pidfile));
  EXPECT_TRUE(h.engine->cancel(s.job, "bob"));
  auto j = h.wait(s.job);
  EXPECT_EQ(j.state, JobState::Cancelled);
  EXPECT_EQ(j.reason, "cancelled by bob");
  EXPECT_FALSE(process_exists(pid));
  EXPECT_FALSE(h.engine->cancel(s.job, "bob")) << "nothing in flight to cancel";
}

TEST(Engine, CancelRequestedThroughTheStoreReachesTheOwningEngine) {
  Harness h;
  h.worker("slow:store", "cat >/dev/null; exec sleep 60");
  h.start();
  auto s = h.submit("viastore", h.pipeline({Harness::task("slow:store")}));
  h.run_until([&] { return h.store->job(s.job)->worker_pid > 0; });
  // What `jarvis cancel` does from another process.
  SqliteJobStore other(h.tmp.file("jarvis.db"));
  ASSERT_TRUE(other.request_cancel(s.job, "carol"));
  auto j = h.wait(s.job, 10s);
  EXPECT_EQ(j.state, JobState::Cancelled);
  EXPECT_EQ(j.reason, "cancelled by carol");
}

TEST(Engine, ARetriedJobResumesAtTheFailedStageWithItsSavedClipboard) {
  Harness h;
  std::string ran = h.tmp.file("ran");
  std::string gate = h.tmp.file("gate");
  h.worker("step:one", "cat >/dev/null; echo one >> " + ran + "; printf 'instance:\\n  hostname: r\\nfrom_one: yes\\n'");
  h.worker("step:two", "c=$(cat); echo two >> " + ran + "; [ -e " + gate + " ] || { echo 'gate closed' >&2; exit 1; }; echo \"$c\" | grep -q from_one");
  h.start();
  auto s = h.submit("r", h.pipeline({Harness::task("step:one"), Harness::task("step:two")}));
  auto failed = h.wait(s.job);
  ASSERT_EQ(failed.state, JobState::Failed);
  EXPECT_EQ(failed.stage, 1);
  write_file(gate, "");
  auto r = h.engine->retry(s.job);
  ASSERT_TRUE(r.ok) << r.error;
  auto j = h.wait(s.job);
  EXPECT_EQ(j.state, JobState::Ready) << j.reason;
  EXPECT_EQ(read_file(ran), "one\ntwo\ntwo\n") << "stage 1 must not run again";
}

TEST(Engine, AnOrphanedJobIsAdoptedAndResumedAtTheStageThatWasRunning) {
  TempDir shared;
  std::string ran = shared.file("ran");
  int64_t job = 0;
  {
    // Engine A runs stage 2 and "dies": its lock is released without finishing anything.
    Harness a;
    a.config.state_dir = shared.path();
    a.store = std::make_unique<SqliteJobStore>(shared.file("jarvis.db"));
    a.config.workers_path = {shared.file("workers")};
    a.worker("res:one", "cat >/dev/null; echo one >> " + ran +
                            "; printf 'instance:\\n  hostname: res\\nafter_one: kept\\n'");
    // Stage 2 leaves a child in its group, then its leader is killed with the engine, so
    // only the child is left to find the group by.
    a.worker("res:two", "c=$(cat); echo \"two $c\" | tr '\\n' ' ' >> " + ran + "; echo >> " + ran +
                            "; [ -e " + shared.file("go") + " ] || { sleep 60 & echo $! > " +
                            shared.file("child") + "; wait; }");
    a.worker("res:three", "cat >/dev/null; echo three >> " + ran);
    a.start();
    auto p = a.pipeline({Harness::task("res:one"), Harness::task("res:two"), Harness::task("res:three")});
    job = a.submit("res", p).job;
    ASSERT_TRUE(a.run_until([&] { auto j = a.store->job(job); return j->stage == 1 && j->worker_pid > 0; }));
    int stale_worker = a.store->job(job)->worker_pid;
    ASSERT_TRUE(a.run_until([&] { return !read_file(shared.file("child")).empty(); }));
    int stale_child = std::stoi(read_file(shared.file("child")));
    a.engine.reset();  // like kill -9: no stop(), the store still says "running stage 2"
    a.runner.reset();
    a.io.stop();
    ::kill(stale_worker, SIGKILL);
    EXPECT_TRUE(process_exists(stale_child));

    write_file(shared.file("go"), "");
    Harness b;
    b.config.state_dir = shared.path();
    b.store = std::make_unique<SqliteJobStore>(shared.file("jarvis.db"));
    b.config.workers_path = {shared.file("workers")};
    b.start();
    auto j = b.wait(job);
    EXPECT_EQ(j.state, JobState::Ready) << j.reason;
    EXPECT_FALSE(process_exists(stale_child)) << "what is left of the dead engine's worker is killed";
  }
  std::string log = read_file(ran);
  EXPECT_EQ(log.rfind("one\n", 0), 0u) << log;
  EXPECT_EQ(log.find("one\n", 1), std::string::npos) << "stage 1 ran once: " << log;
  EXPECT_NE(log.find("two instance:   hostname: res after_one: kept \ntwo"), std::string::npos)
      << "stage 2 reran with the clipboard saved after stage 1: " << log;
  EXPECT_NE(log.find("three"), std::string::npos) << log;
}

}  // namespace
}  // namespace jarvis::testing
