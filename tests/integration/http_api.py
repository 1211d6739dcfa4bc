"""The HTTP API of a real `jarvis serve`, over plain HTTP or HTTPS (argv[4]: plain | tls):
every endpoint and error status, a token per role, 401/403 audited, a revoked token, body and
header limits, connection limit and timeout, rate limit with Retry-After, secrets absent from
every response, and the event stream resumed after a dropped connection with no event
missed or repeated."""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from http_support import SECRET, Serve, Sse, add_token, setup_bot  # noqa: E402
from jarvis_test import Jarvis, check, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
mode = sys.argv[4] if len(sys.argv) > 4 else "plain"  # plain, tls, or postgres (plain, on PostgreSQL)
pg = None
if mode == "postgres":
    from pg_support import Postgres  # noqa: E402
    pg = Postgres()
j = Jarvis(binary, source, build)
marker = os.path.join(j.tmp, "failed-once")
config, port, ctx = setup_bot(
    j, tls=(mode == "tls"),
    http_extra="  max_connections: 40\n  request_timeout: 3s\n  idle_timeout: 3s\n"
               "  requests_per_second: 50\n  request_burst: 300\n",
    designs={"loki": "sleep: 0.3\n", "slowpoke": "sleep: 30\n",
             "flaky": f"fail_at: 2\nfail_marker: {marker}\n"})
if pg:
    pg.create_database("api")
    with open(config, "a") as f:
        f.write(f"store: {{kind: postgres, url_file: {pg.write_url_file(os.path.join(j.tmp, 'pg.url'), 'api')}}}\n"
                "node: {name: n1, lease: 2s}\n")
tokens = {"reader": add_token(j, config, "reader", "read"),
          "op": add_token(j, config, "op", "operate"),
          "adm": add_token(j, config, "adm", "admin")}
# Only hashes are stored.
if pg:
    db = pg.sql("SELECT string_agg(name || ' ' || role || ' ' || hash, ',') FROM api_tokens", "api").encode()
    check(db.count(b" ") == 6, f"three tokens in PostgreSQL: {db}")
else:
    db = open(os.path.join(j.state, "jarvis.db"), "rb").read()
for t in tokens.values():
    check(t.encode() not in db, "a token must not be stored in clear")
listing = subprocess.run([binary, "token", "list", "--config", config], capture_output=True, text=True).stdout
check("reader  read" in listing and "op  operate" in listing, f"token list: {listing}")
check(not any(t in listing for t in tokens.values()), "token list must not show tokens")

bot = Serve(j, config, port, ctx)
seen = []  # every response body, to look for secrets in


def call(method, path, who=None, body=None, **kw):
    status, data, headers = bot.request(method, path, tokens.get(who, who), body, **kw)
    seen.append(json.dumps(data) if not isinstance(data, str) else data)
    return status, data, headers


def expect(status, data, want, what):
    check(status == want, f"{what}: status {status}, expected {want}: {data}")
    if want >= 400:
        check(isinstance(data, dict) and data.get("error", {}).get("status") == want and data["error"]["message"],
              f"{what}: a JSON error with a message: {data}")
    return data


# Health, no token needed.
expect(*call("GET", "/api/v1/healthz")[:2], 200, "healthz")
st, d, _ = call("GET", "/api/v1/readyz")
expect(st, d, 200, "readyz")
check(d["ready"] is True and d["store_writable"] is True, f"readyz: {d}")

# 401: none, a wrong one; both say how to authenticate.
st, d, h = call("GET", "/api/v1/jobs")
expect(st, d, 401, "no token")
check(h.get("www-authenticate", "").startswith("Bearer"), f"WWW-Authenticate: {h}")
expect(*call("GET", "/api/v1/jobs", "jv_not-a-real-token")[:2], 401, "wrong token")

# 403: read cannot deploy, and the refusal names the missing right.
st, d, _ = call("POST", "/api/v1/deploy", "reader", {"design": "loki"})
expect(st, d, 403, "reader deploys")
check(d["error"].get("missing_right") == "deploy" and "deploy" in d["error"]["message"], f"403: {d}")
expect(*call("POST", "/api/v1/jobs/1/cancel", "reader")[:2], 403, "reader cancels")

# 400s with the field.
for body, field in [({"pipeline": "three"}, "design"), ({"design": "loki", "color": "red"}, "color"),
                    ({"design": "no-such-design"}, "design"), ({"design": "loki\nrm"}, "design"),
                    ({"design": "loki", "pipeline": "nope"}, "pipeline")]:
    st, d, _ = call("POST", "/api/v1/deploy", "op", body)
    expect(st, d, 400, f"deploy {body}")
    check(d["error"].get("field") == field, f"deploy {body}: field {d}")
expect(*call("POST", "/api/v1/deploy", "op", raw_body="not json",
             headers={"Content-Type": "application/json"})[:2], 400, "non-JSON body")
st, d, h = call("GET", "/api/v1/deploy", "op")
expect(st, d, 405, "GET /deploy")
check(h.get("allow") == "POST", f"Allow: {h}")
expect(*call("GET", "/api/v1/nothing", "op")[:2], 404, "unknown path")

# The event stream, opened before the deploy: it is read in two parts, across a dropped
# connection, and resumed with Last-Event-ID.
sse = Sse(bot, tokens["reader"], last_id=0)
check(sse.status == 200, f"events status {sse.status}")

# Plan (read may plan a design by name) and deploy.
st, d, _ = call("POST", "/api/v1/plan", "reader", {"design": "loki"})
expect(st, d, 200, "plan")
check(d["ok"] and any("step:run" in line for line in d["lines"]), f"plan: {d}")
st, d, _ = call("POST", "/api/v1/deploy", "op", {"design": "loki"})
expect(st, d, 202, "deploy loki")
loki = d["job"]["id"]
check(d["job"]["host"] == "loki" and d["job"]["state"] in ("queued", "running"), f"deploy: {d}")
check(d["job"]["requested_by"] == "op", f"requested_by: {d['job']}")

# 409: the host is locked by the job in flight, which the error names.
st, d, _ = call("POST", "/api/v1/deploy", "op", {"design": "loki"})
expect(st, d, 409, "second deploy of loki")
check(d["error"]["job"]["id"] == loki, f"409 names the running job: {d}")

# Read a few events, then drop the connection mid-job.
first = []
while len(first) < 4:
    first.append(sse.next())
sse.close()
wait_for(lambda: call("GET", f"/api/v1/jobs/{loki}", "reader")[1]["state"] == "ready", 30, "loki ready")
again = Sse(bot, tokens["reader"], last_id=first[-1][0])
second = []
while not second or not (second[-1][1] == "job_ready" and second[-1][2]["job"] == loki):
    second.append(again.next())
again.close()
ids = [e[0] for e in first + second]
check(all(i is not None for i in ids), f"every stored event has an id: {ids}")
check(ids == sorted(set(ids)), f"no event repeated, in order: {ids}")
full = Sse(bot, tokens["reader"], last_id=0)
everything = []
while not everything or everything[-1][0] < ids[-1]:
    everything.append(full.next())
full.close()
check([e[0] for e in everything] == ids, f"resumed stream {ids} == stored events {[e[0] for e in everything]}")
if pg:
    # Another node's event (a row it appended to the shared table) reaches this node's streams
    # too, in id order after this node's own.
    other = Sse(bot, tokens["reader"], last_id=ids[-1])
    row = pg.sql("INSERT INTO events (at_ms, job_id, kind, json) VALUES (1, 424242, 'job_ready', "
                 "'{\"kind\":\"job_ready\",\"job\":424242,\"host\":\"elsewhere\"}') RETURNING id", "api")
    got = other.next()
    other.close()
    check(got[0] == int(row.split()[0]) and got[1] == "job_ready" and got[2]["host"] == "elsewhere",
          f"the other node's event {row}: {got}")
kinds = [e[1] for e in first + second if e[2]["job"] == loki]
check(kinds.count("stage_succeeded") == 3 and "job_started" in kinds, f"loki's events: {kinds}")

# The job: stages with start, end and result.
st, d, _ = call("GET", f"/api/v1/jobs/{loki}", "reader")
expect(st, d, 200, "job")
check([s["result"] for s in d["stages"]] == ["ok", "ok", "ok"], f"stages: {d['stages']}")
check(all(s["ended_ms"] >= s["started_ms"] > 0 for s in d["stages"]), f"stage times: {d['stages']}")
check(d["summary"].startswith("loki: ready"), f"summary: {d['summary']}")
expect(*call("GET", "/api/v1/jobs/999", "reader")[:2], 404, "no job 999")
st, d, _ = call("GET", "/api/v1/jobs/abc", "reader")
expect(st, d, 400, "job abc")
check(d["error"]["field"] == "id", f"field: {d}")

# Log and clipboard: the secret is redacted.
st, d, _ = call("GET", f"/api/v1/jobs/{loki}/log", "reader")
expect(st, d, 200, "log")
check(any("logging in with [redacted]" in line["line"] for line in d["lines"]), f"log: {d}")
for stage in (0, 2, 3):
    st, d, _ = call("GET", f"/api/v1/jobs/{loki}/clipboard?stage={stage}", "reader")
    expect(st, d, 200, f"clipboard stage {stage}")
    check("root_password: [redacted]" in d["clipboard"], f"clipboard {stage}: {d}")
    check(("stage2: done" in d["clipboard"]) == (stage >= 2), f"clipboard after stage {stage}: {d}")
expect(*call("GET", f"/api/v1/jobs/{loki}/clipboard?stage=9", "reader")[:2], 400, "clipboard stage 9")

# A failing job: the stage's reason; retry resumes it; retrying a ready job is a conflict.
st, d, _ = call("POST", "/api/v1/deploy", "op", {"design": "flaky"})
expect(st, d, 202, "deploy flaky")
flaky = d["job"]["id"]
wait_for(lambda: call("GET", f"/api/v1/jobs/{flaky}", "reader")[1]["state"] == "failed", 30, "flaky fails")
st, d, _ = call("GET", f"/api/v1/jobs/{flaky}", "reader")
check(d["stages"][1]["result"] == "failed" and "broken on purpose" in d["stages"][1]["reason"], f"failed stage: {d}")
check(d["stages"][2]["result"] == "pending", f"stage 3 not run: {d['stages'][2]}")
expect(*call("POST", f"/api/v1/jobs/{flaky}/retry", "op")[:2], 202, "retry flaky")
wait_for(lambda: call("GET", f"/api/v1/jobs/{flaky}", "reader")[1]["state"] == "ready", 30, "flaky ready")
expect(*call("POST", f"/api/v1/jobs/{flaky}/retry", "op")[:2], 409, "retry a ready job")
expect(*call("POST", "/api/v1/jobs/999/retry", "op")[:2], 404, "retry job 999")

# Cancel a long job; a second cancel conflicts.
st, d, _ = call("POST", "/api/v1/deploy", "adm", {"design": "slowpoke"})
expect(st, d, 202, "deploy slowpoke")
slow = d["job"]["id"]
wait_for(lambda: call("GET", f"/api/v1/jobs/{slow}", "reader")[1]["state"] == "running", 10, "slowpoke runs")
expect(*call("POST", f"/api/v1/jobs/{slow}/cancel", "op")[:2], 202, "cancel slowpoke")
wait_for(lambda: call("GET", f"/api/v1/jobs/{slow}", "reader")[1]["state"] == "cancelled", 20, "slowpoke cancelled")
expect(*call("POST", f"/api/v1/jobs/{slow}/cancel", "op")[:2], 409, "cancel again")

# Lists: filters and cursor paging.
st, d, _ = call("GET", "/api/v1/jobs?state=ready", "reader")
expect(st, d, 200, "jobs ready")
check(sorted(x["id"] for x in d["jobs"]) == sorted([loki, flaky]), f"ready jobs: {d}")
st, d, _ = call("GET", "/api/v1/jobs?requester=adm", "reader")
check([x["id"] for x in d["jobs"]] == [slow], f"jobs by adm: {d}")
pages, cursor = [], None
while True:
    st, d, _ = call("GET", "/api/v1/jobs?limit=1" + (f"&cursor={cursor}" if cursor else ""), "reader")
    expect(st, d, 200, "jobs page")
    pages += [x["id"] for x in d["jobs"]]
    cursor = d["next_cursor"]
    if not cursor:
        break
check(pages == sorted([loki, flaky, slow], reverse=True), f"paged: {pages}")
for q, field in [("state=bogus", "state"), ("limit=0", "limit"), ("cursor=x", "cursor")]:
    st, d, _ = call("GET", f"/api/v1/jobs?{q}", "reader")
    expect(st, d, 400, q)
    check(d["error"]["field"] == field, f"{q}: {d}")
st, d, _ = call("GET", "/api/v1/hosts", "reader")
expect(st, d, 200, "hosts")
check(sorted(h["host"] for h in d["hosts"]) == ["flaky", "loki", "slowpoke"], f"hosts: {d}")
st, d, _ = call("GET", "/api/v1/hosts/loki", "reader")
check([x["id"] for x in d["jobs"]] == [loki], f"host loki: {d}")
expect(*call("GET", "/api/v1/hosts/nowhere", "reader")[:2], 404, "unknown host")

# The audit trail: who did what, with the refusals.
st, d, _ = call("GET", "/api/v1/audit?who=http:op&host=loki", "reader")
expect(st, d, 200, "audit")
check(any(e["command"] == "deploy loki" and e["outcome"] == "ok" for e in d["entries"]), f"audit op: {d}")
check(all(e["who"] == "http:op" for e in d["entries"]), f"audit who filter: {d}")
st, d, _ = call("GET", "/api/v1/audit?since=1h&limit=500", "reader")
who_refused = {(e["who"], e["outcome"].split(":")[0]) for e in d["entries"] if e["outcome"].startswith("refused")}
check(("http:reader", "refused") in who_refused, f"403 audited: {d}")
check(any(e["who"].startswith("http:anonymous@") and "no API token" in e["outcome"] for e in d["entries"]),
      f"401 audited: {d}")
expect(*call("GET", "/api/v1/audit?since=yesterday", "reader")[:2], 400, "audit since bogus")

# Limits: body, headers.
big = "x" * (70 * 1024)
st, d, _ = call("POST", "/api/v1/deploy", "op", raw_body=json.dumps({"design": big}),
                headers={"Content-Type": "application/json"})
expect(st, d, 413, "70 KiB body")
st, d, _ = call("GET", "/api/v1/jobs", "op", headers={"X-Filler": "y" * 10000})
expect(st, d, 431, "10 KB of headers")

# A connection that sends nothing is closed after request_timeout (3s).
s = socket.create_connection(("127.0.0.1", port))
t0 = time.time()
s.settimeout(10)
try:
    closed = s.recv(1) == b""
except (ConnectionResetError, socket.timeout):
    closed = True
check(closed and 2 <= time.time() - t0 < 8, f"idle connection closed after {time.time() - t0:.1f}s")
s.close()

# At most max_connections (40) at once; the next is refused, and once they close all is well.
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
time.sleep(0.3)
extra = socket.create_connection(("127.0.0.1", port))
extra.settimeout(5)
try:
    answer = extra.recv(200)
except (ConnectionResetError, socket.timeout):
    answer = b""
check(answer == b"" or b" 503 " in answer, f"over the connection limit: {answer[:80]!r}")
for c in idle + [extra]:
    c.close()


def healthy():
    try:
        return bot.request("GET", "/api/v1/healthz")[0] == 200
    except OSError:  # the closed ones may not all be noticed yet
        return False


wait_for(healthy, 10, "the API after the connection flood")

# Rate limit: 300 burst, then 429 with Retry-After, audited once.
statuses = []
conn = bot.connection()  # one kept-alive connection: faster than the refill
for _ in range(1000):
    conn.request("GET", "/api/v1/jobs?limit=1", headers={"Authorization": f"Bearer {tokens['adm']}"})
    r = conn.getresponse()
    r.read()
    statuses.append(r.status)
    if r.status == 429:
        check(int(r.getheader("Retry-After", "0")) >= 1, f"Retry-After: {r.getheaders()}")
        break
conn.close()
check(429 in statuses, f"no 429 after {len(statuses)} requests")

# A revoked token is refused at once.
subprocess.run([binary, "token", "revoke", "reader", "--config", config], check=True, capture_output=True)
expect(*call("GET", "/api/v1/jobs", "reader")[:2], 401, "revoked token")

# Dashboard sessions are kept in the store: a login survives a restart of serve (and holds on
# every node of a shared store), a state change without the page's CSRF token is refused, and
# a logout ends it.
status, data, headers = call("POST", "/api/v1/session", body={"token": tokens["op"]})
expect(status, data, 200, "dashboard login")
cookie, csrf = headers["set-cookie"].split(";")[0], data["csrf"]
check(tokens["op"] not in headers["set-cookie"], "the cookie is not the token")
bot.stop()
bot = Serve(j, config, port, ctx)
status, data, _ = call("GET", "/api/v1/session", headers={"Cookie": cookie})
expect(status, data, 200, "the dashboard session after a restart of serve")
check(data["name"] == "op" and data["csrf"] == csrf, f"the same session and CSRF token: {data}")
expect(*call("GET", "/api/v1/jobs?limit=1", headers={"Cookie": cookie})[:2], 200, "a read with the session")
expect(*call("POST", f"/api/v1/jobs/{slow}/retry", headers={"Cookie": cookie})[:2], 403, "no CSRF token")
expect(*call("DELETE", "/api/v1/session", headers={"Cookie": cookie, "X-CSRF-Token": csrf})[:2], 200, "logout")
expect(*call("GET", "/api/v1/session", headers={"Cookie": cookie})[:2], 401, "the session after logout")
expect(*call("GET", "/api/v1/jobs?limit=1", headers={"Cookie": cookie})[:2], 401, "a read after logout")

# Nothing secret in any response: not the design's password, not a token.
for body in seen:
    check(SECRET not in body, f"the secret leaked: {body[:300]}")
    for t in tokens.values():
        check(t not in body, "a token leaked in a response")

# The events are in the store (they survive restarts): one row per id seen.
if pg:
    stored = [int(x) for x in pg.sql(f"SELECT id FROM events WHERE id <= {int(ids[-1])} ORDER BY id", "api").split()]
else:
    con = sqlite3.connect(os.path.join(j.state, "jarvis.db"))
    stored = [r[0] for r in con.execute("SELECT id FROM events WHERE id <= ? ORDER BY id", (ids[-1],))]
    con.close()
check(stored == ids, f"stored events {stored} == streamed {ids}")

bot.stop()
check(bot.proc.returncode == 0, f"serve exit status {bot.proc.returncode}")
# Plain HTTP on a non-loopback address is refused by the config check.
bad = config + ".bad"
with open(config) as f, open(bad, "w") as g:
    text = f.read().replace(f"listen: 127.0.0.1:{port}", "listen: 0.0.0.0:8088")
    if mode == "tls":
        text = "\n".join(l for l in text.splitlines() if "tls_" not in l) + "\n"
    g.write(text)
p = subprocess.run([binary, "check-config", "--config", bad], capture_output=True, text=True)
check(p.returncode == 2 and "not loopback" in p.stderr, f"plain non-loopback: {p.returncode} {p.stderr}")
if pg:
    pg.cleanup()
j.cleanup()
print("ok")
