#pragma once
// Credentials carried inside URLs, hidden wherever a URL is stored or logged: the audit trail
// (readable by everyone in chat), the bot's log, job records and replies.
#include <string>
#include <string_view>

namespace jarvis {

// Every URL in `text` (scheme://...) with its user name and password (`user:pass@`) and the
// values of query or fragment parameters whose names look secret (access_token, token, key,
// password, secret, signature, auth, session, credential, ...) replaced by "[redacted]".
// Text without "://" comes back unchanged.
std::string redact_url_credentials(std::string_view text);

// True if a URL parameter of this name carries a credential.
bool is_secret_parameter(std::string_view name);

}  // namespace jarvis
