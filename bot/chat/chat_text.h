#pragma once
// The one cleaning every line the bot says on chat goes through, whatever the protocol:
// worker stderr, failure reasons and echoed user text are remote text, and must not be able
// to colour, hide, reorder or corrupt what people read, nor make the server drop the bot.
#include <string>
#include <string_view>

namespace jarvis {

// Valid UTF-8 (invalid bytes become U+FFFD) without control characters: IRC formatting
// (bold, colour with its "fg,bg" digits, hex colour, reverse, italic, underline, reset...),
// every other C0 and C1 control and DEL are removed; tab, CR and LF become spaces. Bidi
// embeddings, overrides and isolates (U+202A-202E, U+2066-2069) are removed, and so are
// the code points XML 1.0 cannot carry (U+FFFE, U+FFFF).
std::string chat_safe_text(std::string_view text);

}  // namespace jarvis
