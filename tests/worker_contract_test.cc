// Every way a worker can misbehave, with real child processes: each gives a failed stage with
// a clear reason, the clipboard stays as it was, and the bot and other jobs carry on.
#include <gtest/gtest.h>

#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <thread>

#include <boost/asio/io_context.hpp>

#include "bot/pipeline/process_runner.h"
#include "bot/pipeline/worker_sweep.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

using namespace std::chrono_literals;

class WorkerContract : public ::testing::Test {
 protected:
  void SetUp() override {
    h.worker("good:step", "cat >/dev/null; echo 'step ok' >&2");
    h.start();
  }
  // Runs a one-stage job whose worker is `body`; returns the finished record.
  JobRecord run_one(const std::string& host, const std::string& body, Millis timeout = 20s) {
    h.worker("bad:" + host, body);
    auto s = h.submit(host, h.pipeline({Harness::task("bad:" + host, timeout)}));
    EXPECT_GT(s.job, 0) << s.error;
    return h.wait(s.job);
  }
  Harness h;
};

TEST_F(WorkerContract, OutputThatIsNotYamlFailsWithTheLine) {
  auto j = run_one("notyaml", "cat >/dev/null; printf 'a: 1\\nb: [unclosed\\n'");
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("not a YAML mapping"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("line "), std::string::npos) << j.reason;
  EXPECT_EQ(j.clipboard, make_design("notyaml").text) << "the clipboard must stay as before";
}

TEST_F(WorkerContract, AYamlListIsNotAClipboard) {
  auto j = run_one("alist", "cat >/dev/null; printf -- '- a\\n- b\\n'");
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("is a list at line 1"), std::string::npos) << j.reason;
}

// Issue 17, finding 22: a clipboard that contains itself passed the check, and the next worker
// that walks or re-emits it (yaml-cpp, PyYAML's dump) recurses until its stack overflows.
TEST_F(WorkerContract, ARecursiveClipboardIsRefused) {
  auto j = run_one("recursive", "cat >/dev/null; printf 'instance: {hostname: recursive}\\nx: &b [*b]\\n'");
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("not a YAML mapping"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("recursive document"), std::string::npos) << j.reason;
  EXPECT_EQ(j.clipboard, make_design("recursive").text) << "the clipboard must stay as before";
}

TEST_F(WorkerContract, ExitZeroWithGarbageFails) {
  auto j = run_one("garbage", "cat >/dev/null; printf '{{{ %%%% garbage ]]]\\n'; exit 0");
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("exited 0 but its output is not a YAML mapping"), std::string::npos)
      << j.reason;
}

TEST_F(WorkerContract, HangPastTheTimeoutIsKilledWithItsGroup) {
  std::string pidfile = h.tmp.file("hang.pid");
  // The worker ignores SIGTERM, so only the SIGKILL after the grace period stops it.
  auto j = run_one("hang",
                   "trap '' TERM; cat >/dev/null; sleep 60 & echo $! > " + pidfile +
                       "; wait; sleep 60",
                   400ms);
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("timed out after 400ms"), std::string::npos) << j.reason;
  int grandchild = std::stoi(read_file(pidfile));
  h.run_until([&] { return !process_exists(grandchild); }, 3s);
  EXPECT_FALSE(process_exists(grandchild)) << "the worker's child must die with it";
}

TEST_F(WorkerContract, GrandchildHoldingThePipeDoesNotHangTheStage) {
  std::string pidfile = h.tmp.file("gc.pid");
  auto start = std::chrono::steady_clock::now();
  auto j = run_one("holder", "cat >/dev/null; sleep 60 & echo $! > " + pidfile + "; exit 0");
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(j.state, JobState::Ready) << j.reason;
  EXPECT_LT(took, 5s);
  int grandchild = std::stoi(read_file(pidfile));
  EXPECT_FALSE(process_exists(grandchild)) << "leftovers in the worker's group are killed";
}

TEST_F(WorkerContract, DaemonOutsideTheGroupHoldingThePipeIsCutOffAfterAGrace) {
  std::string pidfile = h.tmp.file("daemon.pid");
  auto start = std::chrono::steady_clock::now();
  auto j = run_one("daemon", "cat >/dev/null; setsid sleep 3 & echo $! > " + pidfile + "; exit 0");
  EXPECT_EQ(j.state, JobState::Ready) << j.reason;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2500ms) << "must not wait for the daemon";
}

TEST_F(WorkerContract, SegfaultNamesTheSignal) {
  auto j = run_one("segv", "cat >/dev/null; echo 'about to crash' >&2; kill -SEGV $$");
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("killed by SIGSEGV"), std::string::npos) << j.reason;
  EXPECT_NE(j.reason.find("about to crash"), std::string::npos) << j.reason;
}

TEST_F(WorkerContract, FiftyMegabytesOfStdoutIsCutOff) {
  auto j = run_one("flood", "cat >/dev/null; head -c 52428800 /dev/zero | tr '\\0' 'a'");
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("more than 8 MiB on stdout"), std::string::npos) << j.reason;
}

TEST_F(WorkerContract, AMegabyteStderrLineIsCutNotLost) {
  auto j = run_one("longline",
                   "cat >/dev/null; head -c 1048576 /dev/zero | tr '\\0' 'x' >&2; echo >&2; "
                   "echo 'after the long line' >&2");
  EXPECT_EQ(j.state, JobState::Ready) << j.reason;
  auto lines = h.log_lines(j.id);
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[0].substr(0, 4096), std::string(4096, 'x'));
  EXPECT_NE(lines[0].find("[line cut: " + std::to_string(1048576 - 4096) + " more bytes]"),
            std::string::npos);
  EXPECT_EQ(lines[1], "after the long line");
}

TEST_F(WorkerContract, ExitingWithoutReadingStdinIsFine) {
  // A large clipboard that the worker never reads: the bot gets EPIPE, not SIGPIPE.
  std::string big = "padding: '" + std::string(600 * 1024, 'p') + "'\n";
  h.worker("lazy:skip", "exit 0");
  auto s = h.submit("lazy", h.pipeline({Harness::task("lazy:skip")}), big);
  auto j = h.wait(s.job);
  EXPECT_EQ(j.state, JobState::Ready) << j.reason;
  EXPECT_NE(j.clipboard.find(std::string(1000, 'p')), std::string::npos);
}

TEST_F(WorkerContract, NonZeroExitQuotesTheLastStderrLines) {
  auto j = run_one("exit3", "cat >/dev/null; echo 'connecting to ns1' >&2; "
                            "echo 'ns1 refused the update: NOTAUTH' >&2; exit 3");
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("exit code 3: connecting to ns1 / ns1 refused the update: NOTAUTH"),
            std::string::npos)
      << j.reason;
}

TEST_F(WorkerContract, UnknownTaskFailsValidationBeforeAnyStageRuns) {
  std::string marker = h.tmp.file("ran");
  h.worker("first:stage", "cat >/dev/null; touch " + marker);
  auto s = h.submit("unknown", h.pipeline({Harness::task("first:stage"),
                                           Harness::task("nosuch:task")}));
  EXPECT_EQ(s.job, 0);
  EXPECT_NE(s.error.find("nosuch:task"), std::string::npos) << s.error;
  h.run_until([] { return false; }, 200ms);
  EXPECT_FALSE(std::filesystem::exists(marker)) << "no stage may run";
  EXPECT_FALSE(h.store->latest_for_host("unknown")) << "no job is created";
}

TEST_F(WorkerContract, AWorkerThatCannotBeExecutedFailsTheStage) {
  h.worker("broken:interp", "true");
  write_file(h.tmp.file("workers/broken/interp"), "#!/nonexistent/interpreter\n");
  auto s = h.submit("broken", h.pipeline({Harness::task("broken:interp")}));
  auto j = h.wait(s.job);
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("cannot start"), std::string::npos) << j.reason;
}

TEST_F(WorkerContract, BadWorkersDoNotDisturbOtherJobs) {
  h.worker("bad:segv", "cat >/dev/null; kill -SEGV $$");
  h.worker("bad:flood", "cat >/dev/null; head -c 20000000 /dev/zero");
  h.worker("bad:hang", "cat >/dev/null; sleep 60");
  auto good = h.submit("good", h.pipeline({Harness::task("good:step"), Harness::task("good:step"),
                                           Harness::task("good:step")}));
  auto a = h.submit("segv", h.pipeline({Harness::task("bad:segv")}));
  auto b = h.submit("flood", h.pipeline({Harness::task("bad:flood")}));
  auto c = h.submit("hang", h.pipeline({Harness::task("bad:hang", 500ms)}));
  EXPECT_EQ(h.wait(good.job).state, JobState::Ready);
  EXPECT_EQ(h.wait(a.job).state, JobState::Failed);
  EXPECT_EQ(h.wait(b.job).state, JobState::Failed);
  EXPECT_EQ(h.wait(c.job).state, JobState::Failed);
  EXPECT_EQ(h.engine->running(), 0);
}

// Workers are batch work at the lowest priority, from their first instruction on (they are
// spawned by a thread that has it), and so is whatever they start: a thousand of them
// competing for the CPU never take it from the bot's loop.
TEST_F(WorkerContract, WorkersAndTheirChildrenRunAsBatchWorkAtNice19) {
  std::string seen = h.tmp.file("priority");
  auto j = run_one("prio", "cat >/dev/null; awk '{print $19, $41}' /proc/$$/stat > " + seen +
                               "; sh -c 'awk \"{print \\$19, \\$41}\" /proc/self/stat' >> " + seen);
  ASSERT_EQ(j.state, JobState::Ready) << j.reason;
  EXPECT_EQ(read_file(seen), "19 3\n19 3\n") << "nice 19, policy 3 (SCHED_BATCH), worker then child";
}

// workers.nice: 0 gives workers the bot's own priority and policy.
TEST(WorkerPriority, NiceZeroRunsWorkersAsTheBotsEquals) {
  Harness h;
  h.limits.nice = 0;
  std::string seen = h.tmp.file("priority");
  h.worker("prio:zero", "cat >/dev/null; awk '{print $19, $41}' /proc/$$/stat > " + seen);
  h.start();
  auto s = h.submit("zero", h.pipeline({Harness::task("prio:zero")}));
  ASSERT_EQ(h.wait(s.job).state, JobState::Ready);
  EXPECT_EQ(read_file(seen), std::to_string(::getpriority(PRIO_PROCESS, 0)) + " 0\n")
      << "the bot's own nice, SCHED_OTHER";
}

// The runner on its own: the process comes to exist on the spawner's thread, after start().
class Runner : public ::testing::Test {
 protected:
  std::string script(const std::string& name, const std::string& body) {
    std::string path = tmp.file(name);
    write_file(path, "#!/bin/sh\n" + body + "\n");
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    return path;
  }
  WorkerInvocation invocation(const std::string& path) {
    WorkerInvocation inv;
    inv.executable = path;
    inv.argv = {path};
    inv.env = {"PATH=/usr/bin:/bin"};
    inv.timeout = 20s;
    return inv;
  }
  TempDir tmp;
  boost::asio::io_context io;
  ProcessWorkerRunner runner{io, ProcessLimits{}};
};

TEST_F(Runner, ThePidComesBeforeAnyLineAndAFailedStartSaysSoBeforeItsOutcome) {
  std::vector<std::string> seen;
  auto worker = runner.start(
      invocation(script("talk", "echo one >&2; echo two >&2")),
      [&](std::string_view line) { seen.push_back(std::string(line)); },
      [&](WorkerOutcome out) { seen.push_back("done " + std::to_string(out.succeeded())); },
      [&](int pid) { seen.push_back(pid > 0 ? "pid" : "no pid"); });
  EXPECT_EQ(worker->pid(), -1) << "not known before the spawner's answer reaches the loop";
  io.run();
  EXPECT_EQ(seen, (std::vector<std::string>{"pid", "one", "two", "done 1"}));
  EXPECT_GT(worker->pid(), 0);

  seen.clear();
  io.restart();
  runner.start(invocation(tmp.file("missing")), [](std::string_view) {},
               [&](WorkerOutcome out) { seen.push_back(out.kind == WorkerOutcome::Kind::SpawnFailed ? "spawn failed: " + out.error : "ran"); },
               [&](int pid) { seen.push_back(pid > 0 ? "pid" : "no pid"); });
  io.run();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], "no pid");
  EXPECT_EQ(seen[1], "spawn failed: cannot start " + tmp.file("missing") + ": No such file or directory");
}

TEST_F(Runner, ACancelBeforeTheProcessExistsStopsItAsSoonAsItDoes) {
  std::string ran = tmp.file("ran");
  std::optional<WorkerOutcome> outcome;
  auto worker = runner.start(invocation(script("slow", "sleep 30; touch " + ran)), [](std::string_view) {},
                             [&](WorkerOutcome out) { outcome = std::move(out); });
  worker->cancel();  // the loop has not heard from the spawner yet
  auto t0 = std::chrono::steady_clock::now();
  io.run();
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->kind, WorkerOutcome::Kind::Cancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "killed, not waited for";
  EXPECT_FALSE(std::filesystem::exists(ran));
}

// A worker being spawned carries its run's token before the loop knows its pid; a sweep in
// that window (another worker just ended) must not take it for an orphan and kill it.
TEST(OrphanSweeper, AWorkerWhoseSpawnHasNotReturnedIsNotAnOrphan) {
  boost::asio::io_context io;
  auto sweeper = std::make_shared<OrphanSweeper>(io);
  std::string token = sweeper->next_token();
  std::string path = "/bin/sleep";
  char arg0[] = "sleep", arg1[] = "30";
  char* argv[] = {arg0, arg1, nullptr};
  char* envp[] = {token.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, path.c_str(), nullptr, nullptr, argv, envp), 0);
  // Until its environment is the token's (the exec), nothing can be told; give it a moment.
  for (int i = 0; i < 100 && read_file("/proc/" + std::to_string(pid) + "/environ").find(token) == std::string::npos; ++i)
    std::this_thread::sleep_for(10ms);
  sweeper->sweep();
  std::this_thread::sleep_for(50ms);
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, WNOHANG), 0) << "a worker being started was killed as an orphan";
  // Once its spawn is known to have failed, it is one.
  sweeper->run_abandoned(token);
  sweeper->sweep();
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

// Issue 17, finding 16: the sample workers check design values before they write them into
// files. Each sample worker runs for real (python, its own sandbox state dir), as the bot
// would start it: the clipboard on stdin, a clean environment.
class SampleWorkerValues : public ::testing::Test {
 protected:
  struct Run {
    int code;
    std::string err;
  };
  Run run(const std::string& task, const std::string& clipboard) {
    std::string module = task.substr(0, task.find(':')), name = task.substr(task.find(':') + 1);
    write_file(tmp.file("clipboard.yaml"), clipboard);
    std::string cmd = "env -i PATH=/usr/bin:/bin JARVIS_TASK=" + task + " JARVIS_JOB=7 JARVIS_STATE_DIR=" +
                      tmp.file("state") + " " + JARVIS_SOURCE_DIR + "/workers/" + module + "/" + name +
                      " < " + tmp.file("clipboard.yaml") + " > " + tmp.file("out") + " 2> " + tmp.file("err");
    int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(tmp.file("err"))};
  }
  std::string sandbox(const std::string& path) { return tmp.file("state") + "/sandbox/" + path; }
  TempDir tmp;
};

const char* kMigrate = R"(instance: {hostname: loki, fqdn: loki.example.com, provider: sandbox}
inventory: {production: true, services: [www]}
)";

TEST_F(SampleWorkerValues, ANewlineInStandbyAddsNoRecordsToTheZone) {
  auto r = run("services:migrate", std::string(kMigrate) +
                                       "sandbox: {delay_ms: 0, standby: \"standby.example.com.\\nevil 300 IN A 6.6.6.6\"}\n");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("sandbox.standby"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("is not a DNS name"), std::string::npos) << r.err;
  if (std::filesystem::exists(sandbox("dns/example.com.zone"))) {
    EXPECT_EQ(read_file(sandbox("dns/example.com.zone")).find("6.6.6.6"), std::string::npos);
  }
  // A good standby still works.
  r = run("services:migrate", std::string(kMigrate) + "sandbox: {delay_ms: 0, standby: standby2.example.com}\n");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(read_file(sandbox("dns/example.com.zone")).find("www IN CNAME standby2.example.com."), std::string::npos);
}

TEST_F(SampleWorkerValues, AddressesAndFingerprintsAreCheckedBeforeTheZoneFile) {
  const std::string base = "sandbox: {delay_ms: 0}\ninstance:\n  hostname: loki\n  provider: sandbox\n  fqdn: loki.example.com\n"
                           "  ssh_fingerprints: {ed25519: 'SHA256:abc'}\n";
  auto r = run("dns:update", base + "  ip: \"10.0.0.1\\nevil IN A 6.6.6.6\"\n");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("instance.ip"), std::string::npos) << r.err;
  r = run("dns:update", "instance:\n  hostname: loki\n  provider: sandbox\n  fqdn: \"loki.example.com\\nevil\"\n  ip: 10.0.0.1\n"
                        "  ssh_fingerprints: {ed25519: 'SHA256:abc'}\nsandbox: {delay_ms: 0}\n");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("instance.fqdn"), std::string::npos) << r.err;
  r = run("dns:update", "instance:\n  hostname: loki\n  provider: sandbox\n  fqdn: loki.example.com\n  ip: 10.0.0.1\n"
                        "  ssh_fingerprints: {ed25519: \"SHA256:abc\\nevil IN A 6.6.6.6\"}\nsandbox: {delay_ms: 0}\n");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_FALSE(std::filesystem::exists(sandbox("dns/example.com.zone")));
  r = run("dns:update", "instance:\n  hostname: loki\n  provider: sandbox\n  fqdn: loki.example.com\n  ip: 10.0.0.1\n"
                        "  ssh_fingerprints: {ed25519: 'SHA256:abc'}\nsandbox: {delay_ms: 0}\n");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(read_file(sandbox("dns/example.com.zone")).find("loki IN A 10.0.0.1"), std::string::npos);
}

TEST_F(SampleWorkerValues, DotDotAsARepositoryNameWritesNothingOutsideItsDirectory) {
  for (const char* repo : {"..", "../..", "a/../../b", "host:..", "a/."}) {
    auto r = run("git:update_root_key", std::string("instance:\n  hostname: loki\n  provider: sandbox\n  fqdn: loki.example.com\n"
                                                    "  root_pubkey: ssh-ed25519 AAAA root@loki\n"
                                                    "  gitosis-admin: '") + repo + "'\nsandbox: {delay_ms: 0}\n");
    EXPECT_EQ(r.code, 2) << repo << ": " << r.err;
    EXPECT_NE(r.err.find("instance.gitosis-admin"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("is not a repository"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(sandbox("keydir"))) << "written outside git/";
  EXPECT_FALSE(std::filesystem::exists(tmp.file("state") + "/keydir")) << "written outside the sandbox";
  auto r = run("git:update_root_key", "instance:\n  hostname: loki\n  provider: sandbox\n  fqdn: loki.example.com\n"
                                      "  root_pubkey: \"ssh-ed25519 AAAA root@loki\\nssh-rsa EVIL\"\n"
                                      "  gitosis-admin: admin\nsandbox: {delay_ms: 0}\n");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("instance.root_pubkey"), std::string::npos) << r.err;
  r = run("git:update_root_key", "instance:\n  hostname: loki\n  provider: sandbox\n  fqdn: loki.example.com\n"
                                 "  root_pubkey: ssh-ed25519 AAAA root@loki\n"
                                 "  gitosis-admin: 'gitosis@git.example.com:gitosis-admin.git'\n"
                                 "sandbox: {delay_ms: 0}\n");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(sandbox("git/gitosis@git.example.com_gitosis-admin.git/keydir/root@loki.example.com.pub")),
            "ssh-ed25519 AAAA root@loki\n");
}

}  // namespace
}  // namespace jarvis::testing
