#pragma once
// Secrets stay secret: values found under secret-looking keys of a clipboard are replaced by
// "[redacted]" in every line the bot stores, logs, replies or announces.
#include <string>
#include <string_view>
#include <vector>

namespace jarvis {

// Case-insensitive shell globs on mapping keys ("*password*", "*private*key*").
class SecretPatterns {
 public:
  static std::vector<std::string> defaults();
  SecretPatterns() : SecretPatterns(defaults()) {}
  explicit SecretPatterns(std::vector<std::string> globs);
  bool matches(std::string_view key) const;
  const std::vector<std::string>& globs() const { return globs_; }

 private:
  std::vector<std::string> globs_;
};

// Every scalar under a matching key, at any depth (a whole subtree under "secrets:" counts),
// read from parser events so aliases are never expanded: an alias (or a merge key's alias) in
// a secret place counts every scalar value of what it names. Keys may be anything (empty, an
// alias, a collection). Invalid YAML yields what was read before the error.
std::vector<std::string> secret_values(std::string_view yaml, const SecretPatterns& patterns);

class Redactor {
 public:
  // Values shorter than this are not redacted: "no" or "1" would blank out ordinary text.
  static constexpr size_t kMinLength = 4;
  static constexpr std::string_view kMark = "[redacted]";

  // Adds values, and each line of a multi-line value (a PEM key is printed a line at a time);
  // returns those that were not known yet.
  std::vector<std::string> add(const std::vector<std::string>& values);
  // Every known value replaced by kMark. A line the worker runner cut short (it ends with
  // " [line cut: N more bytes]") also loses what the cut left of a value just before it.
  std::string redact(std::string_view text) const;
  // redact(), then cut to at most `max` bytes (whole UTF-8 characters) followed by "...": redacted
  // before it is cut, so the cut never shows the start of a value, and a value the cut splits is
  // masked too.
  std::string redact_cut(std::string_view text, size_t max) const;
  bool empty() const { return values_.empty(); }
  const std::vector<std::string>& values() const { return values_; }

 private:
  std::string replace_all(std::string_view text) const;
  std::string mask_partial_end(std::string text) const;
  std::vector<std::string> values_;  // longest first, so a value containing another goes whole
};

}  // namespace jarvis
