#include <gtest/gtest.h>

#include "bot/design/design.h"
#include "tests/test_support.h"

namespace jarvis {
namespace {

std::string problem(const std::string& text) {
  std::string error;
  auto d = parse_design("t.yaml", text, error);
  return d ? "" : error;
}

TEST(Design, TheSeedDesignIsValidAndKeepsUnknownKeys) {
  std::string error;
  auto d = parse_design("loki.yaml",
                        "instance:\n  hostname: Loki\n  fqdn: loki.websages.com\n  provider: Linode\n"
                        "  guestid: Debian 6\n  datacenter: Atlanta\n  size: 512\n"
                        "  gitosis-admin: 'gitosis@freyr.websages.com:gitosis-admin.git'\n"
                        "custom: {anything: [1, 2]}\n",
                        error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->hostname, "loki");
  EXPECT_NE(d->text.find("custom: {anything: [1, 2]}"), std::string::npos);
}

TEST(Design, ErrorsNameTheFieldAndTheLine) {
  EXPECT_EQ(problem("other: 1\n"), "the design has no 'instance:' mapping");
  EXPECT_EQ(problem("instance: loki\n"), "instance (line 1) must be a mapping of the host's fields");
  EXPECT_EQ(problem("instance:\n  fqdn: a.b\n"), "instance.hostname is missing (the instance starts at line 2)");
  EXPECT_EQ(problem("instance:\n  hostname: -bad\n"),
            "instance.hostname '-bad' (line 2) is not a host name: use 1-63 letters, digits and '-', "
            "not starting or ending with '-'");
  EXPECT_EQ(problem("instance:\n  hostname: [a, b]\n"), "instance.hostname (line 2) must be a single value");
  EXPECT_EQ(problem("instance:\n  hostname: loki\n  fqdn: loki..example.com\n"),
            "instance.fqdn 'loki..example.com' (line 3) is not a DNS name");
  EXPECT_EQ(problem("instance:\n  hostname: loki\n  fqdn: thor.example.com\n"),
            "instance.fqdn 'thor.example.com' (line 3) does not start with the hostname 'loki'");
  EXPECT_EQ(problem("instance:\n  hostname: loki\n  provider: 'linode; rm -rf /'\n"),
            "instance.provider 'linode; rm -rf /' (line 3) is not a provider name: use letters, digits, "
            "'-', '_' and '.'");
  EXPECT_EQ(problem("instance:\n  hostname: loki\n  size: {ram: 512}\n"),
            "instance.size (line 3) must be a single value");
  EXPECT_EQ(problem("instance:\n  hostname: loki\n  datacenter: \"at\\x01lanta\"\n"),
            "instance.datacenter (line 3) must be text of at most 128 characters without control characters");
}

// Issue 17, finding 11: a remote design's values may be secrets; its errors name the field
// and the line, never the value.
TEST(Design, ErrorsOfARemoteDesignNeverQuoteItsValues) {
  auto remote_problem = [](const std::string& text) {
    std::string error;
    EXPECT_FALSE(parse_design("https://gist.github.com/1", text, error, DesignOrigin::Remote));
    return error;
  };
  EXPECT_EQ(remote_problem("instance:\n  hostname: loki\n  size: 'hunter2 the db root password'\n"),
            "instance.size (line 3) is not a size: a number or a plan name");
  EXPECT_EQ(remote_problem("instance:\n  hostname: hunter2!\n"),
            "instance.hostname (line 2) is not a host name: use 1-63 letters, digits and '-', "
            "not starting or ending with '-'");
  EXPECT_EQ(remote_problem("instance:\n  hostname: loki\n  fqdn: hunter2.example.com\n"),
            "instance.fqdn (line 3) does not start with the hostname");
  EXPECT_EQ(remote_problem("instance:\n  hostname: loki\n  fqdn: 'pw hunter2'\n"),
            "instance.fqdn (line 3) is not a DNS name");
  EXPECT_EQ(remote_problem("instance:\n  hostname: loki\n  provider: 'hunter2 secret'\n"),
            "instance.provider (line 3) is not a provider name: use letters, digits, '-', '_' and '.'");
  EXPECT_EQ(remote_problem("cluster: c\ninstances:\n  - {hostname: a}\n  - {hostname: b, size: 'hunter2 pw'}\n"),
            "instances[2]: instance.size (line 4) is not a size: a number or a plan name");
}

TEST(Design, ABillionLaughsIsRefusedQuickly) {
  std::string bomb = testing::alias_bomb('j', 10, "instance: {hostname: boom}\n");
  auto start = std::chrono::steady_clock::now();
  std::string error = problem(bomb);
  EXPECT_NE(error.find("expands to more than"), std::string::npos) << error;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
}

// Issue 17, finding 0: this cluster design made `jarvis plan` die of a stack overflow in
// yaml-cpp's emitter (each host's design is emitted from the tree).
TEST(Design, ARecursiveDesignIsRefusedBeforeAnythingWalksIt) {
  for (const char* text : {"cluster: c\ninstances: [{hostname: a}]\nx: &b [*b]\n",
                           "cluster: c\ninstances: [{hostname: a, x: &b {y: *b}}]\n",
                           "instance: {hostname: a}\nx: &b [*b]\n"}) {
    std::string error = problem(text);
    EXPECT_NE(error.find("recursive document"), std::string::npos) << text << ": " << error;
  }
}

TEST(Design, AClusterIsOneDesignPerHostWithTheSharedFields) {
  std::string error;
  auto d = parse_design("web.yaml",
                        "cluster: Web\n"
                        "instance:\n  provider: sandbox\n  size: '007'\n"
                        "instances:\n"
                        "  - hostname: web1\n    fqdn: web1.example.com\n"
                        "  - {hostname: web2, size: 2048}\n"
                        "sandbox: {delay_ms: 0}\n",
                        error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->cluster, "web");
  EXPECT_TRUE(d->hostname.empty());
  ASSERT_EQ(d->members.size(), 2u);
  const Design& web1 = d->members[0];
  EXPECT_EQ(web1.hostname, "web1");
  EXPECT_EQ(web1.cluster, "web");
  const YAML::Node& r1 = web1.root;
  EXPECT_EQ(r1["instance"]["provider"].Scalar(), "sandbox") << "inherited";
  EXPECT_EQ(r1["instance"]["fqdn"].Scalar(), "web1.example.com");
  EXPECT_FALSE(r1["instances"]) << "each host sees only its own instance";
  EXPECT_EQ(r1["sandbox"]["delay_ms"].Scalar(), "0") << "other keys are kept";
  EXPECT_NE(web1.text.find("\"007\""), std::string::npos) << "a quoted string stays quoted:\n" << web1.text;
  const YAML::Node& r2 = d->members[1].root;
  EXPECT_EQ(r2["instance"]["size"].Scalar(), "2048") << "the host's own value wins";
}

// Issue 17, finding 20: 100 hosts sharing an alias that expands to about 80k nodes. The
// document passes the 1M-node expansion limit once, but each host's copy used to be emitted
// with the aliases expanded and parsed again: a minute and 3.8 GB on the event loop.
std::string cluster_bomb(int hosts, int width) {
  std::string text = testing::alias_bomb('e', width, "cluster: big\n");
  text += "instance: {provider: test, data: *e}\ninstances:\n";
  for (int i = 1; i <= hosts; ++i) text += "  - hostname: h" + std::to_string(i) + "\n";
  return text;
}

TEST(Design, AClusterThatExpandsTooFarIsRefusedQuickly) {
  // The shape of the design: about 80k nodes (and 1 MB) per host.
  std::string text = cluster_bomb(100, 8);
  EXPECT_LT(text.size(), 2200u);
  auto start = std::chrono::steady_clock::now();
  std::string error = problem(text);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_NE(error.find("with its aliases expanded, over the limit of"), std::string::npos) << error;
  // About 42k nodes and 600 KB per host: each host is fine, 100 of them are not.
  start = std::chrono::steady_clock::now();
  error = problem(cluster_bomb(100, 7));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_NE(error.find("the cluster's 100 host designs would be"), std::string::npos) << error;
  EXPECT_NE(error.find("over the limit of 100000 nodes and 4194304 bytes for a whole cluster"),
            std::string::npos) << error;
  // Two such hosts are within every limit: a cluster may share big fields, just not without end.
  std::string two_error;
  auto two = parse_design("t.yaml", cluster_bomb(2, 6), two_error);
  ASSERT_TRUE(two) << two_error;
  EXPECT_EQ(two->members.size(), 2u);
}

TEST(Design, OneHostThatExpandsPastTheDesignLimitIsRefusedByName) {
  // 8^6 scalars under one alias: within the document's own 1M-node expansion limit, but the
  // host's design would be ~600k nodes once its copy of the shared instance is written out.
  std::string text = testing::alias_bomb('f', 8, "cluster: one\n");
  text += "instances:\n  - hostname: a\n  - hostname: b\n    data: *f\n";
  auto start = std::chrono::steady_clock::now();
  std::string error = problem(text);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_EQ(error.rfind("instances[1] (line ", 0), 0u) << error;
  EXPECT_NE(error.find("with its aliases expanded, over the limit of 100000 nodes and 1048576 "
                       "bytes for one host's design"), std::string::npos) << error;
}

TEST(Design, ClusterErrorsNameTheHostAndTheLine) {
  EXPECT_EQ(problem("instances:\n  - hostname: a\n"),
            "a design with instances: needs cluster: NAME (line 2), the name status reports the hosts under");
  EXPECT_EQ(problem("cluster: 'we b'\ninstances:\n  - hostname: a\n"),
            "cluster (line 1) is not a cluster name: use 1-63 letters, digits and '-'");
  EXPECT_EQ(problem("cluster: web\ninstances: []\n"), "instances (line 2) must be a list of instance mappings");
  EXPECT_EQ(problem("cluster: web\ninstances:\n  - hostname: a\n  - fqdn: b.example.com\n"),
            "instances[2] (line 4) has no hostname");
  EXPECT_EQ(problem("cluster: web\ninstances:\n  - hostname: a\n  - hostname: -b\n"),
            "instances[2]: instance.hostname '-b' (line 4) is not a host name: use 1-63 letters, digits "
            "and '-', not starting or ending with '-'");
  EXPECT_EQ(problem("cluster: web\ninstances:\n  - hostname: a\n  - hostname: A\n"),
            "instances[2] (line 4): a is listed twice");
  std::string many = "cluster: web\ninstances:\n";
  for (int i = 0; i <= static_cast<int>(kMaxClusterHosts); ++i) many += "  - hostname: h" + std::to_string(i) + "\n";
  EXPECT_EQ(problem(many), "instances (line 3) lists 101 hosts; a cluster design may list at most 100");
}

}  // namespace
}  // namespace jarvis
