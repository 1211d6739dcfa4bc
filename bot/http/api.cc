#include "bot/http/api.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "bot/http/json_out.h"
#include "bot/util/duration.h"
#include "bot/util/json.h"
#include "bot/util/log.h"
#include "bot/util/url_redact.h"
#include "bot/util/utf8.h"

#include "jarvis_version.h"

namespace jarvis::http {

std::pair<std::string_view, std::string_view> dashboard_asset(std::string_view path);  // generated

namespace {

constexpr const char* kCookie = "jarvis_session";
constexpr int64_t kSessionLifeMs = 12 * 3600 * 1000;

// The CSRF token a session's page must echo: derived from the session id, which only the
// HttpOnly cookie carries, so nothing of it needs storing and a cross-site page cannot know it.
std::string csrf_for(const std::string& session_id) { return token_hash("jarvis-dashboard-csrf:" + session_id); }

std::string cookie_value(const Request& r, const std::string& name) {
  std::string all = r.header("cookie");
  size_t at = 0;
  while (at < all.size()) {
    while (at < all.size() && (all[at] == ' ' || all[at] == ';')) ++at;
    size_t end = all.find(';', at);
    std::string part = all.substr(at, end == std::string::npos ? std::string::npos : end - at);
    auto eq = part.find('=');
    if (eq != std::string::npos && part.substr(0, eq) == name) return part.substr(eq + 1);
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return {};
}

// Stage durations, in seconds: a worker takes from milliseconds to its 10-minute timeout.
const double kBounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

Response error(int status, const std::string& message, const std::string& field = {}) {
  JsonObject e;
  e.num("status", status).str("message", message);
  if (!field.empty()) e.str("field", field);
  Response r;
  r.status = status;
  r.body = JsonObject().raw("error", e.done()).done();
  return r;
}

Response json(int status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 1;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!part.empty()) parts.push_back(percent_decode(part));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return parts;
}

std::optional<int64_t> number(const std::string& s, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < min || v > max) return std::nullopt;
  return v;
}

// A paged list's ?limit= and ?cursor= into the query's limit and before_id; the 400 to send
// when one of them is bad.
template <typename Query>
std::optional<Response> read_page(const Request& r, Query& q) {
  bool has = false;
  std::string limit = r.param("limit", &has);
  if (has) {
    auto n = number(limit, 1, 500);
    if (!n) return error(400, "limit must be a number from 1 to 500", "limit");
    q.limit = static_cast<int>(*n);
  }
  std::string cursor = r.param("cursor", &has);
  if (has) {
    auto n = number(cursor, 1, INT64_MAX);
    if (!n) return error(400, "cursor must be the next_cursor of the previous page", "cursor");
    q.before_id = *n;
  }
  return std::nullopt;
}

// Text from a request that goes into a command line: one line, bounded, no control characters.
bool plain_text(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max || valid_utf8(s) != s) return false;
  return std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

std::string status_of(Reply::Failure f) {
  switch (f) {
    case Reply::Failure::BadRequest: return "400";
    case Reply::Failure::NotFound: return "404";
    case Reply::Failure::Conflict: return "409";
    case Reply::Failure::Unavailable: return "503";
    case Reply::Failure::Internal: return "500";
    case Reply::Failure::None: break;
  }
  return "422";
}

std::string prom_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

Api::Api(boost::asio::io_context& io, JobStore& store, CommandService& commands, const Acl& acl, ApiConfig config)
    : io_(io), store_(store), commands_(commands), acl_(acl), config_(std::move(config)), catch_up_timer_(io),
      heartbeat_timer_(io), poll_timer_(io) {
  heartbeat();
  if (store_.shared()) poll();
}

Api::~Api() { stop(); }

void Api::stop() {
  catch_up_timer_.cancel();
  heartbeat_timer_.cancel();
  poll_timer_.cancel();
  for (auto& c : clients_) c.stream->close();
  clients_.clear();
}

void Api::count_request(int status, const std::string& route) { ++requests_[{status, route}]; }

std::string Api::job_json(const JobRecord& j, bool with_stages) {
  int64_t now = now_ms();
  int shown = std::min(j.stage, std::max(j.stage_count() - 1, 0));
  JsonObject o;
  o.num("id", j.id).str("host", j.host).str("state", to_string(j.state))
      .num("stage", j.stage_count() ? shown + 1 : 0).num("stage_count", j.stage_count())
      .str("task", j.stage_count() ? j.tasks[static_cast<size_t>(shown)].name : "")
      .num("attempt", j.attempt).str("pipeline", j.pipeline)
      .str("design", redact_url_credentials(j.design_ref)).str("requested_by", j.requested_by)
      .str("origin", j.origin).str("group", j.group).num("created_ms", j.created_ms)
      .num("started_ms", j.started_ms).num("ended_ms", j.ended_ms).num("stage_started_ms", j.stage_started_ms)
      .num("retry_at_ms", j.retry_at_ms).str("reason", j.reason).boolean("cancel_requested", j.cancel_requested)
      .str("cancelled_by", j.cancelled_by)
      .str("summary", describe_job(j, j.state == JobState::Queued ? store_.queued_ahead(j.id) : 0, now));
  if (with_stages) {
    auto attempts = store_.stages(j.id);
    std::vector<std::string> stages;
    for (int i = 0; i < j.stage_count(); ++i) {
      std::vector<std::string> tries;
      const StageRecord* last = nullptr;
      for (const auto& a : attempts) {
        if (a.stage != i) continue;
        last = &a;
        tries.push_back(JsonObject().num("attempt", a.attempt).num("started_ms", a.started_ms)
                            .num("ended_ms", a.ended_ms).str("result", a.result).str("reason", a.reason).done());
      }
      JsonObject s;
      s.num("stage", i + 1).str("task", j.tasks[static_cast<size_t>(i)].name)
          .str("result", last ? last->result : "pending")
          .num("started_ms", last ? last->started_ms : 0).num("ended_ms", last ? last->ended_ms : 0)
          .str("reason", last ? last->reason : "").raw("attempts", json_array(tries));
      stages.push_back(s.done());
    }
    o.raw("stages", json_array(stages));
  }
  return o.done();
}

void Api::refuse_audited(const Requester& who, const std::string& key, const std::string& text,
                         const std::string& why) {
  // Like chat: one audit row per caller per window; the rest are counted in the next one.
  auto now = TokenBucket::Clock::now();
  auto& r = refusals_[key];
  if (now - r.window_start < config_.refusal_window) {
    ++r.unaudited;
    return;
  }
  if (refusals_.size() > 10000) refusals_.clear();  // bounded: a flood of addresses forgets windows
  auto& fresh = refusals_[key];
  std::string note = fresh.unaudited ? " (and " + std::to_string(fresh.unaudited) + " more refused before, not audited)" : "";
  fresh.window_start = now;
  fresh.unaudited = 0;
  commands_.audit_refusal(who, text, why + note);
  log::warn(log::kNoJob, "{} refused from {}: {}", who.id, who.place, why);
}

std::optional<Api::Caller> Api::authenticate(const Request& r, Respond& respond) {
  std::string text = r.method + " " + std::string(utf8_prefix(r.path, 200));
  std::string auth = r.header("authorization");
  std::string token;
  if (auth.rfind("Bearer ", 0) == 0) token = auth.substr(7);
  Requester anon{"anonymous", "http", r.remote};
  anon.id = "http:anonymous@" + r.remote;
  auto unauthorized = [&](const std::string& why) {
    refuse_audited(anon, "addr:" + r.remote, text, why);
    auto resp = error(401, why + "; send \"Authorization: Bearer <token>\" (jarvis token add NAME --role read)");
    resp.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"jarvis\"");
    count_request(401, "auth");
    respond(std::move(resp));
    return std::nullopt;
  };
  std::string hash;
  if (!token.empty()) {
    hash = token_hash(token);
  } else if (std::string sid = cookie_value(r, kCookie); !sid.empty()) {
    // The dashboard: a session cookie, and for anything that changes state the CSRF token
    // the login gave the page (a cross-site form cannot read or send it).
    std::optional<DashboardSession> found;
    try {
      found = store_.session(token_hash(sid), now_ms());
    } catch (const StoreError& e) {
      respond(error(503, std::string("cannot check the dashboard session: ") + e.what()));
      return std::nullopt;
    }
    if (!found) return unauthorized("the dashboard session expired or ended; log in again");
    hash = found->token_hash;
    if (r.method != "GET" && r.method != "HEAD" && !same_secret(r.header("x-csrf-token"), csrf_for(sid))) {
      std::optional<Caller> c = caller_for_hash(hash, r.remote);
      refuse_audited(c ? c->who : anon, "csrf:" + (c ? c->name : r.remote), text,
                     "a dashboard request without its CSRF token");
      count_request(403, "csrf");
      respond(error(403, "this request lacks the page's X-CSRF-Token; reload the dashboard and try again"));
      return std::nullopt;
    }
  } else {
    return unauthorized("no API token");
  }
  std::optional<Caller> c;
  try {
    c = caller_for_hash(hash, r.remote);
  } catch (const StoreError& e) {
    respond(error(503, std::string("cannot check the token: ") + e.what()));
    return std::nullopt;
  }
  if (c) return c;
  return unauthorized("unknown or revoked API token");
}

std::optional<Api::Caller> Api::caller_for_hash(const std::string& hash, const std::string& remote) {
  for (const auto& t : store_.tokens()) {
    if (!same_secret(t.hash, hash)) continue;
    Caller c;
    c.name = t.name;
    c.role = parse_role(t.role).value_or(Role::Read);
    c.who = Requester{t.name, "http", remote};
    c.who.id = "http:" + t.name;
    c.id.protocol = "http";
    c.id.name = t.name;
    c.id.full = t.name;
    Caller copy = c;
    c.who.may = [this, copy](Verb v) { return role_allows(copy.role, v) || acl_.allows(copy.id, "api", v); };
    return c;
  }
  return std::nullopt;
}

// POST /api/v1/session {"token": ...}: a dashboard login. The token becomes an HttpOnly,
// SameSite=Strict cookie holding a random session id (the token itself never reaches the
// page's storage), and the page gets the CSRF token to echo. GET: who the cookie is.
// DELETE: log out.
void Api::session(const Request& r, Respond& respond) {
  if (r.method == "POST") {
    YAML::Node body;
    try {
      body = parse_json_object(r.body, 4096);
    } catch (const std::exception&) {
      return respond(error(400, "the body must be {\"token\": \"jv_...\"}", "token"));
    }
    std::string token = body.IsMap() && body["token"] && body["token"].IsScalar() ? body["token"].Scalar() : "";
    Requester anon{"anonymous", "http", r.remote};
    anon.id = "http:anonymous@" + r.remote;
    if (token.empty()) return respond(error(400, "token is missing", "token"));
    auto c = caller_for_hash(token_hash(token), r.remote);
    if (!c) {
      refuse_audited(anon, "addr:" + r.remote, "dashboard login", "unknown or revoked API token");
      count_request(401, "session");
      return respond(error(401, "that token is unknown or revoked; make one with jarvis token add NAME --role read"));
    }
    std::string sid = new_token(), csrf = csrf_for(sid);
    try {
      store_.add_session({token_hash(sid), token_hash(token), now_ms() + kSessionLifeMs}, now_ms());
    } catch (const StoreError& e) {
      return respond(error(503, std::string("cannot log in now: ") + e.what() + "; try again in a minute"));
    }
    try {
      store_.audit({now_ms(), c->who.id, "http", r.remote, "dashboard login", "ok", 0});
    } catch (const StoreError& e) {
      log::error(log::kNoJob, "cannot write the audit trail: {}", e.what());
    }
    Response resp = json(200, JsonObject().str("name", c->name).str("role", role_name(c->role)).str("csrf", csrf).done());
    resp.headers.emplace_back("Set-Cookie", std::string(kCookie) + "=" + sid +
                                                "; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200" +
                                                (r.tls ? "; Secure" : ""));
    return respond(std::move(resp));
  }
  std::string sid = cookie_value(r, kCookie);
  std::optional<DashboardSession> found;
  try {
    if (!sid.empty()) found = store_.session(token_hash(sid), now_ms());
    if (r.method == "DELETE" && found) {
      if (!same_secret(r.header("x-csrf-token"), csrf_for(sid)))
        return respond(error(403, "this request lacks the page's X-CSRF-Token"));
      store_.end_session(found->id_hash);
    }
  } catch (const StoreError& e) {
    return respond(error(503, std::string("cannot check the dashboard session: ") + e.what()));
  }
  if (r.method == "DELETE") {
    Response resp = json(200, "{\"ok\":true}");
    resp.headers.emplace_back("Set-Cookie", std::string(kCookie) + "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    return respond(std::move(resp));
  }
  if (r.method != "GET") return respond(error(405, "use GET, POST or DELETE on /api/v1/session"));
  std::optional<Caller> c;
  if (found) c = caller_for_hash(found->token_hash, r.remote);
  if (!c) return respond(error(401, "not logged in"));
  respond(json(200, JsonObject().str("name", c->name).str("role", role_name(c->role)).str("csrf", csrf_for(sid)).done()));
}

void Api::asset(const Request& r, Respond& respond) {
  std::string path = r.path == "/" ? "/index.html" : r.path;
  auto [type, body] = dashboard_asset(path);
  if (type.empty()) return respond(error(404, "nothing at " + std::string(utf8_prefix(r.path, 100))));
  if (r.method != "GET") return respond(error(405, "use GET"));
  Response resp;
  resp.content_type = std::string(type);
  resp.body = std::string(body);
  // Only the bot's own files and connections: no inline script, no framing.
  resp.headers.emplace_back("Content-Security-Policy",
                            "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                            "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
  resp.headers.emplace_back("X-Frame-Options", "DENY");
  resp.headers.emplace_back("Referrer-Policy", "no-referrer");
  respond(std::move(resp));
}

bool Api::allowed(const Caller& c, Verb verb, const std::string& text, Respond& respond) {
  if (role_allows(c.role, verb) || acl_.allows(c.id, "api", verb)) return true;
  std::string v(verb_name(verb));
  std::string why = "the token's role " + std::string(role_name(c.role)) + " lacks the " + v + " right";
  refuse_audited(c.who, "token:" + c.name, text, "not allowed: " + why);
  auto resp = error(403, "http:" + c.name + " may not " + v + ": " + why + "; ask an admin for a token with role " +
                             std::string(role_name(role_for(verb))) + " or an acl rule for http:" + c.name);
  resp.body.insert(resp.body.size() - 2, ",\"missing_right\":" + json_quote(v));
  count_request(403, v);
  respond(std::move(resp));
  return false;
}

void Api::handle(const Request& r, Respond respond) {
  auto parts = split_path(r.path);
  try {
    if (r.path == "/metrics") return metrics(r, respond);
    if (parts.empty() || parts[0] != "api") return asset(r, respond);
    if (parts.size() < 2 || parts[0] != "api" || parts[1] != "v1")
      return respond(error(404, "nothing at " + std::string(utf8_prefix(r.path, 100)) + "; the API is under /api/v1"));
    parts.erase(parts.begin(), parts.begin() + 2);
    if (parts.size() == 1 && parts[0] == "healthz") return respond(json(200, "{\"ok\":true}"));
    if (parts.size() == 1 && parts[0] == "readyz") return ready(respond);
    if (parts.size() == 1 && parts[0] == "session") return session(r, respond);
    auto caller = authenticate(r, respond);
    if (!caller) return;
    auto now = TokenBucket::Clock::now();
    auto [bucket, fresh] = buckets_.try_emplace(caller->name, config_.requests_per_second, config_.request_burst);
    if (!bucket->second.take(now)) {
      auto wait = std::chrono::duration<double>(bucket->second.wait(now)).count();
      refuse_audited(caller->who, "token:" + caller->name, r.method + " " + std::string(utf8_prefix(r.path, 200)),
                     "rate limited");
      auto resp = error(429, "http:" + caller->name + ": slow down; try again in a few seconds");
      resp.headers.emplace_back("Retry-After", std::to_string(std::max<int64_t>(1, static_cast<int64_t>(std::ceil(wait)))));
      count_request(429, "rate");
      return respond(std::move(resp));
    }
    route(r, *caller, parts, respond);
  } catch (const StoreError& e) {
    respond(error(503, std::string("the job store cannot answer now: ") + e.what() + "; try again in a minute"));
  } catch (const std::exception& e) {
    log::error(log::kNoJob, "http: {} {} failed inside jarvis: {}", r.method, std::string(utf8_prefix(r.path, 100)), e.what());
    respond(error(500, "that failed inside jarvis; the bot's log says why"));
  }
}

void Api::route(const Request& r, const Caller& c, const std::vector<std::string>& parts, Respond& respond) {
  auto method = [&](const char* want) {
    if (r.method == want) return true;
    auto resp = error(405, r.method + " is not allowed on " + std::string(utf8_prefix(r.path, 100)) + "; use " + want);
    resp.headers.emplace_back("Allow", want);
    respond(std::move(resp));
    return false;
  };
  auto job_id = [&](int64_t& id) {
    auto n = number(parts[1], 1, INT64_MAX);
    if (!n) {
      respond(error(400, "'" + std::string(utf8_prefix(parts[1], 40)) + "' is not a job number", "id"));
      return false;
    }
    id = *n;
    return true;
  };
  const std::string first = parts.empty() ? "" : parts[0];
  if (first == "jobs" && parts.size() == 1) {
    if (method("GET") && allowed(c, Verb::Jobs, "jobs", respond)) jobs(r, c, respond);
    return;
  }
  if (first == "jobs" && parts.size() == 2) {
    int64_t id = 0;
    if (method("GET") && job_id(id) && allowed(c, Verb::Status, "status " + parts[1], respond)) job(id, respond);
    return;
  }
  if (first == "jobs" && parts.size() == 3) {
    int64_t id = 0;
    const std::string& what = parts[2];
    if (what == "log") {
      if (method("GET") && job_id(id) && allowed(c, Verb::Log, "log " + parts[1], respond)) log(r, id, respond);
      return;
    }
    if (what == "clipboard") {
      if (method("GET") && job_id(id) && allowed(c, Verb::Log, "clipboard " + parts[1], respond)) clipboard(r, id, respond);
      return;
    }
    if (what == "cancel" || what == "retry") {
      Verb v = what == "cancel" ? Verb::Cancel : Verb::Retry;
      if (!method("POST") || !job_id(id)) return;
      Command cmd;
      cmd.verb = v;
      cmd.argument = std::to_string(id);
      cmd.text = what + " " + cmd.argument;
      if (allowed(c, v, cmd.text, respond)) run_command(c, cmd, 202, respond);
      return;
    }
  }
  if (first == "deploy" || first == "plan") {
    if (parts.size() != 1 || !method("POST")) {
      if (parts.size() != 1) respond(error(404, "nothing at " + std::string(utf8_prefix(r.path, 100))));
      return;
    }
    Verb v = first == "deploy" ? Verb::Deploy : Verb::Plan;
    YAML::Node body;
    try {
      body = parse_json_object(r.body, 64 * 1024);
    } catch (const std::exception& e) {
      return respond(error(400, "the body must be a JSON object like {\"design\": \"loki\"}: " + std::string(e.what())));
    }
    if (!body.IsMap()) return respond(error(400, "the body must be a JSON object like {\"design\": \"loki\"}"));
    for (auto it = body.begin(); it != body.end(); ++it) {
      std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      if (key != "design" && key != "pipeline")
        return respond(error(400, "unknown field '" + std::string(utf8_prefix(key, 40)) + "' (design, pipeline)",
                             std::string(utf8_prefix(key, 40))));
    }
    if (!body["design"] || !body["design"].IsScalar())
      return respond(error(400, "design is missing: a name in designs_dir, a gist URL or an LDAP DN", "design"));
    Command cmd;
    cmd.verb = v;
    cmd.argument = body["design"].Scalar();
    if (!plain_text(cmd.argument, 900) || cmd.argument.find(' ') != std::string::npos)
      return respond(error(400, "design must be one word of up to 900 characters without spaces or control characters", "design"));
    cmd.text = first + " " + cmd.argument;
    if (body["pipeline"] && !body["pipeline"].IsNull()) {
      if (!body["pipeline"].IsScalar() || !plain_text(body["pipeline"].Scalar(), 100) ||
          body["pipeline"].Scalar().find(' ') != std::string::npos)
        return respond(error(400, "pipeline must be a pipeline name", "pipeline"));
      cmd.pipeline = body["pipeline"].Scalar();
      cmd.text += " --pipeline " + *cmd.pipeline;
    }
    if (allowed(c, v, cmd.text, respond)) run_command(c, cmd, v == Verb::Deploy ? 202 : 200, respond);
    return;
  }
  if (first == "hosts" && (parts.size() == 1 || parts.size() == 2)) {
    if (method("GET") && allowed(c, parts.size() == 1 ? Verb::Jobs : Verb::Status,
                                 parts.size() == 1 ? "jobs" : "status " + parts[1], respond))
      hosts(r, parts, respond);
    return;
  }
  if (first == "audit" && parts.size() == 1) {
    if (method("GET") && allowed(c, Verb::Audit, "audit", respond)) audit(r, respond);
    return;
  }
  if (first == "hooks" && parts.size() == 2 && parts[1] == "dead") {
    if (method("GET") && allowed(c, Verb::Audit, "hooks dead", respond)) dead_letters(r, respond);
    return;
  }
  if (first == "events" && parts.size() == 1) {
    if (method("GET") && allowed(c, Verb::Jobs, "events", respond)) events(r, respond);
    return;
  }
  respond(error(404, "nothing at " + std::string(utf8_prefix(r.path, 100)) + " (see docs/api.md)"));
}

void Api::run_command(const Caller& c, Command cmd, int success_status, Respond respond) {
  Verb verb = cmd.verb;
  commands_.run(cmd, c.who, [this, verb, success_status, respond](Reply reply) {
    count_request(reply.ok ? success_status : std::stoi(status_of(reply.failure)), std::string(verb_name(verb)));
    if (!reply.ok && !(verb == Verb::Plan && reply.failure == Reply::Failure::None)) {
      int status = std::stoi(status_of(reply.failure));
      std::string message = reply.lines.empty() ? "refused" : reply.lines.front();
      for (size_t i = 1; i < reply.lines.size(); ++i) message += "; " + reply.lines[i];
      auto resp = error(status, message, reply.field);
      if (reply.conflict_job) {
        std::string j;
        try {
          if (auto rec = store_.job(reply.conflict_job)) j = job_json(*rec, false);
        } catch (const StoreError&) {
        }
        resp.body.insert(resp.body.size() - 2, ",\"job\":" + (j.empty() ? std::to_string(reply.conflict_job) : j));
      }
      if (status == 503) resp.headers.emplace_back("Retry-After", "5");
      return respond(std::move(resp));
    }
    JsonObject o;
    o.boolean("ok", reply.ok).str("message", reply.lines.empty() ? "" : reply.lines.front())
        .raw("lines", json_strings(reply.lines));
    if (reply.job) {
      try {
        if (auto rec = store_.job(reply.job)) o.raw("job", job_json(*rec, false));
      } catch (const StoreError&) {
        o.num("job_id", reply.job);
      }
    }
    respond(json(success_status, o.done()));
  });
}

void Api::jobs(const Request& r, const Caller&, Respond& respond) {
  JobQuery q;
  q.host = r.param("host");
  q.requested_by = r.param("requester");
  bool has = false;
  std::string state = r.param("state", &has);
  if (has) {
    q.state = parse_job_state(state);
    if (!q.state) return respond(error(400, "state must be queued, running, ready, failed or cancelled", "state"));
  }
  if (auto bad = read_page(r, q)) return respond(std::move(*bad));
  int want = q.limit;
  q.limit = want + 1;  // one more: is there a next page?
  auto rows = store_.find_jobs(q);
  bool more = static_cast<int>(rows.size()) > want;
  if (more) rows.resize(static_cast<size_t>(want));
  std::vector<std::string> items;
  for (const auto& j : rows) items.push_back(job_json(j, false));
  JsonObject o;
  o.raw("jobs", json_array(items));
  if (more) o.str("next_cursor", std::to_string(rows.back().id));
  else o.null("next_cursor");
  count_request(200, "jobs");
  respond(json(200, o.done()));
}

void Api::job(int64_t id, Respond& respond) {
  auto j = store_.job(id);
  if (!j) return respond(error(404, "there is no job " + std::to_string(id)));
  count_request(200, "job");
  respond(json(200, job_json(*j, true)));
}

void Api::log(const Request& r, int64_t id, Respond& respond) {
  auto j = store_.job(id);
  if (!j) return respond(error(404, "there is no job " + std::to_string(id)));
  int lines = 200;
  bool has = false;
  std::string n = r.param("lines", &has);
  if (has) {
    auto v = number(n, 1, 10000);
    if (!v) return respond(error(400, "lines must be a number from 1 to 10000", "lines"));
    lines = static_cast<int>(*v);
  }
  std::vector<std::string> items;
  for (const auto& l : store_.log(id, lines)) {
    std::string task = l.stage >= 1 && l.stage <= j->stage_count() ? j->tasks[static_cast<size_t>(l.stage - 1)].name : "";
    items.push_back(JsonObject().num("at_ms", l.at_ms).num("stage", l.stage).str("task", task)
                        .str("line", l.line).done());
  }
  count_request(200, "log");
  respond(json(200, JsonObject().num("job", id).raw("lines", json_array(items)).done()));
}

void Api::clipboard(const Request& r, int64_t id, Respond& respond) {
  auto j = store_.job(id);
  if (!j) return respond(error(404, "there is no job " + std::to_string(id)));
  bool has = false;
  std::string s = r.param("stage", &has);
  std::optional<std::string> text;
  int stage = j->stage;  // the current one: the clipboard before the next stage to run
  if (has) {
    auto v = number(s, 0, j->stage_count());
    if (!v)
      return respond(error(400, "stage must be a number from 0 (the design) to " + std::to_string(j->stage_count()), "stage"));
    stage = static_cast<int>(*v);
    text = store_.clipboard_after(id, stage);
    if (!text)
      return respond(error(404, "job " + std::to_string(id) + " has no clipboard after stage " + std::to_string(stage) +
                                    " (the stage has not succeeded, or the job was pruned)"));
  } else {
    text = j->clipboard;
  }
  // Every value under a secret-looking key of this clipboard, of the design and of the job's
  // latest clipboard, and the bot's own secrets.
  Redactor redactor;
  redactor.add(config_.secrets);
  redactor.add(secret_values(*text, config_.secret_patterns));
  redactor.add(secret_values(j->clipboard, config_.secret_patterns));
  if (auto design = store_.clipboard_after(id, 0)) redactor.add(secret_values(*design, config_.secret_patterns));
  count_request(200, "clipboard");
  respond(json(200, JsonObject().num("job", id).num("stage", stage).str("clipboard", redactor.redact(*text)).done()));
}

void Api::hosts(const Request& r, const std::vector<std::string>& parts, Respond& respond) {
  JobQuery q;
  q.limit = 500;
  if (parts.size() == 1) {
    q.latest_per_host = true;
    std::vector<std::string> items;
    for (const auto& j : store_.find_jobs(q))
      items.push_back(JsonObject().str("host", j.host).raw("latest_job", job_json(j, false)).done());
    count_request(200, "hosts");
    return respond(json(200, JsonObject().raw("hosts", json_array(items)).done()));
  }
  q.host = parts[1];
  bool has = false;
  std::string limit = r.param("limit", &has);
  q.limit = 50;
  if (has) {
    auto n = number(limit, 1, 500);
    if (!n) return respond(error(400, "limit must be a number from 1 to 500", "limit"));
    q.limit = static_cast<int>(*n);
  }
  auto rows = store_.find_jobs(q);
  if (rows.empty()) return respond(error(404, parts[1].substr(0, 100) + ": no jobs yet"));
  std::vector<std::string> items;
  for (const auto& j : rows) items.push_back(job_json(j, false));
  count_request(200, "host");
  respond(json(200, JsonObject().str("host", parts[1]).raw("jobs", json_array(items)).done()));
}

void Api::audit(const Request& r, Respond& respond) {
  AuditQuery q;
  q.who = r.param("who");
  q.host = r.param("host");
  bool has = false;
  std::string since = r.param("since", &has);
  if (has) {
    if (auto ms = number(since, 0, INT64_MAX)) q.since_ms = *ms;
    else if (auto d = parse_duration(since); d && d->count() > 0) q.since_ms = now_ms() - d->count();
    else return respond(error(400, "since must be a time in ms since the epoch or an age like 1h or 7d", "since"));
  }
  if (auto bad = read_page(r, q)) return respond(std::move(*bad));
  int want = q.limit;
  q.limit = want + 1;
  auto rows = store_.find_audit(q);
  bool more = static_cast<int>(rows.size()) > want;
  if (more) rows.resize(static_cast<size_t>(want));
  std::vector<std::string> items;
  for (const auto& e : rows)
    items.push_back(JsonObject().num("id", e.id).num("at_ms", e.at_ms).str("who", e.who).str("protocol", e.protocol)
                        .str("place", e.place).str("command", e.command).str("outcome", e.outcome).done());
  JsonObject o;
  o.raw("entries", json_array(items));
  if (more) o.str("next_cursor", std::to_string(rows.back().id));
  else o.null("next_cursor");
  count_request(200, "audit");
  respond(json(200, o.done()));
}

void Api::dead_letters(const Request& r, Respond& respond) {
  int limit = 100;
  bool has = false;
  std::string l = r.param("limit", &has);
  if (has) {
    auto n = number(l, 1, 1000);
    if (!n) return respond(error(400, "limit must be a number from 1 to 1000", "limit"));
    limit = static_cast<int>(*n);
  }
  std::vector<std::string> items;
  for (const auto& d : store_.dead_hook_deliveries(limit))
    items.push_back(JsonObject().num("id", d.id).str("hook", d.hook).num("event_id", d.event_id)
                        .str("event_kind", d.event_kind).num("attempts", d.attempts).str("last_error", d.last_error).done());
  respond(json(200, JsonObject().raw("dead", json_array(items)).done()));
}

namespace {
std::string sse_frame(int64_t id, const std::string& kind, const std::string& json) {
  std::string data = id ? "{\"id\":" + std::to_string(id) + "," + json.substr(1) : json;
  return (id ? "id: " + std::to_string(id) + "\n" : std::string()) + "event: " + kind + "\ndata: " + data + "\n\n";
}
}  // namespace

void Api::events(const Request& r, Respond& respond) {
  EventClient client;
  bool has = false;
  std::string last = r.header("last-event-id");
  if (last.empty()) last = r.param("last_event_id", &has);
  if (!last.empty()) {
    auto n = number(last, 0, INT64_MAX);
    if (!n) return respond(error(400, "Last-Event-ID must be the id of an event this stream sent", "Last-Event-ID"));
    client.last_id = *n;
    client.caught_up = false;
  }
  std::string job = r.param("job", &has);
  if (has) {
    auto n = number(job, 1, INT64_MAX);
    if (!n) return respond(error(400, "job must be a job number", "job"));
    client.job = *n;
  }
  clients_.erase(std::remove_if(clients_.begin(), clients_.end(), [](const auto& c) { return c.stream->closed(); }),
                 clients_.end());
  if (clients_.size() >= config_.max_event_clients) {
    auto resp = error(503, "too many event streams open (" + std::to_string(clients_.size()) + "); try again later");
    resp.headers.emplace_back("Retry-After", "5");
    return respond(std::move(resp));
  }
  client.stream = std::make_shared<EventStream>(Limits{}.max_stream_backlog);
  // The retry hint, then (when resuming) what the client missed, from the store.
  client.stream->push("retry: 2000\n\n");
  clients_.push_back(client);
  Response resp;
  resp.content_type = "text/event-stream";
  resp.stream = client.stream;
  count_request(200, "events");
  respond(std::move(resp));
  top_up();
}

// Clients resuming from an id get the stored events after it, a batch at a time as they
// read them; live events reach them once they have caught up (those in between are in the
// store, so none is missed, and ids already sent are skipped, so none is repeated).
void Api::top_up() {
  bool behind = false;
  for (auto& c : clients_) {
    if (c.caught_up || c.stream->closed()) continue;
    for (int round = 0; round < 8 && !c.caught_up; ++round) {
      if (c.stream->has_pending()) break;  // let it read what it has first
      auto batch = store_.events_after(c.last_id, 500);
      for (const auto& e : batch) {
        c.last_id = e.id;
        if (c.job && e.job_id != c.job) continue;
        if (!c.stream->push(sse_frame(e.id, e.kind, e.json))) break;
      }
      if (batch.size() < 500) c.caught_up = true;
    }
    if (!c.caught_up) behind = true;
  }
  if (behind && !catching_up_) {
    catching_up_ = true;
    catch_up_timer_.expires_after(std::chrono::milliseconds(10));
    catch_up_timer_.async_wait([this](const boost::system::error_code& ec) {
      catching_up_ = false;
      if (ec) return;
      try {
        top_up();
      } catch (const std::exception& e) {
        log::warn(log::kNoJob, "http: cannot read stored events for a resuming client: {}", e.what());
      }
    });
  }
}

void Api::heartbeat() {
  heartbeat_timer_.expires_after(config_.heartbeat);
  heartbeat_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    for (auto& c : clients_)
      if (c.caught_up) c.stream->push(": keepalive\n\n");
    clients_.erase(std::remove_if(clients_.begin(), clients_.end(), [](const auto& c) { return c.stream->closed(); }),
                   clients_.end());
    heartbeat();
  });
}

void Api::on_event(const EngineEvent& e) {
  using K = EngineEvent::Kind;
  if (e.kind == K::StageSucceeded || e.kind == K::StageRetrying || e.kind == K::JobFailed) {
    auto& st = stage_stats_[e.task];
    if (st.buckets.empty()) st.buckets.assign(std::size(kBounds), 0);
    if (e.kind == K::StageSucceeded) {
      double secs = static_cast<double>(e.elapsed.count()) / 1000.0;
      ++st.count;
      st.sum += secs;
      for (size_t i = 0; i < std::size(kBounds); ++i)
        if (secs <= kBounds[i]) ++st.buckets[i];
    } else {
      ++st.failures;
    }
  }
  if (clients_.empty()) return;
  if (store_.shared()) {  // this node's events among the other nodes', from the table
    poke();
    return;
  }
  std::string frame;
  for (auto& c : clients_) {
    if (!c.caught_up || c.stream->closed()) continue;
    if (e.id && e.id <= c.last_id) continue;
    if (e.id) c.last_id = e.id;
    if (c.job && e.job != c.job) continue;
    if (frame.empty()) frame = sse_frame(e.id, std::string(event_kind_name(e.kind)), event_json(e));
    c.stream->push(frame);
  }
}

// A shared store: the streams that have caught up read the table from the lowest cursor
// among them, once for all; each gets the events past its own cursor. Ids are committed in
// order (PostgresJobStore::append_event), so none is skipped and none is sent twice.
void Api::poke() {
  if (!store_.shared()) return;
  int64_t from = -1;
  for (const auto& c : clients_)
    if (c.caught_up && !c.stream->closed()) from = from < 0 ? c.last_id : std::min(from, c.last_id);
  if (from < 0) return;
  try {
    for (int round = 0; round < 8; ++round) {
      auto batch = store_.events_after(from, 500);
      for (const auto& e : batch) {
        std::string frame;
        for (auto& c : clients_) {
          if (!c.caught_up || c.stream->closed() || e.id <= c.last_id) continue;
          c.last_id = e.id;
          if (c.job && e.job_id != c.job) continue;
          if (frame.empty()) frame = sse_frame(e.id, e.kind, e.json);
          c.stream->push(frame);
        }
        from = e.id;
      }
      if (batch.size() < 500) break;
    }
  } catch (const StoreError& e) {
    log::warn(log::kNoJob, "http: cannot read the event table for the event streams: {}; retrying", e.what());
  }
}

void Api::poll() {
  poll_timer_.expires_after(std::chrono::milliseconds(500));
  poll_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    poke();
    poll();
  });
}

void Api::ready(Respond& respond) {
  Health h = health_ ? health_() : Health{};
  bool store_ok = h.store_problem.empty();
  if (store_ok) {
    try {
      store_.check_identity();
    } catch (const StoreError& e) {
      store_ok = false;
      h.store_problem = e.what();
    }
  }
  bool ok = store_ok;
  std::vector<std::string> fronts;
  for (const auto& f : h.fronts) {
    ok = ok && f.connected;
    fronts.push_back(JsonObject().str("protocol", f.protocol).boolean("connected", f.connected).done());
  }
  JsonObject o;
  o.boolean("ready", ok).boolean("store_writable", store_ok).str("store_problem", h.store_problem)
      .raw("chat", json_array(fronts));
  respond(json(ok ? 200 : 503, o.done()));
}

void Api::metrics(const Request& r, Respond& respond) {
  if (!config_.metrics_token.empty()) {
    std::string auth = r.header("authorization");
    if (auth.rfind("Bearer ", 0) != 0 || !same_secret(token_hash(auth.substr(7)), token_hash(config_.metrics_token))) {
      auto resp = error(401, "/metrics needs the scrape token (http.metrics_token_file)");
      resp.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"jarvis metrics\"");
      return respond(std::move(resp));
    }
  }
  if (r.method != "GET") return respond(error(405, "use GET on /metrics"));
  Health h = health_ ? health_() : Health{};
  std::string out;
  out += "# HELP jarvis_build_info The running jarvis.\n# TYPE jarvis_build_info gauge\n";
  out += "jarvis_build_info{version=\"" + prom_escape(JARVIS_VERSION) + "\",revision=\"" + prom_escape(JARVIS_GIT_REVISION) + "\"} 1\n";
  // Jobs by state, counted in the store (every process's jobs, not only this one's).
  std::map<std::string, int64_t> by_state;
  for (auto st : {JobState::Queued, JobState::Running, JobState::Ready, JobState::Failed, JobState::Cancelled})
    by_state[std::string(to_string(st))] = 0;
  for (const auto& [st, n] : store_.job_counts()) by_state[std::string(to_string(st))] = n;
  out += "# HELP jarvis_jobs Jobs in the store by state.\n# TYPE jarvis_jobs gauge\n";
  for (const auto& [state, n] : by_state) out += "jarvis_jobs{state=\"" + state + "\"} " + std::to_string(n) + "\n";
  out += "# HELP jarvis_jobs_in_flight Jobs this engine runs now.\n# TYPE jarvis_jobs_in_flight gauge\n";
  out += "jarvis_jobs_in_flight " + std::to_string(h.running) + "\n";
  out += "# HELP jarvis_jobs_queued Jobs this engine holds waiting for a slot.\n# TYPE jarvis_jobs_queued gauge\n";
  out += "jarvis_jobs_queued " + std::to_string(h.queued) + "\n";
  out += "# HELP jarvis_stage_duration_seconds Successful stage runs by task.\n# TYPE jarvis_stage_duration_seconds histogram\n";
  for (const auto& [task, st] : stage_stats_) {
    std::string t = prom_escape(task);
    for (size_t i = 0; i < std::size(kBounds); ++i) {
      char bound[32];
      std::snprintf(bound, sizeof bound, "%g", kBounds[i]);
      out += "jarvis_stage_duration_seconds_bucket{task=\"" + t + "\",le=\"" + bound + "\"} " + std::to_string(st.buckets[i]) + "\n";
    }
    out += "jarvis_stage_duration_seconds_bucket{task=\"" + t + "\",le=\"+Inf\"} " + std::to_string(st.count) + "\n";
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.6f", st.sum);
    out += "jarvis_stage_duration_seconds_sum{task=\"" + t + "\"} " + sum + "\n";
    out += "jarvis_stage_duration_seconds_count{task=\"" + t + "\"} " + std::to_string(st.count) + "\n";
  }
  out += "# HELP jarvis_stage_failures_total Failed stage attempts by task.\n# TYPE jarvis_stage_failures_total counter\n";
  for (const auto& [task, st] : stage_stats_)
    out += "jarvis_stage_failures_total{task=\"" + prom_escape(task) + "\"} " + std::to_string(st.failures) + "\n";
  out += "# HELP jarvis_chat_connected Whether each chat front is connected.\n# TYPE jarvis_chat_connected gauge\n";
  for (const auto& f : h.fronts)
    out += "jarvis_chat_connected{protocol=\"" + f.protocol + "\"} " + (f.connected ? "1" : "0") + "\n";
  out += "# HELP jarvis_chat_outbox_lines Lines waiting in each chat front's outbox.\n# TYPE jarvis_chat_outbox_lines gauge\n";
  for (const auto& f : h.fronts)
    out += "jarvis_chat_outbox_lines{protocol=\"" + f.protocol + "\"} " + std::to_string(f.outbox) + "\n";
  out += "# HELP jarvis_http_event_streams Open event streams.\n# TYPE jarvis_http_event_streams gauge\n";
  out += "jarvis_http_event_streams " + std::to_string(clients_.size()) + "\n";
  out += "# HELP jarvis_http_responses_total API responses by status and route.\n# TYPE jarvis_http_responses_total counter\n";
  for (const auto& [k, n] : requests_)
    out += "jarvis_http_responses_total{status=\"" + std::to_string(k.first) + "\",route=\"" + prom_escape(k.second) +
           "\"} " + std::to_string(n) + "\n";
  out += "# HELP jarvis_store_writable Whether the job store can be written.\n# TYPE jarvis_store_writable gauge\n";
  out += std::string("jarvis_store_writable ") + (h.store_problem.empty() ? "1" : "0") + "\n";
  if (more_metrics_) out += more_metrics_();
  Response resp;
  resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
  resp.body = std::move(out);
  respond(std::move(resp));
}

}  // namespace jarvis::http
