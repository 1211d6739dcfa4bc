#include "bot/app/cli.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bot/app/cli_args.h"
#include "bot/app/online_check.h"
#include "bot/app/config.h"
#include "bot/chat/announcer.h"
#include "bot/chat/chat_front.h"
#include "bot/chat/irc/irc_adapter.h"
#include "bot/chat/console/console_front.h"
#include "bot/commands/command_service.h"
#include "bot/design/file_design_source.h"
#include "bot/design/ldap_design_source.h"
#include "bot/design/url_design_source.h"
#include "bot/http/api.h"
#include "bot/http/http_server.h"
#include "bot/http/tokens.h"
#include "bot/net/http_client.h"
#include "bot/pipeline/engine.h"
#include "bot/walks/walker.h"
#include "bot/util/text.h"
#include "bot/pipeline/process_runner.h"
#include "bot/pipeline/worker_path.h"
#include "bot/cluster/event_relay.h"
#include "bot/store/postgres/pg_listener.h"
#include "bot/store/postgres/postgres_job_store.h"
#include "bot/store/sqlite_job_store.h"
#include "bot/util/log.h"
#include "bot/util/url_redact.h"

namespace jarvis {
namespace {
namespace asio = boost::asio;

// Who runs this command, for the audit trail: the real uid's name. $USER is the caller's to
// set, so it would let anyone act under anyone's name.
std::string current_user() {
  if (passwd* pw = ::getpwuid(::getuid())) return pw->pw_name;
  return "uid" + std::to_string(::getuid());
}

// "alice@build-2": the CLI's identity in the audit trail (protocol cli).
std::string cli_identity() {
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = 0;
  return current_user() + "@" + (host[0] ? host : "localhost");
}

std::string tty_place() {
  const char* tty = ::ttyname(STDIN_FILENO);
  return tty ? tty : "no tty";
}

// Commands that act outside the command core (run, a foreground retry, cancelling a stopped
// job) write their audit rows here, like every other front.
void audit_cli(JobStore& store, const std::string& command, const std::string& outcome) {
  AuditEntry e;
  e.at_ms = now_ms();
  e.who = cli_identity();
  e.protocol = "cli";
  e.place = tty_place();
  e.command = redact_url_credentials(command);  // the audit trail is open to all
  e.outcome = redact_url_credentials(outcome);
  try {
    store.audit(e);
  } catch (const std::exception& ex) {
    std::cerr << "jarvis: warning: cannot write the audit trail: " << ex.what() << '\n';
  }
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

// `jarvis serve` holds an flock on the state directory itself: unlike a lock file, nobody
// can delete it out from under a running serve to let a second one start.
int lock_state_dir(const std::string& state_dir) {
  int fd = ::open(state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

bool serve_running(const std::string& state_dir) {
  int fd = lock_state_dir(state_dir);
  if (fd >= 0) ::close(fd);
  return fd < 0 && errno == EWOULDBLOCK;
}

// The state holds designs, clipboards and their secrets: this user's only. A directory of
// someone else's is refused; one open to others is allowed (its files are 0600) but said.
void secure_state_dir(const std::string& dir) {
  std::filesystem::create_directories(dir);  // 0700 under the umask set at start
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    throw std::runtime_error("cannot use the state dir " + dir + ": " + std::strerror(errno));
  if (st.st_uid != ::geteuid())
    throw std::runtime_error("the state dir " + dir + " belongs to uid " + std::to_string(st.st_uid) +
                             ", not to this user (uid " + std::to_string(::geteuid()) +
                             "); use a state dir of your own (--state-dir)");
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    std::string msg = "the state dir " + dir + " is open to other users (mode " + mode +
                      "): its database is 0600, but run \"chmod 700 " + dir + "\"";
    log::warn(log::kNoJob, "{}", msg);  // on stderr: the CLI logs warnings there
  }
}

// Live progress of one job: a stage list with a bar on a terminal, plain lines otherwise.
class ProgressView {
 public:
  ProgressView(asio::io_context& io, bool tty) : tty_(tty), tick_(io) {}

  void on_event(const EngineEvent& e) {
    using K = EngineEvent::Kind;
    if (!tty_) {
      std::string line;
      if (e.kind == K::StageLog)
        line = e.host + " " + std::to_string(e.stage) + "/" + std::to_string(e.stage_count) + " " +
               e.task + " | " + e.text;
      else if (e.kind == K::JobFailed || e.kind == K::JobCancelled)
        line = shell_ending(e);
      else
        line = describe_event(e);
      std::cout << line << '\n' << std::flush;
      return;
    }
    current_ = e;
    if (e.kind == K::StageStarted) stage_start_ = std::chrono::steady_clock::now();
    switch (e.kind) {
      case K::StageLog: print("      \x1b[2m│ " + e.text + "\x1b[0m"); break;
      case K::StageSucceeded:
        print("  \x1b[32m✓\x1b[0m " + pad(e) + "  " + format_duration(e.elapsed));
        done_ = e.stage;
        break;
      case K::StageRetrying:
        print("  \x1b[33m↻\x1b[0m " + pad(e) + "  " + e.text + "; retrying in " + format_duration(e.delay));
        break;
      case K::JobFailed:
        print("  \x1b[31m✗\x1b[0m " + pad(e) + "  " + e.text);
        print("  resume it at this stage: jarvis retry " + e.host + "   (its log: jarvis log " + e.host + ")");
        break;
      case K::JobCancelled: print(shell_ending(e)); break;
      case K::JobStarted:
      case K::JobQueued:
      case K::JobReady:
      case K::StoreFailed:
      case K::StoreRecovered:
      case K::StoreLost:
      case K::ConfirmationNeeded:
      case K::Confirmed:
      case K::Notice: print(describe_event(e)); break;
      case K::StageStarted: break;
    }
    finished_ = e.kind == K::JobReady || e.kind == K::JobFailed || e.kind == K::JobCancelled ||
                e.kind == K::StoreLost;
    draw_bar();
    if (!finished_ && !ticking_) tick();
  }

  void finish() {
    finished_ = true;
    tick_.cancel();
    if (tty_) std::cout << "\r\x1b[K" << std::flush;
  }

 private:
  // The end of a job that did not get ready, with the next step as a shell command (the chat
  // wording says "Say retry loki").
  static std::string shell_ending(const EngineEvent& e) {
    std::string stage = std::to_string(e.stage) + "/" + std::to_string(e.stage_count) + " " + e.task;
    bool unverified = e.text.rfind(kNotVerified, 0) == 0;
    std::string what = e.kind != EngineEvent::Kind::JobFailed ? "cancelled at stage " + stage + " by " + e.text
                       : unverified ? "deployed but not verified at stage " + stage + ": " +
                                          e.text.substr(std::string_view(kNotVerified).size())
                                    : "failed at stage " + stage + ": " + e.text;
    return e.host + ": " + what + " (job " + std::to_string(e.job) + "). Resume it with: jarvis retry " + e.host;
  }
  static std::string pad(const EngineEvent& e) {
    std::string n = std::to_string(e.stage) + "/" + std::to_string(e.stage_count);
    return std::string(n.size() < 5 ? 5 - n.size() : 0, ' ') + n + " " + e.task;
  }
  void print(const std::string& line) { std::cout << "\r\x1b[K" << line << '\n'; }
  void draw_bar() {
    if (finished_ || !current_) { std::cout << std::flush; return; }
    const int width = 24;
    int total = std::max(1, current_->stage_count);
    int filled = width * done_ / total;
    auto secs = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - stage_start_);
    std::cout << "\r\x1b[K  [" << std::string(static_cast<size_t>(filled), '#')
              << std::string(static_cast<size_t>(width - filled), '-') << "] " << done_ << "/"
              << total << "  " << current_->task << "  " << format_duration(secs) << std::flush;
  }
  void tick() {
    ticking_ = true;
    tick_.expires_after(std::chrono::seconds(1));
    tick_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled: the view may be gone
      ticking_ = false;
      if (finished_) return;
      draw_bar();
      tick();
    });
  }

  bool tty_;
  asio::steady_timer tick_;
  std::optional<EngineEvent> current_;
  int done_ = 0;
  bool finished_ = false, ticking_ = false;
  std::chrono::steady_clock::time_point stage_start_ = std::chrono::steady_clock::now();
};

// What every subcommand needs: config, store, pipelines.
struct Context {
  Config config;
  std::unique_ptr<JobStore> store;
  PipelineSet pipelines;
  std::vector<std::string> pipeline_errors;
};

// The configured store. serve's loop must not sit in a lock wait: past a short bound it
// pauses and retries instead; the CLI can afford to wait longer.
std::unique_ptr<JobStore> open_store(const Config& config, bool serve) {
  if (config.store.kind == StoreConfig::Kind::Postgres) {
    PostgresOptions options;
    options.statement_timeout_ms =
        serve ? static_cast<int>(config.store.statement_timeout.count()) : 30000;
    return std::make_unique<PostgresJobStore>(config.store.url, options);
  }
  SqliteOptions options;
  if (serve) options.busy_timeout_ms = 500;
  return std::make_unique<SqliteJobStore>(config.store_path(), options);
}

std::unique_ptr<Context> open_context(const CliArgs& args, log::Level level) {
  auto ctx = std::make_unique<Context>();
  ctx->config = load_config(args.overrides);
  log::init(ctx->config.log_format, level);
  secure_state_dir(ctx->config.state_dir);
  if (args.command != "serve") {
    ctx->store = open_store(ctx->config, false);
  } else {
    // A bot started on a full disk (or under another process's lock) waits for its store
    // instead of exiting: a supervisor restarting it in a loop helps nobody. ^C still stops it.
    sigset_t stop_signals, previous;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &stop_signals, &previous);
    bool said = false;
    while (!ctx->store) {
      try {
        ctx->store = open_store(ctx->config, true);
      } catch (const StoreError& e) {
        // Full, busy and a server still starting clear by themselves; read-only or denied is
        // for a person to fix.
        if (e.kind() != StoreError::Kind::Full && e.kind() != StoreError::Kind::Busy &&
            e.kind() != StoreError::Kind::Unreachable)
          throw;
        if (!said) {
          std::cerr << "jarvis: " << e.what() << "; waiting until it can be written (retrying every 2s)\n";
          log::error(log::kNoJob, "{}; serve waits until it can be written", e.what());
          said = true;
        }
        timespec wait{2, 0};
        if (::sigtimedwait(&stop_signals, nullptr, &wait) > 0) {
          ::sigprocmask(SIG_SETMASK, &previous, nullptr);
          throw std::runtime_error("stopped while waiting for the job store");
        }
      }
    }
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);
    if (said) log::info(log::kNoJob, "the job store can be written again; starting");
  }
  PipelineDefaults defaults;
  defaults.timeout = ctx->config.default_timeout;
  ctx->pipelines = PipelineSet::load_dir(ctx->config.pipelines_dir, defaults, ctx->pipeline_errors);
  return ctx;
}

void warn_pipeline_errors(const Context& ctx) {
  for (const auto& e : ctx.pipeline_errors) std::cerr << "jarvis: warning: " << e << '\n';
}

// Runs one job in this process until it ends. `start` submits or requeues it.
int follow_job(Context& ctx, const std::function<int64_t(Engine&, std::string&)>& start) {
  asio::io_context io;
  raise_fd_limit();
  ProcessWorkerRunner runner(io, ctx.config.process);
  EngineConfig ec = ctx.config.engine_config();
  ec.adopt_orphans = false;  // only `serve` adopts other engines' jobs
  Engine engine(io, *ctx.store, runner, ec);
  engine.start();

  bool tty = ::isatty(STDOUT_FILENO) == 1;
  ProgressView view(io, tty);
  // Under a progress bar the engine's own warnings would break the display and repeat the
  // failure the view prints once; they are in the job's log (jarvis log) anyway.
  if (tty) log::set_level(log::Level::Error);
  int64_t job = 0;
  std::optional<EngineEvent::Kind> end;
  engine.add_observer([&](const EngineEvent& e) {
    if (job && e.job != job && e.job != 0) return;  // job 0: the store's health
    view.on_event(e);
    using K = EngineEvent::Kind;
    if (e.kind == K::JobReady || e.kind == K::JobFailed || e.kind == K::JobCancelled ||
        e.kind == K::StoreLost) {
      end = e.kind;
      view.finish();
      engine.stop();
    }
  });
  std::string error;
  job = start(engine, error);
  if (!job) {
    std::cerr << "jarvis: " << error << '\n';
    engine.stop();
    return 1;
  }
  asio::signal_set signals(io, SIGINT, SIGTERM);
  bool interrupted = false;
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (!interrupted) {
          interrupted = true;
          std::cerr << "\njarvis: " << (sig == SIGINT ? "interrupted" : "terminated")
                    << ": cancelling job " << job << " (its worker gets SIGTERM)\n";
          engine.cancel(job, current_user());
        }
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);
  while (!end && !io.stopped()) {
    io.run_one();
  }
  signals.cancel();
  io.run();  // let the stopped engine's timers and pipes wind down
  if (end == EngineEvent::Kind::JobReady) return 0;
  if (end == EngineEvent::Kind::JobCancelled && interrupted) return 130;
  return 1;
}

// LDAP names ("cn=loki") when no ldap: section is configured: say so instead of "unknown".
class LdapNotConfigured : public DesignSource {
 public:
  explicit LdapNotConfigured(asio::io_context& io) : io_(io) {}
  bool handles(const std::string& ref) const override { return is_ldap_name(ref); }
  void fetch(const std::string& ref, Done done) override {
    asio::post(io_, [ref, done = std::move(done)] {
      done(std::nullopt, ref.substr(0, 80) + " looks like an LDAP name, but LDAP is not configured (ldap: in the config)");
    });
  }

 private:
  asio::io_context& io_;
};

// Every design source the config enables, behind one DesignSource: files, gists and URLs, LDAP.
struct AllDesignSources {
  AllDesignSources(asio::io_context& io, const Config& c, std::optional<std::string> files_root)
      : files(io, std::move(files_root)), http(io), urls(http, c.gist), no_ldap(io) {
    all.add(urls);
    if (c.ldap) {
      ldap = std::make_unique<LdapDesignSource>(io, *c.ldap);
      all.add(*ldap);
    } else {
      all.add(no_ldap);
    }
    all.add(files);
  }
  FileDesignSource files;
  HttpClient http;
  UrlDesignSource urls;
  LdapNotConfigured no_ldap;
  std::unique_ptr<LdapDesignSource> ldap;
  DesignSources all;
};

// For the CLI: fetch one design, running a loop just for that. A bare name that is no file
// here but is a design in designs_dir ("loki") is read from there, as chat reads it.
std::optional<std::string> cli_files_root(const Config& config, const std::string& ref) {
  std::error_code ec;
  if (ref.find('/') == std::string::npos && !std::filesystem::exists(ref, ec) &&
      std::filesystem::exists(config.designs_dir + "/" + ref + ".yaml", ec))
    return config.designs_dir;
  return std::nullopt;
}

std::optional<Design> load_design(const Config& config, const std::string& ref, std::string& error) {
  asio::io_context io;
  AllDesignSources sources(io, config, cli_files_root(config, ref));
  std::optional<Design> out;
  sources.all.fetch(ref, [&](std::optional<Design> d, std::string e) {
    out = std::move(d);
    error = std::move(e);
  });
  io.run();
  return out;
}

int cmd_run(Context& ctx, const CliArgs& args) {
  const auto& words = args.words;
  const auto& pipeline = args.pipeline;
  std::string typed = "deploy " + words[0] + (pipeline ? " --pipeline " + *pipeline : "");
  warn_pipeline_errors(ctx);
  std::string error;
  auto design = load_design(ctx.config, words[0], error);
  if (!design) {
    std::cerr << "jarvis: " << error << '\n';
    audit_cli(*ctx.store, typed, "refused: " + error);
    return 1;
  }
  if (!design->members.empty()) {
    std::cerr << "jarvis: " << words[0] << " is cluster " << design->cluster << " ("
              << design->members.size() << " hosts): deploy it through jarvis serve (chat or its "
              << "console), where the hosts run together; \"jarvis plan\" shows what would run\n";
    return 2;
  }
  const Pipeline* p = ctx.pipelines.select(design->root, pipeline, error);
  if (!p) {
    std::cerr << "jarvis: " << design->hostname << ": " << error << '\n';
    return 1;
  }
  return follow_job(ctx, [&](Engine& engine, std::string& err) -> int64_t {
    auto r = engine.submit(*design, *p, cli_identity(), "cli:" + tty_place(), "cli:" + cli_identity());
    if (r.conflict) {
      err = design->hostname + " already has a job in flight: " +
            describe_job(*r.conflict, 0, now_ms());
    } else if (!r.job) {
      err = design->hostname + ": cannot deploy: " + r.error;
    }
    audit_cli(*ctx.store, typed, r.job ? "ok: job " + std::to_string(r.job) : "refused: " + err);
    if (r.job) {
      std::cout << design->hostname << ": " << p->name << ", " << p->tasks.size()
                << " stages (job " << r.job << ")\n" << std::flush;
    }
    return r.job;
  });
}

// Whether the engine `owner` still runs its job: its lease on a shared store, else its lock
// file in the state dir.
bool owner_alive(Context& ctx, const std::string& owner) {
  if (ctx.store->shared()) {
    if (owner.empty()) return true;  // queued for whichever node has a slot first
    auto live = ctx.store->live_engines();
    return std::find(live.begin(), live.end(), owner) != live.end();
  }
  return engine_alive(ctx.config.state_dir, owner);
}

int cmd_retry(Context& ctx, const CliArgs& args) {
  if (serve_running(ctx.config.state_dir)) return -1;  // the bot resumes it: use the shared path
  std::string error;
  auto target = parse_target(args.words[0], error);
  std::optional<JobRecord> j;
  if (target) j = target->job ? ctx.store->job(target->job) : ctx.store->latest_for_host(target->host);
  std::string typed = "retry " + args.words[0];
  if (!j) {
    std::string why = error.empty() ? "no such job or host: " + args.words[0] : error;
    std::cerr << "jarvis: " << why << '\n';
    audit_cli(*ctx.store, typed, "refused: " + why);
    return 1;
  }
  // No bot is running: resume it here, in the foreground. A job still in flight whose jarvis
  // stopped is taken over from the dead engine; a failed or cancelled one is requeued.
  bool stopped = is_active(j->state) && !owner_alive(ctx, j->owner);
  return follow_job(ctx, [&](Engine& engine, std::string& err) -> int64_t {
    if (stopped) {
      if (!engine.take_over(j->id, err)) {
        err = j->host + ": cannot retry: " + err;
        audit_cli(*ctx.store, typed, "refused: " + err);
        return 0;
      }
    } else {
      auto r = engine.retry(j->id);
      if (!r.ok) {
        err = j->host + ": cannot retry: " + r.error;
        audit_cli(*ctx.store, typed, "refused: " + err);
        return 0;
      }
    }
    audit_cli(*ctx.store, typed, "ok: job " + std::to_string(j->id));
    std::cout << j->host << ": " << (stopped ? "resuming" : "retrying") << " job " << j->id
              << " from stage " << std::min(j->stage + 1, j->stage_count()) << "/" << j->stage_count()
              << "\n" << std::flush;
    return j->id;
  });
}

int cmd_cancel_orphan(Context& ctx, const CliArgs& args) {
  // A job whose engine died and no bot is running: cancel it in the store directly.
  if (serve_running(ctx.config.state_dir)) return -1;
  std::string error;
  auto target = parse_target(args.words[0], error);
  if (!target) return -1;
  auto j = target->job ? ctx.store->job(target->job) : ctx.store->latest_for_host(target->host);
  if (!j || !is_active(j->state) || owner_alive(ctx, j->owner)) return -1;
  ctx.store->request_cancel(j->id, cli_identity());
  ctx.store->job_cancelled(j->id, now_ms(), "cancelled by " + cli_identity());
  audit_cli(*ctx.store, "cancel " + args.words[0], "ok: job " + std::to_string(j->id) + " cancelled");
  std::cout << j->host << ": cancelled job " << j->id << " (its jarvis had stopped; nothing was running it)\n";
  return 0;
}

int cmd_shared(Context& ctx, const CliArgs& args) {
  asio::io_context io;
  // `plan loki` reads a bare name from designs_dir, as `run`/`deploy` and chat do.
  AllDesignSources designs(io, ctx.config,
                           args.words.empty() ? std::nullopt : cli_files_root(ctx.config, args.words[0]));
  CommandService service(*ctx.store, ctx.pipelines, designs.all, ctx.config.workers_path, nullptr);
  service.set_owner_check([&](const std::string& owner) { return owner_alive(ctx, owner); });
  Requester who{cli_identity(), "cli", tty_place()};
  who.person = "cli:" + cli_identity();
  service.set_safety(ctx.config.safety);
  std::string text = args.command + (args.words.empty() ? "" : " " + join(args.words));
  if (args.pipeline) text += " --pipeline " + *args.pipeline;
  if (args.command == "log" && args.lines != 20) text += " -n " + std::to_string(args.lines);
  int status = 0;
  service.handle(text, who, [&](Reply r) {
    for (const auto& l : r.lines) std::cout << l << '\n';
    status = r.ok ? 0 : 1;
  });
  io.run();
  return status;
}

// jarvis store migrate --from sqlite:PATH
int cmd_store_migrate(Context& ctx, const CliArgs& args) {
  auto* pg = dynamic_cast<PostgresJobStore*>(ctx.store.get());
  if (!pg) {
    std::cerr << "jarvis: store migrate copies into the PostgreSQL store of the config; set store: "
                 "{kind: postgres, url_file: FILE} in " << (ctx.config.config_file.empty() ? "the config" : ctx.config.config_file) << '\n';
    return 2;
  }
  if (args.from.rfind("sqlite:", 0) != 0 || args.from.size() <= 7) {
    std::cerr << "jarvis: --from must be sqlite:PATH (the jarvis.db of a state dir), not \"" << args.from.substr(0, 80) << "\"\n";
    return 2;
  }
  std::string path = args.from.substr(7);
  if (!std::filesystem::exists(path)) {
    std::cerr << "jarvis: there is no SQLite store " << path << '\n';
    return 2;
  }
  // Brings an older SQLite store's schema up to date (columns added since) before the copy.
  { SqliteJobStore source(path); }
  PostgresJobStore::ImportResult r;
  try {
    r = pg->import_sqlite(path);
  } catch (const std::exception& e) {
    std::cerr << "jarvis: nothing was copied: " << e.what() << '\n';
    audit_cli(*ctx.store, "store migrate --from " + args.from, std::string("error: ") + e.what());
    return 1;
  }
  std::string what = std::to_string(r.jobs) + " jobs (" + std::to_string(r.in_flight) + " in flight), " +
                     std::to_string(r.stages) + " stage runs, " + std::to_string(r.log_lines) + " log lines, " +
                     std::to_string(r.audit) + " audit entries, " + std::to_string(r.events) + " events, " +
                     std::to_string(r.tokens) + " API tokens, " + std::to_string(r.hook_deliveries) + " hook deliveries";
  std::cout << "copied " << what << " from " << path << " into " << pg->where() << '\n';
  if (r.in_flight)
    std::cout << r.in_flight << " jobs in flight resume at their stage on the first jarvis serve that starts on this store\n";
  audit_cli(*ctx.store, "store migrate --from " + args.from, "ok: " + what);
  return 0;
}

int cmd_serve(Context& ctx) {
  int lock = lock_state_dir(ctx.config.state_dir);
  if (lock < 0) {
    if (errno == EWOULDBLOCK)
      std::cerr << "jarvis: another jarvis serve is running with state dir " << ctx.config.state_dir
                << '\n';
    else
      std::cerr << "jarvis: cannot lock the state dir " << ctx.config.state_dir << ": "
                << std::strerror(errno) << '\n';
    return 2;
  }
  // A store that can never be written here (read-only, permissions) is for a person to fix
  // before the bot takes commands; full or locked it starts, refuses deploys and waits.
  try {
    ctx.store->probe_write(0);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::Full && e.kind() != StoreError::Kind::Busy &&
        e.kind() != StoreError::Kind::Unreachable) {
      std::cerr << "jarvis: cannot serve: " << e.what() << '\n';
      return 2;
    }
  }
  warn_pipeline_errors(ctx);
  asio::io_context io;
  raise_fd_limit();
  ProcessWorkerRunner runner(io, ctx.config.process);
  EngineConfig ec = ctx.config.engine_config();
  Engine engine(io, *ctx.store, runner, ec);
  AllDesignSources designs(io, ctx.config, ctx.config.designs_dir);
  CommandService service(*ctx.store, ctx.pipelines, designs.all, ctx.config.workers_path, &engine);
  service.set_owner_check([&](const std::string& owner) { return owner_alive(ctx, owner); });
  service.set_safety(ctx.config.safety);
  Requester console_user{current_user(), "console", "stdin"};
  console_user.person = "console:" + current_user();
  ConsoleFront console(io, service, console_user,
                       [](const std::string& line) { std::cout << line << '\n' << std::flush; });
  engine.add_observer([&](const EngineEvent& e) { console.announce(e); });

  // Chat fronts, each on its own connection; one outage does not touch the others.
  Acl acl(ctx.config.acl_rules, ctx.config.acl_open);
  Announcer announcer(ctx.config.announce);
  announcer.set_job_lookup([&](int64_t id) { return ctx.store->job(id); });  // wt-chat2: what a job produced
  std::unique_ptr<HttpClient> slack_http;  // outlives the adapter that uses it
  std::vector<std::unique_ptr<ChatAdapter>> adapters;
  std::vector<std::unique_ptr<ChatFront>> fronts;  // destroyed first: they use the adapters
  const bool shared = ctx.store->shared();
  auto add_front = [&](std::unique_ptr<ChatAdapter> adapter, std::vector<std::string> rooms,
                       std::optional<OutboxLimits> pace) {
    ChatFrontConfig front_config = ctx.config.chat;
    front_config.rooms = std::move(rooms);
    if (pace) front_config.outbox = *pace;
    fronts.push_back(std::make_unique<ChatFront>(io, *adapter, service, acl, front_config));
    adapters.push_back(std::move(adapter));
    announcer.add_front(*fronts.back());
    // On a shared store only the node that leads chat connects (below).
    if (!shared) fronts.back()->start();
  };
  if (const auto& irc = ctx.config.irc) {
    log::info(log::kNoJob, "irc: connecting to {}:{} ({}) as {}", irc->server, irc->port,
              irc->tls ? "TLS" : "plaintext", irc->nick);
    if (!irc->tls) log::warn(log::kNoJob, "irc: plaintext connection; use tls: true on any real network");
    add_front(std::make_unique<IrcAdapter>(io, *irc), ctx.config.irc_channels, std::nullopt);
  }
  if (const auto& xmpp = ctx.config.xmpp) {
    log::info(log::kNoJob, "xmpp: connecting as {} ({} rooms)", xmpp->jid, ctx.config.xmpp_rooms.size());
    // XMPP servers throttle by bandwidth, not lines: a faster pace than IRC's is safe.
    add_front(std::make_unique<XmppAdapter>(io, *xmpp), ctx.config.xmpp_rooms, OutboxLimits{10, 20, 5, 10, 3});
  }
  if (const auto& slack = ctx.config.slack) {
    log::info(log::kNoJob, "slack: connecting (Socket Mode, API {})", slack->api_url);
    slack_http = std::make_unique<HttpClient>(io);
    // Slack's own limit is about one message a second per channel; 429s are honoured anyway.
    add_front(std::make_unique<SlackAdapter>(io, *slack_http, *slack), {}, OutboxLimits{4, 8, 1, 3, 3});
  }
  // Several nodes: every node stores its engine's events; the node that leads chat holds the
  // connections and announces from the event table, whichever node ran the job.
  EventPublisher publisher(io, *ctx.store);
  std::unique_ptr<ChatLeadership> leadership;
  std::unique_ptr<PgListener> listener;
  int exit_code = 0;
  if (!shared) {
    engine.add_observer([&](const EngineEvent& e) { announcer.on_event(e); });
  } else {
    engine.add_observer([&](const EngineEvent& e) {
      // The engine stores its events itself (Engine::emit), but not the failure of the store
      // it writes them to: those are published once the store takes writes again.
      if (e.kind == EngineEvent::Kind::StoreFailed || e.kind == EngineEvent::Kind::StoreLost) publisher.on_event(e);
      // Worker log lines reach chat from the chat node's own engine only (other nodes' stay
      // in their jobs' logs and the API's event stream).
      if (e.kind == EngineEvent::Kind::StageLog && leadership && leadership->leading()) announcer.on_event(e);
    });
    if (!fronts.empty()) {
      ChatLeadership::Hooks lead;
      lead.gained = [&] {
        log::info(log::kNoJob, "node {} leads chat: connecting {} chat front(s)", ctx.config.node_name, fronts.size());
        for (auto& front : fronts) front->start();
      };
      lead.lost = [&] {
        // Another node may hold the connections now: this one must not speak. It stops (exit
        // 1) so that its supervisor restarts it as a follower; its jobs are adopted.
        exit_code = 1;
        std::cerr << "jarvis: node " << ctx.config.node_name << " lost the chat leadership; stopping\n";
        engine.stop();
        console.stop();
        for (auto& front : fronts) front->stop();
        io.stop();
      };
      lead.event = [&](const EngineEvent& e) {
        if (e.kind != EngineEvent::Kind::StageLog) announcer.on_event(e);  // its own are announced live
      };
      leadership = std::make_unique<ChatLeadership>(io, *ctx.store, engine.id(), ctx.config.node_lease, lead);
      if (auto* pg = dynamic_cast<PostgresJobStore*>(ctx.store.get()))
        listener = std::make_unique<PgListener>(io, pg->url(), PostgresJobStore::kEventChannel,
                                                [&] { if (leadership) leadership->poke(); });
    }
  }

  // Event hooks: queued in the store, delivered at least once (HTTP through libcurl on the
  // loop, commands through the same process runner as workers).
  std::unique_ptr<HttpClient> hook_http;
  std::unique_ptr<HookDispatcher> hooks;
  if (!ctx.config.hooks.empty()) {
    hook_http = std::make_unique<HttpClient>(io);
    hooks = std::make_unique<HookDispatcher>(io, *ctx.store, *hook_http, runner, ctx.config.hooks);
    engine.add_observer([&](const EngineEvent& e) { hooks->on_event(e); });
    log::info(log::kNoJob, "hooks: {} configured", ctx.config.hooks.size());
  }

  // The HTTP API: the same command core, ACL and audit trail as chat, on the same loop.
  std::unique_ptr<http::Api> api;
  std::unique_ptr<http::Server> http_server;
  if (const auto& hc = ctx.config.http) {
    http::ApiConfig ac;
    ac.requests_per_second = hc->requests_per_second;
    ac.request_burst = hc->request_burst;
    ac.max_event_clients = hc->max_event_streams;
    ac.metrics_token = hc->metrics_token;
    ac.secret_patterns = SecretPatterns(ctx.config.secret_patterns);
    ac.secrets = ec.secrets;
    api = std::make_unique<http::Api>(io, *ctx.store, service, acl, ac);
    api->set_health([&] {
      http::Health h;
      h.store_problem = engine.store_problem();
      for (const auto& f : fronts) h.fronts.push_back({f->protocol(), f->connected(), f->pending()});
      h.running = engine.running();
      h.queued = engine.queued();
      return h;
    });
    engine.add_observer([&](const EngineEvent& e) { api->on_event(e); });
    if (hooks) api->set_more_metrics([&] { return hooks->metrics(); });
    http_server = std::make_unique<http::Server>(io, hc->server, [&](const http::Request& r, http::Respond respond) {
      api->handle(r, std::move(respond));
    });
    try {
      http_server->start();
    } catch (const std::exception& e) {
      std::cerr << "jarvis: cannot serve: " << e.what() << '\n';
      return 2;
    }
    log::info(log::kNoJob, "http: API on {}://{}:{}/api/v1", http_server->tls() ? "https" : "http",
              hc->server.address, http_server->port());
    if (!http_server->tls()) log::warn(log::kNoJob, "http: plain HTTP; tokens are only safe on loopback or behind a TLS proxy");
  }
  // The database was deleted or replaced: the engine has stopped; give the announcement a
  // moment to reach chat, then stop everything and exit non-zero.
  asio::steady_timer lost_timer(io);
  engine.add_observer([&](const EngineEvent& e) {
    if (e.kind != EngineEvent::Kind::StoreLost) return;
    exit_code = 1;
    std::cerr << "jarvis: " << e.text << "; stopping\n";
    lost_timer.expires_after(std::chrono::seconds(3));
    lost_timer.async_wait([&](const boost::system::error_code&) {
      console.stop();
      for (auto& front : fronts) front->stop();
      if (http_server) http_server->stop();
      if (api) api->stop();
      io.stop();
    });
  });

  log::info(log::kNoJob, "jarvis serve: {} pipelines, state dir {}, workers path {}, up to {} jobs at once",
            ctx.pipelines.all().size(), ctx.config.state_dir, join(ctx.config.workers_path),
            ctx.config.max_running_jobs);
  // wt-chat2: jobs left in flight by a jarvis that stopped are resumed now; say so once.
  std::string resumed;
  size_t resumed_count = 0;
  for (const auto& j : ctx.store->active_jobs())
    if (!owner_alive(ctx, j.owner) && ++resumed_count)
      resumed += (resumed.empty() ? "" : ", ") + j.host + " (job " + std::to_string(j.id) + ", stage " +
                 std::to_string(std::min(j.stage + 1, j.stage_count())) + "/" + std::to_string(j.stage_count()) + ")";
  if (hooks) hooks->start();  // what a serve that died left unqueued, before new events
  engine.start();
  if (leadership) leadership->start();
  if (listener) listener->start();
  // Walks: the hosts of designs_dir (a cluster's file names its members through the store).
  Walker walker(io, *ctx.store, runner, ctx.pipelines, engine, [&ctx] {
    std::vector<std::string> hosts;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(ctx.config.designs_dir, ec)) {
      auto ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".yaml" && ext != ".yml")) continue;
      std::string stem = lower(e.path().stem().string());
      if (!is_valid_hostname(stem)) continue;
      hosts.push_back(stem);
      for (const auto& member : ctx.store->latest_in_group(stem)) hosts.push_back(member.host);
    }
    std::sort(hosts.begin(), hosts.end());
    hosts.erase(std::unique(hosts.begin(), hosts.end()), hosts.end());
    return hosts;
  });
  walker.start();
  if (resumed_count)
    announcer.say_everywhere("jarvis is back after a restart and resumed " + std::to_string(resumed_count) +
                             (resumed_count == 1 ? " job: " : " jobs: ") + resumed);
  std::string reason;
  if (!console.start(STDIN_FILENO, reason))
    log::info(log::kNoJob, "console front off: {}", reason);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    size_t in_flight = engine.in_flight();
    log::info(log::kNoJob, "{}: stopping; {} jobs in flight resume on the next start",
              sig == SIGINT ? "SIGINT" : "SIGTERM", in_flight);
    console.stop();
    walker.stop();
    if (http_server) http_server->stop();
    if (api) api->stop();
    if (hooks) hooks->stop();
    engine.stop();
    if (leadership) leadership->stop();
    if (listener) listener->stop();
    // wt-chat2: each front delivers what is queued (for chat.drain_timeout at most), then
    // says goodbye (IRC QUIT with the reason).
    std::string goodbye = "jarvis stopping (" + std::string(sig == SIGINT ? "SIGINT" : "SIGTERM") + ")" +
                          (in_flight ? "; " + std::to_string(in_flight) + " jobs in flight resume when it is back" : "");
    for (auto& front : fronts) front->drain_and_quit(goodbye, nullptr);
  });
  // One message, frame or job that throws must not end the bot for everyone: the handler
  // is logged and the loop carries on with the rest.
  for (;;) {
    try {
      io.run();
      break;
    } catch (const std::exception& e) {
      log::error(log::kNoJob, "an event handler failed and was skipped: {}", e.what());
    }
  }
  // The workers are gone: the other nodes may adopt this engine's jobs now, not after the lease.
  if (shared && exit_code == 0) {
    try {
      ctx.store->drop_lease(engine.id());
    } catch (const StoreError& e) {
      log::warn(log::kNoJob, "could not give up this engine's lease ({}); its jobs are adopted after it", e.what());
    }
  }
  ::close(lock);
  return exit_code;
}

// The design files of designs_dir (*.yaml, *.yml), sorted; ec says why when it cannot be read.
std::vector<std::string> design_files(const std::string& dir, std::error_code& ec) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    auto ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml")) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Checks what would break at 3 a.m., each problem on one line with its file (and line where
// it has one). Exit 1 with problems.
int cmd_check_config(Context& ctx, bool online) {
  const Config& c = ctx.config;
  std::vector<std::string> problems;
  std::string config_file = c.config_file.empty() ? "(no config file)" : c.config_file;
  for (const auto& e : ctx.pipeline_errors) problems.push_back(e);
  std::error_code ec;
  for (const auto& dir : c.workers_path)
    if (!std::filesystem::is_directory(dir, ec))
      problems.push_back(config_file + ": the workers path entry " + dir + " is not a directory");
  if (c.designs_dir_configured && !std::filesystem::is_directory(c.designs_dir, ec))
    problems.push_back(config_file + ": designs_dir " + c.designs_dir +
                       " is not a directory (chat's \"deploy NAME\" reads designs from it)");
  for (const auto& p : ctx.pipelines.all()) {
    for (const auto& task : missing_workers(c.workers_path, p)) {
      std::string rel = task.substr(0, task.find(':')) + "/" + task.substr(task.find(':') + 1);
      std::string found;
      for (const auto& dir : c.workers_path)
        if (found.empty() && std::filesystem::exists(dir + "/" + rel, ec)) found = dir + "/" + rel;
      problems.push_back(p.file + ": task " + task +
                         (found.empty() ? " has no executable " + rel + " on the workers path"
                                        : ": " + found + " is not an executable file (chmod +x it)"));
    }
  }
  // An announce place on a protocol with no section goes nowhere, silently.
  std::map<std::string, bool> fronts = {{"irc", c.irc.has_value()}, {"xmpp", c.xmpp.has_value()},
                                        {"slack", c.slack.has_value()}};
  for (const auto& [place, where] : c.announce_places_at) {
    auto colon = place.find(':');
    std::string proto = colon == std::string::npos ? "" : place.substr(0, colon);
    auto it = fronts.find(proto);
    if (it == fronts.end())
      problems.push_back(where + ": announce place " + place +
                         " names no protocol (write irc:#ops, xmpp:room@conference..., slack:C0123)");
    else if (!it->second)
      problems.push_back(where + ": announce place " + place + " is on " + proto + ", which has no " +
                         proto + ": section; nothing would be announced there");
  }
  for (const auto& name : [&] {
         std::vector<std::string> named;
         for (const auto& [pipeline, places] : c.announce.by_pipeline) named.push_back(pipeline);
         return named;
       }())
    if (!ctx.pipelines.find(name))
      problems.push_back(config_file + ": chat.announce_pipelines names " + name + ", which is no pipeline");
  // Two pipelines that both match a design of designs_dir: a deploy of it would be refused.
  asio::io_context io;
  FileDesignSource source(io, std::nullopt);
  for (const auto& file : design_files(c.designs_dir, ec)) {
    std::string error;
    auto d = source.load(file, error);
    if (!d) continue;  // `jarvis designs` says why
    std::vector<const Design*> hosts;
    if (d->members.empty()) hosts.push_back(&*d);
    for (const auto& m : d->members) hosts.push_back(&m);
    for (const Design* h : hosts) {
      std::string why;
      if (!ctx.pipelines.select(h->root, std::nullopt, why) && why.find(" all match ") != std::string::npos)
        problems.push_back(file + ": " + h->hostname + ": " + why);
    }
  }
  // ACL rules that can never match are errors; IRC mask rules are warnings (spoofable on a
  // network without accounts).
  std::vector<std::string> warnings;
  {
    std::vector<std::string> protocols;
    if (c.irc) protocols.push_back("irc");
    if (c.xmpp) protocols.push_back("xmpp");
    if (c.slack) protocols.push_back("slack");
    if (c.http) protocols.push_back("http");
    std::vector<std::string> with_accounts;
    if (c.irc && c.irc->accounts) with_accounts.push_back("irc");
    for (const auto& p : acl_rule_problems(c.acl_rules, protocols, with_accounts))
      (p.error ? problems : warnings).push_back(p.text);
  }
  for (const auto& line : problems) std::cout << line << '\n';
  for (const auto& line : warnings) std::cout << "warning: " << line << '\n';
  std::cout << "state dir: " << c.state_dir << "\n"
            << "workers path: " << join(c.workers_path) << "\n"
            << "designs: " << c.designs_dir << "\n"
            << "pipelines: " << ctx.pipelines.all().size() << " in " << c.pipelines_dir << "\n";
  for (const auto& p : ctx.pipelines.all()) {
    std::string match;
    for (const auto& [k, v] : p.match) match += (match.empty() ? "" : ", ") + k + "=" + v;
    std::cout << "  " << p.name << ": " << p.tasks.size() << " stages"
              << (match.empty() ? " (only by name)" : " (matches " + match + ")") << '\n';
  }
  size_t total = problems.size();
  if (online) total += static_cast<size_t>(check_online(c, std::chrono::seconds(20), std::cout));
  std::cout << (total == 0 ? std::string(online ? "config ok; every server reached and every place joined" : "config ok")
                           : std::to_string(total) + (total == 1 ? " problem" : " problems"))
            << '\n';
  return total == 0 ? 0 : 1;
}

// What can be deployed: every design in designs_dir, the host, the pipeline a deploy picks.
int cmd_designs(Context& ctx) {
  std::error_code ec;
  auto files = design_files(ctx.config.designs_dir, ec);
  if (ec) {
    std::cerr << "jarvis: cannot read designs_dir " << ctx.config.designs_dir << ": " << ec.message() << '\n';
    return 1;
  }
  if (files.empty()) std::cout << "no designs in " << ctx.config.designs_dir << '\n';
  asio::io_context io;
  FileDesignSource source(io, std::nullopt);
  int problems = 0;
  for (const auto& f : files) {
    std::string name = std::filesystem::path(f).stem().string(), error;
    auto d = source.load(f, error);
    if (!d) {
      std::cout << name << ": cannot be deployed: " << error << '\n';
      ++problems;
      continue;
    }
    auto pick = [&](const Design& one) {
      std::string why;
      const Pipeline* p = ctx.pipelines.select(one.root, std::nullopt, why);
      return p ? p->name + " (" + std::to_string(p->tasks.size()) + " stages)" : "no pipeline: " + why;
    };
    if (d->members.empty()) {
      std::cout << name << ": host " << d->hostname << ", " << pick(*d) << '\n';
    } else {
      std::cout << name << ": cluster " << d->cluster << " of " << d->members.size() << " hosts\n";
      for (const auto& m : d->members) std::cout << "  " << m.hostname << ": " << pick(m) << '\n';
    }
  }
  return problems ? 1 : 0;
}

int cmd_prune(Context& ctx, const CliArgs& args) {
  auto age = parse_duration(args.older_than);
  if (!age || age->count() <= 0) {
    std::cerr << "jarvis: prune: --older-than needs a duration such as 90d, 12h or 30m, not \""
              << args.older_than.substr(0, 40) << "\"\n";
    return 2;
  }
  auto r = ctx.store->prune_finished(now_ms() - age->count());
  std::string what = "pruned " + std::to_string(r.jobs) + (r.jobs == 1 ? " job" : " jobs") +
                     " that finished more than " + format_duration(*age) + " ago (" +
                     std::to_string(r.log_lines) + " log lines, their designs and clipboards); the job rows and the audit trail stay";
  audit_cli(*ctx.store, "prune --older-than " + args.older_than, "ok: " + what);
  std::cout << what << '\n';
  return 0;
}

// HTTP API tokens: shown once, stored as their SHA-256.
int cmd_token(Context& ctx, const CliArgs& args) {
  const std::string& action = args.words.at(0);
  std::string name = args.words.size() > 1 ? args.words[1] : "";
  if (action == "list") {
    auto tokens = ctx.store->tokens();
    if (tokens.empty()) std::cout << "no API tokens; add one with: jarvis token add NAME --role read|operate|admin\n";
    for (const auto& t : tokens)
      std::cout << t.name << "  " << t.role << "  http:" << t.name << "  added " << clock_utc(t.created_ms, now_ms()) << '\n';
    return 0;
  }
  if (!http::valid_token_name(name)) {
    std::cerr << "jarvis: token " << action << " needs a NAME of 1-64 letters, digits, '.', '_' or '-'\n";
    return 2;
  }
  if (action == "revoke") {
    bool ok = ctx.store->revoke_token(name);
    audit_cli(*ctx.store, "token revoke " + name, ok ? "ok" : "refused: no such token");
    if (!ok) {
      std::cerr << "jarvis: there is no API token named " << name << " (jarvis token list shows them)\n";
      return 1;
    }
    std::cout << "revoked the API token " << name << "; requests with it get 401 from now on\n";
    return 0;
  }
  if (args.role.empty()) {
    std::cerr << "jarvis: token add needs --role read, operate or admin\n";
    return 2;
  }
  ApiToken t;
  t.name = name;
  t.role = args.role;
  std::string secret = http::new_token();
  t.hash = http::token_hash(secret);
  t.created_ms = now_ms();
  if (!ctx.store->add_token(t)) {
    audit_cli(*ctx.store, "token add " + name + " --role " + args.role, "refused: the name is taken");
    std::cerr << "jarvis: an API token named " << name << " exists; revoke it first (jarvis token revoke " << name << ")\n";
    return 1;
  }
  audit_cli(*ctx.store, "token add " + name + " --role " + args.role, "ok");
  std::cerr << "API token " << name << " (role " << args.role << ", identity http:" << name
            << "); it is shown only now, jarvis keeps only its hash:\n";
  std::cout << secret << '\n';
  return 0;
}

int cmd_pipelines(Context& ctx) {
  warn_pipeline_errors(ctx);
  if (ctx.pipelines.all().empty()) std::cout << "no pipelines in " << ctx.config.pipelines_dir << '\n';
  for (const auto& p : ctx.pipelines.all()) {
    std::string match;
    for (const auto& [k, v] : p.match) match += (match.empty() ? "" : ", ") + k + "=" + v;
    std::cout << p.name << ": " << p.tasks.size() << " stages, "
              << (match.empty() ? "chosen only by name (--pipeline " + p.name + ")" : "for designs with " + match)
              << "  (" << p.file << ")\n";
    for (size_t i = 0; i < p.tasks.size(); ++i) {
      const auto& t = p.tasks[i];
      std::cout << "  " << i + 1 << ". " << t.name << " (timeout " << format_duration(t.timeout)
                << (t.retries ? ", " + std::to_string(t.retries) + (t.retries == 1 ? " retry" : " retries") : "")
                << (t.destructive ? ", destructive" : "") << ")\n";
    }
  }
  return ctx.pipeline_errors.empty() ? 0 : 1;
}

}  // namespace

int cli_main(int argc, char** argv) {
  // Everything jarvis writes (the store, worker state, lock files) is for its user only.
  ::umask(077);
  // A core dump of the bot would hold every clipboard in memory, secrets included.
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  auto parsed = parse_cli(argc, argv, std::cout, std::cerr);
  if (!parsed.args) return parsed.exit_code;
  auto args = std::move(parsed.args);
  try {
    bool quiet = args->command != "serve";
    auto ctx = open_context(*args, quiet ? log::Level::Warn : log::Level::Info);
    if (args->command == "run") return cmd_run(*ctx, *args);
    if (args->command == "serve") return cmd_serve(*ctx);
    if (args->command == "check-config") return cmd_check_config(*ctx, args->online);
    if (args->command == "designs") return cmd_designs(*ctx);
    if (args->command == "pipelines") return cmd_pipelines(*ctx);
    if (args->command == "prune") return cmd_prune(*ctx, *args);
    if (args->command == "token") return cmd_token(*ctx, *args);
    if (args->command == "store") return cmd_store_migrate(*ctx, *args);
    if (args->command == "retry") {
      int rc = cmd_retry(*ctx, *args);
      if (rc >= 0) return rc;
    }
    if (args->command == "cancel") {
      int rc = cmd_cancel_orphan(*ctx, *args);
      if (rc >= 0) return rc;
    }
    return cmd_shared(*ctx, *args);
  } catch (const std::exception& e) {
    std::cerr << "jarvis: " << e.what() << '\n';
    return 2;
  }
}

}  // namespace jarvis
