// The pieces of the HTTP front and hooks that need no server: tokens, roles, signatures,
// URL decoding. The server itself is tested end to end in tests/integration/http_*.py.
#include <gtest/gtest.h>

#include <set>

#include "bot/hooks/hook_dispatcher.h"
#include "bot/http/http_server.h"
#include "bot/http/tokens.h"

namespace jarvis::testing {
namespace {

TEST(HttpTokens, AreRandomAndOnlyTheirSha256IsKept) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string t = http::new_token();
    EXPECT_EQ(t.rfind("jv_", 0), 0u);
    EXPECT_EQ(t.size(), 3u + 43u) << "256 bits in base64url";
    EXPECT_EQ(t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", 3),
              std::string::npos);
    EXPECT_TRUE(seen.insert(t).second);
  }
  EXPECT_EQ(http::token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(http::same_secret("abc", "abc"));
  EXPECT_FALSE(http::same_secret("abc", "abd"));
  EXPECT_FALSE(http::same_secret("abc", "abcd"));
}

TEST(HttpTokens, NamesAreOneWordAndRolesNestRights) {
  EXPECT_TRUE(http::valid_token_name("ci-deploy.1_x"));
  EXPECT_FALSE(http::valid_token_name(""));
  EXPECT_FALSE(http::valid_token_name("two words"));
  EXPECT_FALSE(http::valid_token_name("a:b"));
  EXPECT_FALSE(http::valid_token_name(std::string(65, 'a')));
  using http::Role;
  for (Verb v : {Verb::Status, Verb::Jobs, Verb::Log, Verb::Plan, Verb::Audit, Verb::Help}) {
    EXPECT_TRUE(http::role_allows(Role::Read, v)) << verb_name(v);
  }
  for (Verb v : {Verb::Deploy, Verb::Cancel, Verb::Retry}) {
    EXPECT_FALSE(http::role_allows(Role::Read, v)) << verb_name(v);
    EXPECT_TRUE(http::role_allows(Role::Operate, v)) << verb_name(v);
    EXPECT_TRUE(http::role_allows(Role::Admin, v)) << verb_name(v);
  }
  EXPECT_EQ(http::parse_role("operate"), Role::Operate);
  EXPECT_FALSE(http::parse_role("root"));
}

TEST(Hooks, TheSignatureIsHmacSha256OfTheBody) {
  // RFC 4231, test case 2.
  EXPECT_EQ(hook_signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(HttpServer, PercentDecodingLeavesBrokenEscapesAlone) {
  EXPECT_EQ(http::percent_decode("a%2Fb%20c"), "a/b c");
  EXPECT_EQ(http::percent_decode("a+b", true), "a b");
  EXPECT_EQ(http::percent_decode("a+b"), "a+b");
  EXPECT_EQ(http::percent_decode("100%"), "100%");
  EXPECT_EQ(http::percent_decode("%zz%4"), "%zz%4");
}

}  // namespace
}  // namespace jarvis::testing
