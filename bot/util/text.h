#pragma once
// ASCII lower case, as host names, URL hosts, DNs, LDAP attribute names and commands compare.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace jarvis {

inline std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); });
  return out;
}

// Levenshtein distance: how many one-letter edits turn a into b.
inline size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The candidate a mistyped word most likely meant: at most two edits away (or one for words of
// three letters or fewer), or a prefix of at least two letters; nothing when none is close.
template <typename Names>
std::string closest_name(std::string_view word, const Names& candidates) {
  std::string best;
  size_t limit = word.size() <= 3 ? 2 : 3;
  size_t best_distance = limit;
  for (const auto& c : candidates) {
    std::string_view name(c);
    size_t d = edit_distance(word, name);
    if (word.size() >= 2 && name.size() > word.size() && name.substr(0, word.size()) == word) d = std::min<size_t>(d, 1);
    if (d < best_distance) {
      best_distance = d;
      best = std::string(name);
    }
  }
  return best;
}

}  // namespace jarvis
