#include "bot/store/sqlite_job_store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "bot/store/task_codec.h"
#include "bot/util/duration.h"
#include "bot/util/secrets.h"

namespace jarvis {

std::string_view to_string(JobState s) {
  switch (s) {
    case JobState::Queued: return "queued";
    case JobState::Running: return "running";
    case JobState::Ready: return "ready";
    case JobState::Failed: return "failed";
    case JobState::Cancelled: return "cancelled";
  }
  return "unknown";
}

std::optional<JobState> parse_job_state(std::string_view s) {
  for (auto st : {JobState::Queued, JobState::Running, JobState::Ready, JobState::Failed,
                  JobState::Cancelled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

namespace {

const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  host TEXT NOT NULL,
  design_ref TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  tasks TEXT NOT NULL,
  state TEXT NOT NULL,
  stage INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL DEFAULT 0,
  requested_by TEXT NOT NULL,
  origin TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL DEFAULT 0,
  ended_ms INTEGER NOT NULL DEFAULT 0,
  stage_started_ms INTEGER NOT NULL DEFAULT 0,
  retry_at_ms INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  owner TEXT NOT NULL DEFAULT '',
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  cancelled_by TEXT NOT NULL DEFAULT '',
  worker_pid INTEGER NOT NULL DEFAULT 0,
  stage_count INTEGER NOT NULL,
  group_name TEXT NOT NULL DEFAULT ''
  -- requester_key and the confirm_* columns are added by migrate(), for old stores too
);
-- The documents live apart from the job row: the row changes at every stage and must stay
-- small, while the clipboard changes only when a worker prints a new one.
CREATE TABLE IF NOT EXISTS job_documents (
  job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
  design TEXT NOT NULL,
  clipboard TEXT NOT NULL
);
-- The per-host lock: at most one job in flight per host, enforced by the database itself so
-- that it holds across every process sharing the store.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_in_flight_per_host
  ON jobs(host) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_by_host ON jobs(host, id);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, id);
-- `jobs` and `status` list the last finished jobs: without this a store with a long history
-- is sorted in full on every call.
CREATE INDEX IF NOT EXISTS jobs_finished_by_end ON jobs(ended_ms DESC, id DESC)
  WHERE state IN ('ready', 'failed', 'cancelled');
CREATE TABLE IF NOT EXISTS stages (
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  stage INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  task TEXT NOT NULL,
  started_ms INTEGER NOT NULL,
  ended_ms INTEGER NOT NULL DEFAULT 0,
  result TEXT NOT NULL DEFAULT 'running',
  reason TEXT NOT NULL DEFAULT '',
  clipboard_after TEXT,
  PRIMARY KEY (job_id, stage, attempt)
);
CREATE TABLE IF NOT EXISTS log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id INTEGER NOT NULL,
  at_ms INTEGER NOT NULL,
  stage INTEGER NOT NULL,
  line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_job ON log(job_id, id);
-- Rows written and removed by probe_write, to learn whether a write of some size would fit.
CREATE TABLE IF NOT EXISTS write_probe (data BLOB);
-- Change freezes (freeze/unfreeze): in force from from_ms until until_ms (0: until lifted).
CREATE TABLE IF NOT EXISTS freezes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  scope TEXT NOT NULL,
  by TEXT NOT NULL,
  reason TEXT NOT NULL,
  from_ms INTEGER NOT NULL,
  until_ms INTEGER NOT NULL DEFAULT 0,
  lifted_by TEXT NOT NULL DEFAULT '',
  lifted_ms INTEGER NOT NULL DEFAULT 0
);
-- Walks (scheduled pipelines): the last result of each walk on each host.
CREATE TABLE IF NOT EXISTS walk_results (
  walk TEXT NOT NULL,
  host TEXT NOT NULL,
  ok INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  last_run_ms INTEGER NOT NULL,
  since_ms INTEGER NOT NULL,
  PRIMARY KEY (walk, host)
);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms INTEGER NOT NULL,
  who TEXT NOT NULL,
  protocol TEXT NOT NULL,
  place TEXT NOT NULL,
  command TEXT NOT NULL,
  outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms INTEGER NOT NULL,
  job_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  json TEXT NOT NULL
);
)SQL";

}  // namespace

// Turns an SQLite failure into a StoreError whose message names the real cause.
[[noreturn]] void SqliteJobStore::fail(int rc) const {
  std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  int primary = rc & 0xff;
  std::string dir = std::filesystem::path(path_).parent_path().string();
  if (dir.empty()) dir = ".";
  struct statvfs vfs {};
  bool have_vfs = ::statvfs(dir.c_str(), &vfs) == 0;
  using K = StoreError::Kind;
  if (gone_) throw StoreError(K::Gone, *gone_);
  switch (primary) {
    case SQLITE_FULL: {
      std::string free = have_vfs ? format_bytes(static_cast<size_t>(vfs.f_bavail) * vfs.f_frsize) + " free"
                                  : "free space unknown";
      throw StoreError(K::Full, "the job store is full (state dir " + dir + ", " + free + ")");
    }
    case SQLITE_READONLY:
      if (have_vfs && (vfs.f_flag & ST_RDONLY))
        throw StoreError(K::ReadOnly, "the job store is read-only (state dir " + dir + ": read-only file system)");
      if (::access(dir.c_str(), W_OK) != 0 || ::access(path_.c_str(), W_OK) != 0)
        throw StoreError(K::Denied, "the job store cannot be written (state dir " + dir + ": permission denied)");
      throw StoreError(K::ReadOnly, "the job store is read-only (" + path_ + ": " + msg + ")");
    case SQLITE_PERM:
    case SQLITE_CANTOPEN:
    case SQLITE_AUTH:
      throw StoreError(K::Denied, "the job store cannot be written (" + path_ + ": " + msg + ")");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      throw StoreError(K::Busy, "the job store is locked by another process (" + path_ + ", waited " +
                                    format_duration(Millis(busy_timeout_ms_)) + ")");
    case SQLITE_IOERR:
      if (have_vfs && vfs.f_bavail == 0)
        throw StoreError(K::Full, "the job store is full (state dir " + dir + ", 0 bytes free)");
      if (have_vfs && (vfs.f_flag & ST_RDONLY))
        throw StoreError(K::ReadOnly, "the job store is read-only (state dir " + dir + ": read-only file system)");
      throw StoreError(K::Io, "the job store had an I/O error (" + path_ + ": " + msg + ")");
    default:
      throw StoreError(K::Other, "the job store failed (" + path_ + ": " + msg + ")");
  }
}

class SqliteJobStore::Statement {
 public:
  Statement(const SqliteJobStore& store, const char* sql) : store_(store), db_(store.db_) {
    if (int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr); rc != SQLITE_OK)
      store_.fail(sqlite3_extended_errcode(db_));
  }
  ~Statement() { sqlite3_finalize(stmt_); }

  Statement& bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); return *this; }
  Statement& bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // True while there is a row; throws on error.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    std::string msg = sqlite3_errmsg(db_);
    int ext = sqlite3_extended_errcode(db_);
    reset();
    if (ext == SQLITE_CONSTRAINT_UNIQUE) throw UniqueViolation(msg);
    store_.fail(ext);
  }
  void run() { step(); reset(); }
  void reset() { sqlite3_reset(stmt_); sqlite3_clear_bindings(stmt_); }
  int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  sqlite3_stmt* raw() const { return stmt_; }
  std::string text(int col) const {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }

  struct UniqueViolation : std::runtime_error { using std::runtime_error::runtime_error; };

 private:
  const SqliteJobStore& store_;
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

struct SqliteJobStore::Cache {
  std::map<const char*, std::unique_ptr<Statement>> statements;
};

namespace {
// Reads a row laid out as JOB_SELECT.
template <typename Stmt>
JobRecord read_job(const Stmt& s) {
  JobRecord j;
  j.id = s.i64(0);
  j.host = s.text(1);
  j.design_ref = s.text(2);
  j.pipeline = s.text(3);
  j.tasks = decode_tasks(s.text(4));
  j.state = parse_job_state(s.text(5)).value_or(JobState::Failed);
  j.stage = static_cast<int>(s.i64(6));
  j.attempt = static_cast<int>(s.i64(7));
  j.requested_by = s.text(8);
  j.origin = s.text(9);
  j.created_ms = s.i64(10);
  j.started_ms = s.i64(11);
  j.ended_ms = s.i64(12);
  j.stage_started_ms = s.i64(13);
  j.retry_at_ms = s.i64(14);
  j.reason = s.text(15);
  j.owner = s.text(16);
  j.cancel_requested = s.i64(17) != 0;
  j.cancelled_by = s.text(18);
  j.worker_pid = static_cast<int>(s.i64(19));
  j.group = s.text(20);
  j.requester_key = s.text(21);
  j.confirm_until_ms = s.i64(22);
  j.confirmed_until = static_cast<int>(s.i64(23));
  j.confirmed_by = s.text(24);
  j.confirm_prompt = s.text(25);
  return j;
}

}  // namespace

// BEGIN IMMEDIATE ... commit(). Without a successful commit() the transaction is rolled back:
// a COMMIT that fails (a full disk) throws like any other write, so nobody is told "done".
// Inside a write group it is part of the group's transaction: the group commits or rolls back.
class SqliteJobStore::Transaction {
 public:
  explicit Transaction(SqliteJobStore& store) : store_(store), in_group_(store.group_open_) {
    if (!in_group_) store_.begin_transaction();
  }
  ~Transaction() {
    if (!committed_ && !in_group_) store_.rollback_transaction();
  }
  void commit() {
    if (!in_group_) store_.commit_transaction();
    committed_ = true;
  }

 private:
  SqliteJobStore& store_;
  bool in_group_;
  bool committed_ = false;
};

void SqliteJobStore::begin_transaction() {
  check_identity();  // a stat: never commit into a file that was deleted or replaced
  exec("BEGIN IMMEDIATE");
}

void SqliteJobStore::commit_transaction() { exec("COMMIT"); }  // throws when it fails (a full disk)

void SqliteJobStore::rollback_transaction() noexcept {
  // SQLite may have rolled back by itself already (a full disk, an I/O error).
  if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void SqliteJobStore::begin_group() {
  if (group_open_) throw std::logic_error("write groups do not nest");
  begin_transaction();
  group_open_ = true;
}

void SqliteJobStore::commit_group() {
  commit_transaction();  // the group's owner rolls back when it throws
  group_open_ = false;
}

void SqliteJobStore::rollback_group() noexcept {
  if (!group_open_) return;
  group_open_ = false;
  rollback_transaction();
}

SqliteJobStore::SqliteJobStore(const std::string& path, SqliteOptions options)
    : path_(path), busy_timeout_ms_(options.busy_timeout_ms), cache_(std::make_unique<Cache>()) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("cannot open the job store " + path + ": " + msg);
  }
  sqlite3_extended_result_codes(db_, 1);
  // Other jarvis processes (a CLI next to `serve`) may hold the write lock briefly; past the
  // bound the write fails as Busy and the caller retries later instead of waiting on.
  sqlite3_busy_timeout(db_, busy_timeout_ms_);
  // WAL: readers never block the writer. synchronous=NORMAL: a committed transaction survives
  // the process being killed; only a power loss can take back the last few.
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  exec("PRAGMA foreign_keys=ON");
  exec(kSchema);
  migrate();
  exec("PRAGMA wal_autocheckpoint=0");
  // The state may hold secrets: the database and its -wal/-shm are for this user only,
  // whatever the umask of whoever created them.
  for (const char* suffix : {"", "-wal", "-shm"}) ::chmod((path + suffix).c_str(), 0600);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  checkpointer_ = std::thread([this, path] { checkpoint_loop(path); });
}

void SqliteJobStore::check_identity() {
  if (gone_) throw StoreError(StoreError::Kind::Gone, *gone_);
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno != ENOENT) return;  // cannot tell (a permission change): the writes will say
    gone_ = "the job store " + path_ + " was deleted while jarvis was using it";
  } else if (st.st_dev != dev_ || st.st_ino != ino_) {
    gone_ = "the job store " + path_ + " was replaced by another file while jarvis was using it";
  } else {
    return;
  }
  throw StoreError(StoreError::Kind::Gone, *gone_);
}

// The jobs prune_finished removes the documents of.
#define FINISHED_BEFORE \
  "(SELECT id FROM jobs WHERE state IN ('ready', 'failed', 'cancelled') AND ended_ms > 0 AND ended_ms < ?1)"

JobStore::PruneResult SqliteJobStore::prune_finished(int64_t before_ms) {
  PruneResult r;
  Transaction tx(*this);
  auto& count = prepare("SELECT count(*) FROM job_documents WHERE job_id IN " FINISHED_BEFORE);
  count.bind(1, before_ms);
  if (count.step()) r.jobs = count.i64(0);
  count.reset();
  prepare("DELETE FROM log WHERE job_id IN " FINISHED_BEFORE).bind(1, before_ms).run();
  r.log_lines = sqlite3_changes(db_);
  prepare("UPDATE stages SET clipboard_after = NULL WHERE clipboard_after IS NOT NULL AND job_id IN "
          FINISHED_BEFORE).bind(1, before_ms).run();
  prepare("DELETE FROM job_documents WHERE job_id IN " FINISHED_BEFORE).bind(1, before_ms).run();
  tx.commit();
  return r;
}

void SqliteJobStore::probe_write(size_t bytes) {
  check_identity();
  {
    Transaction tx(*this);
    prepare("INSERT INTO write_probe (data) VALUES (zeroblob(?))")
        .bind(1, static_cast<int64_t>(std::min<size_t>(bytes, 16u << 20))).run();
    tx.commit();
  }
  Transaction tx(*this);
  prepare("DELETE FROM write_probe").run();
  tx.commit();
}

SqliteJobStore::~SqliteJobStore() {
  {
    std::lock_guard lock(checkpoint_mutex_);
    checkpoint_stop_ = true;
  }
  checkpoint_wake_.notify_all();
  checkpointer_.join();
  cache_.reset();
  sqlite3_close(db_);
}

void SqliteJobStore::checkpoint_loop(std::string path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return;  // the main connection's own error handling has already reported a bad file
  }
  sqlite3_busy_timeout(db, 1000);
  std::unique_lock lock(checkpoint_mutex_);
  while (true) {
    checkpoint_wake_.wait_for(lock, std::chrono::milliseconds(250), [this] { return checkpoint_stop_; });
    bool stop = checkpoint_stop_;
    lock.unlock();
    // PASSIVE never blocks the writer; what it cannot copy now it copies next time.
    sqlite3_wal_checkpoint_v2(db, nullptr, stop ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE,
                              nullptr, nullptr);
    lock.lock();
    if (stop) break;
  }
  sqlite3_close(db);
}

// Stores made by an older jarvis get the columns added since; CREATE TABLE IF NOT EXISTS
// leaves an existing table as it was.
void SqliteJobStore::migrate() {
  std::set<std::string> have;
  auto& s = prepare("SELECT name FROM pragma_table_info('jobs')");
  while (s.step()) have.insert(s.text(0));
  s.reset();
  static const std::pair<const char*, const char*> kAdded[] = {
      {"group_name", "ALTER TABLE jobs ADD COLUMN group_name TEXT NOT NULL DEFAULT ''"},
      {"requester_key", "ALTER TABLE jobs ADD COLUMN requester_key TEXT NOT NULL DEFAULT ''"},
      {"confirm_until_ms", "ALTER TABLE jobs ADD COLUMN confirm_until_ms INTEGER NOT NULL DEFAULT 0"},
      {"confirm_through", "ALTER TABLE jobs ADD COLUMN confirm_through INTEGER NOT NULL DEFAULT 0"},
      {"confirmed_until", "ALTER TABLE jobs ADD COLUMN confirmed_until INTEGER NOT NULL DEFAULT 0"},
      {"confirmed_by", "ALTER TABLE jobs ADD COLUMN confirmed_by TEXT NOT NULL DEFAULT ''"},
      {"confirm_prompt", "ALTER TABLE jobs ADD COLUMN confirm_prompt TEXT NOT NULL DEFAULT ''"},
  };
  for (const auto& [column, sql] : kAdded)
    if (!have.count(column)) exec(sql);
  exec("CREATE INDEX IF NOT EXISTS jobs_by_group ON jobs(group_name, host) WHERE group_name != ''");
  // Since the HTTP API: the engine's events (the API's event stream resumes from them) and
  // the API's tokens (their SHA-256 only). Stores from before get both tables empty.
  exec(R"SQL(
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms INTEGER NOT NULL,
  job_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
  name TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_requester ON jobs(requested_by, id);
CREATE TABLE IF NOT EXISTS hook_deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hook TEXT NOT NULL,
  event_id INTEGER NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at_ms INTEGER NOT NULL,
  last_error TEXT NOT NULL DEFAULT '',
  UNIQUE (hook, event_id)
);
CREATE INDEX IF NOT EXISTS hook_deliveries_due ON hook_deliveries(next_at_ms) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS hook_cursor (one INTEGER PRIMARY KEY CHECK (one = 1), event_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dashboard_sessions (
  id_hash TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL,
  expires_ms INTEGER NOT NULL
);
)SQL");
  // Nothing here writes once the tables exist: a CLI opening a store another process holds
  // locked must still be able to read it.
}

void SqliteJobStore::exec(const char* sql) {
  if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
    fail(sqlite3_extended_errcode(db_));
}

SqliteJobStore::Statement& SqliteJobStore::prepare(const char* sql) {
  auto& slot = cache_->statements[sql];
  if (!slot) slot = std::make_unique<Statement>(*this, sql);
  return *slot;
}

std::vector<JobRecord> SqliteJobStore::query_jobs(const char* sql, std::optional<int64_t> arg) {
  auto& s = prepare(sql);
  if (arg) s.bind(1, *arg);
  std::vector<JobRecord> out;
  while (s.step()) out.push_back(read_job(s));
  s.reset();
  return out;
}

#define JOB_SELECT                                                                            \
  "SELECT id, host, design_ref, pipeline, tasks, state, stage, attempt, requested_by, origin, " \
  "created_ms, started_ms, ended_ms, stage_started_ms, retry_at_ms, reason, owner, "           \
  "cancel_requested, cancelled_by, worker_pid, group_name, requester_key, confirm_until_ms, " \
  "confirmed_until, confirmed_by, confirm_prompt FROM jobs "

CreateResult SqliteJobStore::create_job(const NewJob& job, const std::string& owner) {
  CreateResult result;
  try {
    Transaction tx(*this);
    prepare("INSERT INTO jobs (host, design_ref, pipeline, tasks, state, requested_by, origin, "
            "created_ms, owner, stage_count, group_name, requester_key) "
            "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)")
        .bind(1, job.host).bind(2, job.design_ref).bind(3, job.pipeline)
        .bind(4, encode_tasks(job.tasks)).bind(5, job.requested_by).bind(6, job.origin)
        .bind(7, now_ms()).bind(8, owner).bind(9, static_cast<int64_t>(job.tasks.size()))
        .bind(10, job.group).bind(11, job.requester_key)
        .run();
    result.id = sqlite3_last_insert_rowid(db_);
    prepare("INSERT INTO job_documents (job_id, design, clipboard) VALUES (?, ?, ?)")
        .bind(1, result.id).bind(2, job.clipboard).bind(3, job.clipboard).run();
    tx.commit();
  } catch (const Statement::UniqueViolation&) {
    result.id = 0;
    auto current = latest_for_host(job.host);
    if (current && is_active(current->state)) result.conflict = current;
    else throw;
  }
  return result;
}

std::optional<JobRecord> SqliteJobStore::job(int64_t id) {
  auto rows = query_jobs(JOB_SELECT "WHERE id = ?", id);
  if (rows.empty()) return std::nullopt;
  auto& s = prepare("SELECT clipboard FROM job_documents WHERE job_id = ?");
  s.bind(1, id);
  if (s.step()) rows.front().clipboard = s.text(0);
  s.reset();
  return rows.front();
}

std::optional<JobRecord> SqliteJobStore::latest_for_host(const std::string& host) {
  auto& s = prepare(JOB_SELECT "WHERE host = ? ORDER BY id DESC LIMIT 1");
  s.bind(1, host);
  std::optional<JobRecord> out;
  if (s.step()) out = read_job(s);
  s.reset();
  return out;
}

std::vector<JobRecord> SqliteJobStore::latest_in_group(const std::string& group) {
  auto& s = prepare(JOB_SELECT "WHERE id IN (SELECT max(id) FROM jobs WHERE group_name = ? "
                    "GROUP BY host) ORDER BY host");
  s.bind(1, group);
  std::vector<JobRecord> out;
  while (s.step()) out.push_back(read_job(s));
  s.reset();
  return out;
}

std::vector<JobRecord> SqliteJobStore::active_jobs() {
  return query_jobs(JOB_SELECT "WHERE state IN ('queued', 'running') ORDER BY id", std::nullopt);
}

std::vector<JobRecord> SqliteJobStore::recent_finished(int limit) {
  // Without ANALYZE statistics the planner prefers jobs_by_state and sorts the whole history;
  // the partial index is already in the order wanted.
  return query_jobs("SELECT id, host, design_ref, pipeline, tasks, state, stage, attempt, "
                    "requested_by, origin, created_ms, started_ms, ended_ms, stage_started_ms, "
                    "retry_at_ms, reason, owner, cancel_requested, cancelled_by, worker_pid, "
                    "group_name, requester_key, confirm_until_ms, confirmed_until, confirmed_by, "
                    "confirm_prompt FROM jobs INDEXED BY jobs_finished_by_end "
                    "WHERE state IN ('ready', 'failed', 'cancelled') ORDER BY ended_ms DESC, id "
                    "DESC LIMIT ?",
                    limit);
}

int SqliteJobStore::queued_ahead(int64_t id) {
  auto& s = prepare("SELECT count(*) FROM jobs WHERE state = 'queued' AND id < ?");
  s.bind(1, id);
  int n = s.step() ? static_cast<int>(s.i64(0)) : 0;
  s.reset();
  return n;
}

void SqliteJobStore::mark_running(int64_t id, int64_t now) {
  prepare("UPDATE jobs SET state = 'running', started_ms = CASE WHEN started_ms = 0 THEN ?1 "
          "ELSE started_ms END WHERE id = ?2")
      .bind(1, now).bind(2, id).run();
}

void SqliteJobStore::mark_queued(int64_t id) {
  prepare("UPDATE jobs SET state = 'queued', worker_pid = 0 WHERE id = ? AND state = 'running'")
      .bind(1, id).run();
}

void SqliteJobStore::stage_started(int64_t id, int stage, int attempt, const std::string& task,
                                   int64_t now, int worker_pid) {
  Transaction tx(*this);
  prepare("UPDATE jobs SET stage = ?1, attempt = ?2, stage_started_ms = ?3, retry_at_ms = 0, "
          "worker_pid = ?4 WHERE id = ?5")
      .bind(1, stage).bind(2, attempt).bind(3, now).bind(4, worker_pid).bind(5, id).run();
  // A row left 'running' by a crashed process becomes 'interrupted' when the stage reruns.
  prepare("UPDATE stages SET result = 'interrupted', ended_ms = ?1 WHERE job_id = ?2 AND "
          "result = 'running'")
      .bind(1, now).bind(2, id).run();
  prepare("INSERT OR REPLACE INTO stages (job_id, stage, attempt, task, started_ms) "
          "SELECT ?1, ?2, ?3, ?4, ?5")
      .bind(1, id).bind(2, stage).bind(3, attempt)
      .bind(4, task).bind(5, now).run();
  tx.commit();
}

void SqliteJobStore::set_worker_pid(int64_t id, int stage, int attempt, int worker_pid) {
  prepare("UPDATE jobs SET worker_pid = ?1 WHERE id = ?2 AND stage = ?3 AND attempt = ?4")
      .bind(1, worker_pid).bind(2, id).bind(3, stage).bind(4, attempt).run();
}

void SqliteJobStore::stage_will_retry(int64_t id, int stage, int attempt, int64_t now,
                                      const std::string& reason, int64_t retry_at) {
  Transaction tx(*this);
  prepare("UPDATE stages SET result = 'failed', ended_ms = ?1, reason = ?2 WHERE job_id = ?3 "
          "AND stage = ?4 AND attempt = ?5")
      .bind(1, now).bind(2, reason).bind(3, id).bind(4, stage).bind(5, attempt).run();
  prepare("UPDATE jobs SET reason = ?1, retry_at_ms = ?2, worker_pid = 0 WHERE id = ?3")
      .bind(1, reason).bind(2, retry_at).bind(3, id).run();
  tx.commit();
}

void SqliteJobStore::stage_succeeded(int64_t id, int stage, int attempt, int64_t now,
                                     const std::string* changed_clipboard) {
  Transaction tx(*this);
  // clipboard_after stays NULL when the stage left the clipboard as it was: the history
  // reads it from the stage before, and an unchanged document is not written twice.
  auto& s = prepare("UPDATE stages SET result = 'ok', ended_ms = ?1, clipboard_after = ?2 "
                    "WHERE job_id = ?3 AND stage = ?4 AND attempt = ?5");
  s.bind(1, now);
  if (changed_clipboard) s.bind(2, *changed_clipboard);
  s.bind(3, id).bind(4, stage).bind(5, attempt).run();
  // The clipboard and the stage move together, so a restart resumes exactly here.
  if (changed_clipboard)
    prepare("UPDATE job_documents SET clipboard = ? WHERE job_id = ?")
        .bind(1, *changed_clipboard).bind(2, id).run();
  prepare("UPDATE jobs SET stage = ?1 + 1, attempt = 0, reason = '', worker_pid = 0, "
          "stage_started_ms = ?2, "
          "state = CASE WHEN ?1 + 1 >= stage_count THEN 'ready' ELSE state END, "
          "ended_ms = CASE WHEN ?1 + 1 >= stage_count THEN ?2 ELSE 0 END WHERE id = ?3")
      .bind(1, stage).bind(2, now).bind(3, id).run();
  tx.commit();
}

void SqliteJobStore::stage_failed(int64_t id, int stage, int attempt, int64_t now,
                                  const std::string& reason) {
  Transaction tx(*this);
  prepare("UPDATE stages SET result = 'failed', ended_ms = ?1, reason = ?2 WHERE job_id = ?3 "
          "AND stage = ?4 AND attempt = ?5")
      .bind(1, now).bind(2, reason).bind(3, id).bind(4, stage).bind(5, attempt).run();
  prepare("UPDATE jobs SET state = 'failed', reason = ?1, ended_ms = ?2, worker_pid = 0, "
          "retry_at_ms = 0, cancel_requested = 0, confirm_until_ms = 0 WHERE id = ?3")
      .bind(1, reason).bind(2, now).bind(3, id).run();
  tx.commit();
}

void SqliteJobStore::job_cancelled(int64_t id, int64_t now, const std::string& reason) {
  Transaction tx(*this);
  prepare("UPDATE stages SET result = 'cancelled', ended_ms = ?1 WHERE job_id = ?2 AND result = "
          "'running'")
      .bind(1, now).bind(2, id).run();
  prepare("UPDATE jobs SET state = 'cancelled', reason = ?1, ended_ms = ?2, worker_pid = 0, "
          "retry_at_ms = 0, confirm_until_ms = 0 WHERE id = ?3")
      .bind(1, reason).bind(2, now).bind(3, id).run();
  tx.commit();
}

void SqliteJobStore::await_confirmation(int64_t id, int stage, int through, int64_t until_ms,
                                        const std::string& prompt) {
  prepare("UPDATE jobs SET stage = ?1, confirm_through = ?2, confirm_until_ms = ?3, "
          "confirm_prompt = ?4, worker_pid = 0 WHERE id = ?5 AND state IN ('queued', 'running')")
      .bind(1, stage).bind(2, through).bind(3, until_ms).bind(4, prompt).bind(5, id).run();
}

bool SqliteJobStore::confirm(int64_t id, const std::string& by, int64_t now) {
  prepare("UPDATE jobs SET confirmed_until = confirm_through, confirmed_by = ?1, "
          "confirm_until_ms = 0 WHERE id = ?2 AND confirm_until_ms > ?3 AND cancel_requested = 0 "
          "AND state IN ('queued', 'running')")
      .bind(1, by).bind(2, id).bind(3, now).run();
  return sqlite3_changes(db_) > 0;
}

int64_t SqliteJobStore::add_freeze(const Freeze& f) {
  prepare("INSERT INTO freezes (scope, by, reason, from_ms, until_ms) VALUES (?, ?, ?, ?, ?)")
      .bind(1, f.scope).bind(2, f.by).bind(3, f.reason).bind(4, f.from_ms).bind(5, f.until_ms).run();
  return sqlite3_last_insert_rowid(db_);
}

int SqliteJobStore::lift_freezes(const std::string& scope, const std::string& by, int64_t now) {
  prepare("UPDATE freezes SET lifted_by = ?1, lifted_ms = ?2 WHERE scope = ?3 AND lifted_ms = 0 "
          "AND (until_ms = 0 OR until_ms > ?2)")
      .bind(1, by).bind(2, now).bind(3, scope).run();
  return sqlite3_changes(db_);
}

std::vector<WalkState> SqliteJobStore::walk_states() {
  auto& s = prepare("SELECT walk, host, ok, reason, last_run_ms, since_ms FROM walk_results ORDER BY walk, host");
  std::vector<WalkState> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.i64(2) != 0, s.text(3), s.i64(4), s.i64(5)});
  s.reset();
  return out;
}

void SqliteJobStore::record_walk(const WalkState& w) {
  prepare("INSERT OR REPLACE INTO walk_results (walk, host, ok, reason, last_run_ms, since_ms) "
          "VALUES (?, ?, ?, ?, ?, ?)")
      .bind(1, w.walk).bind(2, w.host).bind(3, int64_t{w.ok}).bind(4, w.reason)
      .bind(5, w.last_run_ms).bind(6, w.since_ms).run();
}

std::vector<Freeze> SqliteJobStore::freezes_in_force(int64_t now) {
  auto& s = prepare("SELECT id, scope, by, reason, from_ms, until_ms FROM freezes WHERE lifted_ms = 0 "
                    "AND from_ms <= ?1 AND (until_ms = 0 OR until_ms > ?1) ORDER BY id");
  s.bind(1, now);
  std::vector<Freeze> out;
  while (s.step()) out.push_back({s.i64(0), s.text(1), s.text(2), s.text(3), s.i64(4), s.i64(5)});
  s.reset();
  return out;
}

void SqliteJobStore::append_log(int64_t id, int stage, const std::string& line) {
  prepare("INSERT INTO log (job_id, at_ms, stage, line) VALUES (?, ?, ?, ?)")
      .bind(1, id).bind(2, now_ms()).bind(3, stage).bind(4, line).run();
}

std::vector<LogLine> SqliteJobStore::log(int64_t id, int limit) {
  auto& s = prepare("SELECT at_ms, stage, line FROM (SELECT id, at_ms, stage, line FROM log "
                    "WHERE job_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id");
  s.bind(1, id).bind(2, limit);
  std::vector<LogLine> out;
  while (s.step()) out.push_back({s.i64(0), static_cast<int>(s.i64(1)), s.text(2)});
  s.reset();
  return out;
}

void SqliteJobStore::redact_log(int64_t id, int stage, const std::vector<std::string>& values) {
  Redactor redactor;
  redactor.add(values);
  if (redactor.empty()) return;
  Transaction tx(*this);
  std::vector<std::pair<int64_t, std::string>> changed;
  auto& s = prepare("SELECT id, line FROM log WHERE job_id = ? AND stage = ?");
  s.bind(1, id).bind(2, stage);
  while (s.step()) {
    std::string line = s.text(1);
    std::string redacted = redactor.redact(line);
    if (redacted != line) changed.emplace_back(s.i64(0), std::move(redacted));
  }
  s.reset();
  for (const auto& [row, line] : changed)
    prepare("UPDATE log SET line = ? WHERE id = ?").bind(1, line).bind(2, row).run();
  tx.commit();
}

void SqliteJobStore::audit(const AuditEntry& e) {
  prepare("INSERT INTO audit (at_ms, who, protocol, place, command, outcome) VALUES (?, ?, ?, "
          "?, ?, ?)")
      .bind(1, e.at_ms ? e.at_ms : now_ms()).bind(2, e.who).bind(3, e.protocol).bind(4, e.place)
      .bind(5, e.command).bind(6, e.outcome).run();
}

std::vector<AuditEntry> SqliteJobStore::audit_trail(int limit) {
  auto& s = prepare("SELECT at_ms, who, protocol, place, command, outcome FROM (SELECT * FROM "
                    "audit ORDER BY id DESC LIMIT ?) ORDER BY id");
  s.bind(1, limit);
  std::vector<AuditEntry> out;
  while (s.step())
    out.push_back({s.i64(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), 0});
  s.reset();
  return out;
}

bool SqliteJobStore::request_cancel(int64_t id, const std::string& by) {
  auto& s = prepare("UPDATE jobs SET cancel_requested = 1, cancelled_by = ? WHERE id = ? AND "
                    "state IN ('queued', 'running')");
  s.bind(1, by).bind(2, id).run();
  return sqlite3_changes(db_) > 0;
}

RequeueResult SqliteJobStore::requeue(int64_t id, const std::string& new_owner) {
  RequeueResult r;
  auto j = job(id);
  if (!j) { r.error = "there is no job " + std::to_string(id); return r; }
  if (is_active(j->state)) { r.error = "job " + std::to_string(id) + " is still in flight"; return r; }
  if (j->state == JobState::Ready) {
    r.error = "job " + std::to_string(id) + " finished; deploy again to start a new job";
    return r;
  }
  auto& docs = prepare("SELECT count(*) FROM job_documents WHERE job_id = ?");
  docs.bind(1, id);
  bool kept = docs.step() && docs.i64(0) > 0;
  docs.reset();
  if (!kept) {
    r.error = "job " + std::to_string(id) + " was pruned (its clipboard is gone); deploy again";
    return r;
  }
  try {
    prepare("UPDATE jobs SET state = 'queued', owner = ?1, reason = '', ended_ms = 0, attempt = 0, "
            "retry_at_ms = 0, cancel_requested = 0, cancelled_by = '', worker_pid = 0, "
            "confirm_until_ms = 0, confirmed_until = 0, confirmed_by = '' "
            "WHERE id = ?2 AND state IN ('failed', 'cancelled')")
        .bind(1, new_owner).bind(2, id).run();
  } catch (const Statement::UniqueViolation&) {
    auto current = latest_for_host(j->host);
    r.error = j->host + " has another job in flight";
    if (current && is_active(current->state)) r.conflict = current;
    return r;
  }
  r.ok = sqlite3_changes(db_) > 0;
  if (!r.ok) r.error = "job " + std::to_string(id) + " changed meanwhile; try again";
  return r;
}

bool SqliteJobStore::claim(int64_t id, const std::string& expected_owner,
                           const std::string& new_owner) {
  prepare("UPDATE jobs SET owner = ? WHERE id = ? AND owner = ? AND state IN ('queued', "
          "'running')")
      .bind(1, new_owner).bind(2, id).bind(3, expected_owner).run();
  return sqlite3_changes(db_) > 0;
}

std::vector<JobStore::Watched> SqliteJobStore::jobs_to_watch() {
  auto& s = prepare("SELECT id, owner, cancel_requested, state, stage FROM jobs WHERE state IN "
                    "('queued', 'running') ORDER BY id");
  std::vector<Watched> out;
  while (s.step())
    out.push_back({s.i64(0), s.text(1), s.i64(2) != 0, parse_job_state(s.text(3)).value_or(JobState::Queued),
                   static_cast<int>(s.i64(4))});
  s.reset();
  return out;
}

std::vector<JobRecord> SqliteJobStore::find_jobs(const JobQuery& q) {
  // One statement for every combination of filters: an empty filter matches everything.
  auto& s = prepare(JOB_SELECT
                    "WHERE (?1 = '' OR host = ?1) AND (?2 = '' OR requested_by = ?2) AND "
                    "(?3 = '' OR state = ?3) AND (?4 = 0 OR id < ?4) AND "
                    "(?5 = 0 OR id IN (SELECT max(id) FROM jobs GROUP BY host)) "
                    "ORDER BY id DESC LIMIT ?6");
  s.bind(1, q.host).bind(2, q.requested_by)
      .bind(3, q.state ? std::string(to_string(*q.state)) : std::string())
      .bind(4, q.before_id).bind(5, int64_t{q.latest_per_host ? 1 : 0})
      .bind(6, int64_t{std::clamp(q.limit, 1, 1000)});
  std::vector<JobRecord> out;
  while (s.step()) out.push_back(read_job(s));
  s.reset();
  return out;
}

std::vector<StageRecord> SqliteJobStore::stages(int64_t id) {
  auto& s = prepare("SELECT stage, attempt, task, started_ms, ended_ms, result, reason FROM stages "
                    "WHERE job_id = ? ORDER BY stage, attempt");
  s.bind(1, id);
  std::vector<StageRecord> out;
  while (s.step())
    out.push_back({static_cast<int>(s.i64(0)), static_cast<int>(s.i64(1)), s.text(2), s.i64(3), s.i64(4),
                   s.text(5), s.text(6)});
  s.reset();
  return out;
}

std::optional<std::string> SqliteJobStore::clipboard_after(int64_t id, int stage) {
  auto& docs = prepare("SELECT design FROM job_documents WHERE job_id = ?");
  docs.bind(1, id);
  std::optional<std::string> design;
  if (docs.step()) design = docs.text(0);
  docs.reset();
  if (!design || stage <= 0) return design;  // pruned, or the design itself
  // The last stage at or before `stage` that changed the clipboard; the design if none did.
  auto& ok = prepare("SELECT count(*) FROM stages WHERE job_id = ? AND stage = ? AND result = 'ok'");
  ok.bind(1, id).bind(2, int64_t{stage - 1});
  bool succeeded = ok.step() && ok.i64(0) > 0;
  ok.reset();
  if (!succeeded) return std::nullopt;
  auto& s = prepare("SELECT clipboard_after FROM stages WHERE job_id = ? AND stage <= ? AND result = 'ok' "
                    "AND clipboard_after IS NOT NULL ORDER BY stage DESC LIMIT 1");
  s.bind(1, id).bind(2, int64_t{stage - 1});
  std::optional<std::string> out = s.step() ? std::optional<std::string>(s.text(0)) : design;
  s.reset();
  return out;
}

std::vector<AuditEntry> SqliteJobStore::find_audit(const AuditQuery& q) {
  auto& s = prepare("SELECT at_ms, who, protocol, place, command, outcome, id FROM audit WHERE "
                    "(?1 = '' OR who = ?1) AND (?2 = '' OR instr(' ' || command || ' ', ' ' || ?2 || ' ') > 0) "
                    "AND at_ms >= ?3 AND (?4 = 0 OR id < ?4) ORDER BY id DESC LIMIT ?5");
  s.bind(1, q.who).bind(2, q.host).bind(3, q.since_ms).bind(4, q.before_id)
      .bind(5, int64_t{std::clamp(q.limit, 1, 1000)});
  std::vector<AuditEntry> out;
  while (s.step())
    out.push_back({s.i64(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), s.i64(6)});
  s.reset();
  return out;
}

std::map<JobState, int64_t> SqliteJobStore::job_counts() {
  auto& s = prepare("SELECT state, count(*) FROM jobs GROUP BY state");  // jobs_by_state covers it
  std::map<JobState, int64_t> out;
  while (s.step())
    if (auto st = parse_job_state(s.text(0))) out[*st] = s.i64(1);
  s.reset();
  return out;
}

int64_t SqliteJobStore::append_event(int64_t at_ms, int64_t job_id, const std::string& kind,
                                     const std::string& json) {
  if (!group_open_) check_identity();  // a group checked when it began
  // One writer at a time (SQLite's lock): ids are committed in order.
  prepare("INSERT INTO events (at_ms, job_id, kind, json) VALUES (?, ?, ?, ?)")
      .bind(1, at_ms).bind(2, job_id).bind(3, kind).bind(4, json).run();
  return sqlite3_last_insert_rowid(db_);
}

std::vector<StoredEvent> SqliteJobStore::events_after(int64_t after_id, int limit) {
  auto& s = prepare("SELECT id, at_ms, job_id, kind, json FROM events WHERE id > ? ORDER BY id LIMIT ?");
  s.bind(1, after_id).bind(2, int64_t{std::clamp(limit, 1, 100000)});
  std::vector<StoredEvent> out;
  while (s.step()) out.push_back({s.i64(0), s.i64(1), s.i64(2), s.text(3), s.text(4)});
  s.reset();
  return out;
}

void SqliteJobStore::queue_hook_deliveries(int64_t event_id, const std::vector<std::string>& hooks, int64_t now) {
  Transaction tx(*this);
  auto& cursor = prepare("INSERT INTO hook_cursor (one, event_id) VALUES (1, ?1) ON CONFLICT (one) DO UPDATE "
                         "SET event_id = excluded.event_id WHERE event_id < excluded.event_id");
  cursor.bind(1, event_id).run();
  if (sqlite3_changes(db_) == 0) return;  // queued before (a catch-up after a crash): nothing twice
  for (const auto& h : hooks)
    prepare("INSERT OR IGNORE INTO hook_deliveries (hook, event_id, next_at_ms) VALUES (?, ?, ?)")
        .bind(1, h).bind(2, event_id).bind(3, now).run();
  tx.commit();
}

int64_t SqliteJobStore::hook_cursor() {
  // No row yet: hooks never queued anything in this store, and they start with the events
  // that come next, not with its whole history.
  auto& s = prepare("SELECT coalesce((SELECT event_id FROM hook_cursor WHERE one = 1), "
                    "(SELECT coalesce(max(id), 0) FROM events))");
  int64_t v = s.step() ? s.i64(0) : 0;
  s.reset();
  return v;
}

namespace {
#define HOOK_SELECT                                                                                       \
  "SELECT d.id, d.hook, d.event_id, d.state, d.attempts, d.next_at_ms, d.last_error, coalesce(e.kind, ''), " \
  "coalesce(e.json, '') FROM hook_deliveries d LEFT JOIN events e ON e.id = d.event_id "
template <typename Stmt>
HookDelivery read_delivery(const Stmt& s) {
  return {s.i64(0), s.text(1), s.i64(2), s.text(3), static_cast<int>(s.i64(4)), s.i64(5), s.text(6), s.text(7), s.text(8)};
}
}  // namespace

std::vector<HookDelivery> SqliteJobStore::due_hook_deliveries(int64_t now, int limit) {
  auto& s = prepare(HOOK_SELECT "WHERE d.state = 'pending' AND d.next_at_ms <= ? ORDER BY d.next_at_ms, d.id LIMIT ?");
  s.bind(1, now).bind(2, int64_t{std::clamp(limit, 1, 1000)});
  std::vector<HookDelivery> out;
  while (s.step()) out.push_back(read_delivery(s));
  s.reset();
  return out;
}

void SqliteJobStore::hook_attempt_done(int64_t id, const std::string& state, int64_t next_at_ms,
                                       const std::string& error) {
  prepare("UPDATE hook_deliveries SET state = ?1, attempts = attempts + 1, next_at_ms = ?2, last_error = ?3 "
          "WHERE id = ?4")
      .bind(1, state).bind(2, next_at_ms).bind(3, error).bind(4, id).run();
}

std::vector<HookDelivery> SqliteJobStore::dead_hook_deliveries(int limit) {
  auto& s = prepare(HOOK_SELECT "WHERE d.state = 'dead' ORDER BY d.id DESC LIMIT ?");
  s.bind(1, int64_t{std::clamp(limit, 1, 10000)});
  std::vector<HookDelivery> out;
  while (s.step()) out.push_back(read_delivery(s));
  s.reset();
  return out;
}

bool SqliteJobStore::add_token(const ApiToken& t) {
  try {
    prepare("INSERT INTO api_tokens (name, role, hash, created_ms) VALUES (?, ?, ?, ?)")
        .bind(1, t.name).bind(2, t.role).bind(3, t.hash).bind(4, t.created_ms ? t.created_ms : now_ms()).run();
  } catch (const Statement::UniqueViolation&) {
    return false;
  }
  return true;
}

std::vector<ApiToken> SqliteJobStore::tokens() {
  auto& s = prepare("SELECT name, role, hash, created_ms FROM api_tokens ORDER BY name");
  std::vector<ApiToken> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.text(2), s.i64(3)});
  s.reset();
  return out;
}

bool SqliteJobStore::revoke_token(const std::string& name) {
  prepare("DELETE FROM api_tokens WHERE name = ?").bind(1, name).run();
  return sqlite3_changes(db_) > 0;
}

void SqliteJobStore::add_session(const DashboardSession& session, int64_t now) {
  Transaction tx(*this);
  prepare("DELETE FROM dashboard_sessions WHERE expires_ms <= ?").bind(1, now).run();
  prepare("INSERT OR REPLACE INTO dashboard_sessions (id_hash, token_hash, expires_ms) VALUES (?, ?, ?)")
      .bind(1, session.id_hash).bind(2, session.token_hash).bind(3, session.expires_ms).run();
  // At most 100 logins per token (the newest): a token that logs in in a loop fills nothing.
  prepare("DELETE FROM dashboard_sessions WHERE token_hash = ?1 AND id_hash NOT IN (SELECT id_hash FROM "
          "dashboard_sessions WHERE token_hash = ?1 ORDER BY expires_ms DESC LIMIT 100)")
      .bind(1, session.token_hash).run();
  tx.commit();
}

std::optional<DashboardSession> SqliteJobStore::session(const std::string& id_hash, int64_t now) {
  auto& s = prepare("SELECT token_hash, expires_ms FROM dashboard_sessions WHERE id_hash = ? AND expires_ms > ?");
  s.bind(1, id_hash).bind(2, now);
  std::optional<DashboardSession> out;
  if (s.step()) out = DashboardSession{id_hash, s.text(0), s.i64(1)};
  s.reset();
  return out;
}

void SqliteJobStore::end_session(const std::string& id_hash) {
  prepare("DELETE FROM dashboard_sessions WHERE id_hash = ?").bind(1, id_hash).run();
}

std::string SqliteJobStore::initial_clipboard(int64_t id) {
  auto& s = prepare("SELECT design FROM job_documents WHERE job_id = ?");
  s.bind(1, id);
  std::string out = s.step() ? s.text(0) : std::string();
  s.reset();
  return out;
}

std::vector<std::string> SqliteJobStore::stage_clipboards(int64_t id) {
  auto& s = prepare("SELECT clipboard_after FROM stages WHERE job_id = ? AND result = 'ok' "
                    "ORDER BY stage");
  s.bind(1, id);
  std::vector<std::string> out;
  std::optional<std::string> initial;
  while (s.step()) {
    if (sqlite3_column_type(s.raw(), 0) != SQLITE_NULL) {
      out.push_back(s.text(0));
    } else if (!out.empty()) {
      out.push_back(out.back());  // unchanged by that stage
    } else {
      if (!initial) initial = initial_clipboard(id);
      out.push_back(*initial);
    }
  }
  s.reset();
  return out;
}

}  // namespace jarvis
