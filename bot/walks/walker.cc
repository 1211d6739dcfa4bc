#include "bot/walks/walker.h"

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <deque>

#include "bot/pipeline/worker_path.h"
#include "bot/util/duration.h"
#include "bot/util/log.h"
#include "bot/util/secrets.h"
#include "bot/util/yaml_doc.h"

namespace jarvis {
namespace {

std::string one_line(std::string s, size_t max = 300) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

}  // namespace

struct Walker::Walk {
  explicit Walk(boost::asio::io_context& io) : timer(io) {}
  const Pipeline* p = nullptr;
  boost::asio::steady_timer timer;
  std::map<std::string, WalkState> last;  // host -> its last result
  int64_t round_start = 0;
  std::deque<std::pair<std::string, std::string>> pending;  // host, its clipboard
  std::string host, clipboard;                               // the host being walked
  size_t task = 0;
  std::shared_ptr<RunningWorker> worker;
  bool interrupted = false;  // a deploy of the host started: this run does not count
  Redactor redactor;
};

Walker::Walker(boost::asio::io_context& io, JobStore& store, WorkerRunner& runner,
               const PipelineSet& pipelines, Engine& engine, Hosts hosts)
    : io_(io), store_(store), runner_(runner), pipelines_(pipelines), engine_(engine), hosts_(std::move(hosts)) {}

Walker::~Walker() { stop(); }

void Walker::start() {
  std::vector<WalkState> states;
  try {
    states = store_.walk_states();
  } catch (const StoreError& e) {
    log::error(log::kNoJob, "walks: cannot read their last results: {}", e.what());
  }
  for (const auto& p : pipelines_.all()) {
    if (!p.is_walk()) continue;
    auto w = std::make_unique<Walk>(io_);
    w->p = &p;
    int64_t last_run = 0;
    for (const auto& s : states)
      if (s.walk == p.name) {
        w->last[s.host] = s;
        last_run = std::max(last_run, s.last_run_ms);
      }
    // Due since the last round: one run now, however many intervals were missed.
    int64_t now = now_ms();
    int64_t due = p.next_walk(last_run, now);
    if (due == 0) {
      log::warn(log::kNoJob, "walk {}: its {} names no time in the next four years; it never runs", p.name,
                p.schedule_text());
      continue;
    }
    Millis delay(std::max<int64_t>(0, due - now));
    log::info(log::kNoJob, "walk {}: {}, next run in {}", p.name, p.schedule_text(), format_duration(delay));
    schedule(*w, delay);
    walks_.push_back(std::move(w));
  }
  engine_.add_observer([this](const EngineEvent& e) { on_event(e); });
}

void Walker::stop() {
  stopping_ = true;
  for (auto& w : walks_) {
    w->timer.cancel();
    if (w->worker) w->worker->cancel();
  }
}

void Walker::schedule(Walk& w, Millis delay) {
  if (stopping_) return;
  w.timer.expires_after(delay);
  w.timer.async_wait([this, &w](const boost::system::error_code& ec) {
    if (!ec && !stopping_) round(w);
  });
}

void Walker::round(Walk& w) {
  w.round_start = now_ms();
  w.pending.clear();
  try {
    for (const auto& host : hosts_()) {
      // Only hosts whose latest job is ready: none being deployed, none half-built.
      auto latest = store_.latest_for_host(host);
      if (!latest || latest->state != JobState::Ready) continue;
      if (!w.p->target_cluster.empty() && latest->group != w.p->target_cluster) continue;
      auto rec = store_.job(latest->id);
      if (!rec) continue;
      if (!w.p->target_match.empty()) {
        try {
          if (!Pipeline::fields_match(w.p->target_match, load_mapping_document(rec->clipboard, YamlLimits{})))
            continue;
        } catch (const std::exception&) {
          continue;
        }
      }
      w.pending.emplace_back(host, rec->clipboard);
    }
  } catch (const StoreError& e) {
    log::warn(log::kNoJob, "walk {}: skipped a round: {}", w.p->name, e.what());
  }
  next_host(w);
}

void Walker::next_host(Walk& w) {
  if (stopping_) return;
  if (w.pending.empty()) {
    int64_t next = w.p->next_walk(w.round_start, now_ms());
    if (next == 0) return;
    schedule(w, Millis(std::max<int64_t>(0, next - now_ms())));
    return;
  }
  // Deployed since the round began: not walked this time (a loop, not recursion: a long list
  // of hosts being deployed must not grow the stack).
  while (true) {
    std::tie(w.host, w.clipboard) = w.pending.front();
    w.pending.pop_front();
    bool ready = false;
    try {
      auto latest = store_.latest_for_host(w.host);
      ready = latest && latest->state == JobState::Ready;
    } catch (const StoreError&) {
    }
    if (ready) break;
    if (w.pending.empty()) return next_host(w);
  }
  w.task = 0;
  w.interrupted = false;
  w.redactor = Redactor();
  const auto& cfg = engine_.config();
  w.redactor.add(cfg.secrets);
  w.redactor.add(secret_values(w.clipboard, cfg.secret_patterns));
  run_task(w);
}

void Walker::run_task(Walk& w) {
  if (w.task >= w.p->tasks.size()) return host_done(w, true, "");
  const TaskSpec& t = w.p->tasks[w.task];
  const auto& cfg = engine_.config();
  auto path = resolve_worker(cfg.workers_path, t.name);
  if (!path) return host_done(w, false, t.name + ": no executable " + t.module() + "/" + t.task() + " on the workers path");
  WorkerInvocation inv;
  inv.executable = *path;
  inv.argv = {*path, t.task()};
  inv.timeout = t.timeout;
  inv.input = w.clipboard;
  inv.env = {"JARVIS_JOB=walk-" + w.p->name, "JARVIS_WALK=" + w.p->name, "JARVIS_TASK=" + t.name,
             "JARVIS_STAGE=" + std::to_string(w.task + 1), "JARVIS_STAGES=" + std::to_string(w.p->tasks.size()),
             "JARVIS_ATTEMPT=1", "JARVIS_HOST=" + w.host, "JARVIS_STATE_DIR=" + cfg.state_dir};
  for (const auto& e : cfg.env_set) inv.env.push_back(e);
  for (const auto& name : cfg.env_allow)
    if (const char* v = std::getenv(name.c_str())) inv.env.push_back(name + "=" + v);
  Walk* wp = &w;
  w.worker = runner_.start(
      std::move(inv), [](std::string_view) {},
      [this, wp](WorkerOutcome outcome) {
        Walk& w = *wp;
        w.worker = nullptr;
        if (stopping_) return;
        if (w.interrupted) {
          log::info(log::kNoJob, "walk {}: {} is being deployed; its walk stopped and does not count",
                    w.p->name, w.host);
          return next_host(w);
        }
        const TaskSpec& t = w.p->tasks[w.task];
        std::string reason = w.redactor.redact(describe_failure(outcome, t.timeout, engine_.config().output_limits, &w.redactor));
        // Exit 0 with output that is no mapping still passed the check: a walk's output is not used.
        if (outcome.kind == WorkerOutcome::Kind::Exited && outcome.code == 0) reason.clear();
        if (!reason.empty()) return host_done(w, false, t.name + ": " + reason);
        ++w.task;
        run_task(w);
      });
}

void Walker::host_done(Walk& w, bool ok, const std::string& reason) {
  int64_t now = now_ms();
  WalkState s{w.p->name, w.host, ok, one_line(reason), now, now};
  auto it = w.last.find(w.host);
  bool changed = it == w.last.end() ? !ok : it->second.ok != ok;
  if (it != w.last.end() && it->second.ok == ok) s.since_ms = it->second.since_ms;
  if (changed) {
    std::string line = "walk " + w.p->name + ": " + w.host +
                       (ok ? " has recovered (failing since " + utc_time_of_day(it->second.since_ms) + ": " +
                                 it->second.reason + ")"
                           : " is failing: " + s.reason + (it == w.last.end() ? " (first run)" : " (was passing)"));
    log::warn(log::kNoJob, "{}", line);
    engine_.announce(line, "", 0, w.host);
  }
  w.last[w.host] = s;
  try {
    store_.record_walk(s);
  } catch (const StoreError& e) {
    log::error(log::kNoJob, "walk {}: cannot record {}'s result: {}", w.p->name, w.host, e.what());
  }
  next_host(w);
}

void Walker::on_event(const EngineEvent& e) {
  using K = EngineEvent::Kind;
  if (e.kind != K::JobQueued && e.kind != K::JobStarted) return;
  for (auto& w : walks_) {
    if (w->worker && w->host == e.host && !w->interrupted) {
      w->interrupted = true;
      w->worker->cancel();
    }
  }
}

std::vector<std::string> walk_lines(const PipelineSet& pipelines, const std::vector<WalkState>& states,
                                    int64_t now) {
  std::vector<std::string> out;
  for (const auto& p : pipelines.all()) {
    if (!p.is_walk()) continue;
    std::string targets = !p.target_cluster.empty() ? "cluster " + p.target_cluster
                          : !p.target_match.empty() ? "hosts matching " + p.target_match.front().first + "=" + p.target_match.front().second
                                                    : "every ready host";
    int64_t last = 0;
    std::string hosts;
    int failing = 0;
    for (const auto& s : states) {
      if (s.walk != p.name) continue;
      last = std::max(last, s.last_run_ms);
      if (!s.ok) ++failing;
      hosts += "; " + s.host + (s.ok ? " ok" : " FAILING since " + utc_time_of_day(s.since_ms) + ": " + s.reason);
    }
    int64_t due = p.next_walk(last, now);
    std::string next = last == 0 && !p.cron ? "next run when jarvis serve starts it"
                       : due == 0           ? "never runs (its cron line names no time)"
                       : due <= now         ? "next run due now"
                                            : "next run at " + utc_time_of_day(due);
    out.push_back("walk " + p.name + " (" + p.schedule_text() + ", " + targets + "): " +
                  (last == 0 ? "not run yet" : std::to_string(failing) + " failing, last run " + utc_time_of_day(last)) +
                  ", " + next + hosts);
  }
  if (out.empty()) out.push_back("no walks: a pipeline with schedule: {every: DURATION} is one");
  return out;
}

}  // namespace jarvis
