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
  std::vector<std::string> who;
  std::vector<std::string> commands;  // verb names, or "*"
  std::vector<std::string> where = {"*"};
};

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
