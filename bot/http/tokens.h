#pragma once
// HTTP API tokens: random secrets shown once, kept only as their SHA-256, each with a role.
#include <optional>
#include <string>
#include <string_view>

#include "bot/commands/command.h"

namespace jarvis::http {

enum class Role { Read, Operate, Admin };
std::optional<Role> parse_role(std::string_view name);
std::string_view role_name(Role role);
// What a role may run: read sees (status, jobs, log, plan, audit, help); operate also
// deploys, cancels and retries; admin may do everything operate may (and what comes later).
bool role_allows(Role role, Verb verb);
// The least role that may run `verb`.
Role role_for(Verb verb);

// "jv_" and 43 characters of base64url: 256 bits from getrandom(2).
std::string new_token();
// Lower-case hex SHA-256.
std::string token_hash(std::string_view token);
// Token names: 1-64 of [A-Za-z0-9._-], so that "http:NAME" is one word in ACL rules and logs.
bool valid_token_name(std::string_view name);
// Equal, in time that does not depend on where they differ.
bool same_secret(std::string_view a, std::string_view b);

}  // namespace jarvis::http
