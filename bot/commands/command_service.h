#pragma once
// Runs parsed commands against the job store (and the engine, where there is one) and
// answers with protocol-neutral text, one fact per line.
#include <functional>
#include <string>
#include <vector>

#include "bot/commands/command.h"
#include "bot/design/design.h"
#include "bot/pipeline/engine.h"
#include "bot/pipeline/pipeline.h"
#include "bot/safety/safety.h"
#include "bot/store/job_store.h"

namespace jarvis {

struct Requester {
  Requester() = default;
  Requester(std::string who_, std::string protocol_, std::string place_)
      : who(std::move(who_)), protocol(std::move(protocol_)), place(std::move(place_)) {}
  std::string who;       // "alice": how replies and status lines name them
  std::string protocol;  // "cli", "console", "irc"
  std::string place;     // "tty", "#ops", "@alice" for a direct message
  std::string id;        // the full identity for the audit trail ("irc:alice!al@host")
  std::string person;    // what a nick change keeps ("irc:al@host", an account): two-person checks
  std::function<bool(Verb)> may;  // what `help` lists; everything when empty
};

struct Reply {
  Reply() = default;
  Reply(std::vector<std::string> lines_, bool ok_ = true) : lines(std::move(lines_)), ok(ok_) {}
  std::vector<std::string> lines;
  bool ok = true;  // false when the command was refused or failed
  // A one-line answer that may merge with others of its group when the place is behind
  // ("alice: deploying" + "web01" + job 3 -> "alice: deploying web01, web02 (jobs 3, 4)").
  std::string group, item;
  int64_t job = 0;
  // Why it was refused, for fronts that answer with a status (the HTTP API): the wording
  // stays in `lines`.
  enum class Failure { None, BadRequest, NotFound, Conflict, Unavailable, Internal };
  Failure failure = Failure::None;
  std::string field;         // BadRequest: what was wrong ("design", "pipeline", "target")
  int64_t conflict_job = 0;  // Conflict: the job in flight that holds the host
};

// status/log/jobs lines, shared with the CLI's progress output. `stopped`: the job is in
// flight but the jarvis that ran it is gone, so nothing is running it.
std::string describe_job(const JobRecord& job, int queued_ahead, int64_t now, bool stopped = false);

// "09:15 UTC" within the last day, "2026-11-30 09:15 UTC" before.
std::string clock_utc(int64_t at_ms, int64_t now_ms);

// The announcement for an engine event ("loki: stage 4/19 sandbox:create done in 2s (job 17)");
// empty for worker log lines, which fronts show or not as they see fit.
std::string describe_event(const EngineEvent& event);

class CommandService {
 public:
  using Done = std::function<void(Reply)>;

  // `engine` may be null (the CLI without a running bot): then cancel and retry are requests
  // in the store for whichever engine owns the job, and deploy is refused.
  CommandService(JobStore& store, const PipelineSet& pipelines, DesignSource& designs,
                 std::vector<std::string> workers_path, Engine* engine);

  // Parses and runs `text`; `done` runs once with the reply (later, for deploy and plan).
  void handle(const std::string& text, const Requester& who, Done done);
  void run(const Command& command, const Requester& who, Done done);
  // How to tell whether the engine named as a job's owner still lives (engine_alive on the
  // state dir); without it every job in flight is taken to be running.
  void set_owner_check(std::function<bool(const std::string& owner)> alive) { owner_alive_ = std::move(alive); }
  // Who may confirm (two_person) and what counts as production for `plan` and the CLI;
  // serve and the CLI pass the config's safety: section.
  void set_safety(SafetyConfig safety) { safety_ = std::move(safety); }
  // Records a command a front refused before running it (ACL, rate limit).
  void audit_refusal(const Requester& who, const std::string& text, const std::string& why);

 private:
  Reply status(const Command& c);
  Reply jobs();
  Reply log(const Command& c, const Requester& who);
  bool stopped(const JobRecord& j) const;
  Reply cancel(const Command& c, const Requester& who);
  Reply retry(const Command& c);
  Reply help(const Command& c, const Requester& who);
  Reply confirm(const Command& c, const Requester& who);
  Reply freeze(const Command& c, const Requester& who);
  Reply unfreeze(const Command& c, const Requester& who);
  Reply freezes();
  // The freeze a deploy of `host` (of `cluster`) runs into, if any.
  std::optional<Freeze> freeze_on(const std::string& host, const std::string& cluster);
  std::vector<std::string> plan_safety(const Design& design, const Pipeline& p, size_t stage);
  Reply audit_trail(const Command& c, const Requester& who);
  void deploy_or_plan(const Command& c, const Requester& who, Done done);
  Reply plan_cluster(const Command& c, const Design& cluster);
  Reply deploy_cluster(const Command& c, const Requester& who, const Design& cluster);
  Reply cluster_status(const std::string& group, const std::vector<JobRecord>& members);
  std::optional<JobRecord> find_job(const std::string& argument, std::string& error);
  Reply not_found(const Command& c, const std::string& error);
  static Reply conflict(std::vector<std::string> lines, int64_t job) {
    Reply r{std::move(lines), false};
    r.failure = Reply::Failure::Conflict;
    r.conflict_job = job;
    return r;
  }
  void audit(const Requester& who, const Command& c, const Reply& reply);

  JobStore& store_;
  const PipelineSet& pipelines_;
  DesignSource& designs_;
  std::vector<std::string> workers_path_;
  Engine* engine_;
  std::function<bool(const std::string&)> owner_alive_;
  SafetyConfig safety_;
};

}  // namespace jarvis
