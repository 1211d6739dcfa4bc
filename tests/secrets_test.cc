#include <gtest/gtest.h>

#include "bot/commands/command_service.h"
#include "bot/util/secrets.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

TEST(Secrets, KeysMatchCaseInsensitiveGlobs) {
  SecretPatterns p;
  EXPECT_TRUE(p.matches("root_password"));
  EXPECT_TRUE(p.matches("DB_PASSWORD"));
  EXPECT_TRUE(p.matches("ssh_private_key"));
  EXPECT_TRUE(p.matches("github-token"));
  EXPECT_FALSE(p.matches("hostname"));
  EXPECT_FALSE(p.matches("public_key"));
}

TEST(Secrets, ValuesUnderSecretKeysAtAnyDepth) {
  auto v = secret_values("instance:\n  hostname: loki\n  root_password: 'p4ss word'\n"
                         "secrets:\n  a: one-secret\n  b: [two-secret, {c: three-secret}]\n"
                         "api_token: &t tok-123456\nother: *t\nplain: visible\n",
                         SecretPatterns{});
  EXPECT_EQ(v, (std::vector<std::string>{"p4ss word", "one-secret", "two-secret", "three-secret",
                                         "tok-123456"}));
}

TEST(Secrets, RedactorReplacesEveryOccurrenceLongestFirst) {
  Redactor r;
  r.add({"hunter2-long", "hunter2", "no"});
  EXPECT_EQ(r.redact("pw=hunter2-long and hunter2, no change"),
            "pw=[redacted] and [redacted], no change");
}

// The canary: a secret in the design never shows up in status, log, failure reasons or
// announcements, even when a worker prints it.
TEST(Secrets, ACanaryNeverLeavesTheBot) {
  const std::string canary = "canary-7f3a9c1e";
  Harness h;
  h.worker("leak:stage", "cat >/dev/null; echo \"connecting with password " + canary +
                             "\" >&2; echo \"auth failed for " + canary + "\" >&2; exit 1");
  h.start();
  auto s = h.submit("leaky", h.pipeline({Harness::task("leak:stage")}),
                    "credentials:\n  root_password: " + canary + "\n");
  auto j = h.wait(s.job);
  ASSERT_EQ(j.state, JobState::Failed);
  EXPECT_NE(j.reason.find("auth failed for [redacted]"), std::string::npos) << j.reason;
  std::string everything = j.reason + describe_job(j, 0, now_ms());
  for (const auto& l : h.store->log(s.job, 1000)) everything += l.line + "\n";
  for (const auto& e : h.events) everything += describe_event(e) + e.text + "\n";
  EXPECT_EQ(everything.find(canary), std::string::npos) << everything;
  EXPECT_NE(everything.find("connecting with password [redacted]"), std::string::npos);
}

}  // namespace
}  // namespace jarvis::testing
