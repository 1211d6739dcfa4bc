#include "bot/util/yaml_doc.h"

#include <sstream>
#include <stdexcept>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

namespace jarvis {
namespace {

struct LimitExceeded : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string where(const YAML::Mark& m) {
  return "line " + std::to_string(m.line + 1) + ", column " + std::to_string(m.column + 1);
}

// Counts depth, nodes and aliases as the parser streams events; throws at the first excess.
class LimitChecker : public YAML::EventHandler {
 public:
  explicit LimitChecker(const YamlLimits& limits) : limits_(limits) {}

  std::optional<std::string> root_problem;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { node(m, "null"); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override {
    node(m, "alias");
    if (++aliases_ > limits_.max_aliases)
      throw LimitExceeded(where(m) + ": more than " + std::to_string(limits_.max_aliases) +
                          " aliases");
  }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                const std::string&) override {
    node(m, "scalar");
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    node(m, "list");
    enter(m);
  }
  void OnSequenceEnd() override { --depth_; }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    if (depth_ == 0) root_is_map_ = true;
    node(m, "mapping");
    enter(m);
  }
  void OnMapEnd() override { --depth_; }

  bool root_is_map() const { return root_is_map_; }

 private:
  void node(const YAML::Mark& m, const char* kind) {
    if (depth_ == 0 && !root_is_map_ && !root_problem)
      root_problem = std::string("the document is a ") + kind + " at " + where(m) +
                     ", not a mapping";
    if (++nodes_ > limits_.max_nodes)
      throw LimitExceeded(where(m) + ": more than " + std::to_string(limits_.max_nodes) +
                          " nodes");
  }
  void enter(const YAML::Mark& m) {
    if (++depth_ > limits_.max_depth)
      throw LimitExceeded(where(m) + ": nested deeper than " +
                          std::to_string(limits_.max_depth) + " levels");
  }

  const YamlLimits& limits_;
  int depth_ = 0;
  size_t nodes_ = 0;
  size_t aliases_ = 0;
  bool root_is_map_ = false;
};

}  // namespace

bool is_blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

std::optional<std::string> check_mapping_document(std::string_view text,
                                                  const YamlLimits& limits) {
  if (text.size() > limits.max_bytes)
    return "the document is " + std::to_string(text.size()) + " bytes, over the " +
           std::to_string(limits.max_bytes) + "-byte limit";
  if (text.find('\0') != std::string_view::npos) return "the document contains a NUL byte";
  std::istringstream in{std::string(text)};
  LimitChecker checker(limits);
  try {
    YAML::Parser parser(in);
    if (!parser.HandleNextDocument(checker)) return "there is no YAML document";
    if (checker.root_problem) return checker.root_problem;
    if (!checker.root_is_map()) return "the document is empty, not a mapping";
    LimitChecker second(limits);
    if (parser.HandleNextDocument(second)) return "there is more than one YAML document";
  } catch (const LimitExceeded& e) {
    return std::string(e.what());
  } catch (const YAML::Exception& e) {
    return where(e.mark) + ": " + e.msg;
  }
  return std::nullopt;
}

YAML::Node load_mapping_document(std::string_view text, const YamlLimits& limits) {
  if (auto problem = check_mapping_document(text, limits)) throw std::runtime_error(*problem);
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(where(e.mark) + ": " + e.msg);
  }
}

std::optional<std::string> scalar_at(const YAML::Node& root, std::string_view dotted_path) {
  YAML::Node cur = root;
  size_t start = 0;
  while (true) {
    size_t dot = dotted_path.find('.', start);
    std::string key(dotted_path.substr(start, dot == std::string_view::npos ? dotted_path.npos
                                                                              : dot - start));
    if (!cur.IsMap()) return std::nullopt;
    const YAML::Node& view = cur;  // const access never inserts a key
    YAML::Node next = view[key];
    if (!next) return std::nullopt;
    cur.reset(next);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (!cur.IsScalar()) return std::nullopt;
  return cur.Scalar();
}

}  // namespace jarvis
