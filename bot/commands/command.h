#pragma once
// One parser for every front: the CLI, the console, and the chat protocols.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace jarvis {

enum class Verb {
  Deploy, Status, Jobs, Log, Cancel, Retry, Plan, Help, Audit,
  ForceDeploy,  // "deploy!": a deploy through a change freeze (its own ACL right)
  Confirm, Freeze, Unfreeze, Freezes, Walks,
};

std::string_view verb_name(Verb v);

struct Command {
  Verb verb = Verb::Help;
  std::string argument;                 // design, host, job id or help topic; may be empty
  std::optional<std::string> pipeline;  // deploy/plan: --pipeline NAME
  int lines = 0;                        // log: -n N (0: the default)
  int64_t duration_ms = 0;              // freeze: for DURATION (0: until unfrozen)
  std::string reason;                   // freeze: the words after the scope and duration
  std::string text;                     // as typed, for the audit trail
};

struct ParsedCommand {
  std::optional<Command> command;
  std::string error;  // for the user, when command is empty
};

constexpr size_t kMaxCommandLength = 1024;

ParsedCommand parse_command(std::string_view text);

// A job or host named by a user: "17", "#17" or "job 17" is a job; a host name otherwise.
struct Target {
  int64_t job = 0;
  std::string host;  // lower-cased
};
std::optional<Target> parse_target(std::string_view text, std::string& error);

}  // namespace jarvis
