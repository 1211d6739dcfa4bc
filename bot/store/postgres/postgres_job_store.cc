#include "bot/store/postgres/postgres_job_store.h"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <sstream>
#include <string_view>

#include "bot/store/task_codec.h"
#include "bot/util/duration.h"
#include "bot/util/secrets.h"
#include "bot/util/url_redact.h"
#include "bot/util/utf8.h"

namespace jarvis {

namespace {

// Versioned migrations: migrations[i] brings the schema from version i to i + 1. They run at
// start, in one transaction under an advisory lock, so nodes starting together migrate once.
// Only ever append: a released migration is never edited.
const char* const kMigrations[] = {
    // 1: the SQLite store's tables, the event table and the store's identity.
    R"SQL(
CREATE TABLE jarvis_meta (store_id TEXT NOT NULL);
INSERT INTO jarvis_meta (store_id) VALUES (md5(random()::text || clock_timestamp()::text));
CREATE TABLE jobs (
  id BIGSERIAL PRIMARY KEY,
  host TEXT NOT NULL,
  design_ref TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  tasks TEXT NOT NULL,
  state TEXT NOT NULL,
  stage INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL DEFAULT 0,
  requested_by TEXT NOT NULL,
  origin TEXT NOT NULL,
  created_ms BIGINT NOT NULL,
  started_ms BIGINT NOT NULL DEFAULT 0,
  ended_ms BIGINT NOT NULL DEFAULT 0,
  stage_started_ms BIGINT NOT NULL DEFAULT 0,
  retry_at_ms BIGINT NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  owner TEXT NOT NULL DEFAULT '',
  cancel_requested BOOLEAN NOT NULL DEFAULT false,
  cancelled_by TEXT NOT NULL DEFAULT '',
  worker_pid INTEGER NOT NULL DEFAULT 0,
  stage_count INTEGER NOT NULL,
  group_name TEXT NOT NULL DEFAULT ''
);
-- Documents are bytes: a clipboard comes back exactly as the worker printed it.
CREATE TABLE job_documents (
  job_id BIGINT PRIMARY KEY REFERENCES jobs(id),
  design BYTEA NOT NULL,
  clipboard BYTEA NOT NULL
);
-- The per-host lock, held by the database across every node.
CREATE UNIQUE INDEX jobs_one_in_flight_per_host ON jobs(host) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_by_host ON jobs(host, id);
CREATE INDEX jobs_by_state ON jobs(state, id);
CREATE INDEX jobs_finished_by_end ON jobs(ended_ms DESC, id DESC)
  WHERE state IN ('ready', 'failed', 'cancelled');
CREATE INDEX jobs_by_group ON jobs(group_name, host) WHERE group_name <> '';
CREATE TABLE stages (
  job_id BIGINT NOT NULL REFERENCES jobs(id),
  stage INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  task TEXT NOT NULL,
  started_ms BIGINT NOT NULL,
  ended_ms BIGINT NOT NULL DEFAULT 0,
  result TEXT NOT NULL DEFAULT 'running',
  reason TEXT NOT NULL DEFAULT '',
  clipboard_after BYTEA,
  PRIMARY KEY (job_id, stage, attempt)
);
CREATE TABLE log (
  id BIGSERIAL PRIMARY KEY,
  job_id BIGINT NOT NULL,
  at_ms BIGINT NOT NULL,
  stage INTEGER NOT NULL,
  line TEXT NOT NULL
);
CREATE INDEX log_by_job ON log(job_id, id);
CREATE TABLE write_probe (data TEXT);
CREATE TABLE audit (
  id BIGSERIAL PRIMARY KEY,
  at_ms BIGINT NOT NULL,
  who TEXT NOT NULL,
  protocol TEXT NOT NULL,
  place TEXT NOT NULL,
  command TEXT NOT NULL,
  outcome TEXT NOT NULL
);
CREATE TABLE events (
  id BIGSERIAL PRIMARY KEY,
  at_ms BIGINT NOT NULL,
  job_id BIGINT NOT NULL,
  kind TEXT NOT NULL,
  json TEXT NOT NULL
);
)SQL",
    // 2: the engines' leases (several nodes: an engine is alive while its lease is).
    R"SQL(
CREATE TABLE engines (
  id TEXT PRIMARY KEY,
  node TEXT NOT NULL,
  started_ms BIGINT NOT NULL,
  lease_until_ms BIGINT NOT NULL
);
CREATE INDEX jobs_unowned_queue ON jobs(id) WHERE state = 'queued' AND owner = '';
-- Leadership of a role (the chat connections) with the cursor of the events it announced.
CREATE TABLE leaders (
  role TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  lease_until_ms BIGINT NOT NULL,
  cursor BIGINT NOT NULL DEFAULT 0
);
)SQL",
    // 3: the safety catch (bot/safety/): confirmations before destructive stages on
    // production hosts, change freezes, and the walks' last results.
    R"SQL(
ALTER TABLE jobs ADD COLUMN requester_key TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN confirm_until_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN confirm_through INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN confirmed_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN confirmed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN confirm_prompt TEXT NOT NULL DEFAULT '';
CREATE TABLE freezes (
  id BIGSERIAL PRIMARY KEY,
  scope TEXT NOT NULL,
  by_whom TEXT NOT NULL,
  reason TEXT NOT NULL,
  from_ms BIGINT NOT NULL,
  until_ms BIGINT NOT NULL DEFAULT 0,
  lifted_by TEXT NOT NULL DEFAULT '',
  lifted_ms BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE walk_results (
  walk TEXT NOT NULL,
  host TEXT NOT NULL,
  ok BOOLEAN NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  last_run_ms BIGINT NOT NULL,
  since_ms BIGINT NOT NULL,
  PRIMARY KEY (walk, host)
);
)SQL",
    // 4: the HTTP API's tokens (their SHA-256 only), the job list by requester, and durable
    // event hooks: one delivery row per (hook, event), and the hooks' cursor in the events.
    R"SQL(
CREATE TABLE api_tokens (
  name TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  created_ms BIGINT NOT NULL
);
CREATE INDEX jobs_by_requester ON jobs(requested_by, id);
CREATE TABLE hook_deliveries (
  id BIGSERIAL PRIMARY KEY,
  hook TEXT NOT NULL,
  event_id BIGINT NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at_ms BIGINT NOT NULL,
  last_error TEXT NOT NULL DEFAULT '',
  UNIQUE (hook, event_id)
);
CREATE INDEX hook_deliveries_due ON hook_deliveries(next_at_ms) WHERE state = 'pending';
CREATE TABLE hook_cursor (one INTEGER PRIMARY KEY CHECK (one = 1), event_id BIGINT NOT NULL);
)SQL",
    // 5: dashboard sessions (the SHA-256 of their ids), valid on every node and across restarts.
    R"SQL(
CREATE TABLE dashboard_sessions (
  id_hash TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL,
  expires_ms BIGINT NOT NULL
);
)SQL",
};
static_assert(static_cast<int>(std::size(kMigrations)) == PostgresJobStore::kSchemaVersion);

// The advisory lock keys jarvis uses (pg_advisory_*): arbitrary, fixed, documented.
constexpr int64_t kMigrationLock = 0x6a61727669730001;  // "jarvis" 1
constexpr int64_t kEventLock = 0x6a61727669730002;
constexpr int64_t kClaimLock = 0x6a61727669730003;
// Lease times come from the server's clock, so nodes' clocks may disagree.
#define SERVER_NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"

struct UniqueViolation : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The URL without its password, for messages: host:port/dbname.
std::string describe(pg_conn* conn) {
  if (conn && PQhost(conn)) {
    std::string host = PQhost(conn);
    if (!host.empty() && host[0] == '/') host = "socket " + host;
    return "PostgreSQL " + host + ":" + (PQport(conn) ? PQport(conn) : "") + "/" +
           (PQdb(conn) ? PQdb(conn) : "");
  }
  return "PostgreSQL";
}

std::string one_line(std::string msg) {
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  for (auto& c : msg)
    if (c == '\n') c = ' ';
  return msg;
}

// Text PostgreSQL will take: valid UTF-8 without NUL (log lines and reasons are for people).
std::string pg_text(const std::string& s) {
  std::string v = valid_utf8(s);
  std::erase(v, '\0');
  return v;
}

}  // namespace

// Parameters of one statement, all as text except bytea ones (binary).
struct PostgresJobStore::Params {
  std::vector<std::string> values;
  std::vector<bool> null, binary;
  Params& add(int64_t v) { return push(std::to_string(v), false, false); }
  Params& add(int v) { return add(static_cast<int64_t>(v)); }
  Params& add(const std::string& v) { return push(pg_text(v), false, false); }
  Params& bytes(const std::string& v) { return push(v, false, true); }
  Params& add_null() { return push({}, true, false); }

 private:
  Params& push(std::string v, bool is_null, bool is_binary) {
    values.push_back(std::move(v));
    null.push_back(is_null);
    binary.push_back(is_binary);
    return *this;
  }
};

class PostgresJobStore::Result {
 public:
  explicit Result(PGresult* r) : r_(r) {}
  Result(Result&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Result& operator=(Result&& o) noexcept {
    std::swap(r_, o.r_);
    return *this;
  }
  ~Result() { PQclear(r_); }
  int rows() const { return PQntuples(r_); }
  bool null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
  std::string text(int row, int col) const {
    return std::string(PQgetvalue(r_, row, col), static_cast<size_t>(PQgetlength(r_, row, col)));
  }
  int64_t i64(int row, int col) const { return std::strtoll(PQgetvalue(r_, row, col), nullptr, 10); }
  bool boolean(int row, int col) const { return PQgetvalue(r_, row, col)[0] == 't'; }
  std::string bytes(int row, int col) const {
    if (null(row, col)) return {};
    size_t n = 0;
    unsigned char* raw =
        PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row, col)), &n);
    if (!raw) throw StoreError(StoreError::Kind::Other, "the job store returned a document it cannot decode");
    std::string out(reinterpret_cast<char*>(raw), n);
    PQfreemem(raw);
    return out;
  }
  int64_t affected() const { return std::strtoll(PQcmdTuples(r_), nullptr, 10); }
  PGresult* raw() const { return r_; }

 private:
  PGresult* r_;
};

// BEGIN ... commit(); without a successful commit() it rolls back. A COMMIT that fails (or
// whose answer is lost with the connection) throws: nobody is told "done".
// Inside a write group it is part of the group's transaction: the group commits or rolls back.
class PostgresJobStore::Transaction {
 public:
  explicit Transaction(PostgresJobStore& store) : store_(store), in_group_(store.group_open_) {
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
  PostgresJobStore& store_;
  bool in_group_;
  bool committed_ = false;
};

void PostgresJobStore::begin_transaction() {
  run("BEGIN");
  in_transaction_ = true;
}

void PostgresJobStore::rollback_transaction() noexcept {
  in_transaction_ = false;
  if (conn_ && PQstatus(conn_) == CONNECTION_OK) PQclear(PQexec(conn_, "ROLLBACK"));
}

void PostgresJobStore::begin_group() {
  if (group_open_) throw std::logic_error("write groups do not nest");
  begin_transaction();
  group_open_ = true;
}

void PostgresJobStore::commit_group() {
  commit_transaction();  // throws when it did not commit; the group's owner rolls back
  group_open_ = false;
}

// COMMIT throws when it fails or its answer is lost with the connection. in_transaction_ stays
// set through it, so a lost connection fails it rather than reconnecting and committing an
// empty transaction. And PostgreSQL answers COMMIT with "ROLLBACK" when a statement in the
// transaction had failed: nothing was stored, so that is a failure too.
void PostgresJobStore::commit_transaction() {
  Result r = run("COMMIT");
  in_transaction_ = false;
  if (std::string_view(PQcmdStatus(r.raw())) != "COMMIT")
    throw StoreError(StoreError::Kind::Other, "the job store " + where_ +
                                                  " rolled the transaction back (a statement in it had failed); nothing of it was stored");
}

void PostgresJobStore::rollback_group() noexcept {
  if (!group_open_) return;
  group_open_ = false;
  rollback_transaction();
}

PostgresJobStore::PostgresJobStore(const std::string& url, PostgresOptions options)
    : url_(url), options_(options) {
  try {
    connect();
    migrate();
    Result id = run("SELECT store_id FROM jarvis_meta");
    if (id.rows() != 1) throw StoreError(StoreError::Kind::Other, "the job store in " + where_ + " has no identity row (jarvis_meta)");
    store_id_ = id.text(0, 0);
  } catch (...) {
    // No destructor runs for a constructor that throws: the connection is closed here.
    if (conn_) PQfinish(conn_);
    conn_ = nullptr;
    throw;
  }
}

PostgresJobStore::~PostgresJobStore() {
  if (conn_) PQfinish(conn_);
}

void PostgresJobStore::connect() {
  if (conn_) PQfinish(conn_);
  prepared_.clear();
  in_transaction_ = false;
  // Keys given after the URL's own override nothing the operator set but the timeouts jarvis
  // depends on: a dead peer is noticed by TCP keepalives within seconds, not hours.
  const char* keys[] = {"dbname", "connect_timeout", "application_name", "keepalives",
                        "keepalives_idle", "keepalives_interval", "keepalives_count", nullptr};
  std::string timeout = std::to_string(options_.connect_timeout_s);
  const char* values[] = {url_.c_str(), timeout.c_str(), "jarvis", "1", "5", "2", "3", nullptr};
  conn_ = PQconnectdbParams(keys, values, 1);
  where_ = describe(conn_);
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = one_line(conn_ ? PQerrorMessage(conn_) : "out of memory");
    if (msg.find("password authentication failed") != std::string::npos ||
        msg.find("no pg_hba.conf entry") != std::string::npos ||
        msg.find("permission denied") != std::string::npos)
      throw StoreError(StoreError::Kind::Denied, "the job store " + where_ + " refused jarvis: " + redact_url_credentials(msg));
    throw StoreError(StoreError::Kind::Unreachable,
                     "the job store " + where_ + " cannot be reached: " + redact_url_credentials(msg));
  }
  // A transaction of jarvis never waits on anything but its own statements, so one idle past
  // the statement timeout belongs to a node that stopped (SIGSTOP, a VM paused, a hung loop):
  // the server ends its session and frees its locks, or every other node would wait on them.
  std::string ms = std::to_string(options_.statement_timeout_ms);
  std::string set = "SET statement_timeout = " + ms + "; SET lock_timeout = " + ms +
                    "; SET idle_in_transaction_session_timeout = " + ms + "; SET client_min_messages = warning";
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);  // NOTICEs are not errors
  check(PQexec(conn_, set.c_str()), nullptr);
}

// A lost connection is made again at the next call, never in the middle of a transaction:
// what was in flight failed (and said so); the caller decides what to run again.
void PostgresJobStore::ensure_connected() {
  if (conn_ && PQstatus(conn_) == CONNECTION_OK) return;
  if (in_transaction_) fail_connection("the connection was lost in a transaction");
  connect();
}

void PostgresJobStore::fail_connection(const std::string& detail) {
  prepared_.clear();
  throw StoreError(StoreError::Kind::Unreachable, "the job store " + where_ + " cannot be reached (" +
                                                      detail + "); retrying");
}

PostgresJobStore::Result PostgresJobStore::run(const char* sql) { return run(sql, Params{}); }

PostgresJobStore::Result PostgresJobStore::run(const char* sql, const Params& p) {
  ensure_connected();
  // Statements are prepared once per connection: the server parses and plans each once.
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "j" + std::to_string(next_statement_++);
    check(PQprepare(conn_, name.c_str(), sql, static_cast<int>(p.values.size()), nullptr), sql);
    it = prepared_.emplace(sql, name).first;
  }
  std::vector<const char*> values(p.values.size());
  std::vector<int> lengths(p.values.size()), formats(p.values.size());
  for (size_t i = 0; i < p.values.size(); ++i) {
    values[i] = p.null[i] ? nullptr : p.values[i].data();
    lengths[i] = static_cast<int>(p.values[i].size());
    formats[i] = p.binary[i] ? 1 : 0;
  }
  return check(PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(values.size()),
                              values.data(), lengths.data(), formats.data(), 0),
               sql);
}

// Maps a failed statement to the StoreError a person (and the engine) can act on.
PostgresJobStore::Result PostgresJobStore::check(pg_result* raw, const char* sql) {
  Result r(raw);
  ExecStatusType st = raw ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return r;
  if (!raw || PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = one_line(PQerrorMessage(conn_));
    fail_connection(msg.empty() ? "connection lost" : msg);
  }
  const char* state = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
  std::string code = state ? state : "";
  const char* primary = PQresultErrorField(raw, PG_DIAG_MESSAGE_PRIMARY);
  std::string msg = one_line(primary ? primary : "error");
  if (code == "26000" && sql) prepared_.erase(sql);  // the prepared statement vanished (DISCARD ALL)
  using K = StoreError::Kind;
  std::string tail = " (" + where_ + ": " + msg + ", SQLSTATE " + code + ")";
  if (code == "23505") throw UniqueViolation(msg);
  if (code == "53100") throw StoreError(K::Full, "the job store is full" + tail);
  if (code == "25006") throw StoreError(K::ReadOnly, "the job store is read-only (a standby or a read-only transaction)" + tail);
  if (code == "42501" || code.rfind("28", 0) == 0) throw StoreError(K::Denied, "the job store cannot be written: permission denied" + tail);
  if (code == "57014" || code == "55P03" || code == "40001" || code == "40P01" || code == "53300")
    throw StoreError(K::Busy, "the job store is busy: the statement waited past " +
                                  format_duration(Millis(options_.statement_timeout_ms)) + tail);
  if (code == "42P01" || code == "3D000") throw StoreError(K::Gone, "the job store's tables were removed while jarvis was using them" + tail);
  // The server shutting down or starting: the connection goes next; reconnect at the next call.
  if (code.rfind("57P", 0) == 0 || code.rfind("08", 0) == 0) {
    PQfinish(conn_);
    conn_ = nullptr;
    fail_connection(msg);
  }
  if (code.rfind("58", 0) == 0 || code == "XX001" || code == "XX002")
    throw StoreError(K::Io, "the job store had an I/O error" + tail);
  throw StoreError(K::Other, "the job store failed" + tail);
}

void PostgresJobStore::migrate() {
  Transaction tx(*this);
  run("SELECT pg_advisory_xact_lock($1)", Params().add(kMigrationLock));
  // No DDL unless something is missing: a read-only standby or a role without CREATE can
  // still open a store that is up to date.
  if (!run("SELECT to_regclass('schema_version') IS NOT NULL").boolean(0, 0))
    run("CREATE TABLE schema_version (version INTEGER NOT NULL)");
  Result v = run("SELECT max(version) FROM schema_version");
  int version = v.rows() && !v.null(0, 0) ? static_cast<int>(v.i64(0, 0)) : 0;
  if (version > kSchemaVersion)
    throw StoreError(StoreError::Kind::Other,
                     "the job store " + where_ + " has schema version " + std::to_string(version) +
                         ", newer than this jarvis knows (" + std::to_string(kSchemaVersion) +
                         "); run the jarvis that upgraded it, or upgrade this one");
  for (int i = version; i < kSchemaVersion; ++i) {
    // Multi-statement DDL goes through the simple query protocol, inside this transaction.
    PGresult* r = PQexec(conn_, kMigrations[i]);
    Result hold(r);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      const char* m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
      throw StoreError(StoreError::Kind::Other, "the job store " + where_ + " could not be migrated to version " +
                                                    std::to_string(i + 1) + ": " + (m ? m : "error"));
    }
    run("INSERT INTO schema_version (version) VALUES ($1)", Params().add(i + 1));
  }
  tx.commit();
}

int PostgresJobStore::schema_version() {
  Result v = run("SELECT max(version) FROM schema_version");
  return v.rows() && !v.null(0, 0) ? static_cast<int>(v.i64(0, 0)) : 0;
}

void PostgresJobStore::check_identity() {
  Result r = [&] {
    try {
      return run("SELECT store_id FROM jarvis_meta");
    } catch (const StoreError& e) {
      if (e.kind() == StoreError::Kind::Gone)
        throw StoreError(StoreError::Kind::Gone, "the job store in " + where_ + " was dropped while jarvis was using it");
      throw;
    }
  }();
  if (r.rows() != 1 || r.text(0, 0) != store_id_)
    throw StoreError(StoreError::Kind::Gone, "the job store in " + where_ + " was replaced by another one while jarvis was using it");
}

void PostgresJobStore::probe_write(size_t bytes) {
  Transaction tx(*this);
  run("INSERT INTO write_probe (data) SELECT repeat('x', $1::int)",
      Params().add(static_cast<int64_t>(std::min<size_t>(bytes, 16u << 20))));
  tx.commit();
  run("DELETE FROM write_probe");
}

#define JOB_SELECT                                                                            \
  "SELECT id, host, design_ref, pipeline, tasks, state, stage, attempt, requested_by, origin, " \
  "created_ms, started_ms, ended_ms, stage_started_ms, retry_at_ms, reason, owner, "           \
  "cancel_requested, cancelled_by, worker_pid, group_name, requester_key, confirm_until_ms, "   \
  "confirmed_until, confirmed_by, confirm_prompt FROM jobs "

namespace {
JobRecord read_job(const PostgresJobStore::Result& r, int row) {
  JobRecord j;
  j.id = r.i64(row, 0);
  j.host = r.text(row, 1);
  j.design_ref = r.text(row, 2);
  j.pipeline = r.text(row, 3);
  j.tasks = decode_tasks(r.text(row, 4));
  j.state = parse_job_state(r.text(row, 5)).value_or(JobState::Failed);
  j.stage = static_cast<int>(r.i64(row, 6));
  j.attempt = static_cast<int>(r.i64(row, 7));
  j.requested_by = r.text(row, 8);
  j.origin = r.text(row, 9);
  j.created_ms = r.i64(row, 10);
  j.started_ms = r.i64(row, 11);
  j.ended_ms = r.i64(row, 12);
  j.stage_started_ms = r.i64(row, 13);
  j.retry_at_ms = r.i64(row, 14);
  j.reason = r.text(row, 15);
  j.owner = r.text(row, 16);
  j.cancel_requested = r.boolean(row, 17);
  j.cancelled_by = r.text(row, 18);
  j.worker_pid = static_cast<int>(r.i64(row, 19));
  j.group = r.text(row, 20);
  j.requester_key = r.text(row, 21);
  j.confirm_until_ms = r.i64(row, 22);
  j.confirmed_until = static_cast<int>(r.i64(row, 23));
  j.confirmed_by = r.text(row, 24);
  j.confirm_prompt = r.text(row, 25);
  return j;
}
}  // namespace

std::vector<JobRecord> PostgresJobStore::query_jobs(const char* sql, const Params& params) {
  Result r = run(sql, params);
  std::vector<JobRecord> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(read_job(r, i));
  return out;
}

CreateResult PostgresJobStore::create_job(const NewJob& job, const std::string& owner) {
  CreateResult result;
  try {
    Transaction tx(*this);
    Result r = run("INSERT INTO jobs (host, design_ref, pipeline, tasks, state, requested_by, origin, "
                   "created_ms, owner, stage_count, group_name, requester_key) VALUES ($1, $2, $3, $4, "
                   "'queued', $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                   Params().add(job.host).add(job.design_ref).add(job.pipeline)
                       .add(encode_tasks(job.tasks)).add(job.requested_by).add(job.origin)
                       .add(now_ms()).add(owner).add(static_cast<int64_t>(job.tasks.size()))
                       .add(job.group).add(job.requester_key));
    result.id = r.i64(0, 0);
    run("INSERT INTO job_documents (job_id, design, clipboard) VALUES ($1, $2, $3)",
        Params().add(result.id).bytes(job.clipboard).bytes(job.clipboard));
    tx.commit();
  } catch (const UniqueViolation&) {
    result.id = 0;
    auto current = latest_for_host(job.host);
    if (current && is_active(current->state)) result.conflict = current;
    else throw StoreError(StoreError::Kind::Busy, "the job store is busy: " + job.host + " changed meanwhile; try again");
  }
  return result;
}

std::optional<JobRecord> PostgresJobStore::job(int64_t id) {
  // A pruned job has no documents: its clipboard is empty.
  Result r = run("SELECT id, host, design_ref, pipeline, tasks, state, stage, attempt, requested_by, "
                 "origin, created_ms, started_ms, ended_ms, stage_started_ms, retry_at_ms, reason, "
                 "owner, cancel_requested, cancelled_by, worker_pid, group_name, requester_key, confirm_until_ms, "
                 "confirmed_until, confirmed_by, confirm_prompt, d.clipboard FROM jobs "
                 "LEFT JOIN job_documents d ON d.job_id = jobs.id WHERE jobs.id = $1",
                 Params().add(id));
  if (r.rows() == 0) return std::nullopt;
  JobRecord j = read_job(r, 0);
  j.clipboard = r.bytes(0, 26);
  return j;
}

std::optional<JobRecord> PostgresJobStore::latest_for_host(const std::string& host) {
  auto rows = query_jobs(JOB_SELECT "WHERE host = $1 ORDER BY id DESC LIMIT 1", Params().add(host));
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

std::vector<JobRecord> PostgresJobStore::latest_in_group(const std::string& group) {
  return query_jobs(JOB_SELECT "WHERE id IN (SELECT max(id) FROM jobs WHERE group_name = $1 "
                    "GROUP BY host) ORDER BY host",
                    Params().add(group));
}

std::vector<JobRecord> PostgresJobStore::active_jobs() {
  return query_jobs(JOB_SELECT "WHERE state IN ('queued', 'running') ORDER BY id", Params());
}

std::vector<JobRecord> PostgresJobStore::recent_finished(int limit) {
  return query_jobs(JOB_SELECT "WHERE state IN ('ready', 'failed', 'cancelled') "
                    "ORDER BY ended_ms DESC, id DESC LIMIT $1",
                    Params().add(limit));
}

int PostgresJobStore::queued_ahead(int64_t id) {
  Result r = run("SELECT count(*) FROM jobs WHERE state = 'queued' AND id < $1", Params().add(id));
  return static_cast<int>(r.i64(0, 0));
}

void PostgresJobStore::mark_running(int64_t id, int64_t now) {
  Transaction tx(*this);
  fence(id);
  run("UPDATE jobs SET state = 'running', started_ms = CASE WHEN started_ms = 0 THEN $1 "
      "ELSE started_ms END WHERE id = $2",
      Params().add(now).add(id));
  tx.commit();
}

void PostgresJobStore::mark_queued(int64_t id) {
  Transaction tx(*this);
  fence(id);
  run("UPDATE jobs SET state = 'queued', worker_pid = 0 WHERE id = $1 AND state = 'running'",
      Params().add(id));
  tx.commit();
}

void PostgresJobStore::stage_started(int64_t id, int stage, int attempt, const std::string& task,
                                     int64_t now, int worker_pid) {
  Transaction tx(*this);
  fence(id);
  run("UPDATE jobs SET stage = $1, attempt = $2, stage_started_ms = $3, retry_at_ms = 0, "
      "worker_pid = $4 WHERE id = $5",
      Params().add(stage).add(attempt).add(now).add(worker_pid).add(id));
  // A row left 'running' by a crashed process becomes 'interrupted' when the stage reruns.
  run("UPDATE stages SET result = 'interrupted', ended_ms = $1 WHERE job_id = $2 AND result = 'running'",
      Params().add(now).add(id));
  run("INSERT INTO stages (job_id, stage, attempt, task, started_ms) VALUES ($1, $2, $3, $4, $5) "
      "ON CONFLICT (job_id, stage, attempt) DO UPDATE SET task = EXCLUDED.task, "
      "started_ms = EXCLUDED.started_ms, ended_ms = 0, result = 'running', reason = '', "
      "clipboard_after = NULL",
      Params().add(id).add(stage).add(attempt).add(task).add(now));
  tx.commit();
}

void PostgresJobStore::set_worker_pid(int64_t id, int stage, int attempt, int worker_pid) {
  Transaction tx(*this);
  fence(id);
  run("UPDATE jobs SET worker_pid = $1 WHERE id = $2 AND stage = $3 AND attempt = $4",
      Params().add(worker_pid).add(id).add(stage).add(attempt));
  tx.commit();
}

void PostgresJobStore::stage_will_retry(int64_t id, int stage, int attempt, int64_t now,
                                        const std::string& reason, int64_t retry_at) {
  Transaction tx(*this);
  fence(id);
  run("UPDATE stages SET result = 'failed', ended_ms = $1, reason = $2 WHERE job_id = $3 "
      "AND stage = $4 AND attempt = $5",
      Params().add(now).add(reason).add(id).add(stage).add(attempt));
  run("UPDATE jobs SET reason = $1, retry_at_ms = $2, worker_pid = 0 WHERE id = $3",
      Params().add(reason).add(retry_at).add(id));
  tx.commit();
}

void PostgresJobStore::stage_succeeded(int64_t id, int stage, int attempt, int64_t now,
                                       const std::string* changed_clipboard) {
  Transaction tx(*this);
  fence(id);
  Params p;
  p.add(now);
  if (changed_clipboard) p.bytes(*changed_clipboard);
  else p.add_null();
  run("UPDATE stages SET result = 'ok', ended_ms = $1, clipboard_after = $2::bytea "
      "WHERE job_id = $3 AND stage = $4 AND attempt = $5",
      p.add(id).add(stage).add(attempt));
  if (changed_clipboard)
    run("UPDATE job_documents SET clipboard = $1 WHERE job_id = $2",
        Params().bytes(*changed_clipboard).add(id));
  run("UPDATE jobs SET stage = $1::int + 1, attempt = 0, reason = '', worker_pid = 0, "
      "stage_started_ms = $2::bigint, "
      "state = CASE WHEN $1::int + 1 >= stage_count THEN 'ready' ELSE state END, "
      "ended_ms = CASE WHEN $1::int + 1 >= stage_count THEN $2::bigint ELSE 0 END WHERE id = $3",
      Params().add(stage).add(now).add(id));
  tx.commit();
}

void PostgresJobStore::stage_failed(int64_t id, int stage, int attempt, int64_t now,
                                    const std::string& reason) {
  Transaction tx(*this);
  fence(id);
  run("UPDATE stages SET result = 'failed', ended_ms = $1, reason = $2 WHERE job_id = $3 "
      "AND stage = $4 AND attempt = $5",
      Params().add(now).add(reason).add(id).add(stage).add(attempt));
  run("UPDATE jobs SET state = 'failed', reason = $1, ended_ms = $2, worker_pid = 0, "
      "retry_at_ms = 0, cancel_requested = false, confirm_until_ms = 0 WHERE id = $3",
      Params().add(reason).add(now).add(id));
  tx.commit();
}

void PostgresJobStore::job_cancelled(int64_t id, int64_t now, const std::string& reason) {
  Transaction tx(*this);
  fence(id);
  run("UPDATE stages SET result = 'cancelled', ended_ms = $1 WHERE job_id = $2 AND result = 'running'",
      Params().add(now).add(id));
  run("UPDATE jobs SET state = 'cancelled', reason = $1, ended_ms = $2, worker_pid = 0, "
      "retry_at_ms = 0, confirm_until_ms = 0 WHERE id = $3",
      Params().add(reason).add(now).add(id));
  tx.commit();
}

void PostgresJobStore::await_confirmation(int64_t id, int stage, int through, int64_t until_ms,
                                          const std::string& prompt) {
  Transaction tx(*this);
  fence(id);
  run("UPDATE jobs SET stage = $1, confirm_through = $2, confirm_until_ms = $3, confirm_prompt = $4, "
      "worker_pid = 0 WHERE id = $5 AND state IN ('queued', 'running')",
      Params().add(stage).add(through).add(until_ms).add(prompt).add(id));
  tx.commit();
}

bool PostgresJobStore::confirm(int64_t id, const std::string& by, int64_t now) {
  return run("UPDATE jobs SET confirmed_until = confirm_through, confirmed_by = $1, confirm_until_ms = 0 "
             "WHERE id = $2 AND confirm_until_ms > $3 AND NOT cancel_requested AND state IN ('queued', 'running')",
             Params().add(by).add(id).add(now))
             .affected() > 0;
}

int64_t PostgresJobStore::add_freeze(const Freeze& f) {
  return run("INSERT INTO freezes (scope, by_whom, reason, from_ms, until_ms) VALUES ($1, $2, $3, $4, $5) "
             "RETURNING id",
             Params().add(f.scope).add(f.by).add(f.reason).add(f.from_ms).add(f.until_ms))
      .i64(0, 0);
}

int PostgresJobStore::lift_freezes(const std::string& scope, const std::string& by, int64_t now) {
  return static_cast<int>(run("UPDATE freezes SET lifted_by = $1, lifted_ms = $2 WHERE scope = $3 AND lifted_ms = 0 "
                              "AND (until_ms = 0 OR until_ms > $2)",
                              Params().add(by).add(now).add(scope))
                              .affected());
}

std::vector<Freeze> PostgresJobStore::freezes_in_force(int64_t now) {
  Result r = run("SELECT id, scope, by_whom, reason, from_ms, until_ms FROM freezes WHERE lifted_ms = 0 "
                 "AND from_ms <= $1 AND (until_ms = 0 OR until_ms > $1) ORDER BY id",
                 Params().add(now));
  std::vector<Freeze> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.i64(i, 0), r.text(i, 1), r.text(i, 2), r.text(i, 3), r.i64(i, 4), r.i64(i, 5)});
  return out;
}

std::vector<WalkState> PostgresJobStore::walk_states() {
  Result r = run("SELECT walk, host, ok, reason, last_run_ms, since_ms FROM walk_results ORDER BY walk, host");
  std::vector<WalkState> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.text(i, 0), r.text(i, 1), r.boolean(i, 2), r.text(i, 3), r.i64(i, 4), r.i64(i, 5)});
  return out;
}

void PostgresJobStore::record_walk(const WalkState& w) {
  run("INSERT INTO walk_results (walk, host, ok, reason, last_run_ms, since_ms) VALUES ($1, $2, $3::int <> 0, $4, $5, $6) "
      "ON CONFLICT (walk, host) DO UPDATE SET ok = EXCLUDED.ok, reason = EXCLUDED.reason, "
      "last_run_ms = EXCLUDED.last_run_ms, since_ms = EXCLUDED.since_ms",
      Params().add(w.walk).add(w.host).add(int64_t{w.ok}).add(w.reason).add(w.last_run_ms).add(w.since_ms));
}

void PostgresJobStore::append_log(int64_t id, int stage, const std::string& line) {
  run("INSERT INTO log (job_id, at_ms, stage, line) VALUES ($1, $2, $3, $4)",
      Params().add(id).add(now_ms()).add(stage).add(line));
}

std::vector<LogLine> PostgresJobStore::log(int64_t id, int limit) {
  Result r = run("SELECT at_ms, stage, line FROM (SELECT id, at_ms, stage, line FROM log "
                 "WHERE job_id = $1 ORDER BY id DESC LIMIT $2) l ORDER BY id",
                 Params().add(id).add(limit));
  std::vector<LogLine> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.i64(i, 0), static_cast<int>(r.i64(i, 1)), r.text(i, 2)});
  return out;
}

void PostgresJobStore::redact_log(int64_t id, int stage, const std::vector<std::string>& values) {
  Redactor redactor;
  redactor.add(values);
  if (redactor.empty()) return;
  Transaction tx(*this);
  Result r = run("SELECT id, line FROM log WHERE job_id = $1 AND stage = $2 FOR UPDATE",
                 Params().add(id).add(stage));
  for (int i = 0; i < r.rows(); ++i) {
    std::string line = r.text(i, 1);
    std::string redacted = redactor.redact(line);
    if (redacted != line)
      run("UPDATE log SET line = $1 WHERE id = $2", Params().add(redacted).add(r.i64(i, 0)));
  }
  tx.commit();
}

void PostgresJobStore::audit(const AuditEntry& e) {
  run("INSERT INTO audit (at_ms, who, protocol, place, command, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
      Params().add(e.at_ms ? e.at_ms : now_ms()).add(e.who).add(e.protocol).add(e.place)
          .add(e.command).add(e.outcome));
}

std::vector<AuditEntry> PostgresJobStore::audit_trail(int limit) {
  Result r = run("SELECT at_ms, who, protocol, place, command, outcome FROM (SELECT * FROM audit "
                 "ORDER BY id DESC LIMIT $1) a ORDER BY id",
                 Params().add(limit));
  std::vector<AuditEntry> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.i64(i, 0), r.text(i, 1), r.text(i, 2), r.text(i, 3), r.text(i, 4), r.text(i, 5)});
  return out;
}

bool PostgresJobStore::request_cancel(int64_t id, const std::string& by) {
  return run("UPDATE jobs SET cancel_requested = true, cancelled_by = $1 WHERE id = $2 AND "
             "state IN ('queued', 'running')",
             Params().add(by).add(id))
             .affected() > 0;
}

RequeueResult PostgresJobStore::requeue(int64_t id, const std::string& new_owner) {
  RequeueResult r;
  auto j = job(id);
  if (!j) { r.error = "there is no job " + std::to_string(id); return r; }
  if (is_active(j->state)) { r.error = "job " + std::to_string(id) + " is still in flight"; return r; }
  if (j->state == JobState::Ready) {
    r.error = "job " + std::to_string(id) + " finished; deploy again to start a new job";
    return r;
  }
  Result docs = run("SELECT count(*) FROM job_documents WHERE job_id = $1", Params().add(id));
  if (docs.i64(0, 0) == 0) {
    r.error = "job " + std::to_string(id) + " was pruned (its clipboard is gone); deploy again";
    return r;
  }
  try {
    r.ok = run("UPDATE jobs SET state = 'queued', owner = $1, reason = '', ended_ms = 0, attempt = 0, "
               "retry_at_ms = 0, cancel_requested = false, cancelled_by = '', worker_pid = 0, "
               "confirm_until_ms = 0, confirmed_until = 0, confirmed_by = '' "
               "WHERE id = $2 AND state IN ('failed', 'cancelled')",
               Params().add(new_owner).add(id))
               .affected() > 0;
  } catch (const UniqueViolation&) {
    auto current = latest_for_host(j->host);
    r.error = j->host + " has another job in flight";
    if (current && is_active(current->state)) r.conflict = current;
    return r;
  }
  if (!r.ok) r.error = "job " + std::to_string(id) + " changed meanwhile; try again";
  return r;
}

bool PostgresJobStore::claim(int64_t id, const std::string& expected_owner,
                             const std::string& new_owner) {
  return run("UPDATE jobs SET owner = $1 WHERE id = $2 AND owner = $3 AND state IN ('queued', 'running')",
             Params().add(new_owner).add(id).add(expected_owner))
             .affected() > 0;
}

std::vector<JobStore::Watched> PostgresJobStore::jobs_to_watch() {
  Result r = run("SELECT id, owner, cancel_requested, state, stage FROM jobs WHERE state IN "
                 "('queued', 'running') ORDER BY id");
  std::vector<Watched> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.i64(i, 0), r.text(i, 1), r.boolean(i, 2),
                   parse_job_state(r.text(i, 3)).value_or(JobState::Queued), static_cast<int>(r.i64(i, 4))});
  return out;
}

#define PG_FINISHED_BEFORE \
  "(SELECT id FROM jobs WHERE state IN ('ready', 'failed', 'cancelled') AND ended_ms > 0 AND ended_ms < $1)"

JobStore::PruneResult PostgresJobStore::prune_finished(int64_t before_ms) {
  PruneResult r;
  Transaction tx(*this);
  r.jobs = run("SELECT count(*) FROM job_documents WHERE job_id IN " PG_FINISHED_BEFORE,
               Params().add(before_ms)).i64(0, 0);
  r.log_lines = run("DELETE FROM log WHERE job_id IN " PG_FINISHED_BEFORE, Params().add(before_ms)).affected();
  run("UPDATE stages SET clipboard_after = NULL WHERE clipboard_after IS NOT NULL AND job_id IN " PG_FINISHED_BEFORE,
      Params().add(before_ms));
  run("DELETE FROM job_documents WHERE job_id IN " PG_FINISHED_BEFORE, Params().add(before_ms));
  tx.commit();
  return r;
}

int64_t PostgresJobStore::append_event(int64_t at_ms, int64_t job_id, const std::string& kind,
                                       const std::string& json) {
  // Appends are serialized by a transaction-scoped advisory lock, so ids become visible in
  // order: a reader's cursor never passes an id that commits later.
  // NOTIFY is delivered at COMMIT, so a listener is never told of an event it cannot read.
  return run("WITH l AS (SELECT pg_advisory_xact_lock($5)), ins AS (INSERT INTO events (at_ms, job_id, kind, json) "
             "SELECT $1, $2, $3, $4 FROM l RETURNING id) "
             "SELECT id, pg_notify('jarvis_events', id::text) FROM ins",
             Params().add(at_ms).add(job_id).add(kind).add(json).add(kEventLock))
      .i64(0, 0);
}

std::vector<StoredEvent> PostgresJobStore::events_after(int64_t after_id, int limit) {
  Result r = run("SELECT id, at_ms, job_id, kind, json FROM events WHERE id > $1 ORDER BY id LIMIT $2",
                 Params().add(after_id).add(limit));
  std::vector<StoredEvent> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.i64(i, 0), r.i64(i, 1), r.i64(i, 2), r.text(i, 3), r.text(i, 4)});
  return out;
}

namespace {
// A read-only SQLite connection holding one snapshot for the whole copy.
struct SqliteSource {
  explicit SqliteSource(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
      sqlite3_close(db);
      throw std::runtime_error("cannot open the SQLite store " + path + ": " + msg);
    }
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK ||
        !has_table("jobs"))
      throw std::runtime_error(path + " is not a jarvis job store (no jobs table)");
  }
  ~SqliteSource() {
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  bool has_table(const char* name) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", -1, &s, nullptr);
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    bool found = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return found;
  }
  bool has_column(const char* table, const char* column) {
    sqlite3_stmt* s = nullptr;
    std::string sql = std::string("SELECT 1 FROM pragma_table_info('") + table + "') WHERE name = ?";
    sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr);
    sqlite3_bind_text(s, 1, column, -1, SQLITE_STATIC);
    bool found = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return found;
  }
  // Calls row(stmt) for every row of `sql`.
  template <typename F>
  void each(const char* sql, F row) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string("reading the SQLite store failed: ") + sqlite3_errmsg(db));
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) row(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) throw std::runtime_error(std::string("reading the SQLite store failed: ") + sqlite3_errmsg(db));
  }
  sqlite3* db = nullptr;
};

std::string col(sqlite3_stmt* s, int i) {
  auto p = reinterpret_cast<const char*>(sqlite3_column_blob(s, i));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, i))) : std::string();
}
int64_t num(sqlite3_stmt* s, int i) { return sqlite3_column_int64(s, i); }
}  // namespace

PostgresJobStore::ImportResult PostgresJobStore::import_sqlite(const std::string& sqlite_path) {
  SqliteSource src(sqlite_path);
  ImportResult r;
  Transaction tx(*this);
  // Nobody else writes while the copy runs; a node started meanwhile waits for the lock.
  run("LOCK TABLE jobs, job_documents, stages, log, audit, events, freezes, walk_results, api_tokens, "
      "hook_deliveries, hook_cursor IN EXCLUSIVE MODE");
  int64_t existing = run("SELECT count(*) FROM jobs").i64(0, 0);
  if (existing > 0)
    throw std::runtime_error("the PostgreSQL store " + where_ + " already holds " + std::to_string(existing) +
                             " jobs; migrate into an empty database");
  src.each("SELECT id, host, design_ref, pipeline, tasks, state, stage, attempt, requested_by, origin, "
           "created_ms, started_ms, ended_ms, stage_started_ms, retry_at_ms, reason, owner, "
           "cancel_requested, cancelled_by, worker_pid, stage_count, group_name FROM jobs ORDER BY id",
           [&](sqlite3_stmt* s) {
             std::string state = col(s, 5);
             bool active = state == "queued" || state == "running";
             r.in_flight += active;
             ++r.jobs;
             // A job in flight keeps its stage and clipboard; no engine of this store runs it.
             run("INSERT INTO jobs (id, host, design_ref, pipeline, tasks, state, stage, attempt, "
                 "requested_by, origin, created_ms, started_ms, ended_ms, stage_started_ms, retry_at_ms, "
                 "reason, owner, cancel_requested, cancelled_by, worker_pid, stage_count, group_name) "
                 "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
                 "$18::int <> 0, $19, $20, $21, $22)",
                 Params().add(num(s, 0)).add(col(s, 1)).add(col(s, 2)).add(col(s, 3)).add(col(s, 4))
                     .add(state).add(num(s, 6)).add(num(s, 7)).add(col(s, 8)).add(col(s, 9))
                     .add(num(s, 10)).add(num(s, 11)).add(num(s, 12)).add(num(s, 13)).add(num(s, 14))
                     .add(col(s, 15)).add(active ? std::string() : col(s, 16)).add(num(s, 17))
                     .add(col(s, 18)).add(active ? int64_t{0} : num(s, 19)).add(num(s, 20)).add(col(s, 21)));
           });
  src.each("SELECT job_id, design, clipboard FROM job_documents ORDER BY job_id", [&](sqlite3_stmt* s) {
    run("INSERT INTO job_documents (job_id, design, clipboard) VALUES ($1, $2, $3)",
        Params().add(num(s, 0)).bytes(col(s, 1)).bytes(col(s, 2)));
  });
  src.each("SELECT job_id, stage, attempt, task, started_ms, ended_ms, result, reason, clipboard_after "
           "FROM stages ORDER BY job_id, stage, attempt",
           [&](sqlite3_stmt* s) {
             ++r.stages;
             Params p;
             p.add(num(s, 0)).add(num(s, 1)).add(num(s, 2)).add(col(s, 3)).add(num(s, 4)).add(num(s, 5))
                 .add(col(s, 6)).add(col(s, 7));
             if (sqlite3_column_type(s, 8) == SQLITE_NULL) p.add_null();
             else p.bytes(col(s, 8));
             run("INSERT INTO stages (job_id, stage, attempt, task, started_ms, ended_ms, result, reason, "
                 "clipboard_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::bytea)",
                 p);
           });
  src.each("SELECT id, job_id, at_ms, stage, line FROM log ORDER BY id", [&](sqlite3_stmt* s) {
    ++r.log_lines;
    run("INSERT INTO log (id, job_id, at_ms, stage, line) VALUES ($1, $2, $3, $4, $5)",
        Params().add(num(s, 0)).add(num(s, 1)).add(num(s, 2)).add(num(s, 3)).add(col(s, 4)));
  });
  src.each("SELECT id, at_ms, who, protocol, place, command, outcome FROM audit ORDER BY id", [&](sqlite3_stmt* s) {
    ++r.audit;
    run("INSERT INTO audit (id, at_ms, who, protocol, place, command, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        Params().add(num(s, 0)).add(num(s, 1)).add(col(s, 2)).add(col(s, 3)).add(col(s, 4)).add(col(s, 5))
            .add(col(s, 6)));
  });
  if (src.has_table("freezes"))
    src.each("SELECT id, scope, by, reason, from_ms, until_ms, lifted_by, lifted_ms FROM freezes ORDER BY id",
             [&](sqlite3_stmt* s) {
               run("INSERT INTO freezes (id, scope, by_whom, reason, from_ms, until_ms, lifted_by, lifted_ms) "
                   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                   Params().add(num(s, 0)).add(col(s, 1)).add(col(s, 2)).add(col(s, 3)).add(num(s, 4))
                       .add(num(s, 5)).add(col(s, 6)).add(num(s, 7)));
             });
  if (src.has_table("walk_results"))
    src.each("SELECT walk, host, ok, reason, last_run_ms, since_ms FROM walk_results", [&](sqlite3_stmt* s) {
      run("INSERT INTO walk_results (walk, host, ok, reason, last_run_ms, since_ms) VALUES ($1, $2, $3::int <> 0, $4, $5, $6)",
          Params().add(col(s, 0)).add(col(s, 1)).add(num(s, 2)).add(col(s, 3)).add(num(s, 4)).add(num(s, 5)));
    });
  // What a job waited for and who confirmed it: stores made before the safety catch have none.
  if (src.has_column("jobs", "confirm_until_ms"))
    src.each("SELECT id, requester_key, confirm_until_ms, confirm_through, confirmed_until, confirmed_by, "
             "confirm_prompt FROM jobs ORDER BY id",
             [&](sqlite3_stmt* s) {
               run("UPDATE jobs SET requester_key = $1, confirm_until_ms = $2, confirm_through = $3, "
                   "confirmed_until = $4, confirmed_by = $5, confirm_prompt = $6 WHERE id = $7",
                   Params().add(col(s, 1)).add(num(s, 2)).add(num(s, 3)).add(num(s, 4)).add(col(s, 5))
                       .add(col(s, 6)).add(num(s, 0)));
             });
  if (src.has_table("events"))
    src.each("SELECT id, at_ms, job_id, kind, json FROM events ORDER BY id", [&](sqlite3_stmt* s) {
      ++r.events;
      run("INSERT INTO events (id, at_ms, job_id, kind, json) VALUES ($1, $2, $3, $4, $5)",
          Params().add(num(s, 0)).add(num(s, 1)).add(num(s, 2)).add(col(s, 3)).add(col(s, 4)));
    });
  // The HTTP API's tokens (hashes only: the tokens themselves were never stored) and the
  // hooks' queue with its dead letters and cursor, from a store that has them.
  if (src.has_table("api_tokens"))
    src.each("SELECT name, role, hash, created_ms FROM api_tokens ORDER BY name", [&](sqlite3_stmt* s) {
      ++r.tokens;
      run("INSERT INTO api_tokens (name, role, hash, created_ms) VALUES ($1, $2, $3, $4)",
          Params().add(col(s, 0)).add(col(s, 1)).add(col(s, 2)).add(num(s, 3)));
    });
  if (src.has_table("hook_deliveries"))
    src.each("SELECT id, hook, event_id, state, attempts, next_at_ms, last_error FROM hook_deliveries ORDER BY id",
             [&](sqlite3_stmt* s) {
               ++r.hook_deliveries;
               run("INSERT INTO hook_deliveries (id, hook, event_id, state, attempts, next_at_ms, last_error) "
                   "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                   Params().add(num(s, 0)).add(col(s, 1)).add(num(s, 2)).add(col(s, 3)).add(num(s, 4))
                       .add(num(s, 5)).add(col(s, 6)));
             });
  if (src.has_table("hook_cursor"))
    src.each("SELECT event_id FROM hook_cursor WHERE one = 1", [&](sqlite3_stmt* s) {
      run("INSERT INTO hook_cursor (one, event_id) VALUES (1, $1) ON CONFLICT (one) DO UPDATE "
          "SET event_id = EXCLUDED.event_id",
          Params().add(num(s, 0)));
    });
  // New rows continue after the copied ids.
  for (const char* table : {"jobs", "log", "audit", "events", "freezes", "hook_deliveries"}) {
    std::string sql = std::string("SELECT setval(pg_get_serial_sequence('") + table + "', 'id'), " +
                      "COALESCE((SELECT max(id) FROM " + table + "), 0) + 1, false)";
    Result done(PQexec(conn_, sql.c_str()));
    if (PQresultStatus(done.raw()) != PGRES_TUPLES_OK)
      throw StoreError(StoreError::Kind::Other, std::string("the job store failed setting the ") + table + " sequence");
  }
  tx.commit();
  return r;
}

// Inside a transaction: locks the job's row and throws Fenced unless this connection's engine
// still owns it. The lock holds until COMMIT, so no claim slips in between.
void PostgresJobStore::fence(int64_t job) {
  if (fence_.empty()) return;
  Result r = run("SELECT owner FROM jobs WHERE id = $1 FOR UPDATE", Params().add(job));
  if (r.rows() == 1 && r.text(0, 0) == fence_) return;
  throw StoreError(StoreError::Kind::Fenced,
                   "job " + std::to_string(job) + " is no longer run by this node (" +
                       (r.rows() ? "now " + (r.text(0, 0).empty() ? std::string("unowned") : r.text(0, 0)) : std::string("gone")) +
                       "): its lease expired and the write was refused");
}

bool PostgresJobStore::renew_lease(const std::string& engine, const std::string& node, Millis ttl) {
  Result r = run("WITH old AS (SELECT lease_until_ms FROM engines WHERE id = $1) "
                 "INSERT INTO engines (id, node, started_ms, lease_until_ms) VALUES ($1, $2, " SERVER_NOW_MS
                 ", " SERVER_NOW_MS " + $3) ON CONFLICT (id) DO UPDATE SET lease_until_ms = EXCLUDED.lease_until_ms "
                 "RETURNING COALESCE((SELECT lease_until_ms FROM old), " SERVER_NOW_MS ") >= " SERVER_NOW_MS,
                 Params().add(engine).add(node).add(static_cast<int64_t>(ttl.count())));
  // Leases of engines gone for a day are forgotten.
  if (++renewals_ % 1000 == 1)
    run("DELETE FROM engines WHERE lease_until_ms < " SERVER_NOW_MS " - 86400000");
  return r.boolean(0, 0);
}

void PostgresJobStore::drop_lease(const std::string& engine) {
  run("DELETE FROM engines WHERE id = $1", Params().add(engine));
}

std::vector<std::string> PostgresJobStore::live_engines() {
  Result r = run("SELECT id FROM engines WHERE lease_until_ms > " SERVER_NOW_MS);
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(r.text(i, 0));
  return out;
}

std::vector<int64_t> PostgresJobStore::claim_queued(const std::string& engine, int n, int max_total) {
  if (n <= 0) return {};
  Transaction tx(*this);
  // The cluster-wide bound is counted under one lock; the rows themselves are taken with SKIP
  // LOCKED, so a claimer never waits on a row another transaction holds (a fenced write).
  run("SELECT pg_advisory_xact_lock($1)", Params().add(kClaimLock));
  int64_t owned = run("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') AND owner <> ''").i64(0, 0);
  int64_t room = std::min<int64_t>(n, max_total - owned);
  std::vector<int64_t> ids;
  if (room > 0) {
    Result r = run("UPDATE jobs SET owner = $1 WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' "
                   "AND owner = '' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
                   Params().add(engine).add(room));
    for (int i = 0; i < r.rows(); ++i) ids.push_back(r.i64(i, 0));
  }
  tx.commit();
  std::sort(ids.begin(), ids.end());
  return ids;
}

bool PostgresJobStore::lead(const std::string& role, const std::string& holder, Millis ttl) {
  // The first leader ever starts after the events already stored: history is not news.
  Result r = run("INSERT INTO leaders (role, holder, lease_until_ms, cursor) VALUES ($1, $2, " SERVER_NOW_MS
                 " + $3, (SELECT COALESCE(max(id), 0) FROM events)) ON CONFLICT (role) DO UPDATE SET "
                 "holder = EXCLUDED.holder, lease_until_ms = EXCLUDED.lease_until_ms WHERE "
                 "leaders.holder = EXCLUDED.holder OR leaders.lease_until_ms < " SERVER_NOW_MS " RETURNING holder",
                 Params().add(role).add(holder).add(static_cast<int64_t>(ttl.count())));
  return r.rows() == 1;
}

void PostgresJobStore::resign(const std::string& role, const std::string& holder) {
  run("UPDATE leaders SET lease_until_ms = 0 WHERE role = $1 AND holder = $2", Params().add(role).add(holder));
}

int64_t PostgresJobStore::leader_cursor(const std::string& role) {
  Result r = run("SELECT cursor FROM leaders WHERE role = $1", Params().add(role));
  return r.rows() ? r.i64(0, 0) : 0;
}

bool PostgresJobStore::save_leader_cursor(const std::string& role, const std::string& holder, int64_t cursor) {
  return run("UPDATE leaders SET cursor = $1 WHERE role = $2 AND holder = $3 AND cursor <= $1",
             Params().add(cursor).add(role).add(holder))
             .affected() > 0;
}

std::vector<JobRecord> PostgresJobStore::find_jobs(const JobQuery& q) {
  // One statement for every combination of filters: an empty filter matches everything.
  return query_jobs(JOB_SELECT
                    "WHERE ($1::text = '' OR host = $1) AND ($2::text = '' OR requested_by = $2) AND "
                    "($3::text = '' OR state = $3) AND ($4::bigint = 0 OR id < $4) AND "
                    "($5::int = 0 OR id IN (SELECT max(id) FROM jobs GROUP BY host)) "
                    "ORDER BY id DESC LIMIT $6",
                    Params().add(q.host).add(q.requested_by)
                        .add(q.state ? std::string(to_string(*q.state)) : std::string())
                        .add(q.before_id).add(q.latest_per_host ? 1 : 0).add(std::clamp(q.limit, 1, 1000)));
}

std::vector<StageRecord> PostgresJobStore::stages(int64_t id) {
  Result r = run("SELECT stage, attempt, task, started_ms, ended_ms, result, reason FROM stages "
                 "WHERE job_id = $1 ORDER BY stage, attempt",
                 Params().add(id));
  std::vector<StageRecord> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({static_cast<int>(r.i64(i, 0)), static_cast<int>(r.i64(i, 1)), r.text(i, 2), r.i64(i, 3),
                   r.i64(i, 4), r.text(i, 5), r.text(i, 6)});
  return out;
}

std::optional<std::string> PostgresJobStore::clipboard_after(int64_t id, int stage) {
  Result docs = run("SELECT design FROM job_documents WHERE job_id = $1", Params().add(id));
  if (!docs.rows()) return std::nullopt;  // pruned
  std::string design = docs.bytes(0, 0);
  if (stage <= 0) return design;
  // The last stage at or before `stage` that changed the clipboard; the design if none did.
  if (run("SELECT count(*) FROM stages WHERE job_id = $1 AND stage = $2 AND result = 'ok'",
          Params().add(id).add(stage - 1)).i64(0, 0) == 0)
    return std::nullopt;
  Result r = run("SELECT clipboard_after FROM stages WHERE job_id = $1 AND stage <= $2 AND result = 'ok' "
                 "AND clipboard_after IS NOT NULL ORDER BY stage DESC LIMIT 1",
                 Params().add(id).add(stage - 1));
  return r.rows() ? r.bytes(0, 0) : design;
}

std::vector<AuditEntry> PostgresJobStore::find_audit(const AuditQuery& q) {
  Result r = run("SELECT at_ms, who, protocol, place, command, outcome, id FROM audit WHERE "
                 "($1::text = '' OR who = $1) AND ($2::text = '' OR strpos(' ' || command || ' ', ' ' || $2 || ' ') > 0) "
                 "AND at_ms >= $3 AND ($4::bigint = 0 OR id < $4) ORDER BY id DESC LIMIT $5",
                 Params().add(q.who).add(q.host).add(q.since_ms).add(q.before_id).add(std::clamp(q.limit, 1, 1000)));
  std::vector<AuditEntry> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.i64(i, 0), r.text(i, 1), r.text(i, 2), r.text(i, 3), r.text(i, 4), r.text(i, 5), r.i64(i, 6)});
  return out;
}

std::map<JobState, int64_t> PostgresJobStore::job_counts() {
  Result r = run("SELECT state, count(*) FROM jobs GROUP BY state");
  std::map<JobState, int64_t> out;
  for (int i = 0; i < r.rows(); ++i)
    if (auto st = parse_job_state(r.text(i, 0))) out[*st] = r.i64(i, 1);
  return out;
}

void PostgresJobStore::queue_hook_deliveries(int64_t event_id, const std::vector<std::string>& hooks, int64_t now) {
  Transaction tx(*this);
  // The cursor's row is locked by the upsert until COMMIT: of several nodes queueing the same
  // event, one moves the cursor and queues it; the others see it moved and queue nothing.
  Result cursor = run("INSERT INTO hook_cursor (one, event_id) VALUES (1, $1) ON CONFLICT (one) DO UPDATE "
                      "SET event_id = EXCLUDED.event_id WHERE hook_cursor.event_id < EXCLUDED.event_id",
                      Params().add(event_id));
  if (cursor.affected() == 0) return;  // queued before (a catch-up after a crash): nothing twice
  for (const auto& h : hooks)
    run("INSERT INTO hook_deliveries (hook, event_id, next_at_ms) VALUES ($1, $2, $3) "
        "ON CONFLICT (hook, event_id) DO NOTHING",
        Params().add(h).add(event_id).add(now));
  tx.commit();
}

int64_t PostgresJobStore::hook_cursor() {
  // No row yet: hooks never queued anything in this store, and they start with the events
  // that come next, not with its whole history.
  return run("SELECT coalesce((SELECT event_id FROM hook_cursor WHERE one = 1), "
             "(SELECT coalesce(max(id), 0) FROM events))")
      .i64(0, 0);
}

#define PG_HOOK_SELECT                                                                                     \
  "SELECT d.id, d.hook, d.event_id, d.state, d.attempts, d.next_at_ms, d.last_error, coalesce(e.kind, ''), " \
  "coalesce(e.json, '') FROM hook_deliveries d LEFT JOIN events e ON e.id = d.event_id "

namespace {
std::vector<HookDelivery> read_deliveries(const PostgresJobStore::Result& r) {
  std::vector<HookDelivery> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.i64(i, 0), r.text(i, 1), r.i64(i, 2), r.text(i, 3), static_cast<int>(r.i64(i, 4)),
                   r.i64(i, 5), r.text(i, 6), r.text(i, 7), r.text(i, 8)});
  return out;
}
}  // namespace

std::vector<HookDelivery> PostgresJobStore::due_hook_deliveries(int64_t now, int limit) {
  return read_deliveries(run(PG_HOOK_SELECT "WHERE d.state = 'pending' AND d.next_at_ms <= $1 "
                                            "ORDER BY d.next_at_ms, d.id LIMIT $2",
                             Params().add(now).add(std::clamp(limit, 1, 1000))));
}

void PostgresJobStore::hook_attempt_done(int64_t id, const std::string& state, int64_t next_at_ms,
                                         const std::string& error) {
  run("UPDATE hook_deliveries SET state = $1, attempts = attempts + 1, next_at_ms = $2, last_error = $3 "
      "WHERE id = $4",
      Params().add(state).add(next_at_ms).add(error).add(id));
}

std::vector<HookDelivery> PostgresJobStore::dead_hook_deliveries(int limit) {
  return read_deliveries(run(PG_HOOK_SELECT "WHERE d.state = 'dead' ORDER BY d.id DESC LIMIT $1",
                             Params().add(std::clamp(limit, 1, 10000))));
}

bool PostgresJobStore::add_token(const ApiToken& t) {
  try {
    run("INSERT INTO api_tokens (name, role, hash, created_ms) VALUES ($1, $2, $3, $4)",
        Params().add(t.name).add(t.role).add(t.hash).add(t.created_ms ? t.created_ms : now_ms()));
  } catch (const UniqueViolation&) {
    return false;
  }
  return true;
}

std::vector<ApiToken> PostgresJobStore::tokens() {
  Result r = run("SELECT name, role, hash, created_ms FROM api_tokens ORDER BY name");
  std::vector<ApiToken> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back({r.text(i, 0), r.text(i, 1), r.text(i, 2), r.i64(i, 3)});
  return out;
}

bool PostgresJobStore::revoke_token(const std::string& name) {
  return run("DELETE FROM api_tokens WHERE name = $1", Params().add(name)).affected() > 0;
}

void PostgresJobStore::add_session(const DashboardSession& session, int64_t now) {
  Transaction tx(*this);
  run("DELETE FROM dashboard_sessions WHERE expires_ms <= $1", Params().add(now));
  run("INSERT INTO dashboard_sessions (id_hash, token_hash, expires_ms) VALUES ($1, $2, $3) "
      "ON CONFLICT (id_hash) DO UPDATE SET token_hash = EXCLUDED.token_hash, expires_ms = EXCLUDED.expires_ms",
      Params().add(session.id_hash).add(session.token_hash).add(session.expires_ms));
  // At most 100 logins per token (the newest): a token that logs in in a loop fills nothing.
  run("DELETE FROM dashboard_sessions WHERE token_hash = $1 AND id_hash NOT IN (SELECT id_hash FROM "
      "dashboard_sessions WHERE token_hash = $1 ORDER BY expires_ms DESC LIMIT 100)",
      Params().add(session.token_hash));
  tx.commit();
}

std::optional<DashboardSession> PostgresJobStore::session(const std::string& id_hash, int64_t now) {
  Result r = run("SELECT token_hash, expires_ms FROM dashboard_sessions WHERE id_hash = $1 AND expires_ms > $2",
                 Params().add(id_hash).add(now));
  if (!r.rows()) return std::nullopt;
  return DashboardSession{id_hash, r.text(0, 0), r.i64(0, 1)};
}

void PostgresJobStore::end_session(const std::string& id_hash) {
  run("DELETE FROM dashboard_sessions WHERE id_hash = $1", Params().add(id_hash));
}

std::string PostgresJobStore::initial_clipboard(int64_t id) {
  Result r = run("SELECT design FROM job_documents WHERE job_id = $1", Params().add(id));
  return r.rows() ? r.bytes(0, 0) : std::string();
}

std::vector<std::string> PostgresJobStore::stage_clipboards(int64_t id) {
  Result r = run("SELECT clipboard_after FROM stages WHERE job_id = $1 AND result = 'ok' ORDER BY stage",
                 Params().add(id));
  std::vector<std::string> out;
  std::optional<std::string> initial;
  for (int i = 0; i < r.rows(); ++i) {
    if (!r.null(i, 0)) {
      out.push_back(r.bytes(i, 0));
    } else if (!out.empty()) {
      out.push_back(out.back());
    } else {
      if (!initial) initial = initial_clipboard(id);
      out.push_back(*initial);
    }
  }
  return out;
}

}  // namespace jarvis
