#include <gtest/gtest.h>

#include <chrono>

#include "bot/util/yaml_doc.h"
#include "tests/test_support.h"

namespace jarvis {
namespace {

std::optional<std::string> check(const std::string& text) {
  return check_mapping_document(text, YamlLimits{});
}

TEST(YamlDoc, AcceptsOneMapping) {
  EXPECT_FALSE(check("a: 1\nb: [x, y]\nc: {d: e}\n"));
  EXPECT_FALSE(check("---\na: 1\n...\n"));
}

TEST(YamlDoc, RefusesWhatIsNotAMapping) {
  EXPECT_EQ(*check("- a\n- b\n"), "the document is a list at line 1, column 1, not a mapping");
  EXPECT_EQ(*check("just words\n"), "the document is a scalar at line 1, column 1, not a mapping");
  EXPECT_EQ(*check("# only a comment\n"), "there is no YAML document");
  EXPECT_EQ(*check("a: 1\n---\nb: 2\n"), "there is more than one YAML document");
}

TEST(YamlDoc, SyntaxErrorsNameTheLine) {
  auto e = check("a: 1\nb: 2\nc: [unclosed\n");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->rfind("line ", 0), 0u) << *e;
  auto e2 = check("a: 1\n  b: 2\n");
  ASSERT_TRUE(e2);
  EXPECT_NE(e2->find("line 2"), std::string::npos) << *e2;
}

TEST(YamlDoc, DepthIsBounded) {
  std::string deep = "a: " + std::string(200, '[') + std::string(200, ']') + "\n";
  auto e = check(deep);
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("nested deeper than 64 levels"), std::string::npos) << *e;
  // Far deeper than yaml-cpp's own recursion guard: still a clean refusal, no crash.
  std::string abyss = "a: " + std::string(100000, '[');
  EXPECT_TRUE(check(abyss));
}

TEST(YamlDoc, AnAliasBombIsRefusedWithoutExpandingIt) {
  std::string bomb = testing::alias_bomb('z', 9);
  auto start = std::chrono::steady_clock::now();
  auto e = check(bomb);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("expands to more than"), std::string::npos) << *e;
  EXPECT_LT(took, std::chrono::seconds(1));
}

// Issue 17, findings 0 and 22: an alias to an anchor whose collection is still open is a
// document that contains itself; it used to count as one node and pass.
TEST(YamlDoc, ARecursiveDocumentIsRefused) {
  for (const char* text : {"x: &b [*b]\n", ": &b [*b]\n", "x: &b {y: [1, {z: *b}]}\n",
                           "a: 1\nx: &b\n  - &c [*b]\n", "x: &b [&c [*c]]\n",
                           "? &k [*k]\n: v\n", "&r {a: *r}\n",
                           // a redefined anchor name: the alias means the newest, still open
                           "a: &b [1]\nc: &b [*b]\n"}) {
    auto e = check(text);
    ASSERT_TRUE(e) << text;
    EXPECT_NE(e->find("recursive document"), std::string::npos) << text << ": " << *e;
    EXPECT_THROW(load_mapping_document(text, YamlLimits{}), std::runtime_error) << text;
  }
  // An alias to a collection that is already closed is an ordinary shared node.
  EXPECT_FALSE(check("a: &b [1, 2]\nc: [*b, *b]\nd: &e {f: *b}\ng: *e\n"));
  EXPECT_FALSE(check("a: &b [1]\nc: &b [2]\nd: *b\n"));
}

TEST(YamlDoc, SizeIsBounded) {
  YamlLimits small;
  small.max_bytes = 100;
  auto e = check_mapping_document("a: '" + std::string(200, 'x') + "'\n", small);
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("over the 100-byte limit"), std::string::npos);
}

TEST(YamlDoc, ScalarAtFollowsDottedPaths) {
  auto root = load_mapping_document("instance:\n  hostname: loki\n  size: 512\nlist: [1]\n", YamlLimits{});
  EXPECT_EQ(scalar_at(root, "instance.hostname"), "loki");
  EXPECT_EQ(scalar_at(root, "instance.size"), "512");
  EXPECT_FALSE(scalar_at(root, "instance.missing"));
  EXPECT_FALSE(scalar_at(root, "list"));
  EXPECT_FALSE(scalar_at(root, "instance.hostname.deeper"));
  EXPECT_FALSE(root["instance"]["missing"]) << "lookups must not insert keys";
}

TEST(YamlDoc, BlankMeansNothingPrinted) {
  EXPECT_TRUE(is_blank(""));
  EXPECT_TRUE(is_blank(" \n\t\n"));
  EXPECT_FALSE(is_blank("a: 1"));
}

}  // namespace
}  // namespace jarvis
