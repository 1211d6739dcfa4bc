#include "bot/util/url_redact.h"

#include <cctype>

namespace jarvis {
namespace {

constexpr std::string_view kRedacted = "[redacted]";

bool scheme_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
}

// Where a URL ends in running text: whitespace, quotes, angle brackets, control characters.
bool ends_url(char c) {
  auto u = static_cast<unsigned char>(c);
  return u <= ' ' || u == 0x7f || c == '"' || c == '\'' || c == '<' || c == '>' || c == '`';
}

std::string lower_decoded(std::string_view name) {
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '%' && i + 2 < name.size() && std::isxdigit(static_cast<unsigned char>(name[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(name[i + 2]))) {
      c = static_cast<char>(std::stoi(std::string(name.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else if (c == '+') {
      c = ' ';
    }
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// key=value&key=value (also ';'): the values of secret keys replaced.
std::string redact_parameters(std::string_view params) {
  std::string out;
  size_t start = 0;
  while (start <= params.size()) {
    size_t end = params.find_first_of("&;", start);
    if (end == std::string_view::npos) end = params.size();
    std::string_view pair = params.substr(start, end - start);
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && eq + 1 < pair.size() && is_secret_parameter(pair.substr(0, eq))) {
      out += pair.substr(0, eq + 1);
      out += kRedacted;
    } else {
      out += pair;
    }
    if (end < params.size()) out += params[end];
    start = end + 1;
  }
  return out;
}

std::string redact_one(std::string_view url) {
  size_t sep = url.find("://");
  std::string out(url.substr(0, sep + 3));
  std::string_view rest = url.substr(sep + 3);
  size_t authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    out += kRedacted;
    out += authority.substr(at);
  } else {
    out += authority;
  }
  if (authority_end == std::string_view::npos) return out;
  rest = rest.substr(authority_end);
  size_t q = rest.find_first_of("?#");
  out += rest.substr(0, q);
  while (q != std::string_view::npos) {
    char mark = rest[q];
    size_t next = mark == '?' ? rest.find('#', q + 1) : std::string_view::npos;
    out += mark;
    out += redact_parameters(rest.substr(q + 1, next == std::string_view::npos ? std::string_view::npos : next - q - 1));
    q = next;
  }
  return out;
}

}  // namespace

bool is_secret_parameter(std::string_view raw) {
  std::string name = lower_decoded(raw);
  for (std::string_view word : {"token", "secret", "pass", "pwd", "key", "auth", "sig", "credential",
                                "session", "sid", "jwt", "bearer", "private", "cookie"})
    if (name.find(word) != std::string::npos) return true;
  return name == "code" || name == "p" || name == "pw";
}

std::string redact_url_credentials(std::string_view text) {
  size_t found = text.find("://");
  if (found == std::string_view::npos) return std::string(text);
  std::string out;
  size_t copied = 0;
  while (found != std::string_view::npos) {
    size_t begin = found;
    while (begin > copied && scheme_char(text[begin - 1])) --begin;
    if (begin == found || !std::isalpha(static_cast<unsigned char>(text[begin]))) {
      found = text.find("://", found + 3);
      continue;
    }
    size_t end = found + 3;
    while (end < text.size() && !ends_url(text[end])) ++end;
    out += text.substr(copied, begin - copied);
    out += redact_one(text.substr(begin, end - begin));
    copied = end;
    found = text.find("://", end);
  }
  out += text.substr(copied);
  return out;
}

}  // namespace jarvis
