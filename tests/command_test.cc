#include <gtest/gtest.h>

#include "bot/commands/command.h"
#include "bot/commands/command_service.h"
#include "bot/design/file_design_source.h"
#include "bot/design/ldap_design_source.h"
#include "bot/design/url_design_source.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

TEST(CommandParser, ParsesEveryVerb) {
  auto c = parse_command("deploy loki --pipeline redeploy-sandbox");
  ASSERT_TRUE(c.command) << c.error;
  EXPECT_EQ(c.command->verb, Verb::Deploy);
  EXPECT_EQ(c.command->argument, "loki");
  EXPECT_EQ(c.command->pipeline, "redeploy-sandbox");
  EXPECT_EQ(parse_command("STATUS loki").command->verb, Verb::Status);
  EXPECT_EQ(parse_command("status job 17").command->argument, "17");
  EXPECT_EQ(parse_command("jobs").command->verb, Verb::Jobs);
  EXPECT_EQ(parse_command("help deploy").command->argument, "deploy");
  EXPECT_EQ(parse_command("plan loki with deploy-sandbox").command->pipeline, "deploy-sandbox");
}

TEST(CommandParser, BadInputGetsAClearError) {
  EXPECT_EQ(parse_command("destroy loki").error,
            "I don't know \"destroy\". Say \"help\" for the commands.");
  // A typo gets the command it was probably meant to be.
  EXPECT_EQ(parse_command("deplyo loki").error,
            "I don't know \"deplyo\"; did you mean \"deploy\"? Say \"help\" for the commands.");
  EXPECT_EQ(parse_command("stauts loki").error.find("did you mean \"status\"?") != std::string::npos, true);
  EXPECT_EQ(parse_command("deploy").error, "deploy needs an argument. Say \"help deploy\".");
  EXPECT_EQ(parse_command("status a b").error, "status takes one argument. Say \"help status\".");
  EXPECT_NE(parse_command(std::string(2000, 'a')).error.find("too long"), std::string::npos);
  EXPECT_NE(parse_command("status lo\x01ki").error.find("control characters"), std::string::npos);
  std::string error;
  EXPECT_FALSE(parse_target("loki;rm -rf", error));
  EXPECT_EQ(parse_target("#17", error)->job, 17);
  EXPECT_EQ(parse_target("LOKI", error)->host, "loki");
}

JobRecord record(JobState state) {
  JobRecord j;
  j.id = 17;
  j.host = "loki";
  for (int i = 0; i < 12; ++i) j.tasks.push_back(Harness::task("m:t" + std::to_string(i)));
  j.tasks[3].name = "sandbox:create";
  j.tasks[5].name = "dns:update";
  j.state = state;
  j.requested_by = "alice";
  return j;
}

TEST(Replies, StatusLinesHaveTheAgreedShape) {
  auto running = record(JobState::Running);
  running.stage = 3;
  running.attempt = 1;
  running.stage_started_ms = 1'000'000;
  running.tasks[3].timeout = std::chrono::seconds(60);
  EXPECT_EQ(describe_job(running, 0, 1'041'000),
            "loki: running stage 4/12 sandbox:create (41s of 1m00s, job 17, started by alice)");

  // Finished jobs say when, in UTC: the time of day within the last day, the date before.
  const int64_t day = 86'400'000;
  auto failed = record(JobState::Failed);
  failed.stage = 5;
  failed.reason = "exit code 3: NOTAUTH";
  failed.ended_ms = 20 * day + (9 * 60 + 14) * 60'000;
  EXPECT_EQ(describe_job(failed, 0, failed.ended_ms + 60'000),
            "loki: failed at stage 6/12 dns:update: exit code 3: NOTAUTH (job 17, 09:14 UTC). Say \"retry "
            "loki\" to resume.");

  auto ready = record(JobState::Ready);
  ready.stage = 12;
  ready.started_ms = 0;
  ready.ended_ms = 182'000;
  EXPECT_EQ(describe_job(ready, 0, 3 * day), "loki: ready (job 17, 12 stages in 3m02s, 1970-01-01 00:03 UTC)");

  // In flight, but the jarvis that ran it is gone: nothing runs it, and status says so.
  auto orphan = record(JobState::Running);
  orphan.stage = 8;
  orphan.id = 7;
  orphan.tasks.resize(19, Harness::task("m:t"));
  orphan.stage_started_ms = 1'000'000;
  EXPECT_EQ(describe_job(orphan, 0, 1'000'000 + 12 * 60'000, true),
            "loki: job 7 stopped at stage 9/19 when its jarvis stopped (12m00s ago); start jarvis serve to "
            "resume it, or cancel loki");

  auto queued = record(JobState::Queued);
  EXPECT_EQ(describe_job(queued, 3, 0),
            "loki: queued, waiting for a free slot (3 jobs ahead; job 17, started by alice)");
}

TEST(Replies, AFailureReasonStaysOnOneLine) {
  auto failed = record(JobState::Failed);
  failed.reason = "first\nsecond\r\nthird";
  auto line = describe_job(failed, 0, 0);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_NE(line.find("first second  third"), std::string::npos);
}

// The command service end to end against a real store and engine.
TEST(CommandService, DeployStatusCancelRetryThroughOneParser) {
  Harness h;
  h.worker("svc:wait", "cat >/dev/null; exec sleep 60");
  write_file(h.tmp.file("designs/loki.yaml"), "instance:\n  hostname: loki\n  provider: svc\n");
  write_file(h.tmp.file("pipelines/svc.yaml"),
             "name: svc\nmatch: {provider: svc}\ntasks: [svc:wait, svc:wait]\n");
  std::vector<std::string> errors;
  auto pipelines = PipelineSet::load_dir(h.tmp.file("pipelines"), PipelineDefaults{}, errors);
  h.start();
  FileDesignSource designs(h.io, h.tmp.file("designs"));
  CommandService svc(*h.store, pipelines, designs, h.config.workers_path, h.engine.get());
  Requester alice{"alice", "console", "stdin"};
  auto say = [&](const std::string& text) {
    std::optional<Reply> reply;
    svc.handle(text, alice, [&](Reply r) { reply = std::move(r); });
    h.run_until([&] { return reply.has_value(); });
    return *reply;
  };
  auto r = say("deploy loki");
  ASSERT_TRUE(r.ok) << r.lines.at(0);
  EXPECT_EQ(r.lines.at(0), "loki: deploying with svc, 2 stages (job 1)");
  h.run_until([&] { return h.store->job(1)->worker_pid > 0; });
  EXPECT_EQ(say("status loki").lines.at(0).rfind("loki: running stage 1/2 svc:wait (", 0), 0u);
  auto again = say("deploy loki");
  EXPECT_FALSE(again.ok);
  EXPECT_NE(again.lines.at(0).find("already in flight"), std::string::npos) << again.lines.at(0);
  EXPECT_NE(again.lines.at(0).find("job 1"), std::string::npos);
  EXPECT_EQ(say("cancel loki").lines.at(0), "loki: cancelling job 1 at stage 1/2");
  h.wait(1);
  EXPECT_EQ(say("status 1").lines.at(0).rfind("loki: cancelled at stage 1/2 svc:wait", 0), 0u);
  EXPECT_EQ(say("retry loki").lines.at(0),
            "loki: retrying job 1 from stage 1/2 svc:wait with its saved clipboard");
  EXPECT_FALSE(say("deploy ../../etc/passwd").ok) << "chat cannot name files outside designs";
  // A name that is no design: what was probably meant, and what there is.
  auto typo = say("deploy lokii");
  EXPECT_FALSE(typo.ok);
  EXPECT_NE(typo.lines.at(0).find("no design called \"lokii\"; did you mean \"loki\"? (designs: loki)"),
            std::string::npos)
      << typo.lines.at(0);
  auto plan = say("plan loki");
  EXPECT_EQ(plan.lines.at(0), "loki: plan svc (2 stages); nothing runs");
  EXPECT_EQ(plan.lines.at(1).rfind("loki: chosen because instance.provider is", 0), 0u) << plan.lines.at(1);
  auto trail = h.store->audit_trail(100);
  ASSERT_GE(trail.size(), 7u);
  EXPECT_EQ(trail.front().command, "deploy loki");
  EXPECT_EQ(trail.front().who, "alice");
}

// Issue 17, finding 3: a remote design is fetched with the bot's token and from its network,
// so planning one takes the right to deploy, even where plan is open to all.
TEST(CommandService, PlanOfARemoteDesignNeedsTheRightToDeploy) {
  Harness h;
  write_file(h.tmp.file("designs/loki.yaml"), "instance:\n  hostname: loki\n  provider: svc\n");
  write_file(h.tmp.file("pipelines/svc.yaml"), "name: svc\nmatch: {provider: svc}\ntasks: [svc:x]\n");
  std::vector<std::string> errors;
  auto pipelines = PipelineSet::load_dir(h.tmp.file("pipelines"), PipelineDefaults{}, errors);
  h.start();
  FileDesignSource files(h.io, h.tmp.file("designs"));
  HttpClient http(h.io);
  GistConfig gist;
  gist.api_url = "https://127.0.0.1:9/api";  // refused as loopback before any connection
  UrlDesignSource urls(http, gist);
  LdapSourceConfig ldap_config;
  ldap_config.base = "ou=Hosts,dc=example,dc=com";
  ldap_config.connect.uri = "ldap://127.0.0.1:9";
  LdapDesignSource ldap(h.io, ldap_config);
  DesignSources designs;
  designs.add(urls);
  designs.add(ldap);
  designs.add(files);
  CommandService svc(*h.store, pipelines, designs, h.config.workers_path, h.engine.get());
  Requester reader{"mallory", "irc", "#ops"};
  reader.may = [](Verb v) { return v != Verb::Deploy; };
  Requester deployer{"alice", "irc", "#ops"};
  deployer.may = [](Verb) { return true; };
  auto say = [&](const std::string& text, const Requester& who) {
    std::optional<Reply> reply;
    svc.handle(text, who, [&](Reply r) { reply = std::move(r); });
    h.run_until([&] { return reply.has_value(); });
    return *reply;
  };
  for (const char* ref : {"https://gist.github.com/aa11", "https://gist.githubusercontent.com/u/1/raw/x.yaml",
                          "cn=loki"}) {
    auto r = say(std::string("plan ") + ref, reader);
    EXPECT_FALSE(r.ok) << ref;
    EXPECT_EQ(r.lines.at(0), "mallory: planning a design from a gist, URL or LDAP needs the right to "
                             "deploy; plan a design by name, or ask an admin") << ref;
    EXPECT_EQ(http.in_flight(), 0u) << "nothing was fetched for " << ref;
  }
  EXPECT_TRUE(say("plan loki", reader).lines.at(0).rfind("loki: plan svc", 0) == 0) << "local designs stay open";
  auto allowed = say("plan https://gist.github.com/aa11", deployer);
  EXPECT_NE(allowed.lines.at(0).find("cannot fetch gist aa11"), std::string::npos) << allowed.lines.at(0);
  // Issue 17, finding 12: the trail is open to everyone; tokens in URLs are not in it.
  auto tokened = say("plan https://gist.githubusercontent.com/u/1/raw/x.yaml?access_token=ghp_hunter2 "
                     "--pipeline svc", reader);
  EXPECT_EQ(tokened.lines.at(0).find("ghp_hunter2"), std::string::npos) << tokened.lines.at(0);
  auto trail = h.store->audit_trail(100);
  ASSERT_FALSE(trail.empty());
  EXPECT_EQ(trail.back().command,
            "plan https://gist.githubusercontent.com/u/1/raw/x.yaml?access_token=[redacted] --pipeline svc");
  EXPECT_EQ(trail.front().command, "plan https://gist.github.com/aa11");
  EXPECT_NE(trail.front().outcome.find("needs the right to deploy"), std::string::npos);
}

}  // namespace
}  // namespace jarvis::testing
