// The protocol-neutral chat layer against the in-memory adapter: addressing, ACL, rate
// limits, audit of refusals, the outbox (pacing, splitting, offline queue, coalescing),
// reconnecting, and announcements.
#include <gtest/gtest.h>

#include <boost/asio/write.hpp>

#include "bot/chat/addressing.h"
#include "bot/chat/announcer.h"
#include "bot/chat/chat_front.h"
#include "bot/chat/chat_text.h"
#include "bot/chat/irc/irc_adapter.h"
#include "bot/commands/mask.h"
#include "bot/util/utf8.h"
#include "bot/chat/memory/memory_adapter.h"
#include "bot/design/file_design_source.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

using namespace std::chrono_literals;

TEST(Addressing, LikeEveryChatBot) {
  EXPECT_EQ(addressed_command("jarvis: status loki", "jarvis", "!", false), "status loki");
  EXPECT_EQ(addressed_command("Jarvis, status loki", "jarvis", "!", false), "status loki");
  EXPECT_EQ(addressed_command("@jarvis status loki", "jarvis", "!", false), "status loki");
  EXPECT_EQ(addressed_command("!status loki", "jarvis", "!", false), "status loki");
  EXPECT_EQ(addressed_command("status loki", "jarvis", "!", true), "status loki");
  EXPECT_EQ(addressed_command("jarvis:", "jarvis", "!", false), "help");
  EXPECT_FALSE(addressed_command("status loki", "jarvis", "!", false));
  EXPECT_FALSE(addressed_command("jarvisbot: status", "jarvis", "!", false));
  EXPECT_FALSE(addressed_command("I asked jarvis: nothing", "jarvis", "!", false));
  EXPECT_FALSE(addressed_command("!status", "jarvis", "", false));
}

Identity irc(const std::string& full, const std::string& account = "") {
  return Identity{"irc", full.substr(0, full.find('!')), full, account};
}

TEST(Acl, OpenReadsClosedChangesAndRulesByMaskAccountAndRoom) {
  Acl acl({AclRule{{"irc:*!*@ops.example.com", "irc:account:alice"}, {"deploy", "retry"}, {"irc:#ops", "direct"}},
           AclRule{{"irc:root!*@*"}, {"*"}, {"*"}}});
  auto bob = irc("bob!bob@home.example.net");
  EXPECT_TRUE(acl.allows(bob, "#ops", Verb::Status));
  EXPECT_TRUE(acl.allows(bob, "#ops", Verb::Help));
  EXPECT_FALSE(acl.allows(bob, "#ops", Verb::Deploy));
  EXPECT_FALSE(acl.allows(bob, "#ops", Verb::Cancel));
  auto carol = irc("carol!c@ops.example.com");
  EXPECT_TRUE(acl.allows(carol, "#ops", Verb::Deploy));
  EXPECT_TRUE(acl.allows(carol, "", Verb::Deploy)) << "direct";
  EXPECT_FALSE(acl.allows(carol, "#random", Verb::Deploy)) << "only in the rooms named";
  EXPECT_FALSE(acl.allows(carol, "#ops", Verb::Cancel)) << "only the commands named";
  EXPECT_TRUE(acl.allows(irc("anyone!x@y", "alice"), "#ops", Verb::Retry)) << "by account";
  EXPECT_FALSE(acl.allows(irc("alice!x@y"), "#ops", Verb::Retry)) << "a nick is not an account";
  EXPECT_TRUE(acl.allows(irc("root!r@anywhere"), "#x", Verb::Cancel));
  EXPECT_TRUE(Acl({AclRule{{"*"}, {"deploy", "frobnicate"}, {"*"}}}).problems().size() == 1);
}

TEST(Acl, AStarRuleIsForPeopleInChatAnApiTokenOnlyByName) {
  Acl star({AclRule{{"*"}, {"deploy"}, {"*"}}});
  EXPECT_TRUE(star.allows(irc("bob!b@h"), "#ops", Verb::Deploy));
  EXPECT_TRUE(star.allows(Identity{"xmpp", "bob@example.com", "bob@example.com", ""}, "ops", Verb::Deploy));
  Identity ci{"http", "ci", "ci", ""};
  EXPECT_FALSE(star.allows(ci, "api", Verb::Deploy)) << "a read token is not widened by a rule for everyone";
  EXPECT_TRUE(star.allows(ci, "api", Verb::Status)) << "the open commands are open to tokens too";
  EXPECT_TRUE(Acl({AclRule{{"http:*"}, {"deploy"}, {"*"}}}).allows(ci, "api", Verb::Deploy));
  EXPECT_TRUE(Acl({AclRule{{"http:ci"}, {"deploy"}, {"*"}}}).allows(ci, "api", Verb::Deploy));
  EXPECT_FALSE(Acl({AclRule{{"http:cd"}, {"deploy"}, {"*"}}}).allows(ci, "api", Verb::Deploy));
}

TEST(Acl, MasksAreIrcMasksFoldedByTheServersCasemapping) {
  // Only * and ? are special: [ ] \\ are nick characters, not glob syntax.
  Acl acl({AclRule{{"irc:bob[m]!*@*", "irc:a\\b!*@*", "irc:x?z!*@*"}, {"deploy"}, {"irc:#Ops[1]"}}});
  auto rfc = [](const std::string& full) {
    Identity id = irc(full);
    id.casemapping = CaseMapping::Rfc1459;
    return id;
  };
  EXPECT_TRUE(acl.allows(rfc("bob[m]!b@h"), "#ops[1]", Verb::Deploy));
  EXPECT_FALSE(acl.allows(rfc("bobm!b@h"), "#ops[1]", Verb::Deploy)) << "[m] is not a character class";
  EXPECT_TRUE(acl.allows(rfc("BOB{M}!b@h"), "#OPS{1}", Verb::Deploy)) << "rfc1459 folds [] to {}";
  EXPECT_TRUE(acl.allows(rfc("A|B!b@h"), "#ops[1]", Verb::Deploy)) << "rfc1459 folds \\ to |";
  EXPECT_TRUE(acl.allows(rfc("xyz!b@h"), "#ops[1]", Verb::Deploy));
  EXPECT_FALSE(acl.allows(rfc("xz!b@h"), "#ops[1]", Verb::Deploy)) << "? is exactly one character";
  Identity ascii = irc("bob{m}!b@h");
  ascii.casemapping = CaseMapping::Ascii;
  EXPECT_FALSE(acl.allows(ascii, "#ops[1]", Verb::Deploy)) << "ascii does not fold [] to {}";
  ascii.full = "BOB[M]!b@h";
  EXPECT_TRUE(acl.allows(ascii, "#ops[1]", Verb::Deploy));
  EXPECT_TRUE(mask_matches("n~ck!*", "N^CK!u@h", CaseMapping::Rfc1459));
  EXPECT_FALSE(mask_matches("n~ck!*", "N^CK!u@h", CaseMapping::StrictRfc1459));
  EXPECT_TRUE(mask_matches("*!*@*.example.com", "a!b@c.d.example.com", CaseMapping::Ascii));
  EXPECT_FALSE(mask_matches("*!*@*.example.com", "a!b@example.com", CaseMapping::Ascii));
  EXPECT_TRUE(mask_matches("**a*", "bab", CaseMapping::Ascii));
  EXPECT_FALSE(mask_matches(std::string(40, '*') + "b", std::string(2000, 'a'), CaseMapping::Ascii));
  EXPECT_EQ(parse_casemapping("strict-rfc1459"), CaseMapping::StrictRfc1459);
  EXPECT_FALSE(parse_casemapping("rfc7613"));
}

TEST(Utf8, CutsBetweenCharactersAndReplacesWhatIsNotUtf8) {
  EXPECT_EQ(utf8_prefix("abé", 3), "ab");
  EXPECT_EQ(utf8_prefix("ab€", 4), "ab");
  EXPECT_EQ(utf8_prefix("ab€", 5), "ab€");
  EXPECT_EQ(utf8_prefix("ab", 1), "a");
  EXPECT_EQ(valid_utf8("ok é €"), "ok é €");
  EXPECT_EQ(valid_utf8("a\xC3"), "a\uFFFD") << "truncated";
  EXPECT_EQ(valid_utf8("\x80" "x"), "\uFFFD" "x") << "stray continuation";
  EXPECT_EQ(valid_utf8("\xC0\xAF"), "\uFFFD\uFFFD") << "overlong";
  EXPECT_EQ(valid_utf8("\xED\xA0\x80"), "\uFFFD") << "a surrogate";
  EXPECT_EQ(valid_utf8("\xF4\x90\x80\x80"), "\uFFFD") << "past U+10FFFF";
  // A parse error that echoes a word cut at 40 bytes stays valid UTF-8.
  auto parsed = parse_command(std::string(39, 'x') + "éé");
  EXPECT_EQ(valid_utf8(parsed.error), parsed.error);
  EXPECT_NE(parsed.error.find(std::string(39, 'x') + "\""), std::string::npos) << parsed.error;
}

TEST(ChatText, NoControlColourOrBidiCodesReachAChannel) {
  EXPECT_EQ(chat_safe_text("\x02" "bold\x02 \x1F" "under\x1F \x03" "04red\x03 \x03" "12,04blue\x0f x"),
            "bold under red blue x");
  EXPECT_EQ(chat_safe_text("\x03" "1,2,3 and \x03" "99"), ",3 and ") << "a colour takes at most fg,bg";
  EXPECT_EQ(chat_safe_text("\x04" "ff00AAhex\x04"), "hex");
  EXPECT_EQ(chat_safe_text("a,b \x03, c"), "a,b , c") << "commas that are text stay";
  EXPECT_EQ(chat_safe_text(std::string("evil\rQUIT :x\n\0\x7f\u0085!", 18)), "evil QUIT :x !");
  EXPECT_EQ(chat_safe_text("file \u202Egpj.exe \u2066x\u2069 \u202Ay\u202C"), "file gpj.exe x y");
  EXPECT_EQ(chat_safe_text("xml \uFFFE\uFFFF ok \xF0\x9F\x9A\x80"), "xml  ok \xF0\x9F\x9A\x80");
  EXPECT_EQ(chat_safe_text("bad \xC3" "("), "bad \uFFFD(");
}

TEST(IrcText, UserhostRepliesAndServicesTargets) {
  auto r = parse_userhost_reply("alice=+~al@10.0.0.1 Oper*=-op@h.example ");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0], (std::pair<std::string, std::string>{"alice", "~al@10.0.0.1"}));
  EXPECT_EQ(r[1], (std::pair<std::string, std::string>{"Oper", "op@h.example"}));
  EXPECT_TRUE(parse_userhost_reply("").empty());
  EXPECT_TRUE(is_server_qualified_target("NickServ@services.example.net"));
  EXPECT_FALSE(is_server_qualified_target("NickServ"));
  EXPECT_FALSE(is_server_qualified_target("NickServ@"));
  EXPECT_FALSE(is_server_qualified_target("NickServ@localhost")) << "no dot: not a server name";
  EXPECT_FALSE(is_server_qualified_target("Nick Serv@services.example.net"));
  EXPECT_FALSE(is_server_qualified_target("n!u@services.example.net"));
}

TEST(Outbox, SplitsLongLinesAtSpacesAndNeverInsideACharacter) {
  auto parts = split_line("alpha beta gamma delta", 11);
  EXPECT_EQ(parts, (std::vector<std::string>{"alpha beta", "gamma delta"}));
  auto utf8 = split_line("ééééé", 5);  // 2 bytes each
  for (const auto& p : utf8) EXPECT_LE(p.size(), 5u);
  std::string joined;
  for (const auto& p : utf8) joined += p;
  EXPECT_EQ(joined, "ééééé");
  EXPECT_EQ(split_line("one\r\nPRIVMSG #x :evil", 100).at(0), "one  PRIVMSG #x :evil");
}

struct ChatHarness : Harness {
  ChatHarness() {
    worker("chat:step", "cat >/dev/null; sleep 0.1");
    write_file(tmp.file("designs/loki.yaml"), "instance:\n  hostname: loki\n  provider: chat\n");
    write_file(tmp.file("pipelines/chat.yaml"),
               "name: chat\nmatch: {provider: chat}\ntasks: [chat:step, chat:step]\n");
    std::vector<std::string> errors;
    pipelines = PipelineSet::load_dir(tmp.file("pipelines"), PipelineDefaults{}, errors);
    start();
    designs = std::make_unique<FileDesignSource>(io, tmp.file("designs"));
    commands = std::make_unique<CommandService>(*store, pipelines, *designs, config.workers_path, engine.get());
  }
  std::unique_ptr<ChatFront> front(const Acl& acl, ChatFrontConfig cfg = {}) {
    cfg.rooms = {"#ops"};
    cfg.outbox.per_second = 1000;
    cfg.outbox.burst = 1000;
    cfg.outbox.target_per_second = 1000;
    cfg.outbox.target_burst = 1000;
    cfg.backoff.initial = 20ms;
    auto f = std::make_unique<ChatFront>(io, adapter, *commands, acl, cfg);
    f->start();
    run_until([&] { return adapter.connected(); });
    return f;
  }
  std::vector<std::string> said(const std::string& target, size_t at_least) {
    run_until([&] { return adapter.lines_to(target).size() >= at_least; }, 5s);
    return adapter.lines_to(target);
  }
  MemoryAdapter adapter{io};
  PipelineSet pipelines;
  std::unique_ptr<FileDesignSource> designs;
  std::unique_ptr<CommandService> commands;
};

TEST(ChatFront, RefusesWhatTheAclClosesAuditsItAndRepliesWhereAsked) {
  ChatHarness h;
  Acl acl({AclRule{{"memory:alice!*@*"}, {"deploy", "cancel"}, {"*"}}});
  auto f = h.front(acl);
  EXPECT_EQ(h.adapter.joined, std::vector<std::string>{"#ops"});
  h.adapter.receive("mallory", "#ops", "jarvis: deploy loki");
  EXPECT_EQ(h.said("#ops", 1).at(0), "mallory: you may not deploy here; ask an admin to add you to the ACL");
  auto trail = h.store->audit_trail(10);
  ASSERT_EQ(trail.size(), 1u);
  EXPECT_EQ(trail[0].who, "memory:mallory!mallory@test");
  EXPECT_EQ(trail[0].place, "#ops");
  EXPECT_EQ(trail[0].outcome, "refused: not allowed by the ACL");
  EXPECT_FALSE(h.store->latest_for_host("loki"));

  h.adapter.receive("alice", "#ops", "jarvis, deploy loki");
  EXPECT_EQ(h.said("#ops", 2).at(1), "loki: deploying with chat, 2 stages (job 1)");
  h.adapter.receive("mallory", "", "status loki");  // a direct message: the reply is direct
  auto direct = h.said("mallory", 1);
  EXPECT_EQ(direct.at(0).rfind("loki: ", 0), 0u) << direct.at(0);
  h.adapter.receive("bob", "#ops", "!help");
  auto help = h.said("bob", 3);
  bool lists_deploy = false;
  for (const auto& l : help) lists_deploy |= l.rfind("deploy <design>", 0) == 0;
  EXPECT_FALSE(lists_deploy) << "help lists only what the asker may run";
  EXPECT_EQ(h.said("#ops", 3).at(2), "bob: I sent you the answer to \"help\" (" + std::to_string(help.size()) +
                                          " lines) in a direct message");
  h.adapter.receive("carol", "#ops", "someone said jarvis is slow");
  h.run_until([] { return false; }, 100ms);
  EXPECT_EQ(h.adapter.lines_to("#ops").size(), 3u) << "chatter is not a command";
}

TEST(ChatFront, RateLimitsPerPersonAndAuditsIt) {
  ChatHarness h;
  Acl acl;
  ChatFrontConfig cfg;
  cfg.command_burst = 2;
  cfg.commands_per_second = 0.01;
  auto f = h.front(acl, cfg);
  for (int i = 0; i < 3; ++i) h.adapter.receive("spammer", "#ops", "!jobs");
  auto lines = h.said("#ops", 3);
  EXPECT_EQ(lines.back(), "spammer: slow down; try again in a few seconds");
  EXPECT_EQ(h.store->audit_trail(10).back().outcome, "refused: rate limited");
  h.adapter.receive("someone_else", "#ops", "!jobs");
  EXPECT_EQ(h.said("#ops", 4).back(), "no jobs in flight") << "others are not slowed";
}

TEST(ChatFront, RefusalsCostTokensAndAreAnsweredAndAuditedOncePerWindow) {
  ChatHarness h;
  Acl acl;  // deploy is closed
  ChatFrontConfig cfg;
  cfg.command_burst = 3;
  cfg.commands_per_second = 0.01;
  cfg.refusal_window = 300ms;
  auto f = h.front(acl, cfg);
  for (int i = 0; i < 20; ++i) h.adapter.receive("mallory", "#ops", "jarvis: deploy loki");
  h.adapter.receive("bob", "#ops", "!jobs");
  auto lines = h.said("#ops", 2);
  EXPECT_EQ(lines, (std::vector<std::string>{"mallory: you may not deploy here; ask an admin to add you to the ACL",
                                             "no jobs in flight"}))
      << "one answer per window, and bob is not behind mallory's refusals";
  auto trail = h.store->audit_trail(50);
  EXPECT_EQ(trail.size(), 2u) << "mallory's first refusal and bob's jobs";
  h.run_until([&] { return h.store->audit_trail(50).size() >= 3; }, 3s);
  trail = h.store->audit_trail(50);
  ASSERT_EQ(trail.size(), 3u);
  EXPECT_EQ(trail[2].command, "(19 more commands)");
  EXPECT_EQ(trail[2].who, "memory:mallory!mallory@test");
  EXPECT_EQ(trail[2].outcome.rfind("refused: 19 more refused", 0), 0u) << trail[2].outcome;
  // A new window: one more answer (now a slow-down: the burst is spent).
  h.adapter.receive("mallory", "#ops", "!jobs");
  EXPECT_EQ(h.said("#ops", 3).at(2), "mallory: slow down; try again in a few seconds");
}

TEST(ChatFront, ANickChangeDoesNotRefillTheBucket) {
  ChatHarness h;
  Acl acl;
  ChatFrontConfig cfg;
  cfg.command_burst = 2;
  cfg.commands_per_second = 0.01;
  auto f = h.front(acl, cfg);
  for (const char* nick : {"mal", "mal_", "mal__"})
    h.adapter.receive_as(Identity{"memory", nick, std::string(nick) + "!m@evil.example", ""}, "#ops", "!jobs");
  auto lines = h.said("#ops", 3);
  EXPECT_EQ(lines.at(2), "mal__: slow down; try again in a few seconds");
  EXPECT_EQ(f->people(), 1u);
}

TEST(ChatFront, PeopleAndOutboxTargetsAreBounded) {
  ChatHarness h;
  Acl acl;
  ChatFrontConfig cfg;
  cfg.max_people = 50;
  cfg.outbox.max_targets = 20;
  cfg.outbox.max_queued = 5;
  auto f = h.front(acl, cfg);
  for (int i = 0; i < 300; ++i) h.adapter.receive("u" + std::to_string(i), "", "help");
  EXPECT_LE(f->people(), 50u);
  boost::asio::io_context io;
  MemoryAdapter adapter(io);
  Outbox outbox(io, adapter, OutboxLimits{1, 1, 1, 1, 3, 5, 20});  // paused: nothing leaves
  for (int t = 0; t < 40; ++t)
    for (int i = 0; i < 10; ++i) outbox.send("#t" + std::to_string(t), "line " + std::to_string(i));
  EXPECT_EQ(outbox.targets(), 20u);
  EXPECT_EQ(outbox.pending(), 100u);
}

TEST(ChatFront, QueuesWhileOfflineAndDeliversAfterReconnectingAndRejoining) {
  ChatHarness h;
  Acl acl;
  auto f = h.front(acl);
  h.adapter.refuse_connect = true;
  h.adapter.drop("ping timeout");
  for (int i = 0; i < 5; ++i) f->say("#ops", "announcement " + std::to_string(i), false);
  h.run_until([&] { return h.adapter.connect_attempts >= 3; }, 5s);
  EXPECT_TRUE(h.adapter.lines_to("#ops").empty());
  EXPECT_EQ(f->pending(), 5u);
  h.adapter.refuse_connect = false;
  auto lines = h.said("#ops", 5);
  EXPECT_EQ(lines, (std::vector<std::string>{"announcement 0", "announcement 1", "announcement 2",
                                             "announcement 3", "announcement 4"}));
  EXPECT_EQ(h.adapter.joined, (std::vector<std::string>{"#ops", "#ops"})) << "rejoined";
}

// Runs the loop until nothing is queued (or 5 s pass).
void drain(boost::asio::io_context& io, Outbox& outbox) {
  auto start = std::chrono::steady_clock::now();
  while (outbox.pending() > 0 && std::chrono::steady_clock::now() - start < 5s) {
    io.restart();
    io.run_for(5ms);
  }
}

OutLine progress(int job, const std::string& text) {
  return OutLine{text, OutLine::Kind::Progress, "job " + std::to_string(job)};
}

OutLine final_line(int job, const std::string& host, const std::string& group) {
  OutLine l{host + " is ready (job " + std::to_string(job) + ")", OutLine::Kind::Final, "job " + std::to_string(job)};
  l.group = group;
  l.item = host;
  l.job = job;
  return l;
}

TEST(Outbox, NotBehindEveryLineGoesAsItIs) {
  boost::asio::io_context io;
  MemoryAdapter adapter(io);
  Outbox outbox(io, adapter, OutboxLimits{1000, 1000, 1000, 1000});
  adapter.connect();
  io.run_for(10ms);
  io.restart();
  outbox.resume();
  outbox.send("#ops", progress(1, "loki: stage 1/2 done (job 1)"));
  outbox.send("#ops", progress(1, "loki: stage 2/2 started (job 1)"));
  outbox.send("#ops", final_line(1, "loki", "ready:"));
  outbox.send("#ops", final_line(2, "thor", "ready:"));
  drain(io, outbox);
  EXPECT_EQ(adapter.lines_to("#ops"), (std::vector<std::string>{"loki: stage 1/2 done (job 1)",
                                                                 "loki: stage 2/2 started (job 1)",
                                                                 "loki is ready (job 1)", "thor is ready (job 2)"}));
}

TEST(Outbox, PacesToTheTokenBucketAndRepliesGoAheadOfQueuedAnnouncements) {
  boost::asio::io_context io;
  MemoryAdapter adapter(io);
  OutboxLimits limits;
  limits.per_second = 20;
  limits.burst = 2;
  limits.target_per_second = 20;
  limits.target_burst = 2;
  Outbox outbox(io, adapter, limits);
  adapter.connect();
  io.run_for(10ms);
  io.restart();
  outbox.resume();
  for (int i = 1; i <= 12; ++i) outbox.send("#ops", "job " + std::to_string(i) + " started", true);
  io.run_for(5ms);  // the burst of 2 goes
  outbox.reply("#ops", "loki: running stage 4/19 (job 17)");
  auto start = std::chrono::steady_clock::now();
  drain(io, outbox);
  auto elapsed = std::chrono::steady_clock::now() - start;
  auto lines = adapter.lines_to("#ops");
  ASSERT_EQ(lines.size(), 13u) << "progress of different jobs is never dropped";
  EXPECT_EQ(lines.at(2), "loki: running stage 4/19 (job 17)") << "the answer goes in the next slot";
  EXPECT_EQ(lines.back(), "job 12 started");
  EXPECT_GE(elapsed, 400ms) << "11 lines at 20 a second";
}

TEST(Outbox, WhenBehindStaleProgressGivesWayToTheNewestStateAndAFinalStateDropsIt) {
  boost::asio::io_context io;
  MemoryAdapter adapter(io);
  Outbox outbox(io, adapter, OutboxLimits{50, 1, 50, 1});
  adapter.connect();
  io.run_for(10ms);
  io.restart();
  for (int stage = 1; stage <= 5; ++stage) {  // queued while offline: nothing leaves
    outbox.send("#ops", progress(1, "loki: stage " + std::to_string(stage) + "/5 done (job 1)"));
    outbox.send("#ops", progress(2, "thor: stage " + std::to_string(stage) + "/5 done (job 2)"));
  }
  outbox.send("#ops", final_line(1, "loki", "ready:"));
  outbox.resume();
  drain(io, outbox);
  EXPECT_EQ(adapter.lines_to("#ops"),
            (std::vector<std::string>{"thor: stage 5/5 done (job 2)", "loki is ready (job 1)"}));
}

TEST(Outbox, WhenBehindRepliesAndFinalStatesOfOneKindMergeInOrder) {
  boost::asio::io_context io;
  MemoryAdapter adapter(io);
  adapter.max_line = 400;
  Outbox outbox(io, adapter, OutboxLimits{100, 1, 100, 1});
  adapter.connect();
  io.run_for(10ms);
  io.restart();
  auto ack = [](int job, const std::string& host) {
    OutLine l{host + ": deploying with web, 5 stages (job " + std::to_string(job) + ")", OutLine::Kind::Reply};
    l.group = "alice: deploying";
    l.item = host;
    l.job = job;
    return l;
  };
  outbox.send("#ops", progress(3, "web01: stage 1/5 done (job 3)"));
  outbox.send("#ops", ack(3, "web01"));
  outbox.send("#ops", ack(4, "web02"));
  outbox.reply("#ops", "web01: running stage 2/5 (job 3)");
  outbox.send("#ops", ack(9, "web07"));
  outbox.send("#ops", final_line(3, "web01", "alice: ready:"));
  outbox.send("#ops", final_line(4, "web02", "alice: ready:"));
  outbox.send("#ops", final_line(9, "web07", "alice: ready:"));
  outbox.send("#ops", final_line(10, "db01", "bob: ready:"));
  outbox.resume();
  drain(io, outbox);
  EXPECT_EQ(adapter.lines_to("#ops"),
            (std::vector<std::string>{"alice: deploying web01, web02, web07 (jobs 3, 4, 9)",
                                      "web01: running stage 2/5 (job 3)",
                                      "alice: ready: web01, web02, web07 (jobs 3, 4, 9)",
                                      "db01 is ready (job 10)"}))
      << "the ack before its job's progress, which its final state replaced";
  // A line alone is sent as it is.
  outbox.send("#ops", ack(11, "web08"));
  drain(io, outbox);
  EXPECT_EQ(adapter.lines_to("#ops").back(), "web08: deploying with web, 5 stages (job 11)");
  // Merged lines stay within the protocol's length.
  outbox.pause();
  for (int i = 0; i < 80; ++i) outbox.send("#ops", final_line(100 + i, "host" + std::to_string(i), "ready:"));
  outbox.resume();
  drain(io, outbox);
  auto lines = adapter.lines_to("#ops");
  std::string all;
  for (size_t i = 5; i < lines.size(); ++i) {
    EXPECT_LE(lines[i].size(), 400u);
    all += lines[i] + "\n";
  }
  EXPECT_LT(lines.size() - 5, 6u) << all;
  for (int i = 0; i < 80; ++i) {
    std::string h = " host" + std::to_string(i);
    EXPECT_TRUE(all.find(h + ",") != std::string::npos || all.find(h + " (") != std::string::npos) << i;
  }
}

TEST(Announcer, GoesToConfiguredRoomsAndBackToTheRequester) {
  AnnounceConfig cfg;
  cfg.everywhere = {"memory:#ops"};
  cfg.by_pipeline["chat"] = {"memory:#deploys"};
  Announcer a(cfg);
  EngineEvent e;
  e.kind = EngineEvent::Kind::JobReady;
  e.pipeline = "chat";
  e.origin = "memory:@alice";
  EXPECT_EQ(a.places_for(e), (std::vector<std::string>{"memory:#deploys", "memory:#ops", "memory:@alice"}));
}

TEST(Announcer, EachPlaceAtItsLevelAndTheEndNamesTheRequester) {
  ChatHarness h;
  Acl acl({AclRule{{"memory:alice!*@*"}, {"deploy"}, {"*"}}});
  AnnounceConfig cfg;
  cfg.everywhere = {"memory:#ops", "memory:#quiet", "memory:#stages", "memory:#all"};
  cfg.levels = {{"memory:#stages", AnnounceLevel::Stages}, {"memory:#all", AnnounceLevel::All}};
  Announcer announcer(cfg);
  announcer.set_job_lookup([&](int64_t id) { return h.store->job(id); });
  auto f = h.front(acl);
  announcer.add_front(*f);
  h.engine->add_observer([&](const EngineEvent& e) { announcer.on_event(e); });
  EXPECT_EQ(announcer.rooms_on("memory"), (std::vector<std::string>{"#ops", "#quiet", "#stages", "#all"}));
  h.adapter.receive("alice", "#ops", "jarvis: deploy loki");
  h.run_until([&] { return h.adapter.lines_to("#all").size() >= 6; }, 10s);
  h.run_until([] { return false; }, 200ms);
  auto ops = h.adapter.lines_to("#ops");
  ASSERT_EQ(ops.size(), 2u) << "quiet where it was asked: the answer and the end";
  EXPECT_EQ(ops[0], "loki: deploying with chat, 2 stages (job 1)");
  EXPECT_EQ(ops[1].rfind("alice: loki is ready: 2 stages in ", 0), 0u) << ops[1];
  EXPECT_EQ(ops[1].substr(ops[1].size() - 8), " (job 1)") << ops[1];
  auto quiet = h.adapter.lines_to("#quiet");
  ASSERT_EQ(quiet.size(), 2u);
  EXPECT_EQ(quiet[0], "loki: starting (job 1, started by alice)");
  EXPECT_EQ(quiet[1], ops[1]);
  auto stages = h.adapter.lines_to("#stages");
  ASSERT_EQ(stages.size(), 3u);
  EXPECT_EQ(stages[0].rfind("loki: stage 1/2 chat:step done in ", 0), 0u) << stages[0];
  EXPECT_EQ(stages[1].rfind("loki: stage 2/2 chat:step done in ", 0), 0u) << stages[1];
  EXPECT_EQ(h.adapter.lines_to("#all").size(), 6u) << "started, 2 x (stage started, done), ready";
}

TEST(Announcer, TheEndLineSaysWhatTheRequesterGotOrWhatToDoNext) {
  Announcer a(AnnounceConfig{});
  a.set_job_lookup([](int64_t) {
    JobRecord j;
    j.clipboard = "instance:\n  hostname: loki\n  fqdn: loki.websages.com\n  ip: 192.0.2.10\n";
    return std::optional<JobRecord>(j);
  });
  EngineEvent e;
  e.kind = EngineEvent::Kind::JobReady;
  e.job = 17;
  e.host = "loki";
  e.stage_count = 19;
  e.elapsed = std::chrono::seconds(182);
  EXPECT_EQ(a.end_line(e, "alice"), "alice: loki is ready: loki.websages.com, 192.0.2.10, 19 stages in 3m02s (job 17)");
  EXPECT_EQ(a.end_line(e, "<@U123ALICE>").rfind("<@U123ALICE>: loki is ready", 0), 0u);
  e.kind = EngineEvent::Kind::JobFailed;
  e.stage = 10;
  e.task = "dns:update";
  e.text = "exit code 3: zone is locked";
  EXPECT_EQ(a.end_line(e, ""), "loki failed at stage 10/19 dns:update: exit code 3: zone is locked (job 17). "
                               "Say \"retry loki\" to resume, or \"log loki\" for the worker's output.");
  EXPECT_EQ(job_result_summary("not: [yaml"), "");
  EXPECT_EQ(parse_announce_level("stages"), AnnounceLevel::Stages);
  EXPECT_FALSE(parse_announce_level("loud"));
}

TEST(ChatFront, ARefusalNamesWhoCanGrantTheRightAndRefusedDeliveriesAreCounted) {
  ChatHarness h;
  Acl acl;
  ChatFrontConfig cfg;
  cfg.acl_contact = "#ops-admins";
  auto f = h.front(acl, cfg);
  h.adapter.receive("mallory", "#ops", "jarvis: cancel loki");
  EXPECT_EQ(h.said("#ops", 1).at(0), "mallory: you may not cancel here; ask #ops-admins to add you to the ACL");
  f->on_refused("#deploys", "Cannot send to channel (404)");
  f->on_refused("#deploys", "Cannot send to channel (404)");
  ASSERT_EQ(f->refusals().count("#deploys"), 1u);
  EXPECT_EQ(f->refusals().at("#deploys").count, 2u);
  EXPECT_EQ(f->refusals().at("#deploys").reason, "Cannot send to channel (404)");
}

TEST(Acl, RulesThatCanNeverMatchAreErrorsAndMasksAreWarnings) {
  std::vector<AclRule> rules = {AclRule{{"alice"}, {"deploy"}}, AclRule{{"irc:account:alice"}, {"deploy"}},
                                AclRule{{"xmpp:alice@example.com"}, {"deploy"}},
                                AclRule{{"irc:alice!*@*.example.com"}, {"deploy"}, {"irc:#ops", "slak:C0"}}};
  rules[0].file = "j.yaml";
  rules[0].line = 12;
  auto problems = acl_rule_problems(rules, {"irc"});
  ASSERT_EQ(problems.size(), 5u);
  EXPECT_TRUE(problems[0].error);
  EXPECT_EQ(problems[0].text.rfind("j.yaml:12: acl rule 1: who 'alice' names no protocol", 0), 0u) << problems[0].text;
  EXPECT_TRUE(problems[1].error);
  EXPECT_NE(problems[1].text.find("matches nobody"), std::string::npos) << problems[1].text;
  EXPECT_TRUE(problems[2].error);
  EXPECT_NE(problems[2].text.find("which this config does not connect to"), std::string::npos) << problems[2].text;
  EXPECT_FALSE(problems[3].error) << "a mask rule works, but can be borrowed";
  EXPECT_NE(problems[3].text.find("without accounts"), std::string::npos);
  EXPECT_TRUE(problems[4].error);
  EXPECT_NE(problems[4].text.find("'slak:C0' names no protocol"), std::string::npos) << problems[4].text;
}

TEST(Acl, AnAccountRuleIsFineWhereTheAdapterLearnsAccounts) {
  std::vector<AclRule> rules = {AclRule{{"irc:account:alice"}, {"deploy"}},
                                AclRule{{"xmpp:account:alice"}, {"deploy"}}};
  auto problems = acl_rule_problems(rules, {"irc", "xmpp"}, {"irc"});
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_TRUE(problems[0].error);
  EXPECT_NE(problems[0].text.find("'xmpp:account:alice' is an account rule"), std::string::npos) << problems[0].text;
  auto without = acl_rule_problems({rules[0]}, {"irc"}, {});
  ASSERT_EQ(without.size(), 1u);
  EXPECT_NE(without[0].text.find("irc.accounts is off"), std::string::npos) << without[0].text;
}

TEST(Acl, AnAccountRuleMatchesTheAccountNotTheNick) {
  Acl acl({AclRule{{"irc:account:alice"}, {"deploy"}}});
  Identity alice{"irc", "alice_away", "alice_away!a@host", "alice"};
  Identity mallory{"irc", "alice", "alice!alice@host", ""};
  Identity logged_out{"irc", "alice", "alice!a@host", ""};
  EXPECT_TRUE(acl.allows(alice, "#ops", Verb::Deploy));
  EXPECT_FALSE(acl.allows(mallory, "#ops", Verb::Deploy));
  EXPECT_FALSE(acl.allows(logged_out, "#ops", Verb::Deploy));
}

}  // namespace
}  // namespace jarvis::testing

namespace jarvis::testing {
namespace {

TEST(IrcRelay, ParsesTagsPrefixAndTrailing) {
  auto l = parse_irc_line("@account=alice;time=x :alice!a@h PRIVMSG #ops :jarvis: deploy loki");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->tags, "account=alice;time=x");
  EXPECT_EQ(l->prefix, "alice!a@h");
  EXPECT_EQ(l->command, "PRIVMSG");
  ASSERT_EQ(l->params.size(), 2u);
  EXPECT_EQ(l->params[1], "jarvis: deploy loki");
  EXPECT_EQ(irc_tag(l->tags, "account"), "alice");
  EXPECT_EQ(irc_tag(l->tags, "acc"), std::nullopt) << "a prefix of a key is not the key";
  EXPECT_EQ(irc_tag("a=x\\sy\\:z;b", "a"), "x y;z");
  EXPECT_EQ(irc_tag("a=x;b", "b"), "");
  auto j = parse_irc_line(":alice!a@h JOIN #ops alice :Alice A");
  ASSERT_TRUE(j);
  ASSERT_EQ(j->params.size(), 3u);
  EXPECT_EQ(j->params[1], "alice");
  EXPECT_FALSE(parse_irc_line(""));
  EXPECT_EQ(checked_account("alice"), "alice");
  EXPECT_EQ(checked_account("*"), "") << "ACCOUNT * and extended-join's * mean logged out";
  EXPECT_EQ(checked_account(*irc_tag("account=al\\r\\nice", "account")), "") << "an unescaped CR LF";
  EXPECT_EQ(checked_account(std::string(65, 'a')), "");
}

TEST(IrcRelay, SaslPlainIsSplitIn400ByteChunks) {
  auto short_one = sasl_plain_chunks("jarvis", "pw");
  ASSERT_EQ(short_one.size(), 1u);
  EXPECT_EQ(short_one[0], "amFydmlzAGphcnZpcwBwdw==");  // base64("jarvis\0jarvis\0pw")
  // 300 raw bytes are exactly 400 base64 characters: a "+" says the payload ended.
  auto exact = sasl_plain_chunks("u", std::string(300 - 4, 'p'));
  ASSERT_EQ(exact.size(), 2u);
  EXPECT_EQ(exact[0].size(), 400u);
  EXPECT_EQ(exact[1], "+");
  auto longer = sasl_plain_chunks("u", std::string(400, 'p'));
  ASSERT_EQ(longer.size(), 2u);
  EXPECT_NE(longer[1], "+");
}

}  // namespace
}  // namespace jarvis::testing

namespace jarvis::testing {
namespace {

// The relay against a scripted server on loopback: what libircclient would see, and the
// account of each PRIVMSG as of its own place in the stream (a later ACCOUNT or NICK that
// the relay has already read must not change an earlier line's sender).
TEST(IrcRelay, AccountsAreTakenInStreamOrderAndIrcv3IsHiddenFromTheClient) {
  namespace asio = boost::asio;
  using tcp = asio::ip::tcp;
  using namespace std::chrono_literals;
  asio::io_context io;
  tcp::acceptor server(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  Ircv3 v3;
  v3.caps = v3.accounts = true;
  auto relay = std::make_shared<IrcRelay>(io, nullptr, v3);
  unsigned short relay_port = 0;
  std::string closed;
  relay->start(server.local_endpoint(), "127.0.0.1", false,
               [&](const std::string& error, unsigned short port) {
                 EXPECT_EQ(error, "");
                 relay_port = port;
               },
               [&](const std::string& reason) { closed = reason; });
  auto pump = [&] {
    io.restart();
    io.run_for(5ms);
  };
  tcp::socket up(io);
  server.accept(up);  // the relay's connect is already in the kernel's backlog
  for (int i = 0; i < 400 && !relay_port; ++i) pump();
  ASSERT_NE(relay_port, 0);
  tcp::socket client(io);
  client.connect(tcp::endpoint(asio::ip::address_v4::loopback(), relay_port));
  relay->accept_from(client.local_endpoint().port());
  std::string up_buf, client_buf;
  auto line = [&](tcp::socket& s, std::string& buf) {
    for (int i = 0; i < 400; ++i) {
      if (auto nl = buf.find("\r\n"); nl != std::string::npos) {
        std::string l = buf.substr(0, nl);
        buf.erase(0, nl + 2);
        return l;
      }
      if (s.available()) {
        char tmp[4096];
        buf.append(tmp, s.read_some(asio::buffer(tmp)));
      } else {
        pump();
      }
    }
    return std::string("(nothing)");
  };
  auto say = [&](tcp::socket& s, const std::string& text) { asio::write(s, asio::buffer(text)); };

  EXPECT_EQ(line(up, up_buf), "CAP LS 302") << "CAP LS goes before anything the client sends";
  say(client, "NICK jarvis\r\nUSER jarvis 0 * :j\r\n");
  EXPECT_EQ(line(up, up_buf), "NICK jarvis");
  EXPECT_EQ(line(up, up_buf), "USER jarvis 0 * :j");
  say(up, ":srv CAP * LS * :multi-prefix account-notify\r\n:srv CAP * LS :extended-join away-notify\r\n");
  EXPECT_EQ(line(up, up_buf), "CAP REQ :account-notify extended-join");
  say(up, ":srv CAP * ACK :account-notify extended-join\r\n");
  EXPECT_EQ(line(up, up_buf), "CAP END");
  say(up,
      ":srv 001 jarvis :hi\r\n"
      ":alice!a@h JOIN #ops alice :Alice\r\n"
      ":alice!a@h PRIVMSG #ops :one\r\n"
      ":alice!a@h ACCOUNT *\r\n"
      ":alice!a@h PRIVMSG #ops :two\r\n"
      ":alice!a@h NICK alice2\r\n"
      ":mallory!m@h NICK alice\r\n"
      ":alice!m@h PRIVMSG #ops :three\r\n"
      ":carol!c@h JOIN #ops carol :Carol\r\n"
      ":carol!c@h NICK carol2\r\n"
      "@account=x;time=y :carol2!c@h PRIVMSG #ops :four\r\n");
  std::vector<std::string> seen;
  for (int i = 0; i < 9; ++i) seen.push_back(line(client, client_buf));
  EXPECT_EQ(seen, (std::vector<std::string>{
                      ":srv 001 jarvis :hi", ":alice!a@h JOIN #ops", ":alice!a@h PRIVMSG #ops :one",
                      ":alice!a@h PRIVMSG #ops :two", ":alice!a@h NICK alice2", ":mallory!m@h NICK alice",
                      ":alice!m@h PRIVMSG #ops :three", ":carol!c@h JOIN #ops", ":carol!c@h NICK carol2"}));
  EXPECT_EQ(line(client, client_buf), ":carol2!c@h PRIVMSG #ops :four") << "tags are stripped";
  // Everything is read by now; libircclient delivers the messages only afterwards.
  EXPECT_EQ(relay->account_of("alice!a@h", "#ops", "one"), "alice");
  EXPECT_EQ(relay->account_of("alice!a@h", "#ops", "two"), "") << "logged out (ACCOUNT *)";
  EXPECT_EQ(relay->account_of("alice!m@h", "#ops", "three"), std::nullopt)
      << "mallory took the nick: nothing says who she is, so WHOIS must";
  // No account-tag acked: the tag a server sends anyway is not believed; the map is.
  EXPECT_EQ(relay->account_of("carol2!c@h", "#ops", "four"), "carol");
  EXPECT_EQ(closed, "");
  relay->close();
}

}  // namespace
}  // namespace jarvis::testing
