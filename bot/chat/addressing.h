#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace jarvis {

// The command in a chat line, if the line is for the bot: "jarvis: status loki",
// "jarvis, status loki", "@jarvis status loki", a configured prefix ("!status loki"), or any
// direct message. Nicknames compare case-insensitively; nothing else is for the bot.
std::optional<std::string> addressed_command(std::string_view text, std::string_view own_name,
                                             std::string_view prefix, bool direct);

}  // namespace jarvis
