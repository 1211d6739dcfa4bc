#include "bot/commands/acl.h"

#include <algorithm>
#include <optional>

#include "bot/commands/mask.h"

namespace jarvis {
namespace {

bool names(const std::vector<std::string>& list, const std::string& verb) {
  return std::any_of(list.begin(), list.end(),
                     [&](const std::string& c) { return c == "*" || c == verb; });
}

bool who_matches(const std::string& pattern, const Identity& id) {
  // "*" is everyone in chat. An API token is not: its role is what it was given, and a rule
  // grants it more only by naming it ("http:ci", "http:*"), so a rule written for people
  // does not quietly widen every read token.
  if (pattern == "*") return id.protocol != "http";
  std::string account_prefix = id.protocol + ":account:";
  if (pattern.rfind(account_prefix, 0) == 0)
    return !id.account.empty() &&
           mask_matches(pattern.substr(account_prefix.size()), id.account, id.casemapping);
  std::string proto_prefix = id.protocol + ":";
  if (pattern.rfind(proto_prefix, 0) != 0) return false;
  return mask_matches(pattern.substr(proto_prefix.size()), id.full.empty() ? id.name : id.full,
                      id.casemapping);
}

bool where_matches(const std::string& pattern, const Identity& id, const std::string& room) {
  if (pattern == "*") return true;
  if (room.empty()) return pattern == "direct" || pattern == id.protocol + ":direct";
  return mask_matches(pattern, id.protocol + ":" + room, id.casemapping);
}

}  // namespace

Acl::Acl(std::vector<AclRule> rules, std::vector<std::string> open)
    : rules_(std::move(rules)), open_(std::move(open)) {}

bool Acl::allows(const Identity& who, const std::string& room, Verb verb) const {
  std::string v(verb_name(verb));
  if (names(open_, v)) return true;
  if (who.anonymous) return false;  // no rule can name someone the server will not identify
  for (const auto& r : rules_) {
    if (!names(r.commands, v)) continue;
    bool w = std::any_of(r.who.begin(), r.who.end(), [&](const auto& p) { return who_matches(p, who); });
    bool place = std::any_of(r.where.begin(), r.where.end(),
                             [&](const auto& p) { return where_matches(p, who, room); });
    if (w && place) return true;
  }
  return false;
}

bool is_command_name(const std::string& c) {
  if (c == "*") return true;
  for (auto v : {Verb::Deploy, Verb::Status, Verb::Jobs, Verb::Log, Verb::Cancel, Verb::Retry,
                 Verb::Plan, Verb::Help, Verb::Audit, Verb::ForceDeploy, Verb::Confirm, Verb::Freeze,
                 Verb::Unfreeze, Verb::Freezes, Verb::Walks})
    if (verb_name(v) == c) return true;
  return false;
}

std::vector<AclProblem> acl_rule_problems(const std::vector<AclRule>& rules,
                                          const std::vector<std::string>& protocols,
                                          const std::vector<std::string>& with_accounts) {
  static const std::vector<std::string> chat = {"irc", "xmpp", "slack", "http"};
  std::vector<AclProblem> out;
  for (size_t i = 0; i < rules.size(); ++i) {
    const AclRule& r = rules[i];
    std::string at = (r.file.empty() ? std::string("acl") : r.file + ":" + std::to_string(r.line)) +
                     ": acl rule " + std::to_string(i + 1) + ": ";
    auto protocol_problem = [&](const std::string& pattern, const char* what) -> std::optional<std::string> {
      auto colon = pattern.find(':');
      std::string proto = colon == std::string::npos ? "" : pattern.substr(0, colon);
      if (std::find(chat.begin(), chat.end(), proto) == chat.end())
        return std::string(what) + " '" + pattern + "' names no protocol, so it matches nothing: write " +
               (std::string(what) == "who" ? "irc:nick!user@host, xmpp:user@example.com, slack:TEAM/USER or http:TOKEN"
                                           : "irc:#ops, xmpp:room@conference.example.com, slack:C0OPS or direct");
      if (std::find(protocols.begin(), protocols.end(), proto) == protocols.end())
        return std::string(what) + " '" + pattern + "' is on " + proto + ", which this config does not connect to";
      return std::nullopt;
    };
    for (const auto& who : r.who) {
      if (who == "*") continue;
      if (auto p = protocol_problem(who, "who")) {
        out.push_back({true, at + *p});
        continue;
      }
      std::string proto = who.substr(0, who.find(':'));
      bool accounts = std::find(with_accounts.begin(), with_accounts.end(), proto) != with_accounts.end();
      if (who.rfind(proto + ":account:", 0) == 0) {
        if (accounts) continue;
        out.push_back({true, at + "who '" + who + "' is an account rule, and " +
                                 (proto == "irc" ? std::string("irc.accounts is off (no irc.sasl either): jarvis learns no IRC "
                                                               "accounts, so it matches nobody; set irc.accounts: true on a "
                                                               "network with services")
                                                 : "jarvis learns no " + proto + " accounts: it matches nobody")});
      } else if (proto == "irc") {
        out.push_back({false, at + "who '" + who + "' is a nick!user@host mask: on a network without accounts, "
                                  "anyone who takes a matching nick from a matching user@host gets these rights" +
                                  (accounts ? std::string("; irc:account:NAME cannot be borrowed") : std::string())});
      }
    }
    for (const auto& where : r.where) {
      if (where == "*" || where == "direct") continue;
      if (auto p = protocol_problem(where, "where")) out.push_back({true, at + *p});
    }
  }
  return out;
}

std::vector<std::string> Acl::problems() const {
  std::vector<std::string> out;
  auto known = [](const std::string& c) { return is_command_name(c); };
  for (const auto& c : open_)
    if (!known(c)) out.push_back("acl.open names an unknown command '" + c + "'");
  for (size_t i = 0; i < rules_.size(); ++i) {
    for (const auto& c : rules_[i].commands)
      if (!known(c)) out.push_back("acl rule " + std::to_string(i + 1) + " names an unknown command '" + c + "'");
    if (rules_[i].who.empty()) out.push_back("acl rule " + std::to_string(i + 1) + " has no 'who'");
  }
  return out;
}

}  // namespace jarvis
