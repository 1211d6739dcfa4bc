#include "bot/app/cli_args.h"

#include <algorithm>
#include <iostream>
#include <map>

#include <CLI/CLI.hpp>

#include "bot/util/text.h"
#include "jarvis_version.h"  // generated at build time: JARVIS_VERSION, JARVIS_GIT_REVISION

namespace jarvis {
namespace {

struct CommandSpec {
  const char* name;
  const char* summary;      // one line, in the command list
  const char* description;  // the first lines of `jarvis help NAME`
};

const CommandSpec kCommands[] = {
    {"run", "run one job in the foreground with live progress (also: deploy)",
     "Runs one job in this process, in the foreground, with live progress; exits 0 when the host is\n"
     "ready, 1 when the job fails. DESIGN is a design file, a name in designs_dir (loki for\n"
     "<designs_dir>/loki.yaml), a gist or raw URL, or an LDAP DN (cn=loki). Works with or without a\n"
     "jarvis serve on the same state dir; ^C cancels the job."},
    {"serve", "the long-running bot: chat fronts, and commands on stdin",
     "Runs the bot: the chat fronts of the config (IRC, XMPP, Slack), the console front (commands on\n"
     "stdin, replies and announcements on stdout), and the engine, which resumes every job in flight\n"
     "after a crash or restart. One per state dir. SIGTERM or ^C stops it; jobs in flight resume on the\n"
     "next start."},
    {"status", "where a job is: the stage running, the failure, or ready",
     "Where the latest job of HOST (or job JOB) is: the stage running and for how long, the stage that\n"
     "failed and why, or ready. A cluster name lists its hosts. Without an argument, like jobs."},
    {"jobs", "jobs in flight and the last ones finished", "Jobs in flight and the last five finished."},
    {"log", "the last lines the job's workers wrote, with times",
     "The last lines (-n, default 20) the workers of the latest job of HOST (or job JOB) wrote, with\n"
     "their times (UTC)."},
    {"cancel", "stop a job in flight", "Stops a job in flight: its running worker gets SIGTERM, then SIGKILL."},
    {"retry", "resume a failed, cancelled or stopped job at its stage",
     "Resumes a failed or cancelled job at the stage where it stopped, with the clipboard saved before\n"
     "it; also a job whose jarvis stopped while it ran. With a jarvis serve running it resumes there;\n"
     "without, in the foreground here."},
    {"plan", "dry run: the pipeline and stages a deploy would run",
     "Shows the pipeline a deploy of DESIGN would run, stage by stage, with timeouts, retries and\n"
     "destructive stages; nothing runs."},
    {"audit", "who asked for what, when and from where",
     "The last entries of the audit trail (who, from where, what, the outcome); with HOST, those about it."},
    {"confirm", "let a waiting destructive stage run on a production host",
     "Confirms job JOB (or HOST's job), which waits before a destructive stage on a production host:\n"
     "the stage starts in the jarvis that runs the job. With safety.two_person (the default) the\n"
     "person who asked for the job cannot confirm it. Audited."},
    {"freeze", "refuse deploys of a host, a cluster or everything for a while",
     "freeze [HOST|CLUSTER|all] [for DURATION] [REASON...]: deploys there are refused, naming who froze\n"
     "it, why and until when, until it ends or \"unfreeze\" lifts it; \"deploy! HOST\" (the deploy!\n"
     "right) forces one through, audited and announced."},
    {"unfreeze", "lift the freezes of a host, a cluster or all", "Lifts the freezes of SCOPE (a host, a cluster, or all, the default)."},
    {"freezes", "the change freezes in force", "Every freeze in force: its scope, who, why, since and until when."},
    {"designs", "the designs in designs_dir and the pipeline each gets",
     "Every design in designs_dir: its host (or cluster), the pipeline a deploy would choose, and\n"
     "problems that would stop it."},
    {"pipelines", "the pipelines and what designs they match", "Every pipeline: its stages and what designs it matches."},
    {"check-config", "check the config, pipelines, workers, announce places and ACL",
     "Loads the config and the pipelines and checks what would break at 3 a.m.: missing worker\n"
     "executables, a missing workers path or designs_dir, announce places on protocols that are not\n"
     "configured, ACL rules that cannot match. With --online it also connects to each configured chat\n"
     "server as serve would, joins every room and announce place, reports what the server said\n"
     "(joined, or the refusal and its reason), and leaves. Exit 0 when all is well, 1 with problems\n"
     "(each named with its file and line where it has one)."},
    {"prune", "remove old finished jobs' logs and clipboards (keeps the audit)",
     "Removes the logs, designs and clipboards of jobs that finished more than --older-than ago\n"
     "(90d, 12h, ...): they are what grows. The job rows (what ran, when, how it ended) and the\n"
     "audit trail stay; a pruned job cannot be retried. Prints what it removed."},
    {"token", "HTTP API tokens: add NAME --role read|operate|admin, list, revoke NAME",
     "Manages the tokens of the HTTP API (http: in the config). \"token add NAME --role ROLE\" prints a new\n"
     "token once and stores only its SHA-256; its identity is http:NAME (ACL rules, audit trail). Roles:\n"
     "read (status, jobs, log, plan, audit), operate (also deploy, cancel, retry), admin. \"token list\"\n"
     "shows names, roles and dates, never tokens; \"token revoke NAME\" ends one at once."},
    {"store", "store migrate --from sqlite:PATH: copy a SQLite store into PostgreSQL",
     "jarvis store migrate --from sqlite:PATH copies every job (with its id, stages, clipboards and\n"
     "logs), the audit trail, the events, the HTTP API's tokens (their hashes) and the hooks' queue\n"
     "of a SQLite job store into the PostgreSQL store of the\n"
     "config (store: {kind: postgres, url_file: ...}), which must hold no jobs yet. One transaction:\n"
     "all of it or nothing. Stop the jarvis serve using the SQLite store first; jobs it had in flight\n"
     "are adopted at their stage by the first node that starts. See docs/scaling.md."},
    {"help", "this list, or one command in detail", "This list, or one command in detail."},
};

constexpr const char* kFooter =
    "Global options go anywhere on the line. \"jarvis help COMMAND\" (or \"jarvis COMMAND --help\")\n"
    "shows one command in detail.\n"
    "exit status: 0 success, 1 the job or command failed, 2 bad usage or configuration";

bool is_command(const std::string& w) {
  if (w == "deploy") return true;
  return std::any_of(std::begin(kCommands), std::end(kCommands), [&](const auto& c) { return w == c.name; });
}

// The global options that take a value, so that a scan for the command word skips values.
const char* const kValueOptions[] = {"--config", "--state-dir", "--workers-path", "--pipelines-dir",
                                     "--log-format", "--pipeline", "-n", "--lines", "--older-than", "--role"};

std::optional<std::string> first_word(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string w = argv[i];
    if (w.empty() || w[0] != '-') return w;
    if (w.find('=') == std::string::npos &&
        std::find(std::begin(kValueOptions), std::end(kValueOptions), w) != std::end(kValueOptions))
      ++i;
  }
  return std::nullopt;
}

}  // namespace

std::string version_text() {
  return std::string("jarvis ") + JARVIS_VERSION + " (git " + JARVIS_GIT_REVISION + ")";
}

std::optional<std::string> suggest_command(const std::string& word) {
  std::vector<std::string_view> names;
  for (const auto& c : kCommands) names.push_back(c.name);
  std::string best = closest_name(word, names);
  if (best.empty()) return std::nullopt;
  return best;
}

// A command's help: CLI11's usage and options, named as typed ("jarvis run"), then what it does.
std::string command_help(CLI::App& sub) {
  std::string text = sub.help();
  std::string usage = "Usage: " + sub.get_name();
  if (auto at = text.find(usage); at != std::string::npos)
    text.replace(at, usage.size(), "Usage: jarvis " + sub.get_name());
  return text;
}

ParsedCli parse_cli(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CliArgs a;
  CLI::App app{"jarvis: a chat-ops bot that deploys hosts from YAML designs through pipelines of workers",
               "jarvis"};
  app.footer(kFooter);
  app.set_version_flag("--version", version_text(), "print the version and the git revision, and exit");
  app.set_help_flag("-h,--help", "this text, or a command's with the command");
  auto* global = app.add_option_group("global options");
  global->add_option("--config", a.overrides.config_file, "configuration file (see config/jarvis.example.yaml)");
  global->add_option("--state-dir", a.overrides.state_dir, "job store and worker state (default ./state)");
  global->add_option("--workers-path", a.overrides.workers_path,
                     "where module/task executables are found, DIR[:DIR...] (default ./workers)");
  global->add_option("--pipelines-dir", a.overrides.pipelines_dir, "pipeline files (default ./pipelines)");
  global->add_option("--log-format", a.overrides.log_format, "log lines on stderr: text or json")
      ->check(CLI::IsMember({"text", "json"}));

  std::map<std::string, CLI::App*> subs;
  std::string design, target, topic;
  for (const auto& spec : kCommands) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.summary);
    sub->footer(std::string(spec.description) + "\n\n" + kFooter);
    sub->fallthrough();  // global options after the command word
    subs[spec.name] = sub;
  }
  subs["run"]->alias("deploy");
  for (const char* name : {"run", "plan"}) {
    subs[name]->add_option("DESIGN", design, "design file, name in designs_dir, gist or raw URL, LDAP DN")->required();
    subs[name]->add_option("--pipeline", a.pipeline, "this pipeline instead of the one the design matches");
  }
  subs["status"]->add_option("TARGET", target, "a host, a cluster, or a job number");
  for (const char* name : {"log", "cancel", "retry"})
    subs[name]->add_option("TARGET", target, "a host or a job number")->required();
  subs["confirm"]->add_option("TARGET", target, "a job number or a host")->required();
  std::vector<std::string> freeze_words;
  subs["freeze"]->add_option("WORDS", freeze_words, "[HOST|CLUSTER|all] [for DURATION] [REASON...]");
  subs["unfreeze"]->add_option("SCOPE", target, "a host, a cluster, or all (the default)");
  subs["log"]->add_option("-n,--lines", a.lines, "how many lines (default 20)")->check(CLI::Range(1, 100000));
  subs["check-config"]->add_flag("--online", a.online,
                                 "also connect to each chat server, join every room and announce place, and report");
  subs["audit"]->add_option("HOST", target, "only entries about this host");
  subs["help"]->add_option("COMMAND", topic, "a command");
  std::string token_action, token_name;
  subs["token"]->add_option("ACTION", token_action, "add, list or revoke")->required()
      ->check(CLI::IsMember({"add", "list", "revoke"}));
  subs["token"]->add_option("NAME", token_name, "the token's name: letters, digits, . _ -");
  subs["token"]->add_option("--role", a.role, "add: read, operate or admin")->check(CLI::IsMember({"read", "operate", "admin"}));
  subs["store"]->add_option("ACTION", a.store_action, "migrate")->required()->check(CLI::IsMember({"migrate"}));
  subs["store"]->add_option("--from", a.from, "the store to copy: sqlite:PATH (a jarvis.db)")->required();
  subs["prune"]->add_option("--older-than", a.older_than, "finished longer ago than this: 90d, 12h, 30m")->required();
  app.require_subcommand(1, 1);

  if (auto word = first_word(argc, argv); word && !is_command(*word)) {
    err << "jarvis: there is no command \"" << word->substr(0, 40) << "\"";
    if (auto s = suggest_command(*word)) err << "; did you mean \"" << *s << "\"?";
    err << " (\"jarvis help\" lists them)\n";
    return {std::nullopt, 2};
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    for (auto* sub : app.get_subcommands()) {
      out << command_help(*sub);
      return {std::nullopt, 0};
    }
    out << app.help();
    return {std::nullopt, 0};
  } catch (const CLI::CallForVersion&) {
    out << version_text() << '\n';
    return {std::nullopt, 0};
  } catch (const CLI::ParseError& e) {
    auto called = app.get_subcommands();
    std::string what = e.what();
    if (called.empty() && argc <= 1) {
      out << app.help();
      return {std::nullopt, 2};
    }
    err << "jarvis: " << what;
    if (!called.empty())
      err << "; \"jarvis help " << called.front()->get_name() << "\" shows its usage\n";
    else
      err << "; \"jarvis help\" lists the commands\n";
    return {std::nullopt, 2};
  }
  CLI::App* called = app.get_subcommands().front();
  a.command = called->get_name();
  if (a.command == "help") {
    if (topic.empty()) {
      // app.help() would describe the selected subcommand (help itself).
      out << app.get_formatter()->make_help(&app, "jarvis", CLI::AppFormatMode::Normal);
      return {std::nullopt, 0};
    }
    std::string name = topic == "deploy" ? "run" : topic;
    if (auto it = subs.find(name); it != subs.end()) {
      out << command_help(*it->second);
      return {std::nullopt, 0};
    }
    err << "jarvis: there is no command \"" << topic.substr(0, 40) << "\"";
    if (auto s = suggest_command(topic)) err << "; did you mean \"" << *s << "\"?";
    err << '\n';
    return {std::nullopt, 2};
  }
  if (!design.empty()) a.words.push_back(design);
  if (!target.empty()) a.words.push_back(target);
  for (auto& w : freeze_words) a.words.push_back(std::move(w));
  if (a.command == "token") {
    a.words = {token_action};
    if (!token_name.empty()) a.words.push_back(token_name);
  }
  return {a, 0};
}

}  // namespace jarvis
