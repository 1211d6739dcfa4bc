// The safety catch: which hosts count as production and why, the confirmation wait (persisted,
// resumed by another engine, timing out with nothing done), the store's compare-and-set
// confirm, change freezes, and the commands that drive them.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>

#include "bot/commands/command.h"
#include "bot/commands/command_service.h"
#include "bot/design/file_design_source.h"
#include "bot/safety/safety.h"
#include "bot/walks/walker.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

using namespace std::chrono_literals;

TEST(Safety, ProductionIsDecidedByConfigDesignOrInventoryAndSaysWhich) {
  SafetyConfig cfg;
  std::string plain = "instance: {hostname: loki, fqdn: loki.websages.com}\n";
  EXPECT_FALSE(production_fact(plain, "loki", cfg).production);
  cfg.production_hosts = {"*.websages.com"};
  auto f = production_fact(plain, "loki", cfg);
  EXPECT_TRUE(f.production);
  EXPECT_EQ(f.source, "config safety.production_hosts '*.websages.com'");
  cfg.production_hosts = {"LOK?"};
  EXPECT_TRUE(production_fact(plain, "loki", cfg).production) << "patterns ignore case";
  cfg.production_hosts = {};
  f = production_fact("instance: {hostname: loki, production: true}\n", "loki", cfg);
  EXPECT_EQ(f.source, "the design's instance.production");
  f = production_fact("instance: {hostname: loki}\ninventory: {production: true, source: its cmdb record}\n",
                      "loki", cfg);
  EXPECT_EQ(f.source, "inventory:check_production: its cmdb record");
  EXPECT_FALSE(production_fact("instance: {hostname: loki}\ninventory: {production: false}\n", "loki", cfg).production);
  EXPECT_TRUE(production_fact("production: true\n", "loki", cfg).production);
  EXPECT_FALSE(production_fact("not: [valid", "loki", cfg).production) << "unreadable says nothing";
}

TEST(Safety, ThePromptNamesTheHostItsFactsAndEveryDestructiveStageOfTheRun) {
  JobRecord j;
  j.id = 17;
  j.host = "loki";
  for (const char* t : {"inventory:check_production", "a:b", "c:d", "linode:power_off", "linode:delete", "x:y"})
    j.tasks.push_back(Harness::task(t));
  j.tasks[3].destructive = j.tasks[4].destructive = true;
  j.stage = 3;
  j.clipboard = "instance: {hostname: loki, fqdn: loki.websages.com, provider: linode}\n"
                "inventory: {production: true, node_id: 4711, ip: 192.0.2.10}\n";
  int through = destructive_run_end(j.tasks, j.stage);
  EXPECT_EQ(through, 5);
  EXPECT_EQ(confirmation_prompt(j, through, {true, "its cmdb record"}, 15min),
            "loki (loki.websages.com, linode 4711, 192.0.2.10) is in production (its cmdb record): stage "
            "4/6 linode:power_off will power it off, then stage 5 deletes it. Say `confirm 17` within "
            "15m, or `cancel 17`.");
  j.clipboard = "instance: {hostname: loki, fqdn: \"loki\\x1b[31m.example\"}\n";
  EXPECT_EQ(host_facts(j.clipboard).find('\x1b'), std::string::npos) << "no control characters from workers";
  EXPECT_EQ(round_duration(3s), "3s");
  EXPECT_EQ(round_duration(2h), "2h");
}

TEST(Safety, AFreezeOnTheHostComesBeforeItsClustersAndAll) {
  std::vector<Freeze> f = {{1, "all", "carol", "", 0, 0}, {2, "web", "bob", "", 0, 0}, {3, "web01", "alice", "db", 0, 0}};
  EXPECT_EQ(freeze_for(f, "web01", "web")->id, 3);
  EXPECT_EQ(freeze_for(f, "web02", "web")->id, 2);
  EXPECT_EQ(freeze_for(f, "loki", "")->id, 1);
  EXPECT_EQ(freeze_for({}, "loki", ""), nullptr);
  EXPECT_EQ(describe_freeze(f[2], 0), "web01 is frozen by alice until someone unfreezes it (db)");
}

TEST(Safety, FreezeAndConfirmCommandsParse) {
  auto c = parse_command("freeze loki for 2h release week").command;
  ASSERT_TRUE(c);
  EXPECT_EQ(c->verb, Verb::Freeze);
  EXPECT_EQ(c->argument, "loki");
  EXPECT_EQ(c->duration_ms, 2 * 3600 * 1000);
  EXPECT_EQ(c->reason, "release week");
  c = parse_command("freeze for 30m").command;
  ASSERT_TRUE(c);
  EXPECT_EQ(c->argument, "all");
  EXPECT_EQ(c->duration_ms, 30 * 60 * 1000);
  c = parse_command("freeze").command;
  ASSERT_TRUE(c);
  EXPECT_EQ(c->argument, "all");
  EXPECT_EQ(c->duration_ms, 0);
  EXPECT_NE(parse_command("freeze loki for ever").error.find("for needs a duration"), std::string::npos);
  EXPECT_NE(parse_command("freeze ../x").error.find("not a host or cluster name"), std::string::npos);
  EXPECT_NE(parse_command("unfreeze loki web").error.find("unfreeze takes one"), std::string::npos);
  EXPECT_EQ(parse_command("deploy! loki --pipeline p").command->verb, Verb::ForceDeploy);
  EXPECT_EQ(parse_command("confirm 17").command->argument, "17");
  EXPECT_FALSE(parse_command("confirm").command) << "confirm needs a job";
}

TEST(SafetyStore, AStoreFromBeforeTheSafetyCatchGetsItsColumns) {
  TempDir dir;
  {
    SqliteJobStore store(dir.file("j.db"));
    NewJob nj;
    nj.host = "loki";
    nj.design_ref = nj.pipeline = "p";
    nj.tasks = {Harness::task("m:a")};
    nj.clipboard = "instance: {hostname: loki}\n";
    store.create_job(nj, "e1");
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("j.db").c_str(), &db), SQLITE_OK);
  for (const char* c : {"requester_key", "confirm_until_ms", "confirm_through", "confirmed_until",
                        "confirmed_by", "confirm_prompt"})
    ASSERT_EQ(sqlite3_exec(db, ("ALTER TABLE jobs DROP COLUMN " + std::string(c)).c_str(), nullptr, nullptr,
                           nullptr), SQLITE_OK) << c;
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE freezes", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  SqliteJobStore store(dir.file("j.db"));
  auto j = store.latest_for_host("loki");
  ASSERT_TRUE(j);
  EXPECT_FALSE(j->awaiting_confirmation());
  store.await_confirmation(j->id, 0, 1, now_ms() + 60000, "p");
  EXPECT_TRUE(store.confirm(j->id, "bob", now_ms()));
  EXPECT_GT(store.add_freeze({0, "all", "bob", "", 0, 0}), 0);
}

struct Waiting : Harness {
  Waiting() {
    marker = tmp.file("destroyed");
    worker("safe:look", "cat");
    worker("danger:delete", "cat; touch " + marker);
    config.safety.confirm_timeout = 20s;
  }
  Pipeline destructive() {
    auto d = Harness::task("danger:delete");
    d.destructive = true;
    return pipeline({Harness::task("safe:look"), d, Harness::task("safe:look")});
  }
  bool asked() {
    return std::any_of(events.begin(), events.end(),
                       [](const EngineEvent& e) { return e.kind == EngineEvent::Kind::ConfirmationNeeded; });
  }
  std::string marker;
};

TEST(SafetyEngine, ADestructiveStageOnAProductionHostWaitsUntilAnotherProcessConfirms) {
  Waiting h;
  h.start();
  auto s = h.submit("prod", h.destructive(), "  production: true\n");
  ASSERT_TRUE(h.run_until([&] { return h.asked(); }));
  h.run_until([] { return false; }, 700ms);
  EXPECT_TRUE(read_file(h.marker).empty() && !std::filesystem::exists(h.marker)) << "it ran unconfirmed";
  auto j = h.store->job(s.job);
  EXPECT_TRUE(j->awaiting_confirmation());
  EXPECT_EQ(j->stage, 1);
  EXPECT_NE(describe_job(*j, 0, now_ms()).find("waiting for a confirmation before stage 2/3 danger:delete"),
            std::string::npos);
  // What `jarvis confirm` does from a shell: a write the engine notices.
  SqliteJobStore other(h.tmp.file("jarvis.db"));
  ASSERT_TRUE(other.confirm(s.job, "bob", now_ms()));
  auto done = h.wait(s.job);
  EXPECT_EQ(done.state, JobState::Ready) << done.reason;
  EXPECT_TRUE(std::filesystem::exists(h.marker));
  bool announced = std::any_of(h.events.begin(), h.events.end(), [](const EngineEvent& e) {
    return e.kind == EngineEvent::Kind::Confirmed && e.text == "bob";
  });
  EXPECT_TRUE(announced);
}

TEST(SafetyEngine, ANonProductionHostRunsItsDestructiveStagesWithoutWaiting) {
  Waiting h;
  h.start();
  auto s = h.submit("sandbox1", h.destructive());
  EXPECT_EQ(h.wait(s.job).state, JobState::Ready);
  EXPECT_FALSE(h.asked());
  EXPECT_TRUE(std::filesystem::exists(h.marker));
}

TEST(SafetyEngine, NoConfirmationInTimeFailsWithNothingDoneAndARetryAsksAgain) {
  Waiting h;
  h.config.safety.confirm_timeout = 1s;
  h.config.safety.production_hosts = {"prod*"};
  h.start();
  auto s = h.submit("prod2", h.destructive());
  auto j = h.wait(s.job, 10s);
  EXPECT_EQ(j.state, JobState::Failed);
  EXPECT_EQ(j.reason, "not confirmed within 1s; nothing was done");
  EXPECT_EQ(j.stage, 1);
  EXPECT_FALSE(std::filesystem::exists(h.marker));
  auto audit = h.store->audit_trail(10);
  ASSERT_GE(audit.size(), 2u);
  EXPECT_NE(audit.back().command.find("confirmation timed out for prod2"), std::string::npos);
  h.events.clear();
  ASSERT_TRUE(h.engine->retry(s.job).ok);
  ASSERT_TRUE(h.run_until([&] { return h.asked(); }));
  std::string error;
  EXPECT_TRUE(h.engine->confirm(s.job, "carol", error)) << error;
  EXPECT_EQ(h.wait(s.job).state, JobState::Ready);
}

TEST(SafetyEngine, AnotherEngineResumesTheWaitWithTheSameDeadline) {
  Waiting h;
  h.start();
  auto s = h.submit("prod3", h.destructive(), "  production: true\n");
  ASSERT_TRUE(h.run_until([&] { return h.asked(); }));
  int64_t deadline = h.store->job(s.job)->confirm_until_ms;
  // The engine goes away (its lock with it), as a killed serve's does.
  h.engine->stop();
  h.engine.reset();
  h.events.clear();
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.asked(); })) << "the new engine waits again";
  auto j = h.store->job(s.job);
  EXPECT_EQ(j->confirm_until_ms, deadline);
  EXPECT_NE(j->owner, "");
  EXPECT_FALSE(std::filesystem::exists(h.marker));
  std::string error;
  ASSERT_TRUE(h.engine->confirm(s.job, "bob", error)) << error;
  EXPECT_EQ(h.wait(s.job).state, JobState::Ready);
  EXPECT_TRUE(std::filesystem::exists(h.marker));
}

TEST(Verify, VerifyTasksRunAfterTheDeployStagesAndCannotBeDestructive) {
  TempDir dir;
  write_file(dir.file("v.yaml"), "name: v\nverify: [verify:http]\ntasks: [a:b, c:d]\n");
  std::vector<std::string> errors;
  auto p = PipelineSet::load_file(dir.file("v.yaml"), {}, errors);
  ASSERT_TRUE(p) << (errors.empty() ? "" : errors[0]);
  ASSERT_EQ(p->tasks.size(), 3u);
  EXPECT_EQ(p->tasks[2].name, "verify:http");
  EXPECT_TRUE(p->tasks[2].verify);
  EXPECT_FALSE(p->tasks[0].verify);
  write_file(dir.file("w.yaml"), "name: w\ntasks: [a:b]\nverify:\n  - {task: x:y, destructive: true}\n");
  errors.clear();
  EXPECT_FALSE(PipelineSet::load_file(dir.file("w.yaml"), {}, errors));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("w.yaml:4: a verify task cannot be destructive"), std::string::npos) << errors[0];
}

TEST(Verify, AFailedCheckIsDeployedButNotVerifiedAndRetryRunsOnlyTheChecks) {
  Harness h;
  std::string ran = h.tmp.file("ran");
  std::string ok = h.tmp.file("ok");
  h.worker("dep:loy", "cat >/dev/null; echo deploy >> " + ran);
  h.worker("chk:it", "cat >/dev/null; echo check >> " + ran + "; [ -e " + ok + " ] || { echo 'port 80 closed' >&2; exit 1; }");
  h.start();
  auto v = Harness::task("chk:it");
  v.verify = true;
  auto s = h.submit("v1", h.pipeline({Harness::task("dep:loy"), v}));
  auto j = h.wait(s.job);
  ASSERT_EQ(j.state, JobState::Failed);
  EXPECT_EQ(j.reason, "deployed but not verified: port 80 closed");
  EXPECT_NE(describe_job(j, 0, now_ms()).find("v1: deployed but not verified at stage 2/2 chk:it: port 80 closed"),
            std::string::npos);
  EXPECT_TRUE(h.store->job(s.job)->tasks[1].verify) << "the flag survives the store";
  write_file(ok, "");
  ASSERT_TRUE(h.engine->retry(s.job).ok);
  EXPECT_EQ(h.wait(s.job).state, JobState::Ready);
  EXPECT_EQ(read_file(ran), "deploy\ncheck\ncheck\n");
}

TEST(SafetyCommands, PlanSaysWhereItStopsAndWhyAndFreezesRefuseHostsAndClusters) {
  Harness h;
  h.worker("svc:x", "cat >/dev/null");
  write_file(h.tmp.file("designs/db1.yaml"), "instance:\n  hostname: db1\n  provider: svc\n");
  write_file(h.tmp.file("designs/web.yaml"), "cluster: web\ninstance: {provider: svc}\n"
                                            "instances: [{hostname: web01}, {hostname: web02}]\n");
  write_file(h.tmp.file("pipelines/svc.yaml"), "name: svc\nmatch: {provider: svc}\n"
                                               "tasks: [svc:x, {task: svc:x, destructive: true}]\n");
  std::vector<std::string> errors;
  auto pipelines = PipelineSet::load_dir(h.tmp.file("pipelines"), PipelineDefaults{}, errors);
  h.config.safety.production_hosts = {"db*"};
  h.start();
  FileDesignSource designs(h.io, h.tmp.file("designs"));
  CommandService svc(*h.store, pipelines, designs, h.config.workers_path, h.engine.get());
  svc.set_safety(h.config.safety);
  Requester bob{"bob", "irc", "#ops"};
  auto say = [&](const std::string& text) {
    std::optional<Reply> reply;
    svc.handle(text, bob, [&](Reply r) { reply = std::move(r); });
    h.run_until([&] { return reply.has_value(); });
    return *reply;
  };
  auto plan = say("plan db1");
  ASSERT_EQ(plan.lines.size(), 4u);  // the plan, why its pipeline, then the stages
  EXPECT_EQ(plan.lines[3], "2/2 svc:x (timeout 10m00s) DESTRUCTIVE: STOPS for a confirmation (in production: "
                           "config safety.production_hosts 'db*')");
  EXPECT_EQ(say("freeze web for 1h sale").lines.at(0).rfind("freeze 1: web is frozen by bob until ", 0), 0u);
  auto refused = say("deploy web");
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.lines.at(0), "cluster web: not starting any of its 2 hosts:");
  EXPECT_NE(refused.lines.at(1).find("web01: web is frozen by bob until "), std::string::npos) << refused.lines.at(1);
  EXPECT_NE(refused.lines.at(1).find("(sale)"), std::string::npos);
  EXPECT_EQ(say("freezes").lines.size(), 1u);
  EXPECT_TRUE(say("freeze all").ok);
  plan = say("plan db1");
  EXPECT_EQ(plan.lines.back().rfind("db1: FROZEN: everything is frozen by bob until someone unfreezes it", 0), 0u)
      << plan.lines.back();
  EXPECT_FALSE(say("deploy db1").ok);
  EXPECT_FALSE(say("unfreeze db1").ok) << "db1 has no freeze of its own";
  EXPECT_EQ(say("unfreeze").lines.at(0), "everything is unfrozen by bob (1 freeze lifted)");
  auto forced = say("deploy! web");
  EXPECT_TRUE(forced.ok) << forced.lines.at(0);
  bool announced = std::any_of(h.events.begin(), h.events.end(), [](const EngineEvent& e) {
    return e.kind == EngineEvent::Kind::Notice && e.text.find("bob forced a deploy through the freeze") != std::string::npos;
  });
  EXPECT_TRUE(announced);
}

TEST(Walks, CronLinesNameTheNextMinuteInUtc) {
  std::string error;
  auto every5 = parse_cron("*/5 * * * *", error);
  ASSERT_TRUE(every5) << error;
  // 2026-12-01 (a Tuesday) 12:03:30 UTC
  int64_t t = 1796126610000;
  EXPECT_EQ(next_cron(*every5, t), 1796126700000) << "12:05";
  EXPECT_EQ(next_cron(*every5, 1796126700000), 1796127000000) << "strictly after: 12:10";
  auto monday9 = parse_cron("30 9 * * 1", error);
  ASSERT_TRUE(monday9) << error;
  EXPECT_EQ(next_cron(*monday9, t), 1796635800000) << "Monday 2026-12-07 09:30";
  auto sunday = parse_cron("0 0 * * 7", error);
  ASSERT_TRUE(sunday) << error;
  EXPECT_EQ(next_cron(*sunday, t), 1796515200000) << "7 is Sunday: 2026-12-06 00:00";
  auto never = parse_cron("0 0 30 2 *", error);
  ASSERT_TRUE(never);
  EXPECT_EQ(next_cron(*never, t), 0);
  EXPECT_FALSE(parse_cron("61 * * * *", error));
  EXPECT_EQ(error, "minute must be from 0 to 59");
  EXPECT_FALSE(parse_cron("* * * * mon", error));
  EXPECT_FALSE(parse_cron("*/0 * * * *", error));
}

TEST(Walks, AScheduledPipelineIsAWalkAndNeverChosenForADeploy) {
  TempDir dir;
  write_file(dir.file("health.yaml"), "name: health\nmatch: {provider: test}\nschedule: {every: 5m}\n"
                                      "targets: {cluster: web}\ntasks: [verify:tcp]\n");
  write_file(dir.file("bad.yaml"), "name: bad\nschedule: {cron: '*/5 * * *'}\ntasks: [a:b]\n");
  write_file(dir.file("loose.yaml"), "name: loose\ntargets: all\ntasks: [a:b]\n");
  std::vector<std::string> errors;
  auto set = PipelineSet::load_dir(dir.path(), {}, errors);
  ASSERT_EQ(set.all().size(), 1u);
  const Pipeline& p = set.all()[0];
  EXPECT_TRUE(p.is_walk());
  EXPECT_EQ(p.every, std::chrono::minutes(5));
  EXPECT_EQ(p.target_cluster, "web");
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_NE(errors[0].find("schedule.cron: a cron line has five fields"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("targets is for walks"), std::string::npos) << errors[1];
  std::string error;
  YAML::Node design = YAML::Load("instance: {hostname: x, provider: test}");
  EXPECT_EQ(set.select(design, std::nullopt, error), nullptr) << "a walk matched a deploy";
  EXPECT_EQ(set.select(design, std::string("health"), error), nullptr);
  EXPECT_NE(error.find("is a walk"), std::string::npos) << error;
  auto lines = walk_lines(set, {{"health", "web1", true, "", 1000, 1000}, {"health", "web2", false, "port 80 closed", 1000, 500}},
                          2000);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "walk health (every 5m00s, cluster web): 1 failing, last run 00:00:01 UTC, next run at "
                      "00:05:01 UTC; web1 ok; web2 FAILING since 00:00:00 UTC: port 80 closed");
}

}  // namespace
}  // namespace jarvis::testing
