#pragma once
// Who may run which command, where. Identities and rooms are written with their protocol:
// "irc:*!*@ops.example.com" (a nick!user@host mask), "irc:account:alice" (a services
// account), "*" (anyone); rooms "irc:#ops", "direct" (a direct message) or "*".
#include <optional>
#include <string>
#include <vector>

#include "bot/chat/chat_adapter.h"
#include "bot/commands/command.h"

namespace jarvis {

struct AclRule {
  AclRule() = default;
  AclRule(std::vector<std::string> who_, std::vector<std::string> commands_,
          std::vector<std::string> where_ = {"*"})
      : who(std::move(who_)), commands(std::move(commands_)), where(std::move(where_)) {}
  std::vector<std::string> who;
  std::vector<std::string> commands;  // verb names, or "*"
  std::vector<std::string> where = {"*"};
  std::string file;  // where it was written, for check-config
  int line = 0;
};

// "deploy", "status" ... or "*".
bool is_command_name(const std::string& name);

// What check-config says about the rules: an error is a rule (or a part of one) that can
// never match anything; a warning is one that matches what anyone could pretend to be.
struct AclProblem {
  bool error = true;
  std::string text;  // "jarvis.yaml:12: acl rule 1: ..."
};
// `protocols`: the ones configured (irc, xmpp, slack); `with_accounts`: those whose adapter
// learns services accounts (IRC with irc.accounts or irc.sasl). An `account:` rule on any
// other protocol is an error.
std::vector<AclProblem> acl_rule_problems(const std::vector<AclRule>& rules,
                                          const std::vector<std::string>& protocols,
                                          const std::vector<std::string>& with_accounts = {});

class Acl {
 public:
  // By default anyone may read (status, jobs, help, log, plan, audit) and nobody may change
  // anything.
  static std::vector<std::string> default_open() {
    return {"status", "jobs", "help", "log", "plan", "audit"};
  }
  explicit Acl(std::vector<AclRule> rules = {}, std::vector<std::string> open = default_open());

  bool allows(const Identity& who, const std::string& room, Verb verb) const;
  // Problems in the rules (an unknown command name, an empty rule), for check-config.
  std::vector<std::string> problems() const;

 private:
  std::vector<AclRule> rules_;
  std::vector<std::string> open_;
};

}  // namespace jarvis
