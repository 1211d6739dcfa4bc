#pragma once
// Masks the IRC way: only `*` (any run of characters) and `?` (one byte: one character of an ASCII name) are special,
// and names compare folded by the server's CASEMAPPING. `[`, `]` and `\` are ordinary
// characters (legal in nicks), unlike in fnmatch.
#include <optional>
#include <string>
#include <string_view>

#include "bot/chat/chat_adapter.h"

namespace jarvis {

// "ascii", "rfc1459", "strict-rfc1459"; nothing for a mapping we do not know.
std::optional<CaseMapping> parse_casemapping(std::string_view name);
std::string casefold(std::string_view text, CaseMapping mapping);
bool mask_matches(std::string_view mask, std::string_view text, CaseMapping mapping);

}  // namespace jarvis
