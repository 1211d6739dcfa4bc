#include <gtest/gtest.h>

#include <cctype>

#include "bot/pipeline/pipeline.h"
#include "tests/test_support.h"

namespace jarvis::testing {
namespace {

struct Loaded {
  std::optional<Pipeline> pipeline;
  std::vector<std::string> errors;
};

Loaded load(TempDir& dir, const std::string& name, const std::string& text) {
  write_file(dir.file(name + ".yaml"), text);
  Loaded l;
  l.pipeline = PipelineSet::load_file(dir.file(name + ".yaml"), PipelineDefaults{}, l.errors);
  return l;
}

TEST(Pipeline, LoadsTasksAsStringsOrMappings) {
  TempDir dir;
  auto l = load(dir, "redeploy",
                "name: redeploy\ndescription: test\nmatch:\n  provider: linode\ntasks:\n"
                "  - linode:power_off\n"
                "  - task: linode:delete\n    timeout: 90s\n    retries: 2\n    destructive: true\n");
  ASSERT_TRUE(l.pipeline) << l.errors.at(0);
  const auto& p = *l.pipeline;
  ASSERT_EQ(p.tasks.size(), 2u);
  EXPECT_EQ(p.tasks[0].name, "linode:power_off");
  EXPECT_EQ(p.tasks[0].timeout, PipelineDefaults{}.timeout);
  EXPECT_EQ(p.tasks[1].timeout, std::chrono::seconds(90));
  EXPECT_EQ(p.tasks[1].retries, 2);
  EXPECT_TRUE(p.tasks[1].destructive);
  EXPECT_EQ(p.match.at(0), std::make_pair(std::string("provider"), std::string("linode")));
}

TEST(Pipeline, ErrorsAreFileColonLine) {
  TempDir dir;
  auto l = load(dir, "bad",
                "name: bad\ntasks:\n  - ok:task\n  - task: dns:update\n    timout: 30s\n"
                "  - Not A Task\n  - task: x:y\n    timeout: soon\n  - task: a:b\n    retries: -1\n");
  EXPECT_FALSE(l.pipeline);
  std::string f = dir.file("bad.yaml");
  ASSERT_EQ(l.errors.size(), 4u);
  EXPECT_EQ(l.errors[0], f + ":5: unknown task key 'timout' (expected task, timeout, retries, destructive)");
  EXPECT_EQ(l.errors[1].rfind(f + ":6: 'Not A Task' is not a task name", 0), 0u) << l.errors[1];
  EXPECT_EQ(l.errors[2], f + ":8: timeout must be a duration like 500ms, 30s, 5m or 1h");
  EXPECT_EQ(l.errors[3], f + ":10: retries must be a whole number from 0 to 20");
}

TEST(Pipeline, BrokenYamlNamesTheLine) {
  TempDir dir;
  auto l = load(dir, "broken", "name: broken\ntasks:\n  - a:b\n  - [unclosed\n");
  ASSERT_EQ(l.errors.size(), 1u);
  EXPECT_EQ(l.errors[0].rfind(dir.file("broken.yaml") + ":", 0), 0u) << l.errors[0];
}

TEST(Pipeline, TaskNamesCannotEscapeTheWorkersDirectory) {
  EXPECT_TRUE(is_valid_task_name("dns:update"));
  EXPECT_TRUE(is_valid_task_name("ssh:wait_fingerprints"));
  EXPECT_FALSE(is_valid_task_name("../bin:sh"));
  EXPECT_FALSE(is_valid_task_name("dns:../../etc"));
  EXPECT_FALSE(is_valid_task_name("dns"));
  EXPECT_FALSE(is_valid_task_name("dns:update:x"));
  EXPECT_FALSE(is_valid_task_name(":update"));
}

TEST(Pipeline, NameMustMatchTheFile) {
  TempDir dir;
  auto l = load(dir, "one", "name: two\ntasks: [a:b]\n");
  ASSERT_EQ(l.errors.size(), 1u);
  EXPECT_NE(l.errors[0].find("differs from the file name 'one'"), std::string::npos);
}

TEST(Pipeline, SelectionPicksTheMostSpecificMatch) {
  TempDir dir;
  write_file(dir.file("linode.yaml"), "name: linode\nmatch: {provider: linode}\ntasks: [a:b]\n");
  write_file(dir.file("linode-atl.yaml"),
             "name: linode-atl\nmatch: {provider: linode, datacenter: atlanta}\ntasks: [a:b]\n");
  write_file(dir.file("generic.yaml"), "name: generic\ntasks: [a:b]\n");
  write_file(dir.file("ec2.yaml"), "name: ec2\nmatch: {provider: ec2}\ntasks: [a:b]\n");
  write_file(dir.file("ec2-too.yaml"), "name: ec2-too\nmatch: {provider: EC2}\ntasks: [a:b]\n");
  std::vector<std::string> errors;
  auto set = PipelineSet::load_dir(dir.path(), PipelineDefaults{}, errors);
  ASSERT_TRUE(errors.empty()) << errors[0];
  std::string error;
  auto atl = make_design("loki", "").root;
  atl["instance"]["provider"] = "Linode";
  atl["instance"]["datacenter"] = "Atlanta";
  EXPECT_EQ(set.select(atl, std::nullopt, error)->name, "linode-atl");
  auto plain = make_design("loki").root;
  plain["instance"]["provider"] = "linode";
  EXPECT_EQ(set.select(plain, std::nullopt, error)->name, "linode");
  auto ec2 = make_design("loki").root;
  ec2["instance"]["provider"] = "ec2";
  EXPECT_FALSE(set.select(ec2, std::nullopt, error));
  EXPECT_NE(error.find("pipelines ec2-too and ec2 all match"), std::string::npos) << error;
  auto none = make_design("loki").root;
  EXPECT_FALSE(set.select(none, std::nullopt, error));
  EXPECT_NE(error.find("no pipeline matches this design (instance.provider is 'test')"),
            std::string::npos) << error;
  EXPECT_EQ(set.select(none, std::string("generic"), error)->name, "generic");
  EXPECT_FALSE(set.select(none, std::string("nope"), error));
  EXPECT_EQ(error, "there is no pipeline named 'nope'");
  EXPECT_EQ(set.explain(*set.find("linode-atl"), atl, std::nullopt),
            "chosen because instance.provider is 'linode' and instance.datacenter is 'atlanta' "
            "(match of linode-atl); linode matches too, less specifically");
  EXPECT_EQ(set.explain(*set.find("linode"), plain, std::nullopt),
            "chosen because instance.provider is 'linode' (match of linode)");
  EXPECT_EQ(set.explain(*set.find("generic"), none, std::string("generic")),
            "pipeline generic named with --pipeline (or \"with generic\")");
}

TEST(Pipeline, TheShippedPipelinesLoad) {
  std::vector<std::string> errors;
  auto set = PipelineSet::load_dir(JARVIS_SOURCE_DIR "/pipelines", PipelineDefaults{}, errors);
  EXPECT_TRUE(errors.empty()) << errors.at(0);
  ASSERT_TRUE(set.find("redeploy-sandbox"));
  EXPECT_EQ(set.find("redeploy-sandbox")->tasks.size(), 19u);
}

// The seed: "deploy vmware, linode, or ec2 instances". Each provider's design gets its own
// 19-stage redeploy, or stages 6-19 with instance.deployment: new, and the provider's five
// cloud stages at 4, 5, 7, 8 and 13 (2, 3 and 8 of 14 for a new host).
TEST(Pipeline, EachProviderSelectsItsRedeployAndDeploy) {
  std::vector<std::string> errors;
  auto set = PipelineSet::load_dir(JARVIS_SOURCE_DIR "/pipelines", PipelineDefaults{}, errors);
  ASSERT_TRUE(errors.empty()) << errors.at(0);
  for (auto [provider, module] : {std::pair{"Linode", "linode"}, {"ec2", "ec2"}, {"VMware", "libvirt"},
                                  {"kvm", "libvirt"}}) {
    std::string lower = provider;
    for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto design = make_design("loki").root;
    design["instance"]["provider"] = provider;
    std::string error;
    const Pipeline* p = set.select(design, std::nullopt, error);
    ASSERT_TRUE(p) << provider << ": " << error;
    EXPECT_EQ(p->name, "redeploy-" + lower);
    ASSERT_EQ(p->tasks.size(), 19u);
    EXPECT_EQ(p->tasks[3].name, std::string(module) + ":power_off");
    EXPECT_TRUE(p->tasks[3].destructive && p->tasks[4].destructive);
    EXPECT_EQ(p->tasks[6].name, std::string(module) + ":create");
    EXPECT_EQ(p->tasks[7].name, std::string(module) + ":get_ip");
    EXPECT_EQ(p->tasks[12].name, std::string(module) + ":set_boot");
    EXPECT_EQ(p->tasks[9].name, "dns:update");
    design["instance"]["deployment"] = "new";
    p = set.select(design, std::nullopt, error);
    ASSERT_TRUE(p) << provider << ": " << error;
    EXPECT_EQ(p->name, "deploy-" + lower);
    ASSERT_EQ(p->tasks.size(), 14u);
    EXPECT_EQ(p->tasks[0].name, "secrets:root_password");
    EXPECT_EQ(p->tasks[1].name, std::string(module) + ":create");
    for (const auto& t : p->tasks) EXPECT_FALSE(t.destructive) << t.name;
  }
}

}  // namespace
}  // namespace jarvis::testing
