#include "bot/commands/command_service.h"

#include <algorithm>
#include <ctime>
#include <map>

#include "bot/pipeline/worker_path.h"
#include "bot/walks/walker.h"
#include "bot/util/duration.h"
#include "bot/util/log.h"
#include "bot/util/text.h"
#include "bot/util/url_redact.h"
#include "bot/util/utf8.h"

namespace jarvis {
namespace {

std::string stage_label(const JobRecord& j) {
  int shown = std::min(j.stage, j.stage_count() - 1);
  return std::to_string(shown + 1) + "/" + std::to_string(j.stage_count()) + " " +
         j.tasks[static_cast<size_t>(shown)].name;
}

// Reasons come from workers: keep them to one readable line.
std::string one_line(std::string s, size_t max = 400) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  if (s.size() > max) s = std::string(utf8_prefix(s, max)) + "...";
  return s;
}

// A remote design's values may be secrets: a pipeline error names the field, not its value.
std::string without_values(std::string error, bool remote) {
  size_t at = remote ? error.find(" (instance.provider is '") : std::string::npos;
  if (size_t end = at == std::string::npos ? at : error.find("')", at + 24); end != std::string::npos)
    error.replace(at, end + 2 - at, " (by its instance.provider)");
  return error;
}

std::string job_ref(const JobRecord& j) {
  return "job " + std::to_string(j.id) + ", started by " + j.requested_by;
}

}  // namespace

std::string clock_utc(int64_t at_ms, int64_t now) {
  time_t secs = static_cast<time_t>(at_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  // Within a day either way (a confirmation's deadline, a freeze's end are ahead).
  bool today = now - at_ms < 24 * 3600 * 1000LL && at_ms - now < 24 * 3600 * 1000LL;
  std::strftime(buf, sizeof buf, today ? "%H:%M UTC" : "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string describe_job(const JobRecord& j, int queued_ahead, int64_t now, bool stopped) {
  std::string h = j.host + ": ";
  if (stopped && is_active(j.state)) {
    int64_t last = std::max({j.created_ms, j.started_ms, j.stage_started_ms});
    std::string ago = last > 0 && last <= now ? " (" + format_duration(Millis(now - last)) + " ago)" : "";
    return h + "job " + std::to_string(j.id) + " stopped at stage " + stage_label(j).substr(0, stage_label(j).find(' ')) +
           " when its jarvis stopped" + ago + "; start jarvis serve to resume it, or cancel " + j.host;
  }
  switch (j.state) {
    case JobState::Queued: {
      std::string where = j.stage > 0 ? "queued to resume at stage " + stage_label(j)
                                      : "queued, waiting for a free slot";
      std::string ahead = queued_ahead == 0 ? "next in line"
                          : std::to_string(queued_ahead) + (queued_ahead == 1 ? " job" : " jobs") +
                                " ahead";
      return h + where + " (" + ahead + "; " + job_ref(j) + ")";
    }
    case JobState::Running: {
      if (j.awaiting_confirmation() && !j.cancel_requested) {
        std::string left = j.confirm_until_ms > now ? format_duration(Millis(j.confirm_until_ms - now)) + " left"
                                                    : "its time is up";
        return h + "waiting for a confirmation before stage " + stage_label(j) + " until " +
               clock_utc(j.confirm_until_ms, now) + " (" + left + "; " + job_ref(j) +
               "); nothing of it has run. Say \"confirm " + std::to_string(j.id) + "\" or \"cancel " +
               std::to_string(j.id) + "\".";
      }
      if (j.cancel_requested)
        return h + "cancelling at stage " + stage_label(j) + " (asked by " + j.cancelled_by +
               "; " + job_ref(j) + ")";
      if (j.retry_at_ms > now)
        return h + "retrying stage " + stage_label(j) + " in " +
               format_duration(Millis(j.retry_at_ms - now)) + " after attempt " +
               std::to_string(j.attempt) + " failed: " + one_line(j.reason) + " (" + job_ref(j) +
               ")";
      std::string attempt = j.attempt > 1 ? ", attempt " + std::to_string(j.attempt) : "";
      // Between taking its slot and starting its first stage a job has no stage clock yet.
      if (j.stage_started_ms <= 0 || j.stage_started_ms > now)
        return h + "starting stage " + stage_label(j) + " (" + job_ref(j) + ")";
      std::string of;
      if (j.stage < j.stage_count())
        of = " of " + format_duration(j.tasks[static_cast<size_t>(j.stage)].timeout);
      return h + "running stage " + stage_label(j) + " (" +
             format_duration(Millis(now - j.stage_started_ms)) + of + attempt + ", " + job_ref(j) + ")";
    }
    case JobState::Ready:
      return h + "ready (job " + std::to_string(j.id) + ", " + std::to_string(j.stage_count()) +
             " stages in " + format_duration(Millis(j.ended_ms - j.started_ms)) + ", " +
             clock_utc(j.ended_ms, now) + ")";
    case JobState::Failed:
      if (j.reason.rfind(kNotVerified, 0) == 0)
        return h + "deployed but not verified at stage " + stage_label(j) + ": " +
               one_line(j.reason.substr(std::string_view(kNotVerified).size())) + " (job " +
               std::to_string(j.id) + ", " + clock_utc(j.ended_ms, now) + "). Say \"retry " + j.host +
               "\" to re-run the verification.";
      return h + "failed at stage " + stage_label(j) + ": " + one_line(j.reason) + " (job " +
             std::to_string(j.id) + ", " + clock_utc(j.ended_ms, now) + "). Say \"retry " + j.host +
             "\" to resume.";
    case JobState::Cancelled:
      return h + "cancelled at stage " + stage_label(j) + " " + one_line(j.reason, 80) + " (job " +
             std::to_string(j.id) + ", " + clock_utc(j.ended_ms, now) + "). Say \"retry " + j.host +
             "\" to resume.";
  }
  return h + "unknown state";
}

std::string describe_event(const EngineEvent& e) {
  using K = EngineEvent::Kind;
  std::string h = e.host + ": ";
  std::string stage = std::to_string(e.stage) + "/" + std::to_string(e.stage_count) + " " + e.task;
  std::string job = "job " + std::to_string(e.job);
  switch (e.kind) {
    case K::JobQueued: return h + "queued, waiting for a free slot (" + job + ")";
    case K::JobStarted:
      return h + (e.stage > 1 ? "resuming at stage " + stage : "starting") + " (" + job +
             ", started by " + e.requested_by + ")";
    case K::StageStarted:
      return h + "stage " + stage + " started" +
             (e.attempt > 1 ? " (attempt " + std::to_string(e.attempt) + ", " + job + ")"
                            : " (" + job + ")");
    case K::StageLog: return {};
    case K::StageSucceeded:
      return h + "stage " + stage + " done in " + format_duration(e.elapsed) + " (" + job + ")";
    case K::StageRetrying:
      return h + "stage " + stage + " failed: " + one_line(e.text) + "; retrying in " +
             format_duration(e.delay) + " (" + job + ")";
    case K::JobReady:
      return h + "ready (" + job + ", " + std::to_string(e.stage_count) + " stages in " +
             format_duration(e.elapsed) + ")";
    case K::JobFailed:
      if (e.text.rfind(kNotVerified, 0) == 0)
        return h + "deployed but not verified at stage " + stage + ": " +
               one_line(e.text.substr(std::string_view(kNotVerified).size())) + " (" + job +
               "). Say \"retry " + e.host + "\" to re-run the verification.";
      return h + "failed at stage " + stage + ": " + one_line(e.text) + " (" + job +
             "). Say \"retry " + e.host + "\" to resume.";
    case K::JobCancelled:
      return h + "cancelled at stage " + stage + " by " + e.text + " (" + job +
             "). Say \"retry " + e.host + "\" to resume.";
    case K::StoreFailed:
      return "jarvis cannot write its job store: " + e.text +
             ". No stage starts and deploys are refused until it can; it retries by itself.";
    case K::StoreRecovered: return "jarvis: " + e.text + ".";
    case K::ConfirmationNeeded: return e.text;
    case K::Confirmed:
      return h + "confirmed by " + e.text + "; stage " + stage + " starts now (" + job + ")";
    case K::Notice: return e.text;
    case K::StoreLost:
      return "jarvis stops: " + e.text +
             ". Jobs written since are not in it; restore the file or start jarvis serve again.";
  }
  return {};
}

CommandService::CommandService(JobStore& store, const PipelineSet& pipelines,
                               DesignSource& designs, std::vector<std::string> workers_path,
                               Engine* engine)
    : store_(store), pipelines_(pipelines), designs_(designs),
      workers_path_(std::move(workers_path)), engine_(engine) {}

void CommandService::handle(const std::string& text, const Requester& who, Done done) {
  auto parsed = parse_command(text);
  if (!parsed.command) {
    Reply r{{parsed.error}, false};
    Command c;
    c.text = std::string(utf8_prefix(text, kMaxCommandLength));
    audit(who, c, r);
    done(std::move(r));
    return;
  }
  run(*parsed.command, who, std::move(done));
}

void CommandService::run(const Command& c, const Requester& who, Done done) {
  if (c.verb == Verb::Deploy || c.verb == Verb::Plan || c.verb == Verb::ForceDeploy) {
    deploy_or_plan(c, who, std::move(done));
    return;
  }
  Reply r;
  try {
    switch (c.verb) {
      case Verb::Status: r = c.argument.empty() ? jobs() : status(c); break;
      case Verb::Jobs: r = jobs(); break;
      case Verb::Log: r = log(c, who); break;
      case Verb::Cancel: r = cancel(c, who); break;
      case Verb::Retry: r = retry(c); break;
      case Verb::Help: r = help(c, who); break;
      case Verb::Audit: r = audit_trail(c, who); break;
      case Verb::Confirm: r = confirm(c, who); break;
      case Verb::Freeze: r = freeze(c, who); break;
      case Verb::Unfreeze: r = unfreeze(c, who); break;
      case Verb::Freezes: r = freezes(); break;
      case Verb::Walks: r = Reply{walk_lines(pipelines_, store_.walk_states(), now_ms())}; break;
      default: break;
    }
  } catch (const StoreError& e) {
    r = Reply{{"cannot " + std::string(verb_name(c.verb)) + " now: " + e.what() +
               "; nothing was changed. Try again in a minute."}, false};
    r.failure = Reply::Failure::Unavailable;
  } catch (const std::exception& e) {
    r = Reply{{"sorry, that failed inside jarvis: " + std::string(e.what())}, false};
    r.failure = Reply::Failure::Internal;
  }
  if (r.ok && engine_ && !engine_->store_problem().empty() &&
      (c.verb == Verb::Status || c.verb == Verb::Jobs))
    r.lines.push_back("note: jarvis cannot write its job store (" + engine_->store_problem() +
                      "): no stage starts until it can");
  audit(who, c, r);
  done(std::move(r));
}

std::optional<JobRecord> CommandService::find_job(const std::string& argument,
                                                  std::string& error) {
  auto target = parse_target(argument, error);
  if (!target) return std::nullopt;
  if (target->job) {
    auto j = store_.job(target->job);
    if (!j) error = "there is no job " + std::to_string(target->job);
    return j;
  }
  auto j = store_.latest_for_host(target->host);
  if (!j) error = target->host + ": no jobs yet. Say \"deploy <design>\" to start one.";
  return j;
}

// A job or host that find_job could not find: a bad name is the request's fault, a good
// name with no job is not found.
Reply CommandService::not_found(const Command& c, const std::string& error) {
  Reply r{{error}, false};
  std::string ignored;
  if (parse_target(c.argument, ignored)) {
    r.failure = Reply::Failure::NotFound;
  } else {
    r.failure = Reply::Failure::BadRequest;
    r.field = "target";
  }
  return r;
}

Reply CommandService::status(const Command& c) {
  std::string error;
  auto j = find_job(c.argument, error);
  if (!j) {
    // Not a host with jobs: perhaps a cluster deployed as a group.
    std::string ignored;
    if (auto t = parse_target(c.argument, ignored); t && !t->job)
      if (auto members = store_.latest_in_group(t->host); !members.empty())
        return cluster_status(t->host, members);
    return not_found(c, error);
  }
  int ahead = j->state == JobState::Queued ? store_.queued_ahead(j->id) : 0;
  return {{describe_job(*j, ahead, now_ms(), stopped(*j))}};
}

Reply CommandService::cluster_status(const std::string& group, const std::vector<JobRecord>& members) {
  int64_t now = now_ms();
  std::map<JobState, int> counts;
  for (const auto& j : members) ++counts[j.state];
  std::string summary;
  for (auto st : {JobState::Ready, JobState::Running, JobState::Queued, JobState::Failed, JobState::Cancelled})
    if (counts[st]) summary += (summary.empty() ? "" : ", ") + std::to_string(counts[st]) + " " + std::string(to_string(st));
  Reply r;
  bool done = counts[JobState::Ready] == static_cast<int>(members.size());
  r.lines.push_back("cluster " + group + ": " + std::to_string(members.size()) + " hosts, " +
                    (done ? "all ready" : summary));
  for (const auto& j : members)
    r.lines.push_back(describe_job(j, j.state == JobState::Queued ? store_.queued_ahead(j.id) : 0, now, stopped(j)));
  return r;
}

Reply CommandService::jobs() {
  Reply r;
  int64_t now = now_ms();
  auto active = store_.active_jobs();
  int queued = 0;
  for (const auto& j : active) r.lines.push_back(describe_job(j, j.state == JobState::Queued ? queued++ : 0, now, stopped(j)));
  if (active.empty()) r.lines.push_back("no jobs in flight");
  for (const auto& j : store_.recent_finished(5)) r.lines.push_back(describe_job(j, 0, now));
  return r;
}

bool CommandService::stopped(const JobRecord& j) const {
  return is_active(j.state) && owner_alive_ && !owner_alive_(j.owner);
}

Reply CommandService::log(const Command& c, const Requester& who) {
  std::string error;
  auto j = find_job(c.argument, error);
  if (!j) return not_found(c, error);
  Reply r;
  // The CLI shows what it is asked for, with times; a chat answer stays short.
  bool cli = who.protocol == "cli";
  int limit = c.lines ? c.lines : 20;
  if (!cli) limit = std::min(limit, 50);
  auto lines = store_.log(j->id, limit);
  if (lines.empty()) r.lines.push_back(j->host + ": job " + std::to_string(j->id) + " has no log lines yet");
  for (const auto& l : lines) {
    std::string where = l.stage >= 1 && l.stage <= j->stage_count()
                            ? std::to_string(l.stage) + "/" + std::to_string(j->stage_count()) + " " +
                                  j->tasks[static_cast<size_t>(l.stage - 1)].name
                            : "job";
    std::string when;
    if (cli) {
      time_t secs = static_cast<time_t>(l.at_ms / 1000);
      std::tm tm{};
      ::gmtime_r(&secs, &tm);
      char buf[32];
      std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S ", &tm);
      when = buf;
    }
    r.lines.push_back(when + j->host + " " + where + ": " + one_line(l.line, 1000));
  }
  return r;
}

Reply CommandService::cancel(const Command& c, const Requester& who) {
  std::string error;
  auto j = find_job(c.argument, error);
  if (!j) return not_found(c, error);
  if (!is_active(j->state))
    return conflict({j->host + ": job " + std::to_string(j->id) + " is not in flight (" +
                     std::string(to_string(j->state)) + "); nothing to cancel"}, 0);
  bool ok = engine_ ? engine_->cancel(j->id, who.who) : store_.request_cancel(j->id, who.who);
  if (!ok) return conflict({j->host + ": job " + std::to_string(j->id) + " finished meanwhile"}, 0);
  return {{j->host + ": cancelling job " + std::to_string(j->id) + " at stage " +
           std::to_string(std::min(j->stage + 1, j->stage_count())) + "/" +
           std::to_string(j->stage_count())}};
}

Reply CommandService::retry(const Command& c) {
  std::string error;
  auto j = find_job(c.argument, error);
  if (!j) return not_found(c, error);
  auto r = engine_ ? engine_->retry(j->id) : store_.requeue(j->id, "");
  if (!r.ok) {
    std::string line = j->host + ": cannot retry: " + r.error;
    if (r.conflict) line += " (job " + std::to_string(r.conflict->id) + ")";
    return conflict({line}, r.conflict ? r.conflict->id : 0);
  }
  std::string line = j->host + ": retrying job " + std::to_string(j->id) + " from stage " +
                     std::to_string(j->stage + 1) + "/" + std::to_string(j->stage_count()) + " " +
                     j->tasks[static_cast<size_t>(std::min(j->stage, j->stage_count() - 1))].name +
                     " with its saved clipboard";
  if (!engine_) line += "; a running jarvis serve picks it up";
  return {{line}};
}

void CommandService::deploy_or_plan(const Command& c, const Requester& who, Done done) {
  if (c.verb != Verb::Plan && !engine_) {
    Reply r{{"deploy needs a running engine: use \"jarvis run DESIGN\" or ask jarvis serve"}, false};
    r.failure = Reply::Failure::Unavailable;
    audit(who, c, r);
    done(std::move(r));
    return;
  }
  if (!designs_.handles(c.argument)) {
    Reply r{{"'" + std::string(utf8_prefix(c.argument, 80)) + "' is not a design I can load"}, false};
    r.failure = Reply::Failure::BadRequest;
    r.field = "design";
    audit(who, c, r);
    done(std::move(r));
    return;
  }
  // A gist, URL or LDAP design is fetched with the bot's credentials and from its network:
  // planning one needs the right to deploy, even where plan is open to everyone.
  if (c.verb == Verb::Plan && who.may && !who.may(Verb::Deploy) && designs_.remote(c.argument)) {
    Reply r{{who.who + ": planning a design from a gist, URL or LDAP needs the right to deploy; "
             "plan a design by name, or ask an admin"},
            false};
    audit(who, c, r);
    done(std::move(r));
    return;
  }
  designs_.fetch(c.argument, [this, c, who, done = std::move(done)](std::optional<Design> design,
                                                                     std::string error) {
    Reply r;
    if (design && !design->members.empty()) {
      r = c.verb == Verb::Plan ? plan_cluster(c, *design) : deploy_cluster(c, who, *design);
    } else if (!design) {
      r = {{"cannot " + std::string(verb_name(c.verb)) + ": " + error}, false};
      r.failure = Reply::Failure::BadRequest;
      r.field = "design";
    } else if (const Pipeline* p = pipelines_.select(design->root, c.pipeline, error); !p) {
      r = {{design->hostname + ": cannot " + std::string(verb_name(c.verb)) + ": " +
            without_values(error, designs_.remote(c.argument))},
           false};
      r.failure = Reply::Failure::BadRequest;
      r.field = "pipeline";
    } else if (auto frozen = c.verb == Verb::Deploy ? freeze_on(design->hostname, "") : std::nullopt) {
      r = {{design->hostname + ": not deploying: " + describe_freeze(*frozen, now_ms()) +
            ". Nothing was started; an admin can force it with \"deploy! " + design->hostname + "\"."},
           false};
      r.failure = Reply::Failure::Conflict;  // HTTP 409: the host is frozen
    } else if (c.verb == Verb::Plan) {
      auto missing = missing_workers(workers_path_, *p);
      r.lines.push_back(design->hostname + ": plan " + p->name + " (" +
                        std::to_string(p->tasks.size()) + " stages); nothing runs");
      r.lines.push_back(design->hostname + ": " + pipelines_.explain(*p, design->root, c.pipeline));
      for (size_t i = 0; i < p->tasks.size(); ++i) {
        const auto& t = p->tasks[i];
        std::string line = std::to_string(i + 1) + "/" + std::to_string(p->tasks.size()) + " " +
                           t.name + " (timeout " + format_duration(t.timeout);
        if (t.retries) line += ", " + std::to_string(t.retries) + " retries";
        line += ")";
        if (t.verify) line += " VERIFY (after the deploy; a failure is \"deployed but not verified\")";
        for (const auto& note : plan_safety(*design, *p, i)) line += " " + note;
        if (std::find(missing.begin(), missing.end(), t.name) != missing.end())
          line += " MISSING: no worker on the workers path";
        r.lines.push_back(line);
      }
      if (auto frozen = freeze_on(design->hostname, ""))
        r.lines.push_back(design->hostname + ": FROZEN: " + describe_freeze(*frozen, now_ms()) +
                          "; a deploy now is refused (an admin can force it with \"deploy! " +
                          design->hostname + "\")");
      if (auto current = store_.latest_for_host(design->hostname); current && is_active(current->state))
        r.lines.push_back(design->hostname + ": note: job " + std::to_string(current->id) +
                          " is in flight; a deploy now would be refused");
      r.ok = missing.empty();
    } else {
      std::optional<Freeze> forced = freeze_on(design->hostname, "");
      auto s = engine_->submit(*design, *p, who.who, who.protocol + ":" + who.place, who.person);
      if (s.job && forced) {
        std::string line = design->hostname + ": " + who.who + " forced a deploy through the freeze (" +
                           describe_freeze(*forced, now_ms()) + "), job " + std::to_string(s.job);
        log::warn(s.job, "{}", line);
        engine_->announce(line, who.protocol + ":" + who.place, s.job, design->hostname);
      }
      if (s.conflict) {
        int64_t now = now_ms();
        r = {{design->hostname + ": already in flight, not starting another: " +
                  describe_job(*s.conflict, 0, now),
              "say \"cancel " + design->hostname + "\" first, or wait for it"},
             false};
        r.failure = Reply::Failure::Conflict;
        r.conflict_job = s.conflict->id;
      } else if (!s.job && s.error.rfind("cannot accept deploys", 0) == 0) {
        r = {{design->hostname + ": " + s.error}, false};
        r.failure = Reply::Failure::Unavailable;
      } else if (!s.job) {
        r = {{design->hostname + ": cannot deploy: " + s.error}, false};
        r.failure = Reply::Failure::BadRequest;
        r.field = "design";
      } else {
        std::string state = s.queued ? "queued (all " + std::to_string(engine_->config().max_running) +
                                           " slots busy)"
                                     : "deploying";
        r.lines.push_back(design->hostname + ": " + state + " with " + p->name + ", " +
                          std::to_string(p->tasks.size()) + " stages (job " +
                          std::to_string(s.job) + ")" +
                          (forced ? "; forced through the freeze by " + forced->by + ", audited" : ""));
        r.group = who.who + (s.queued ? ": queued, waiting for a slot:" : ": deploying");
        r.item = design->hostname;
        r.job = s.job;
      }
    }
    audit(who, c, r);
    done(std::move(r));
  });
}

Reply CommandService::plan_cluster(const Command& c, const Design& cluster) {
  Reply r;
  r.lines.push_back("cluster " + cluster.cluster + ": plan for " + std::to_string(cluster.members.size()) +
                    " hosts; nothing runs");
  for (const auto& m : cluster.members) {
    std::string error;
    const Pipeline* p = pipelines_.select(m.root, c.pipeline, error);
    if (!p) {
      r.lines.push_back(m.hostname + ": " + without_values(error, designs_.remote(c.argument)));
      r.ok = false;
      continue;
    }
    auto missing = missing_workers(workers_path_, *p);
    std::string line = m.hostname + ": " + p->name + " (" + std::to_string(p->tasks.size()) + " stages)";
    if (!missing.empty()) {
      line += " MISSING workers:";
      for (const auto& t : missing) line += " " + t;
      r.ok = false;
    }
    if (auto current = store_.latest_for_host(m.hostname); current && is_active(current->state))
      line += "; note: job " + std::to_string(current->id) + " is in flight, a deploy now would be refused";
    r.lines.push_back(line);
  }
  return r;
}

Reply CommandService::deploy_cluster(const Command& c, const Requester& who, const Design& cluster) {
  // All or nothing: every host must have a pipeline and be free before any job starts.
  std::vector<const Pipeline*> chosen;
  Reply refused{{}, false};
  int64_t now = now_ms();
  for (const auto& m : cluster.members) {
    std::string error;
    const Pipeline* p = pipelines_.select(m.root, c.pipeline, error);
    if (!p) refused.lines.push_back(m.hostname + ": " + without_values(error, designs_.remote(c.argument)));
    else if (auto missing = missing_workers(workers_path_, *p); !missing.empty())
      refused.lines.push_back(m.hostname + ": pipeline " + p->name + " has no worker for " + missing.front());
    else if (auto current = store_.latest_for_host(m.hostname); current && is_active(current->state))
      refused.lines.push_back(m.hostname + ": already in flight: " + describe_job(*current, 0, now));
    else if (auto frozen = c.verb == Verb::Deploy ? freeze_on(m.hostname, cluster.cluster) : std::nullopt)
      refused.lines.push_back(m.hostname + ": " + describe_freeze(*frozen, now) +
                              " (an admin can force it with \"deploy! " + cluster.cluster + "\")");
    chosen.push_back(p);
  }
  if (!refused.lines.empty()) {
    refused.lines.insert(refused.lines.begin(), "cluster " + cluster.cluster + ": not starting any of its " +
                                                     std::to_string(cluster.members.size()) + " hosts:");
    return refused;
  }
  Reply r;
  std::string started, pipelines;
  std::vector<std::string> named;
  for (size_t i = 0; i < cluster.members.size(); ++i) {
    const Design& m = cluster.members[i];
    std::optional<Freeze> forced = freeze_on(m.hostname, cluster.cluster);
    auto s = engine_->submit(m, *chosen[i], who.who, who.protocol + ":" + who.place, who.person);
    if (s.job && forced)
      engine_->announce(m.hostname + ": " + who.who + " forced a deploy through the freeze (" +
                            describe_freeze(*forced, now) + "), job " + std::to_string(s.job),
                        who.protocol + ":" + who.place, s.job, m.hostname);
    if (!s.job) {
      // Lost a race with another process for this host: say so, the others go on.
      r.ok = false;
      r.lines.push_back(m.hostname + ": not started: " +
                        (s.conflict ? "already in flight (job " + std::to_string(s.conflict->id) + ")" : s.error));
      continue;
    }
    started += (started.empty() ? "" : ", ") + m.hostname + " (job " + std::to_string(s.job) + ")";
    // Each pipeline named once (a substring test would miss "three" after "threefold").
    if (std::find(named.begin(), named.end(), chosen[i]->name) == named.end()) {
      named.push_back(chosen[i]->name);
      pipelines += (pipelines.empty() ? "" : ", ") + chosen[i]->name;
    }
  }
  r.lines.insert(r.lines.begin(), "cluster " + cluster.cluster + ": deploying " +
                                      std::to_string(cluster.members.size()) + " hosts with " + pipelines +
                                      ": " + started + ". Say \"status " + cluster.cluster + "\" for all of them.");
  return r;
}

Reply CommandService::audit_trail(const Command& c, const Requester& who) {
  // A shell shows a page; a chat answer stays short.
  const size_t shown = who.protocol == "cli" ? 100 : 10;
  std::string host;
  if (!c.argument.empty()) {
    std::string error;
    auto t = parse_target(c.argument, error);
    if (!t || t->job) return {{"audit takes a host name: " + (error.empty() ? c.argument : error)}, false};
    host = t->host;
  }
  Reply r;
  // The newest entries that mention the host as a word of the command.
  auto entries = store_.audit_trail(host.empty() ? static_cast<int>(shown) : 5000);
  std::vector<AuditEntry> picked;
  for (auto it = entries.rbegin(); it != entries.rend() && picked.size() < shown; ++it) {
    if (!host.empty()) {
      std::string padded = " " + it->command + " ";
      if (padded.find(" " + host + " ") == std::string::npos) continue;
    }
    picked.push_back(*it);
  }
  std::reverse(picked.begin(), picked.end());
  for (const auto& e : picked) {
    time_t secs = static_cast<time_t>(e.at_ms / 1000);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::gmtime(&secs));
    r.lines.push_back(std::string(when) + " " + e.who + " (" + e.protocol + " " + e.place + "): " +
                      one_line(e.command, 200) + " -> " + one_line(e.outcome, 200));
  }
  if (picked.empty()) r.lines.push_back(host.empty() ? "the audit trail is empty" : "no audit entries about " + host);
  return r;
}

std::optional<Freeze> CommandService::freeze_on(const std::string& host, const std::string& cluster) {
  auto in_force = store_.freezes_in_force(now_ms());
  if (const Freeze* f = freeze_for(in_force, host, cluster)) return *f;
  return std::nullopt;
}

// What `plan` says about a stage besides its timeout: destructive, and whether a deploy now
// would stop for a confirmation there, and on what fact.
std::vector<std::string> CommandService::plan_safety(const Design& design, const Pipeline& p, size_t stage) {
  const TaskSpec& t = p.tasks[stage];
  if (!t.destructive) return {};
  // Only the first of a run of destructive stages waits: one confirmation covers the run.
  if (stage > 0 && p.tasks[stage - 1].destructive) return {"DESTRUCTIVE (covered by the confirmation before it)"};
  auto fact = production_fact(design.root, design.hostname, safety_);
  if (fact.production)
    return {"DESTRUCTIVE: STOPS for a confirmation (in production: " + fact.source + ")"};
  for (size_t i = 0; i < stage; ++i)
    if (p.tasks[i].name == "inventory:check_production")
      return {"DESTRUCTIVE: stops for a confirmation if stage " + std::to_string(i + 1) +
              " inventory:check_production finds " + design.hostname + " in production"};
  return {"DESTRUCTIVE: runs without a confirmation (nothing says " + design.hostname + " is in production)"};
}

Reply CommandService::confirm(const Command& c, const Requester& who) {
  std::string error;
  auto j = find_job(c.argument, error);
  if (!j) return {{error}, false};
  int64_t now = now_ms();
  std::string id = std::to_string(j->id);
  if (!j->awaiting_confirmation())
    return {{j->host + ": job " + id + " is not waiting for a confirmation: " +
             describe_job(*j, 0, now, stopped(*j))},
            false};
  if (j->confirm_until_ms <= now)
    return {{j->host + ": job " + id + " waited for a confirmation until " + clock_utc(j->confirm_until_ms, now) +
             "; it is too late, and it fails with nothing done. Say \"retry " + j->host + "\" to ask again."},
            false};
  bool same = lower(who.who) == lower(j->requested_by) ||
              (!who.person.empty() && who.person == j->requester_key);
  if (safety_.two_person && same)
    return {{who.who + ": you asked for job " + id + " yourself; someone else with the confirm right "
             "must confirm it (safety.two_person). Nothing was done."},
            false};
  std::string task = j->tasks[static_cast<size_t>(std::min(j->stage, j->stage_count() - 1))].name;
  bool ok = false;
  if (engine_) {
    ok = engine_->confirm(j->id, who.who, error);
  } else {
    ok = store_.confirm(j->id, who.who, now);
    if (!ok) error = "job " + id + " is not waiting for a confirmation any more";
  }
  if (!ok) return {{j->host + ": not confirmed: " + error}, false};
  std::string line = j->host + ": confirmed by " + who.who + ": stage " + std::to_string(j->stage + 1) + "/" +
                     std::to_string(j->stage_count()) + " " + task + " starts now (job " + id + ")";
  if (!engine_) line += stopped(*j) ? "; start jarvis serve to run it" : "; the jarvis running it goes on";
  return {{line}};
}

Reply CommandService::freeze(const Command& c, const Requester& who) {
  int64_t now = now_ms();
  Freeze f;
  f.scope = c.argument.empty() ? "all" : c.argument;
  f.by = who.who;
  f.reason = c.reason;
  f.from_ms = now;
  f.until_ms = c.duration_ms ? now + c.duration_ms : 0;
  f.id = store_.add_freeze(f);
  std::string line = "freeze " + std::to_string(f.id) + ": " + describe_freeze(f, now) + ". Deploys of " +
                     (f.scope == "all" ? std::string("any host") : f.scope) +
                     " are refused; an admin can force one with \"deploy! HOST\"; \"unfreeze " + f.scope +
                     "\" lifts it.";
  if (engine_) engine_->announce(line, who.protocol + ":" + who.place);
  return {{line}};
}

Reply CommandService::unfreeze(const Command& c, const Requester& who) {
  std::string scope = c.argument.empty() ? "all" : c.argument;
  int n = store_.lift_freezes(scope, who.who, now_ms());
  if (n == 0) {
    std::string others;
    for (const auto& f : store_.freezes_in_force(now_ms())) others += (others.empty() ? "" : ", ") + f.scope;
    return {{"nothing to unfreeze: " + scope + " has no freeze of its own in force" +
             (others.empty() ? "" : " (in force: " + others + ")")},
            false};
  }
  std::string line = (scope == "all" ? std::string("everything") : scope) + " is unfrozen by " + who.who +
                     " (" + std::to_string(n) + (n == 1 ? " freeze" : " freezes") + " lifted)";
  if (auto left = freeze_on(scope, ""); left && scope != "all") line += "; still frozen: " + describe_freeze(*left, now_ms());
  if (engine_) engine_->announce(line, who.protocol + ":" + who.place);
  return {{line}};
}

Reply CommandService::freezes() {
  Reply r;
  int64_t now = now_ms();
  for (const auto& f : store_.freezes_in_force(now))
    r.lines.push_back("freeze " + std::to_string(f.id) + ": " + describe_freeze(f, now) + ", since " +
                      clock_utc(f.from_ms, now));
  if (r.lines.empty()) r.lines.push_back("no freezes in force");
  return r;
}

void CommandService::audit_refusal(const Requester& who, const std::string& text,
                                   const std::string& why) {
  Command c;
  c.text = std::string(utf8_prefix(text, kMaxCommandLength));
  audit(who, c, Reply{{why}, false});
}

Reply CommandService::help(const Command& c, const Requester& who) {
  struct Entry { Verb verb; const char* usage; const char* what; };
  static const Entry entries[] = {
      {Verb::Deploy, "deploy <design> [--pipeline NAME]", "start a job that builds the host in the design"},
      {Verb::Status, "status <host|job>", "where a job is: the stage running, the failure, or ready"},
      {Verb::Jobs, "jobs", "jobs in flight and the last ones finished"},
      {Verb::Log, "log <host|job>", "the last lines the job's workers wrote"},
      {Verb::Cancel, "cancel <host|job>", "stop a job in flight (the running worker is killed)"},
      {Verb::Retry, "retry <host|job>", "resume a failed or cancelled job at the stage where it stopped"},
      {Verb::Plan, "plan <design> [--pipeline NAME]", "dry run: the pipeline and stages a deploy would run"},
      {Verb::Help, "help [command]", "this list, or one command in detail"},
      {Verb::Audit, "audit [host]", "who asked for what, when and from where (the last 10)"},
      {Verb::Confirm, "confirm <job|host>", "let a destructive stage run on a production host (someone other than the requester)"},
      {Verb::Freeze, "freeze [host|cluster|all] [for DURATION] [reason]", "refuse deploys there until it ends or is lifted"},
      {Verb::Unfreeze, "unfreeze [host|cluster|all]", "lift the freezes of that scope"},
      {Verb::Freezes, "freezes", "the change freezes in force: who, why, until when"},
      {Verb::Walks, "walks", "the scheduled pipelines: each host's last result and the next run"},
      {Verb::ForceDeploy, "deploy! <design>", "deploy through a change freeze (admins; audited and announced)"},
  };
  Reply r;
  if (!c.argument.empty()) {
    for (const auto& e : entries) {
      if (verb_name(e.verb) == c.argument) {
        r.lines.push_back(std::string(e.usage) + ": " + e.what);
        return r;
      }
    }
    return {{"there is no command \"" + std::string(utf8_prefix(c.argument, 40)) + "\". Say \"help\" for the list."}, false};
  }
  for (const auto& e : entries)
    if (!who.may || who.may(e.verb)) r.lines.push_back(std::string(e.usage) + ": " + e.what);
  return r;
}

void CommandService::audit(const Requester& who, const Command& c, const Reply& reply) {
  AuditEntry e;
  e.at_ms = now_ms();
  e.who = who.id.empty() ? who.who : who.id;
  e.protocol = who.protocol;
  e.place = who.place;
  // The trail is open to everyone in chat: no credentials from URLs in it.
  e.command = redact_url_credentials(c.text);
  e.outcome = redact_url_credentials(
      reply.ok ? "ok" : "refused: " + (reply.lines.empty() ? "" : one_line(reply.lines[0], 300)));
  try {
    store_.audit(e);
  } catch (const std::exception& ex) {
    // The reply still goes out; a store that cannot write is loud in the log.
    log::error(log::kNoJob, "cannot write the audit trail: {}", ex.what());
  }
}

}  // namespace jarvis
