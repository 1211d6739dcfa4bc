#include "bot/http/tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace jarvis::http {

std::optional<Role> parse_role(std::string_view name) {
  if (name == "read") return Role::Read;
  if (name == "operate") return Role::Operate;
  if (name == "admin") return Role::Admin;
  return std::nullopt;
}

std::string_view role_name(Role role) {
  switch (role) {
    case Role::Read: return "read";
    case Role::Operate: return "operate";
    case Role::Admin: return "admin";
  }
  return "read";
}

Role role_for(Verb verb) {
  switch (verb) {
    case Verb::Deploy:
    case Verb::Cancel:
    case Verb::Retry: return Role::Operate;
    default: return Role::Read;
  }
}

bool role_allows(Role role, Verb verb) { return static_cast<int>(role) >= static_cast<int>(role_for(verb)); }

std::string new_token() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(std::string("cannot read random bytes: ") + std::strerror(errno));
    got += static_cast<size_t>(n);
  }
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out = "jv_";
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += alphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += alphabet[(acc << (6 - bits)) & 63];
  ::explicit_bzero(bytes, sizeof bytes);
  return out;
}

std::string token_hash(std::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  unsigned int len = 0;
  EVP_Digest(token.data(), token.size(), digest, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

bool valid_token_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

bool same_secret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace jarvis::http
