#include "bot/util/secrets.h"

#include <fnmatch.h>

#include <algorithm>
#include <sstream>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>

namespace jarvis {

std::vector<std::string> SecretPatterns::defaults() {
  return {"*password*", "*passwd*", "*secret*", "*token*", "*private*key*", "*api*key*",
          "*credential*"};
}

SecretPatterns::SecretPatterns(std::vector<std::string> globs) : globs_(std::move(globs)) {}

bool SecretPatterns::matches(std::string_view key) const {
  std::string k(key);
  return std::any_of(globs_.begin(), globs_.end(), [&](const std::string& g) {
    return ::fnmatch(g.c_str(), k.c_str(), FNM_CASEFOLD) == 0;
  });
}

namespace {

// Walks the event stream keeping, for each open collection, whether it is a mapping, whether
// the next node is a key, and whether it lies under a secret key. Aliases are never expanded
// into the stream: each anchor remembers its scalar values and the anchors it refers to, and an
// alias in a secret place adds everything reachable from its anchor (each anchor once).
class SecretCollector : public YAML::EventHandler {
 public:
  explicit SecretCollector(const SecretPatterns& p) : patterns_(p) {}
  std::vector<std::string> values;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t anchor) override {
    if (at_key()) return key_done(false);
    if (anchor != YAML::NullAnchor) anchor_info(anchor) = Anchor{};
    value_done();
  }
  void OnAlias(const YAML::Mark&, YAML::anchor_t anchor) override {
    if (at_key()) {
      // An alias used as a key: it is the key it names.
      const Anchor* a = anchor < anchors_.size() ? &anchors_[anchor] : nullptr;
      return key_done(a && a->is_scalar && patterns_.matches(a->text));
    }
    if (secret_here()) add_reachable(anchor);
    if (!anchor_stack_.empty()) anchor_info(anchor_stack_.back()).refs.push_back(anchor);
    value_done();
  }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                const std::string& text) override {
    if (anchor != YAML::NullAnchor) {
      Anchor& a = anchor_info(anchor);
      a = Anchor{};
      a.is_scalar = true;
      a.text = text;
    }
    if (at_key()) return key_done(patterns_.matches(text));
    if (secret_here()) values.push_back(text);
    if (!anchor_stack_.empty()) anchor_info(anchor_stack_.back()).scalars.push_back(text);
    value_done();
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(false, anchor);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(true, anchor);
  }
  void OnMapEnd() override { close(); }

 private:
  struct Level {
    bool is_map;
    bool expect_key;
    bool key_is_secret;
    bool inherited;  // the whole collection sits under a secret key
    bool is_key;     // the collection is itself a key of its parent mapping
    YAML::anchor_t anchor;
  };
  struct Anchor {
    bool is_scalar = false;
    std::string text;                  // a scalar's value
    std::vector<std::string> scalars;  // a collection's own scalar values (not its keys)
    std::vector<YAML::anchor_t> refs;  // anchors inside it, and aliases it holds
    bool added = false;                // already added as secret
  };

  Anchor& anchor_info(YAML::anchor_t anchor) {
    if (anchor >= anchors_.size()) anchors_.resize(anchor + 1);
    return anchors_[anchor];
  }
  bool at_key() const { return !stack_.empty() && stack_.back().is_map && stack_.back().expect_key; }
  bool secret_here() const {
    if (stack_.empty()) return false;
    const Level& l = stack_.back();
    return l.inherited || (l.is_map && l.key_is_secret);
  }
  // A key (scalar, null, alias or collection) completed: its value comes next.
  void key_done(bool secret) {
    stack_.back().expect_key = false;
    stack_.back().key_is_secret = secret;
  }
  // A value (scalar, null, alias or collection) completed: the parent mapping expects a key.
  void value_done() {
    if (!stack_.empty() && stack_.back().is_map) {
      stack_.back().expect_key = true;
      stack_.back().key_is_secret = false;
    }
  }
  void open(bool is_map, YAML::anchor_t anchor) {
    bool is_key = at_key();
    bool inherited = !is_key && secret_here();
    if (anchor != YAML::NullAnchor) {
      anchor_info(anchor) = Anchor{};
      if (!is_key && !anchor_stack_.empty()) anchor_info(anchor_stack_.back()).refs.push_back(anchor);
      anchor_stack_.push_back(anchor);
    }
    stack_.push_back({is_map, true, false, inherited, is_key, anchor});
  }
  void close() {
    if (stack_.empty()) return;
    Level done = stack_.back();
    stack_.pop_back();
    if (done.anchor != YAML::NullAnchor && !anchor_stack_.empty()) anchor_stack_.pop_back();
    if (done.is_key) {
      if (!stack_.empty()) key_done(false);  // a collection as a key is nothing secret
    } else {
      value_done();
    }
  }
  // Every scalar value reachable from `anchor` through its nested anchors and aliases.
  void add_reachable(YAML::anchor_t anchor) {
    std::vector<YAML::anchor_t> todo = {anchor};
    while (!todo.empty()) {
      YAML::anchor_t a = todo.back();
      todo.pop_back();
      if (a >= anchors_.size() || anchors_[a].added) continue;
      Anchor& info = anchors_[a];
      info.added = true;
      if (info.is_scalar) values.push_back(info.text);
      values.insert(values.end(), info.scalars.begin(), info.scalars.end());
      todo.insert(todo.end(), info.refs.begin(), info.refs.end());
    }
  }

  const SecretPatterns& patterns_;
  std::vector<Level> stack_;
  std::vector<Anchor> anchors_;
  std::vector<YAML::anchor_t> anchor_stack_;  // anchored collections open, innermost last
};

// Clipboards are one document; a few more are read generously, but never without end
// (yaml-cpp's parser reports a document for a stray "," without consuming it).
constexpr int kMaxDocuments = 16;

}  // namespace

std::vector<std::string> secret_values(std::string_view yaml, const SecretPatterns& patterns) {
  std::istringstream in{std::string(yaml)};
  SecretCollector collector(patterns);
  try {
    YAML::Parser parser(in);
    for (int n = 0; n < kMaxDocuments && parser.HandleNextDocument(collector); ++n) {}
  } catch (const YAML::Exception&) {
    // Whatever was collected before the error still counts.
  }
  return collector.values;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::string_view(" \t\r\n").find(s.front()) != std::string_view::npos) s.remove_prefix(1);
  while (!s.empty() && std::string_view(" \t\r\n").find(s.back()) != std::string_view::npos) s.remove_suffix(1);
  return s;
}

// The worker runner ends a stderr line it cut short with " [line cut: N more bytes]"; returns
// where that marker starts, or npos.
size_t runner_cut_at(std::string_view text) {
  constexpr std::string_view head = " [line cut: ", tail = " more bytes]";
  size_t at = text.rfind(head);
  if (at == std::string_view::npos || text.size() < at + head.size() + tail.size() + 1) return std::string_view::npos;
  std::string_view rest = text.substr(at + head.size());
  if (rest.substr(rest.size() - tail.size()) != tail) return std::string_view::npos;
  std::string_view digits = rest.substr(0, rest.size() - tail.size());
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string_view::npos)
    return std::string_view::npos;
  return at;
}

}  // namespace

std::vector<std::string> Redactor::add(const std::vector<std::string>& values) {
  std::vector<std::string> fresh;
  auto one = [&](std::string_view v) {
    if (v.size() < kMinLength) return;
    if (std::find(values_.begin(), values_.end(), v) != values_.end()) return;
    values_.emplace_back(v);
    fresh.emplace_back(v);
  };
  for (const auto& v : values) {
    one(v);
    // A multi-line value (a PEM key) is printed a line at a time as often as whole.
    if (v.find_first_of("\r\n") == std::string::npos) continue;
    size_t start = 0;
    while (start <= v.size()) {
      size_t end = v.find_first_of("\r\n", start);
      if (end == std::string::npos) end = v.size();
      one(trim(std::string_view(v).substr(start, end - start)));
      start = end + 1;
    }
  }
  std::stable_sort(values_.begin(), values_.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return fresh;
}

std::string Redactor::replace_all(std::string_view text) const {
  if (values_.empty()) return std::string(text);
  // Every occurrence of every value is found in the original text, then each run of covered
  // bytes becomes one mark: a value is never looked for inside a mark put in for another.
  std::vector<bool> covered(text.size(), false);
  bool any = false;
  for (const auto& v : values_) {
    size_t pos = 0;
    while ((pos = text.find(v, pos)) != std::string_view::npos) {
      std::fill(covered.begin() + static_cast<std::ptrdiff_t>(pos),
                covered.begin() + static_cast<std::ptrdiff_t>(pos + v.size()), true);
      any = true;
      ++pos;
    }
  }
  if (!any) return std::string(text);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (!covered[i]) {
      out += text[i++];
      continue;
    }
    out += kMark;
    while (i < text.size() && covered[i]) ++i;
  }
  return out;
}

std::string Redactor::mask_partial_end(std::string text) const {
  // The longest end of `text` that is the start of a value (but not all of it: whole values
  // are gone already) is what a cut left of a secret.
  // The piece never starts inside a mark already there.
  size_t last_mark = text.rfind(kMark);
  size_t floor = last_mark == std::string::npos ? 0 : last_mark + kMark.size();
  size_t best = 0;
  for (const auto& v : values_) {
    size_t longest = std::min(v.size() - 1, text.size() - floor);
    for (size_t k = longest; k > best; --k) {
      if (text.compare(text.size() - k, k, v, 0, k) == 0) {
        best = k;
        break;
      }
    }
  }
  if (best) text.replace(text.size() - best, best, kMark);
  return text;
}

std::string Redactor::redact(std::string_view text) const {
  std::string out = replace_all(text);
  if (values_.empty()) return out;
  size_t cut = runner_cut_at(out);
  if (cut == std::string::npos) return out;
  return mask_partial_end(out.substr(0, cut)) + out.substr(cut);
}

std::string Redactor::redact_cut(std::string_view text, size_t max) const {
  std::string out = redact(text);
  if (out.size() <= max) return out;
  size_t at = max;
  while (at > 0 && (static_cast<unsigned char>(out[at]) & 0xc0) == 0x80) --at;  // whole characters
  // A mark the cut would split is kept whole.
  size_t from = at >= kMark.size() ? at - kMark.size() + 1 : 0;
  size_t mark = out.find(kMark, from);
  if (mark != std::string::npos && mark < at) at = mark + kMark.size();
  return mask_partial_end(out.substr(0, at)) + "...";
}

}  // namespace jarvis
