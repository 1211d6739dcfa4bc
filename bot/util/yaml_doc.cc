#include "bot/util/yaml_doc.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <vector>

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

// Counts depth, nodes, aliases and the size the document would have with every alias
// expanded, as the parser streams events; throws at the first excess.
class LimitChecker : public YAML::EventHandler {
 public:
  explicit LimitChecker(const YamlLimits& limits) : limits_(limits) {}

  std::optional<std::string> root_problem;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t anchor) override { leaf(m, "null", anchor); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t anchor) override {
    if (++aliases_ > limits_.max_aliases)
      throw LimitExceeded(where(m) + ": more than " + std::to_string(limits_.max_aliases) +
                          " aliases");
    // An alias to an anchor whose collection is still open makes the document contain
    // itself (`x: &b [*b]`): infinite once expanded, and yaml-cpp's emitter (or any walk)
    // recurses until the stack overflows. Refused here, before anything builds it.
    for (const Open& o : open_)
      if (o.anchor != YAML::NullAnchor && o.anchor == anchor)
        throw LimitExceeded(where(m) + ": an alias refers to the collection it is inside of "
                                       "(a recursive document)");
    uint64_t size = anchor < anchor_sizes_.size() ? anchor_sizes_[anchor] : 1;
    add(m, "alias", size);
  }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                const std::string&) override {
    leaf(m, "scalar", anchor);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(m, "list", anchor);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    if (open_.empty()) root_is_map_ = true;
    open(m, "mapping", anchor);
  }
  void OnMapEnd() override { close(); }

  bool root_is_map() const { return root_is_map_; }

 private:
  struct Open {
    YAML::anchor_t anchor;
    uint64_t size;  // expanded nodes inside, this collection included
  };

  void check_root(const YAML::Mark& m, const char* kind) {
    if (open_.empty() && !root_is_map_ && !root_problem)
      root_problem = std::string("the document is a ") + kind + " at " + where(m) +
                     ", not a mapping";
  }
  void count_node(const YAML::Mark& m) {
    if (++nodes_ > limits_.max_nodes)
      throw LimitExceeded(where(m) + ": more than " + std::to_string(limits_.max_nodes) +
                          " nodes");
  }
  // Adds `size` expanded nodes to every open collection (they all contain it).
  void add(const YAML::Mark& m, const char* kind, uint64_t size) {
    check_root(m, kind);
    count_node(m);
    total_ += size;
    if (total_ > limits_.max_expanded_nodes)
      throw LimitExceeded(where(m) + ": the document expands to more than " +
                          std::to_string(limits_.max_expanded_nodes) +
                          " nodes through its aliases");
    if (!open_.empty()) open_.back().size += size;
  }
  void record_anchor(YAML::anchor_t anchor, uint64_t size) {
    if (anchor == YAML::NullAnchor) return;
    if (anchor >= anchor_sizes_.size()) anchor_sizes_.resize(anchor + 1, 1);
    anchor_sizes_[anchor] = size;
  }
  void leaf(const YAML::Mark& m, const char* kind, YAML::anchor_t anchor) {
    add(m, kind, 1);
    record_anchor(anchor, 1);
  }
  void open(const YAML::Mark& m, const char* kind, YAML::anchor_t anchor) {
    check_root(m, kind);
    count_node(m);
    ++total_;
    if (static_cast<int>(open_.size()) >= limits_.max_depth)
      throw LimitExceeded(where(m) + ": nested deeper than " +
                          std::to_string(limits_.max_depth) + " levels");
    open_.push_back({anchor, 1});
  }
  void close() {
    Open done = open_.back();
    open_.pop_back();
    record_anchor(done.anchor, done.size);
    if (!open_.empty()) open_.back().size += done.size;
  }

  const YamlLimits& limits_;
  std::vector<Open> open_;
  std::vector<uint64_t> anchor_sizes_;
  size_t nodes_ = 0;
  size_t aliases_ = 0;
  uint64_t total_ = 0;
  bool root_is_map_ = false;
};

// Sizes of the root mapping's entries and of one list's items, with aliases counted at the
// size of what they name.
class RootSizer : public YAML::EventHandler {
 public:
  explicit RootSizer(std::string_view list_key) : list_key_(list_key) {}
  RootSizes sizes;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t anchor) override { done({1, 4}, anchor, nullptr); }
  void OnAlias(const YAML::Mark&, YAML::anchor_t anchor) override {
    ExpandedSize s = anchor < anchors_.size() ? anchors_[anchor] : ExpandedSize{1, 4};
    done(s, YAML::NullAnchor, nullptr);
  }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                const std::string& text) override {
    done({1, text.size() + 4}, anchor, &text);
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(anchor, true);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(anchor, false);
  }
  void OnMapEnd() override { close(); }

 private:
  struct Frame {
    YAML::anchor_t anchor;
    ExpandedSize size;
    size_t children = 0;
  };
  bool at_root_value() const { return stack_.size() == 1 && stack_.back().children % 2 == 1; }
  void open(YAML::anchor_t anchor, bool is_list) {
    if (is_list && at_root_value() && key_ == list_key_ && !list_seen_) {
      list_seen_ = true;
      in_list_ = true;
      list_depth_ = stack_.size() + 1;
      sizes.list_items_known = true;
    }
    stack_.push_back({anchor, {1, 2}, 0});
  }
  void close() {
    Frame f = stack_.back();
    stack_.pop_back();
    if (in_list_ && stack_.size() + 1 == list_depth_) in_list_ = false;
    done(f.size, f.anchor, nullptr);
  }
  void done(ExpandedSize s, YAML::anchor_t anchor, const std::string* scalar) {
    if (anchor != YAML::NullAnchor) {
      if (anchor >= anchors_.size()) anchors_.resize(anchor + 1, ExpandedSize{1, 4});
      anchors_[anchor] = s;
    }
    if (stack_.empty()) return;
    Frame& parent = stack_.back();
    // One level deeper than its parent: a block emitter indents each of its lines by two more.
    parent.size.nodes += s.nodes;
    parent.size.bytes += s.bytes + 2 * s.nodes;
    size_t index = parent.children++;
    if (stack_.size() == 1) {
      if (index % 2 == 0) {
        key_ = scalar ? *scalar : std::string();
        key_size_ = s;
      } else {
        ExpandedSize entry = key_size_;
        entry += s;
        auto it = std::find_if(sizes.entries.begin(), sizes.entries.end(),
                               [&](const auto& e) { return e.first == key_; });
        if (it == sizes.entries.end()) sizes.entries.emplace_back(key_, entry);
        else it->second += entry;
        if (key_ == list_key_) list_seen_ = true;  // the first one counts, list or not
      }
    } else if (in_list_ && stack_.size() == list_depth_) {
      sizes.list_items.push_back(s);
    }
  }

  std::string list_key_;
  std::vector<Frame> stack_;
  std::vector<ExpandedSize> anchors_;
  std::string key_;
  ExpandedSize key_size_;
  bool list_seen_ = false;
  bool in_list_ = false;
  size_t list_depth_ = 0;
};

}  // namespace

ExpandedSize RootSizes::of(std::string_view key) const {
  ExpandedSize s;
  for (const auto& [k, v] : entries)
    if (k == key) s += v;
  return s;
}

std::optional<RootSizes> root_expanded_sizes(std::string_view text, std::string_view list_key) {
  std::istringstream in{std::string(text)};
  RootSizer sizer(list_key);
  try {
    YAML::Parser parser(in);
    if (!parser.HandleNextDocument(sizer)) return std::nullopt;
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
  return sizer.sizes;
}

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
