"""Event hooks, durable: a receiver that fails the first deliveries and is down across a
`kill -9` of serve; every event still arrives, each signature verifies, none is lost. A
command hook gets the event on stdin; a hook whose receiver never answers ends as a dead
letter, listed by the API and counted in /metrics. Run on SQLite and (argument "postgres") on a
real PostgreSQL store, where the queue, the cursor and the dead letters live in the database."""
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
from http_support import Serve, add_token, setup_bot  # noqa: E402
from irc_support import free_port  # noqa: E402
from jarvis_test import Jarvis, check, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
store = sys.argv[4] if len(sys.argv) > 4 else "sqlite"
pg = None
if store == "postgres":
    from pg_support import Postgres  # noqa: E402
    pg = Postgres()
j = Jarvis(binary, source, build)
secret = "hook-secret-0b5e7c"
with open(f"{j.tmp}/hook-secret", "w") as f:
    f.write(secret + "\n")
cmd_out = f"{j.tmp}/command-hook.out"
with open(f"{j.tmp}/record.sh", "w") as f:
    f.write(f"#!/bin/sh\n{{ cat; echo; }} >> {cmd_out}\n")
os.chmod(f"{j.tmp}/record.sh", stat.S_IRWXU)
rport, dead_port = free_port(), free_port()
hooks = f"""hooks:
  - name: receiver
    url: http://127.0.0.1:{rport}/hook
    allow_http: true
    secret_file: {j.tmp}/hook-secret
    events: [job_started, stage_succeeded, job_ready]
    backoff: 200ms
    backoff_max: 1s
    max_attempts: 100
  - name: recorder
    command: [{j.tmp}/record.sh]
    events: [job_ready]
    hosts: ["lo*"]
  - name: nowhere
    url: http://127.0.0.1:{dead_port}/
    allow_http: true
    secret_file: {j.tmp}/hook-secret
    events: [job_ready]
    max_attempts: 2
    backoff: 100ms
"""
config, port, ctx = setup_bot(j, tls=False, designs={"loki": "sleep: 1.5\n"})
with open(config, "a") as f:
    f.write(hooks)
    if pg:
        pg.create_database("hooks")
        url_file = pg.write_url_file(os.path.join(j.tmp, "pg.url"), "hooks")
        # The shortest lease: the restarted serve adopts the killed one's job soon after.
        f.write(f"store: {{kind: postgres, url_file: {url_file}}}\nnode: {{name: n1, lease: 2s}}\n")
op = add_token(j, config, "op", "operate")

received = []  # (event id from the header, body id, signature ok)
lock = threading.Lock()
failures_left = [3]


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with lock:
            if failures_left[0] > 0:
                failures_left[0] -= 1
                self.send_response(500)
                self.end_headers()
                return
            want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(want, self.headers.get("X-Jarvis-Signature", ""))
            data = json.loads(body)
            received.append((int(self.headers["X-Jarvis-Event-Id"]), data["id"], ok, data["kind"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def start_receiver():
    srv = ThreadingHTTPServer(("127.0.0.1", rport), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


receiver = start_receiver()
bot = Serve(j, config, port, ctx)
st, d, _ = bot.request("POST", "/api/v1/deploy", op, {"design": "loki"})
check(st == 202, f"deploy: {st} {d}")
job = d["job"]["id"]
# The first deliveries fail (500) and are retried; once stage 1 is delivered the receiver goes
# down, and serve is killed in the middle of stage 2.
wait_for(lambda: any(k == "stage_succeeded" for *_, k in received), 20, "stage 1's event delivered")
receiver.shutdown()
receiver.server_close()
check(failures_left[0] == 0, "the first three deliveries were refused")
time.sleep(0.5)
bot.proc.send_signal(signal.SIGKILL)
bot.proc.wait()
bot = Serve(j, config, port, ctx)  # resumes the job; deliveries queued before the kill wait
time.sleep(1.5)
receiver = start_receiver()


def job_state():
    return bot.request("GET", f"/api/v1/jobs/{job}", op)[1]["state"]


wait_for(lambda: job_state() == "ready", 40, "the job to finish after the restart")
events_sql = "SELECT id FROM events WHERE kind IN ('job_started', 'stage_succeeded', 'job_ready') AND job_id = "
if pg:
    expected = {int(x) for x in pg.sql(events_sql + str(int(job)), "hooks").split()}
else:
    con = sqlite3.connect(os.path.join(j.state, "jarvis.db"))
    expected = {r[0] for r in con.execute(events_sql + "?", (job,))}
    con.close()
check(len(expected) >= 5, f"events stored: {expected}")
wait_for(lambda: expected <= {r[0] for r in received}, 30, f"every event delivered (want {sorted(expected)})")
check(all(ok for _, _, ok, _ in received), f"a signature did not verify: {received}")
check(all(h == b for h, b, _, _ in received), f"X-Jarvis-Event-Id differs from the body's id: {received}")
check({r[0] for r in received} == expected, f"only the filtered events: {received} vs {expected}")

# The command hook: the job_ready event on stdin.
wait_for(lambda: os.path.exists(cmd_out) and '"kind":"job_ready"' in open(cmd_out).read(), 20, "the command hook")
lines = [json.loads(line) for line in open(cmd_out).read().split("\n") if line.strip()]
check({(e["kind"], e["host"], e["job"]) for e in lines} == {("job_ready", "loki", job)}, f"command hook got: {lines}")

# The hook nobody answers: a dead letter after 2 attempts, in the API and in /metrics.
def dead():
    st, d, _ = bot.request("GET", "/api/v1/hooks/dead", op)
    return st == 200 and [x for x in d["dead"] if x["hook"] == "nowhere"]


letters = wait_for(dead, 30, "the dead letter")
check(letters[0]["attempts"] == 2 and letters[0]["event_kind"] == "job_ready" and letters[0]["last_error"],
      f"dead letter: {letters}")
st, text, _ = bot.request("GET", "/metrics")
check('jarvis_hook_dead_letters{hook="nowhere"} 1' in text.splitlines(), f"metrics: {text}")
check('jarvis_hook_dead_letters{hook="receiver"} 0' in text.splitlines(), f"metrics: {text}")
check(secret not in text and all(secret not in json.dumps(x) for x in letters), "the hook secret leaked")
if pg:
    rows = pg.sql("SELECT hook || ':' || state FROM hook_deliveries ORDER BY id", "hooks").split()
    check("nowhere:dead" in rows and all(r.endswith(":delivered") for r in rows if not r.startswith("nowhere")),
          f"the queue in PostgreSQL: {rows}")
bot.stop()
receiver.shutdown()
if pg:
    pg.cleanup()
j.cleanup()
print("ok")
