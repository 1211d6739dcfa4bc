#include "bot/commands/mask.h"

namespace jarvis {

std::optional<CaseMapping> parse_casemapping(std::string_view name) {
  if (name == "ascii") return CaseMapping::Ascii;
  if (name == "rfc1459") return CaseMapping::Rfc1459;
  if (name == "strict-rfc1459") return CaseMapping::StrictRfc1459;
  return std::nullopt;
}

std::string casefold(std::string_view text, CaseMapping m) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    else if (m == CaseMapping::Ascii) continue;
    else if (c == '[') c = '{';
    else if (c == ']') c = '}';
    else if (c == '\\') c = '|';
    else if (c == '~' && m == CaseMapping::Rfc1459) c = '^';
  }
  return out;
}

bool mask_matches(std::string_view mask_in, std::string_view text_in, CaseMapping m) {
  std::string mask = casefold(mask_in, m), text = casefold(text_in, m);
  // Greedy with one backtrack point (the last `*`): linear in practice, never exponential.
  size_t p = 0, t = 0, star = std::string::npos, resume = 0;
  while (t < text.size()) {
    if (p < mask.size() && (mask[p] == '?' || mask[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < mask.size() && mask[p] == '*') {
      star = p++;
      resume = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < mask.size() && mask[p] == '*') ++p;
  return p == mask.size();
}

}  // namespace jarvis
