#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "bot/app/config.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

std::string load_error(TempDir& dir, const std::string& text) {
  write_file(dir.file("jarvis.yaml"), text);
  ConfigOverrides o;
  o.config_file = dir.file("jarvis.yaml");
  try {
    load_config(o);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Config, RelativePathsResolveAgainstTheFileAndFlagsWin) {
  TempDir dir;
  write_file(dir.file("etc/jarvis.yaml"),
             "state_dir: ../state\nmax_running_jobs: 4\nworkers:\n  path: [w1, /abs/w2]\n"
             "  env_allow: [HOME]\n  env: {PATH: /opt/bin}\n  default_timeout: 90s\n");
  ConfigOverrides o;
  o.config_file = dir.file("etc/jarvis.yaml");
  Config c = load_config(o);
  EXPECT_EQ(c.state_dir, dir.file("state"));
  EXPECT_EQ(c.workers_path, (std::vector<std::string>{dir.file("etc/w1"), "/abs/w2"}));
  EXPECT_EQ(c.max_running_jobs, 4);
  EXPECT_EQ(c.default_timeout, std::chrono::seconds(90));
  EXPECT_NE(std::find(c.env_set.begin(), c.env_set.end(), "PATH=/opt/bin"), c.env_set.end());
  EXPECT_EQ(std::count_if(c.env_set.begin(), c.env_set.end(),
                          [](const std::string& e) { return e.rfind("PATH=", 0) == 0; }),
            1);
  o.state_dir = "/override/state";
  EXPECT_EQ(load_config(o).state_dir, "/override/state");
}

TEST(Config, MistakesNameTheFileAndLine) {
  TempDir dir;
  std::string f = dir.file("jarvis.yaml");
  EXPECT_EQ(load_error(dir, "state_dir: s\nmax_runing_jobs: 3\n"), f + ":2: unknown key 'max_runing_jobs'");
  EXPECT_EQ(load_error(dir, "workers:\n  default_timeout: soon\n"),
            f + ":2: workers.default_timeout must be a duration like 500ms, 30s, 5m");
  EXPECT_EQ(load_error(dir, "workers:\n  default_timeout: 0s\n"),
            f + ":2: workers.default_timeout must be more than 0");
  EXPECT_EQ(load_error(dir, "workers:\n  nice: 20\n"), f + ":2: workers.nice must be a whole number from 0 to 19");
  EXPECT_EQ(load_error(dir, "max_running_jobs: 0\n"),
            f + ":1: max_running_jobs must be a whole number from 1 to 100000");
  EXPECT_EQ(load_error(dir, "workers:\n  env_allow: [TOKEN]\n  env: {TOKEN: x}\n"),
            f + ":2: workers.env and workers.env_allow both name TOKEN");
  EXPECT_EQ(load_error(dir, "log_format: xml\n"), "log format must be text or json, not 'xml'");
}

// Issue 17, finding 24: yaml-cpp's exceptions from a value of the wrong kind inside a section
// came out without the file and line.
TEST(Config, AValueOfTheWrongKindInsideASectionNamesTheFileAndLine) {
  TempDir dir;
  std::string f = dir.file("jarvis.yaml");
  EXPECT_EQ(load_error(dir, "state_dir: s\nirc:\n  server: irc.example.com\n  flood: 3\n"),
            f + ":4: irc.flood must be a mapping");
  EXPECT_EQ(load_error(dir, "irc: {server: irc.example.com, flood: {per_second: fast}}\n"),
            f + ":1: irc.flood.per_second must be a number of lines per second, more than 0 and at most 1000");
  EXPECT_EQ(load_error(dir, "irc:\n  server: irc.example.com\n  flood: {burst: 3, rate: 1}\n"),
            f + ":3: unknown key irc.flood.rate");
  // Anything else yaml-cpp refuses still names the file and a line.
  for (const char* text : {"irc: {server: x, flood: [1]}\n", "ldap: {uri: 'ldap://h', attributes: {cn: [a]}}\n",
                           "acl: {rules: [{who: [a], commands: [{x: 1}]}]}\n",
                           "chat: {announce_pipelines: {p: {a: b}}}\n", "workers: {env: {A: [1]}}\n"}) {
    std::string e = load_error(dir, text);
    EXPECT_EQ(e.rfind(f + ":1: ", 0), 0u) << text << " -> " << e;
  }
}

// Issue 17, finding 9: the bot's own passwords and tokens are redacted like clipboard secrets.
TEST(Config, TheBotsOwnSecretsAreHandedToTheEngineForRedaction) {
  TempDir dir;
  write_file(dir.file("irc.pass"), "irc-server-pass-1\n");
  write_file(dir.file("gist.token"), "ghp_gisttoken123\n");
  write_file(dir.file("jarvis.yaml"),
             "irc:\n  server: irc.example.com\n  password_file: irc.pass\n"
             "gist:\n  token_file: gist.token\n");
  ConfigOverrides o;
  o.config_file = dir.file("jarvis.yaml");
  auto secrets = load_config(o).engine_config().secrets;
  EXPECT_NE(std::find(secrets.begin(), secrets.end(), "irc-server-pass-1"), secrets.end());
  EXPECT_NE(std::find(secrets.begin(), secrets.end(), "ghp_gisttoken123"), secrets.end());
}

TEST(Config, IrcSaslIsCheckedAndItsPasswordRedacted) {
  TempDir dir;
  std::string f = dir.file("jarvis.yaml");
  write_file(dir.file("sasl.pass"), "sasl-pass-77\n");
  write_file(f, "irc:\n  server: irc.example.com\n  sasl: {mechanism: plain, password_file: sasl.pass}\n");
  ConfigOverrides o;
  o.config_file = f;
  Config c = load_config(o);
  ASSERT_TRUE(c.irc);
  EXPECT_EQ(c.irc->sasl, SaslMechanism::Plain);
  EXPECT_EQ(c.irc->sasl_password, "sasl-pass-77");
  EXPECT_TRUE(c.irc->sasl_required);
  EXPECT_TRUE(c.irc->accounts) << "a network with SASL has services: learn accounts by default";
  auto secrets = c.engine_config().secrets;
  EXPECT_NE(std::find(secrets.begin(), secrets.end(), "sasl-pass-77"), secrets.end());
  EXPECT_EQ(load_error(dir, "irc:\n  server: irc.example.com\n  sasl: {mechanism: plain, password: x}\n"),
            f + ":3: password may not be written inline: use password_env or password_file");
  EXPECT_EQ(load_error(dir, "irc:\n  server: irc.example.com\n  tls: false\n  sasl: {password_file: sasl.pass}\n"),
            f + ":4: irc.sasl sends the password: it needs tls: true");
  EXPECT_EQ(load_error(dir, "irc:\n  server: irc.example.com\n  sasl: {mechanism: scram}\n"),
            f + ":3: irc.sasl.mechanism must be plain or external");
  EXPECT_EQ(load_error(dir, "irc:\n  server: irc.example.com\n  sasl: {mechanism: external}\n"),
            f + ":3: irc.sasl mechanism external logs in with a TLS client certificate: it needs tls: true "
                "and irc.tls_client_cert");
  write_file(dir.file("client.pem"), "not really\n");
  std::filesystem::permissions(dir.file("client.pem"), std::filesystem::perms(0644));
  EXPECT_NE(load_error(dir, "irc:\n  server: irc.example.com\n  tls_client_cert: client.pem\n"
                            "  sasl: {mechanism: external}\n").find("is readable by everyone: chmod 600 it"),
            std::string::npos);
  EXPECT_EQ(load_error(dir, "irc: {server: irc.example.com, accounts: false}\n"), "");
}

TEST(Config, PacingValuesThatCannotWorkAreErrors) {
  TempDir dir;
  std::string f = dir.file("jarvis.yaml");
  for (const char* bad : {"0", "-1", ".inf", ".nan", "1001"})
    EXPECT_EQ(load_error(dir, std::string("irc: {server: irc.example.com, flood: {per_second: ") + bad + "}}\n"),
              f + ":1: irc.flood.per_second must be a number of lines per second, more than 0 and at most 1000")
        << bad;
  for (const char* bad : {"0", "-3", "2.5", ".inf"})
    EXPECT_EQ(load_error(dir, std::string("irc: {server: irc.example.com, flood: {burst: ") + bad + "}}\n"),
              f + ":1: irc.flood.burst must be a whole number from 1 to 1000")
        << bad;
  EXPECT_EQ(load_error(dir, "chat: {commands_per_minute: 0}\n"),
            f + ":1: chat.commands_per_minute must be a whole number from 1 to 6000");
  EXPECT_EQ(load_error(dir, "irc: {server: irc.example.com, flood: {burst: 3, per_second: 0.5}}\n"), "");
}

TEST(Config, AnnouncementLevelsDirectAnswersAndTheAclContact) {
  TempDir dir;
  write_file(dir.file("jarvis.yaml"),
             "chat:\n  announce: [\"irc:#ops\"]\n  announce_level: stages\n  announce_level_direct: all\n"
             "  announce_levels: {\"irc:#deploys\": all}\n  direct_answers: [help]\n  drain_timeout: 2s\n"
             "acl:\n  contact: \"#ops-admins\"\n  rules:\n    - who: [alice]\n      commands: [deploy]\n");
  ConfigOverrides o;
  o.config_file = dir.file("jarvis.yaml");
  Config c = load_config(o);
  EXPECT_EQ(c.announce.channel_level, AnnounceLevel::Stages);
  EXPECT_EQ(c.announce.direct_level, AnnounceLevel::All);
  EXPECT_EQ(c.announce.levels.at("irc:#deploys"), AnnounceLevel::All);
  EXPECT_EQ(c.chat.direct_answers, std::vector<std::string>{"help"});
  EXPECT_EQ(c.chat.drain_timeout, std::chrono::seconds(2));
  EXPECT_EQ(c.chat.acl_contact, "#ops-admins");
  ASSERT_EQ(c.acl_rules.size(), 1u);
  EXPECT_EQ(c.acl_rules[0].line, 11) << "check-config names the rule's line";
  std::string f = dir.file("jarvis.yaml");
  EXPECT_EQ(load_error(dir, "chat: {announce_level: loud}\n"), f + ":1: chat.announce_level must be quiet, stages or all");
  EXPECT_EQ(load_error(dir, "chat: {direct_answers: [deploy, dance]}\n"),
            f + ":1: chat.direct_answers names an unknown command 'dance'");
}

TEST(Config, TheExampleConfigLoads) {
  ConfigOverrides o;
  o.config_file = JARVIS_SOURCE_DIR "/config/jarvis.example.yaml";
  Config c = load_config(o);
  EXPECT_EQ(c.pipelines_dir, JARVIS_SOURCE_DIR "/pipelines");
}

TEST(Config, APostgresStoreTakesItsUrlFromAFileOrTheEnvironmentNeverInline) {
  TempDir dir;
  std::string f = dir.file("jarvis.yaml");
  EXPECT_EQ(load_error(dir, "store: {kind: postgres, url: 'postgresql://j:pw@db/j'}\n"),
            f + ":1: store.url may not be written inline (it holds the password): use url_file or url_env");
  EXPECT_EQ(load_error(dir, "store: {kind: postgres}\n"),
            f + ":1: store.kind postgres needs url_file (a file holding the libpq URL) or url_env");
  EXPECT_EQ(load_error(dir, "store: {kind: mysql}\n"), f + ":1: store.kind must be sqlite or postgres, not 'mysql'");
  EXPECT_EQ(load_error(dir, "store: {kind: postgres, url_env: JARVIS_TEST_NO_SUCH_VAR}\n"),
            f + ":1: the environment variable JARVIS_TEST_NO_SUCH_VAR (url_env) is not set");
  EXPECT_EQ(load_error(dir, "node: {name: r2, lease: 1s}\n"), f + ":1: node.lease must be at least 2s (it is renewed every 500ms)");

  write_file(dir.file("pg.url"), "postgresql://jarvis:s3cret-pw@db.example.com/jarvis\n");
  write_file(f, "store: {kind: postgres, url_file: pg.url, statement_timeout: 750ms}\nnode: {name: runner-2, lease: 4s}\n");
  ConfigOverrides o;
  o.config_file = f;
  Config c = load_config(o);
  EXPECT_EQ(c.store.kind, StoreConfig::Kind::Postgres);
  EXPECT_EQ(c.store.url, "postgresql://jarvis:s3cret-pw@db.example.com/jarvis");
  EXPECT_EQ(c.store.statement_timeout, std::chrono::milliseconds(750));
  EXPECT_EQ(c.node_name, "runner-2");
  EXPECT_EQ(c.node_lease, std::chrono::seconds(4));
  auto secrets = c.engine_config().secrets;
  EXPECT_NE(std::find(secrets.begin(), secrets.end(), "s3cret-pw"), secrets.end())
      << "the store password is redacted from workers' output like the bot's other secrets";
  EXPECT_EQ(postgres_url_password("host=db dbname=j password='p w' user=j"), "p w");
  EXPECT_EQ(postgres_url_password("host=db password=plain user=j"), "plain");
  EXPECT_EQ(postgres_url_password("postgresql://db/j"), "");
}

}  // namespace
}  // namespace jarvis::testing
