#pragma once
// The command line: subcommands, their help, global options anywhere, --version, and
// suggestions for a mistyped command. Parsed with CLI11; what each command does is cli.cc's.
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "bot/app/config.h"

namespace jarvis {

struct CliArgs {
  ConfigOverrides overrides;
  std::string command;             // canonical name: "run" for deploy too
  std::vector<std::string> words;  // the command's positional words
  std::optional<std::string> pipeline;
  int lines = 20;                  // log -n
  std::string older_than;          // prune --older-than
  std::string role;                // token add --role
  bool online = false;             // check-config --online
  std::string store_action, from;  // store migrate --from sqlite:PATH
};

struct ParsedCli {
  std::optional<CliArgs> args;  // empty: nothing to run; exit with exit_code
  int exit_code = 0;            // 0 after help or --version, 2 for a usage error
};

// Prints help, version and usage errors itself (help on `out`, errors on `err`).
ParsedCli parse_cli(int argc, char** argv, std::ostream& out, std::ostream& err);

// "status" for "stauts"; nothing when no command is close.
std::optional<std::string> suggest_command(const std::string& word);

// "jarvis 0.1.0 (git 1a2b3c4)".
std::string version_text();

}  // namespace jarvis
