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
// read from parser events so aliases are never expanded. Invalid YAML yields nothing.
std::vector<std::string> secret_values(std::string_view yaml, const SecretPatterns& patterns);

class Redactor {
 public:
  // Values shorter than this are not redacted: "no" or "1" would blank out ordinary text.
  static constexpr size_t kMinLength = 4;
  static constexpr std::string_view kMark = "[redacted]";

  void add(const std::vector<std::string>& values);
  std::string redact(std::string_view text) const;
  bool empty() const { return values_.empty(); }

 private:
  std::vector<std::string> values_;  // longest first, so a value containing another goes whole
};

}  // namespace jarvis
