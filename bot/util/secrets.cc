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
// the next scalar is a key, and whether it lies under a secret key.
class SecretCollector : public YAML::EventHandler {
 public:
  explicit SecretCollector(const SecretPatterns& p) : patterns_(p) {}
  std::vector<std::string> values;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override { value(); }
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { value(); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string& text) override {
    if (!stack_.empty() && stack_.back().is_map && stack_.back().expect_key) {
      stack_.back().expect_key = false;
      stack_.back().key_is_secret = patterns_.matches(text);
      return;
    }
    if (secret_here()) values.push_back(text);
    value();
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    open(false);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    open(true);
  }
  void OnMapEnd() override { close(); }

 private:
  struct Level {
    bool is_map;
    bool expect_key;
    bool key_is_secret;
    bool inherited;  // the whole collection sits under a secret key
  };
  bool secret_here() const {
    if (stack_.empty()) return false;
    const Level& l = stack_.back();
    return l.inherited || (l.is_map && l.key_is_secret);
  }
  // A value (scalar, collection or alias) completed: the parent mapping expects a key again.
  void value() {
    if (!stack_.empty() && stack_.back().is_map) {
      stack_.back().expect_key = true;
      stack_.back().key_is_secret = false;
    }
  }
  void open(bool is_map) {
    bool inherited = secret_here();
    // A collection used as a key is not a secret value; treat it as consumed.
    if (!stack_.empty() && stack_.back().is_map && stack_.back().expect_key)
      stack_.back().expect_key = false;
    stack_.push_back({is_map, true, false, inherited});
  }
  void close() {
    stack_.pop_back();
    value();
  }

  const SecretPatterns& patterns_;
  std::vector<Level> stack_;
};

}  // namespace

std::vector<std::string> secret_values(std::string_view yaml, const SecretPatterns& patterns) {
  std::istringstream in{std::string(yaml)};
  SecretCollector collector(patterns);
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(collector)) {}
  } catch (const YAML::Exception&) {
    // Whatever was collected before the error still counts.
  }
  return collector.values;
}

void Redactor::add(const std::vector<std::string>& values) {
  for (const auto& v : values) {
    if (v.size() < kMinLength) continue;
    if (std::find(values_.begin(), values_.end(), v) == values_.end()) values_.push_back(v);
  }
  std::sort(values_.begin(), values_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

std::string Redactor::redact(std::string_view text) const {
  std::string out(text);
  for (const auto& v : values_) {
    size_t pos = 0;
    while ((pos = out.find(v, pos)) != std::string::npos) {
      out.replace(pos, v.size(), kMark);
      pos += kMark.size();
    }
  }
  return out;
}

}  // namespace jarvis
