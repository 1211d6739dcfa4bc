// The parts of the gist/URL and LDAP design sources that need no server: what a ref means,
// which file of a gist is the design, filter escaping, entry -> design. The servers themselves
// are exercised by tests/integration/gist_designs.py and ldap_designs.py.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <boost/asio/io_context.hpp>

#include "bot/design/ldap_design_source.h"
#include "bot/design/url_design_source.h"
#include "bot/chat/slack/slack_adapter.h"
#include "bot/net/http_client.h"
#include "bot/commands/acl.h"
#include "bot/util/json.h"
#include "bot/util/url_redact.h"

namespace jarvis {
namespace {

struct UrlSource : ::testing::Test {
  boost::asio::io_context io;
  HttpClient http{io};
  GistConfig config() {
    GistConfig c;
    c.api_url = "https://ghe.example.com/api/v3/";
    c.gist_hosts = {"gist.github.com", "ghe.example.com"};
    return c;
  }
};

TEST_F(UrlSource, GistPageUrlsBecomeApiCalls) {
  UrlDesignSource s(http, config());
  std::string error;
  for (const char* ref : {"https://gist.github.com/912450", "https://gist.github.com/whitejs/912450/",
                          "https://GIST.github.com/whitejs/912450#file-loki-yaml",
                          "https://ghe.example.com/gist/whitejs/912450"}) {
    auto t = s.target(ref, error);
    ASSERT_TRUE(t) << ref << ": " << error;
    EXPECT_TRUE(t->gist);
    EXPECT_EQ(t->gist_id, "912450");
    EXPECT_EQ(t->url, "https://ghe.example.com/api/v3/gists/912450") << "one slash, whatever the config had";
  }
  EXPECT_EQ(s.target("https://gist.github.com/a/912450#file-Loki-yaml", error)->file_hint, "loki-yaml");
}

TEST_F(UrlSource, RefusesWhatItShouldNotFetch) {
  UrlDesignSource s(http, config());
  auto why = [&](const std::string& ref) {
    std::string error;
    return s.target(ref, error) ? std::string("accepted") : error;
  };
  EXPECT_EQ(why("http://gist.github.com/1"), "only https:// URLs are allowed");
  EXPECT_EQ(why("https://internal.example.com/secrets.yaml"),
            "host internal.example.com is not one jarvis fetches designs from (gist.url_hosts)");
  EXPECT_EQ(why("https://gist.githubusercontent.com@evil.example/x"),
            "URLs with a user name or password are not accepted (use gist.token_file)");
  EXPECT_EQ(why("https://gist.github.com/a/b/c"),
            "'https://gist.github.com/a/b/c' is not a gist URL (https://gist.github.com/<id> or /<user>/<id>)");
  EXPECT_EQ(why("https://gist.github.com/../../x"),
            "'https://gist.github.com/../../x' is not a gist URL (https://gist.github.com/<id> or /<user>/<id>)");
  EXPECT_EQ(why("https://gist.github.com/1 2"), "the URL has spaces or control characters");
  EXPECT_EQ(why("https://gist.githubusercontent.com/u/1/raw/loki.yaml"), "accepted");
}

TEST_F(UrlSource, PicksTheDesignAmongTheFilesOfAGist) {
  UrlDesignSource s(http, config());
  std::string error, file;
  UrlTarget t;
  t.gist = true;
  t.gist_id = "42";
  const std::string two = R"({"id": "42", "files": {
      "README.md": {"filename": "README.md", "size": 5, "truncated": false, "content": "# hi\n"},
      "Design.yaml": {"filename": "Design.yaml", "size": 30, "truncated": false,
                      "content": "instance:\n  hostname: loki\n  note: \"caf\u00e9 \\\\ /\"\n"}}})";
  auto content = s.design_from_gist(two, t, file, error);
  ASSERT_TRUE(content) << error;
  EXPECT_EQ(file, "Design.yaml");
  EXPECT_EQ(*content, "instance:\n  hostname: loki\n  note: \"caf\xc3\xa9 \\\\ /\"\n") << "JSON escapes decoded";

  const std::string none = R"({"files": {"a.yaml": {"content": "x: 1"}, "b.yaml": {"content": "y: 2"}}})";
  EXPECT_FALSE(s.design_from_gist(none, t, file, error));
  EXPECT_EQ(error, "gist 42 has 2 files and none is named design.yaml; name the "
                   "design file so, or add #file-<name> to the URL") << "a secret gist's file names are not listed";
  t.file_hint = "b-yaml";
  ASSERT_TRUE(s.design_from_gist(none, t, file, error)) << error;
  EXPECT_EQ(file, "b.yaml");
  t.file_hint = "c-yaml";
  EXPECT_FALSE(s.design_from_gist(none, t, file, error));
  EXPECT_EQ(error, "gist 42 has no file for #file-c-yaml");
  t.file_hint.clear();

  const std::string cut = R"({"files": {"big.yaml": {"size": 3000000, "truncated": true, "content": "x: 1"}}})";
  EXPECT_FALSE(s.design_from_gist(cut, t, file, error));
  EXPECT_EQ(error, "gist 42: the design file is too big: over the 1048576-byte limit for designs");
  EXPECT_FALSE(s.design_from_gist("<html>rate limited</html>", t, file, error));
  EXPECT_EQ(error, "gist 42: the gist API answer was not understood (not JSON)");
}

// Issue 17, finding 21: answers of the wrong shape are errors, never exceptions.
TEST_F(UrlSource, AGistAnswerOfTheWrongShapeIsAnErrorNotAnException) {
  UrlDesignSource s(http, config());
  UrlTarget t;
  t.gist = true;
  t.gist_id = "42";
  for (const char* json : {R"({"files": {"design.yaml": "instance: {hostname: x}"}})",
                           R"({"files": ["design.yaml"]})", R"({"files": "design.yaml"})",
                           R"({"files": {"design.yaml": null}})", R"({"files": {"design.yaml": [1, 2]}})",
                           R"({"files": {"a.yaml": {"content": "x: 1"}, "b.yaml": 7}})"}) {
    std::string error, file;
    std::optional<std::string> content;
    ASSERT_NO_THROW(content = s.design_from_gist(json, t, file, error)) << json;
    EXPECT_FALSE(content) << json;
    EXPECT_EQ(error, "gist 42: the gist API answer was not understood") << json;
  }
  std::string error, file;
  EXPECT_FALSE(s.design_from_gist(R"({"files": {"design.yaml": {"content": {"a": 1}}}})", t, file, error));
  EXPECT_EQ(error, "gist 42: the design file has no content");
}

// Issue 17, finding 3: what counts as private, after name resolution.
TEST(Http, PrivateAddressesAreRecognized) {
  for (const char* ip : {"127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "172.31.255.255",
                         "192.168.1.1", "169.254.169.254", "169.254.1.1", "100.64.0.1", "100.127.255.254",
                         "0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "::1", "::ffff:127.0.0.1",
                         "::ffff:10.0.0.1", "fd00:ec2::254", "fc00::1", "fd12:3456::1", "fe80::1",
                         "ff02::1", "64:ff9b::a00:1", "2002:7f00:1::1"})
    EXPECT_NE(private_address_kind(std::string(ip)), "") << ip;
  for (const char* ip : {"8.8.8.8", "140.82.112.3", "172.32.0.1", "100.128.0.1", "192.0.2.1",
                         "2606:4700::1111", "2001:4860:4860::8888", "64:ff9b::808:808"})
    EXPECT_EQ(private_address_kind(std::string(ip)), "") << ip;
  EXPECT_EQ(private_address_kind(std::string("169.254.169.254")), "the cloud metadata service");
  EXPECT_EQ(private_address_kind(std::string("fd00:ec2::254")), "the cloud metadata service");
  EXPECT_EQ(private_address_kind(std::string("::ffff:127.0.0.1")), "loopback (IPv4-mapped)");
}

TEST(Http, UrlsAreReadAsCurlReadsThem) {
  auto p = parse_url("https://Gist.GitHubUserContent.com/u/1/raw/x.yaml");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->scheme, "https");
  EXPECT_EQ(p->host, "gist.githubusercontent.com");
  EXPECT_EQ(p->port, 443);
  EXPECT_FALSE(p->has_userinfo);
  p = parse_url("https://[::1]:8443/x");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->host, "::1");
  EXPECT_EQ(p->port, 8443);
  p = parse_url("https://a:b@example.com/");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->has_userinfo);
  EXPECT_EQ(p->host, "example.com");
}

TEST_F(UrlSource, UrlHostsNameAPortOrMeanTheDefaultOne) {
  GistConfig c = config();
  c.url_hosts = {"raw.example.com", "mirror.example.com:8443", "[fd00::5]:9443"};
  UrlDesignSource s(http, c);
  auto why = [&](const std::string& ref) {
    std::string error;
    return s.target(ref, error) ? std::string("accepted") : error;
  };
  EXPECT_EQ(why("https://raw.example.com/x.yaml"), "accepted");
  EXPECT_EQ(why("https://raw.example.com:443/x.yaml"), "accepted");
  EXPECT_EQ(why("https://raw.example.com:8443/x.yaml"),
            "host raw.example.com:8443 is not one jarvis fetches designs from (gist.url_hosts)");
  EXPECT_EQ(why("https://mirror.example.com:8443/x.yaml"), "accepted");
  EXPECT_EQ(why("https://mirror.example.com/x.yaml"),
            "host mirror.example.com is not one jarvis fetches designs from (gist.url_hosts)");
  EXPECT_EQ(why("https://[fd00::5]:9443/x.yaml"), "accepted");
}

// Issue 17, finding 12: credentials in URLs are hidden wherever URLs are stored or logged.
TEST(UrlRedact, TokensAndPasswordsInUrlsAreRedacted) {
  EXPECT_EQ(redact_url_credentials("plan https://raw.example.com/x.yaml?access_token=ghp_abc123&ref=main"),
            "plan https://raw.example.com/x.yaml?access_token=[redacted]&ref=main");
  EXPECT_EQ(redact_url_credentials("deploy https://alice:s3cret@raw.example.com/x.yaml"),
            "deploy https://[redacted]@raw.example.com/x.yaml");
  EXPECT_EQ(redact_url_credentials("https://ghp_abc@example.com"), "https://[redacted]@example.com");
  EXPECT_EQ(redact_url_credentials("a https://h/x?token=1;sig=2&X-Amz-Signature=3#id_token=4 b"),
            "a https://h/x?token=[redacted];sig=[redacted]&X-Amz-Signature=[redacted]#id_token=[redacted] b");
  EXPECT_EQ(redact_url_credentials("'https://h/?private%5Ftoken=abc' and http://h2/?api_key=k"),
            "'https://h/?private%5Ftoken=[redacted]' and http://h2/?api_key=[redacted]");
  EXPECT_EQ(redact_url_credentials("https://h/x.yaml?ref=main&page=2"), "https://h/x.yaml?ref=main&page=2");
  EXPECT_EQ(redact_url_credentials("no url here: token=abc"), "no url here: token=abc");
  EXPECT_EQ(redact_url_credentials("cn=loki,ou=Hosts"), "cn=loki,ou=Hosts");
  EXPECT_EQ(redact_url_credentials("://x?token=1"), "://x?token=1") << "no scheme, no URL";
}

TEST(Ldap, FilterValuesAreEscapedPerRfc4515) {
  EXPECT_EQ(ldap_escape_filter_value("loki"), "loki");
  EXPECT_EQ(ldap_escape_filter_value("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
  EXPECT_EQ(ldap_escape_filter_value("a\\b"), "a\\5cb");
  EXPECT_EQ(ldap_escape_filter_value(std::string("a\0b", 3)), "a\\00b");
  EXPECT_EQ(ldap_escape_dn_value("a,b+c"), "a\\,b\\+c");
  EXPECT_EQ(ldap_escape_dn_value(" #x "), "\\ #x\\ ");
  EXPECT_TRUE(is_ldap_attribute_name("cn"));
  EXPECT_TRUE(is_ldap_attribute_name("2.5.4.3"));
  EXPECT_FALSE(is_ldap_attribute_name("cn)(uid"));
  EXPECT_FALSE(is_ldap_attribute_name("1cn"));
}

// Issue 17, finding 24: libldap drops whitespace around a value, TAB and LF included, so an
// unescaped one at either end was lost (and a name with one named another entry).
TEST(Ldap, DnValuesSurviveLibldapsParserWhateverTheyHold) {
  for (std::string v : {std::string("\tloki"), std::string("loki\t"), std::string("\nloki\n"),
                        std::string("lo\r\nki"), std::string(" loki "), std::string("#loki"),
                        std::string("a,b+c=d;e<f>g\"h\\i"), std::string("lo\0ki", 5),
                        std::string("\x7f\x01"), std::string("caf\xc3\xa9")}) {
    std::string escaped = ldap_escape_dn_value(v);
    auto rdn = ldap_first_rdn("cn=" + escaped + ",ou=Hosts,dc=example,dc=com");
    ASSERT_TRUE(rdn) << escaped;
    EXPECT_EQ(rdn->second, v) << escaped;
    EXPECT_EQ(escaped.find_first_of("\t\n\r"), std::string::npos) << escaped;
  }
  EXPECT_EQ(ldap_escape_dn_value("\tloki\n"), "\\09loki\\0a");
}

TEST(Ldap, DnsAreComparedNormalized) {
  EXPECT_TRUE(ldap_dn_within("cn=loki,ou=Hosts,dc=example,dc=com", "ou=hosts, dc=Example,dc=com"));
  EXPECT_TRUE(ldap_dn_within("ou=Hosts,dc=example,dc=com", "ou=Hosts,dc=example,dc=com"));
  EXPECT_FALSE(ldap_dn_within("cn=admin,dc=example,dc=com", "ou=Hosts,dc=example,dc=com"));
  EXPECT_FALSE(ldap_dn_within("cn=x,ou=NotHosts,dc=example,dc=com", "ou=Hosts,dc=example,dc=com"));
  EXPECT_FALSE(ldap_dn_within("not a dn", "ou=Hosts,dc=example,dc=com"));
  auto rdn = ldap_first_rdn("cn=lo\\,ki,ou=Hosts");
  ASSERT_TRUE(rdn);
  EXPECT_EQ(rdn->first, "cn");
  EXPECT_EQ(rdn->second, "lo,ki");
}

TEST(Ldap, AnEntryBecomesADesign) {
  LdapEntry e;
  e.dn = "cn=loki,ou=Hosts,dc=example,dc=com";
  e.attributes = {{"cn", {"loki.example.com", "loki"}},
                  {"associatedDomain", {"loki.example.com"}},
                  {"ipHostNumber", {"10.0.0.7", "fd00::7"}},
                  {"jarvisSize", {"007"}}};
  LdapSourceConfig config;
  config.defaults = {{"instance.provider", "sandbox"}, {"instance.size", "999"}};
  std::string error;
  auto d = parse_design(e.dn, design_text_from_entry(e, config), error);
  ASSERT_TRUE(d) << error << "\n" << design_text_from_entry(e, config);
  EXPECT_EQ(d->hostname, "loki") << "the entry's own name among its cn values";
  const YAML::Node& root = d->root;
  EXPECT_EQ(root["instance"]["fqdn"].Scalar(), "loki.example.com");
  ASSERT_TRUE(root["instance"]["ip"].IsSequence()) << "several values become a list";
  EXPECT_EQ(root["instance"]["ip"][1].Scalar(), "fd00::7");
  EXPECT_EQ(root["instance"]["provider"].Scalar(), "sandbox") << "a default fills a gap";
  EXPECT_EQ(root["instance"]["size"].Scalar(), "007") << "the entry wins over a default";
  EXPECT_NE(d->text.find("# from LDAP: cn=loki,ou=Hosts,dc=example,dc=com"), std::string::npos);
}

// Issue 17, finding 15: the DN went into the design's first line by concatenation, so a DN
// with a line break in it added top-level keys of its own choosing.
TEST(Ldap, ADnWithALineBreakCannotAddKeysToTheDesign) {
  LdapSourceConfig config;
  for (std::string brk : {"\n", "\r", "\r\n", "\xc2\x85", "\xe2\x80\xa8"}) {
    LdapEntry e;
    e.dn = "cn=loki" + brk + "pipeline: evil" + brk + "injected: {a: 1},ou=Hosts,dc=example,dc=com";
    e.attributes = {{"cn", {"loki"}}, {"description", {"two" + brk + "lines: here"}}};
    std::string text = design_text_from_entry(e, config);
    std::string error;
    auto d = parse_design(e.dn, text, error);
    ASSERT_TRUE(d) << error << "\n" << text;
    const YAML::Node& root = d->root;
    EXPECT_FALSE(root["pipeline"]) << text;
    EXPECT_FALSE(root["injected"]) << text;
    EXPECT_EQ(root.size(), 1u) << text;
    EXPECT_EQ(root["instance"]["description"].Scalar(), "two" + brk + "lines: here");
    EXPECT_TRUE(has_control_characters_in_dn(e.dn));
    EXPECT_EQ(text.rfind("# from LDAP: cn=loki?", 0), 0u) << text;
  }
  EXPECT_FALSE(has_control_characters_in_dn("cn=caf\xc3\xa9,ou=Hosts"));
  // Refused before any connection, from chat or from the directory.
  boost::asio::io_context io;
  config.base = "ou=Hosts,dc=example,dc=com";
  LdapDesignSource s(io, config);
  std::string error;
  EXPECT_FALSE(s.load("cn=loki\ninjected: 1,ou=Hosts,dc=example,dc=com", error));
  EXPECT_EQ(error, "the LDAP name contains control characters or line breaks");
  EXPECT_FALSE(s.load("cn=lo\tki", error));
  EXPECT_EQ(error, "the LDAP name contains control characters or line breaks");
}

// Found by fuzz_ldap: yaml-cpp writes a CR raw in a plain scalar, which it reads back but
// other YAML readers (PyYAML, in Python workers) take as a line break: such values are
// double-quoted with the CR escaped.
TEST(Ldap, ValuesWithControlCharactersAreQuoted) {
  LdapEntry e;
  e.dn = "cn=tnull,ou=Hosts,dc=example,dc=com";
  e.attributes = {{"cn", {"tnull"}}, {"description", {"t\r"}}, {"l", {"a\rb\x7f"}}};
  std::string text = design_text_from_entry(e, LdapSourceConfig{});
  EXPECT_NE(text.find("description: \"t\\r\""), std::string::npos) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  auto root = load_mapping_document(text, design_limits());
  EXPECT_EQ(root["instance"]["description"].Scalar(), "t\r");
  EXPECT_EQ(root["instance"]["datacenter"].Scalar(), "a\rb\x7f");
}

TEST(Ldap, OnlyNamesWithEqualsSignsAreLdapRefs) {
  boost::asio::io_context io;
  LdapSourceConfig config;
  LdapDesignSource s(io, config);
  EXPECT_TRUE(s.handles("cn=loki"));
  EXPECT_TRUE(s.handles("cn=loki,ou=Hosts,dc=example,dc=com"));
  EXPECT_FALSE(s.handles("loki"));
  EXPECT_FALSE(s.handles("https://gist.github.com/1?a=b"));
  std::string error;
  EXPECT_FALSE(s.load("cn=loki", error));
  EXPECT_EQ(error, "ldap.base is not configured, so cn=loki cannot be looked up; use the full DN");
  config.base = "ou=Hosts,dc=example,dc=com";
  LdapDesignSource based(io, config);
  EXPECT_FALSE(based.load("uid=root,ou=People,dc=example,dc=com", error));
  EXPECT_EQ(error, "uid=root,ou=People,dc=example,dc=com is outside ou=Hosts,dc=example,dc=com, where jarvis reads hosts");
  EXPECT_FALSE(based.load("c n=loki", error));
  EXPECT_EQ(error, "'c n=loki' is not an LDAP name: use attribute=value, e.g. cn=loki");
}

// A TCP server that accepts and then says nothing (ldaps://: the TLS handshake stalls), or
// that answers StartTLS with success and then says nothing (the handshake after it stalls).
class SilentLdapServer {
 public:
  explicit SilentLdapServer(bool answer_starttls) : starttls_(answer_starttls) {
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_, 16) != 0 ||
        ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("cannot listen");
    port = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~SilentLdapServer() {
    stop_ = true;
    thread_.join();
    for (int fd : connections_) ::close(fd);
    ::close(listen_);
  }
  int port = 0;
  std::atomic<int> accepted{0};

 private:
  void serve() {
    while (!stop_) {
      pollfd p{listen_, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      int fd = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      connections_.push_back(fd);
      ++accepted;
      if (starttls_) {
        char request[512];
        pollfd r{fd, POLLIN, 0};
        if (::poll(&r, 1, 2000) == 1 && ::recv(fd, request, sizeof request, 0) > 0) {
          // ExtendedResponse to message 1: success, and then silence.
          static const unsigned char ok[] = {0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a,
                                             0x01, 0x00, 0x04, 0x00, 0x04, 0x00};
          (void)!::send(fd, ok, sizeof ok, MSG_NOSIGNAL);
        }
      }
    }
  }
  bool starttls_;
  int listen_ = -1;
  std::atomic<bool> stop_{false};
  std::vector<int> connections_;
  std::thread thread_;
};

template <typename Predicate>
bool run_until(boost::asio::io_context& io, Predicate done, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < end) {
    io.restart();
    io.run_for(std::chrono::milliseconds(20));
  }
  return done();
}

// Issue 17, finding 10: libldap 2.5 never times out a stalled TLS handshake (and spins); the
// lookup's deadline answers the caller and shuts the socket down, which frees the thread.
TEST(LdapDeadline, AStalledTlsHandshakeTimesOutAndFreesItsThread) {
  using namespace std::chrono_literals;
  for (bool starttls : {false, true}) {
    SCOPED_TRACE(starttls ? "StartTLS, then silence" : "ldaps://, silence");
    SilentLdapServer server(starttls);
    boost::asio::io_context io;
    LdapSourceConfig config;
    config.connect.uri = std::string(starttls ? "ldap" : "ldaps") + "://127.0.0.1:" + std::to_string(server.port);
    config.connect.timeout = 1s;  // libldap's own timeouts, which do not cover the handshake
    config.lookup_timeout = 2s;
    config.base = "ou=Hosts,dc=example,dc=com";
    config.threads = 1;
    auto start = std::chrono::steady_clock::now();
    {
      LdapDesignSource source(io, config);
      std::optional<std::string> answer;
      source.fetch("cn=loki", [&](std::optional<Design> d, std::string error) {
        EXPECT_FALSE(d);
        answer = error;
      });
      ASSERT_TRUE(run_until(io, [&] { return answer.has_value(); }, 10s)) << "no answer";
      EXPECT_EQ(*answer, "LDAP did not answer within 2s (ldap.lookup_timeout); try again later");
      EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
      EXPECT_EQ(server.accepted, 1);
      // The pool's thread comes back: the stalled call ended when its socket was shut down.
      EXPECT_TRUE(run_until(io, [&] { return source.in_flight() == 0; }, 3s)) << "the LDAP thread is still stuck";
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 6s) << "the source's destructor waited";
  }
}

TEST(LdapDeadline, LookupsBeyondThePoolAndItsQueueAreRefused) {
  using namespace std::chrono_literals;
  SilentLdapServer server(false);
  boost::asio::io_context io;
  LdapSourceConfig config;
  config.connect.uri = "ldaps://127.0.0.1:" + std::to_string(server.port);
  config.lookup_timeout = 2s;
  config.base = "ou=Hosts,dc=example,dc=com";
  config.threads = 1;
  config.max_queued = 1;
  LdapDesignSource source(io, config);
  std::vector<std::optional<std::string>> answers(3);
  for (size_t i = 0; i < answers.size(); ++i)
    source.fetch("cn=loki", [&answers, i](std::optional<Design>, std::string error) { answers[i] = error; });
  ASSERT_TRUE(run_until(io, [&] { return answers[2].has_value(); }, 1s));
  EXPECT_EQ(*answers[2], "LDAP is busy (2 lookups in flight); try again in a moment");
  EXPECT_FALSE(answers[0] || answers[1]) << "the busy answer comes at once";
  ASSERT_TRUE(run_until(io, [&] { return answers[0] && answers[1]; }, 6s));
  EXPECT_EQ(*answers[0], "LDAP did not answer within 2s (ldap.lookup_timeout); try again later");
  EXPECT_EQ(*answers[1], *answers[0]) << "the queued one has the same deadline";
  EXPECT_TRUE(run_until(io, [&] { return source.in_flight() == 0; }, 3s)) << "both threads' calls ended";
}

TEST(Json, EmojiAsSurrogatePairsAreRead) {
  // Slack writes characters beyond U+FFFF as escaped surrogate pairs; yaml-cpp alone refuses them.
  auto o = parse_json_object(R"({"text":"ship it \ud83d\ude80 \\ud83d done","lone":"\udc00"})", 1024);
  EXPECT_EQ(json_text(o, "text"), "ship it \xf0\x9f\x9a\x80 \\ud83d done") << "an escaped backslash stays one";
  EXPECT_EQ(json_text(o, "lone"), "\xef\xbf\xbd");
  EXPECT_EQ(json_quote("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
  EXPECT_THROW(parse_json_object(std::string(2000, ' ') + "{}", 1024), std::runtime_error);
}

TEST(Slack, TextIsUnescapedAndLinksUnwrapped) {
  EXPECT_EQ(slack_unescape("deploy <https://gist.github.com/aa11|gist.github.com/aa11>"),
            "deploy https://gist.github.com/aa11");
  EXPECT_EQ(slack_unescape("deploy <https://gist.github.com/aa11>"), "deploy https://gist.github.com/aa11");
  EXPECT_EQ(slack_unescape("a &lt;b&gt; &amp;lt;"), "a <b> &lt;");
  EXPECT_EQ(slack_unescape("<@U1> hi"), "<@U1> hi");
  EXPECT_EQ(slack_escape("<@U123>: say \"deploy <design>\" & wait", "U123"),
            "<@U123>: say \"deploy &lt;design&gt;\" &amp; wait");
}

TEST(Slack, OnlyTheBotsOwnAddressingMentionsAnyone) {
  EXPECT_EQ(slack_escape("<@U123>: status <@U0CEO> <!channel> <!here> <!subteam^S1>", "U123"),
            "<@U123>: status @U0CEO &lt;!channel&gt; &lt;!here&gt; &lt;!subteam^S1&gt;");
  EXPECT_EQ(slack_escape("<@U0CEO>: hi"), "@U0CEO: hi") << "a leading mention of someone not addressed";
  EXPECT_EQ(slack_escape("<@U0CEO>: hi", "U123"), "@U0CEO: hi");
  EXPECT_EQ(slack_escape("loki: running (job 3, started by <@U123>)", "U123"), "loki: running (job 3, started by @U123)");
  EXPECT_EQ(slack_escape("a <@U1 b> <@> &amp;"), "a &lt;@U1 b&gt; &lt;@&gt; &amp;amp;");
}

TEST(Acl, AnAnonymousOccupantGetsOpenCommandsOnly) {
  Acl acl({AclRule{{"*"}, {"*"}, {"*"}}});
  Identity known{"xmpp", "alice", "alice@example.com", "", false};
  Identity hidden{"xmpp", "alice@example.com", "ops@conference.example.com/alice@example.com", "", true};
  EXPECT_TRUE(acl.allows(known, "ops@conference.example.com", Verb::Deploy));
  EXPECT_FALSE(acl.allows(hidden, "ops@conference.example.com", Verb::Deploy)) << "even a rule for everyone";
  EXPECT_TRUE(acl.allows(hidden, "ops@conference.example.com", Verb::Status));
}

}  // namespace
}  // namespace jarvis
