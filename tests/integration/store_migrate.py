"""jarvis store migrate --from sqlite:PATH: a SQLite store with a finished and a failed job is
copied into a real PostgreSQL; from there status, log and audit show the same, the failed job
resumes at its failed stage with its saved clipboard, new jobs continue the ids, the HTTP API's
tokens come along as their hashes (list shows them, revoke works) and so do the hooks' queue,
dead letters and cursor; a second migrate into the now non-empty store is refused with nothing
copied."""
import hashlib
import os
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, step_setup  # noqa: E402
from pg_support import PASSWORD, Postgres  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
pg = Postgres()
runs = os.path.join(j.tmp, "runs")
fail_flag = os.path.join(j.tmp, "fail-stage-2")
# Each stage notes what it saw on the clipboard and adds its own mark; stage 2 fails while the
# flag file exists.
worker = f"""c=$(cat)
echo "$JARVIS_HOST $JARVIS_STAGE $(printf '%s' "$c" | grep -c mark)" >> {runs}
if [ "$JARVIS_STAGE" = 2 ] && [ -e {fail_flag} ]; then echo "stage 2 refused" >&2; exit 3; fi
printf '%s\\nmark{{$JARVIS_STAGE}}: done\\n' "$c"
"""
config = step_setup(j, worker, "name: three\nmatch: {provider: test}\ntasks: [step:run, step:run, step:run]\n",
                    ["alpha", "beta", "gamma"])
sq = ["--config", config]


def jr(*words):
    """jarvis with only the given config (no --state-dir override: the config says where)."""
    return subprocess.run([binary, *words], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)



check(jr("deploy", "alpha", *sq).returncode == 0, "alpha deploys on SQLite")
open(fail_flag, "w").close()
b = jr("deploy", "beta", *sq)
check(b.returncode == 1 and "stage 2" in b.stdout + b.stderr, b.stdout + b.stderr)
os.remove(fail_flag)

# An API token and the hooks' queue: one delivery pending (a retry due later), one dead letter.
t = jr("token", "add", "ci", "--role", "operate", *sq)
check(t.returncode == 0, t.stdout + t.stderr)
token = t.stdout.strip()
db = sqlite3.connect(f"{j.state}/jarvis.db")
last_event = db.execute("SELECT max(id) FROM events").fetchone()[0]
check(last_event and last_event >= 2, f"the SQLite deploys stored their events ({last_event})")
db.execute("INSERT INTO hook_deliveries (hook, event_id, state, attempts, next_at_ms, last_error) "
           "VALUES ('ops', ?, 'pending', 2, 4102444800000, 'HTTP status 503')", (last_event - 1,))
db.execute("INSERT INTO hook_deliveries (hook, event_id, state, attempts, next_at_ms, last_error) "
           "VALUES ('ops', ?, 'dead', 5, 0, 'connection refused')", (last_event,))
db.execute("INSERT INTO hook_cursor (one, event_id) VALUES (1, ?) ON CONFLICT (one) DO UPDATE "
           "SET event_id = excluded.event_id", (last_event,))
db.commit()
db.close()

pg.create_database("migrated")
url_file = pg.write_url_file(os.path.join(j.tmp, "pg.url"), "migrated")
pg_config = os.path.join(j.tmp, "pg.yaml")
with open(config) as f:
    text = f.read().replace(j.state, j.state + "-pg")
with open(pg_config, "w") as f:
    f.write(text + f"store: {{kind: postgres, url_file: {url_file}}}\n")
pc = ["--config", pg_config]

m = jr("store", "migrate", "--from", f"sqlite:{j.state}/jarvis.db", *pc)
check(m.returncode == 0, f"migrate: {m.stdout}{m.stderr}")
check("copied 2 jobs (0 in flight)" in m.stdout, m.stdout)
check(PASSWORD not in m.stdout + m.stderr, "the password must never be printed")
check(pg.sql("SELECT count(*) FROM jobs", "migrated") == "2", "two job rows in PostgreSQL")
check("1 API tokens, 2 hook deliveries" in m.stdout, m.stdout)
check(token not in m.stdout + m.stderr, "the token itself is never printed again")
check(pg.sql("SELECT hash FROM api_tokens WHERE name = 'ci'", "migrated") == hashlib.sha256(token.encode()).hexdigest(),
      "the token's SHA-256 was copied, so the same token works against the new store")
check(token not in pg.sql("SELECT string_agg(name || role || hash, ',') FROM api_tokens", "migrated"),
      "only the hash is stored")
tl = jr("token", "list", *pc).stdout
check("ci  operate  http:ci" in tl, tl)
check(pg.sql("SELECT string_agg(state || ':' || attempts || ':' || last_error, ',' ORDER BY id) FROM hook_deliveries",
             "migrated") == "pending:2:HTTP status 503,dead:5:connection refused", "hook deliveries copied as they were")
check(pg.sql("SELECT event_id FROM hook_cursor", "migrated") == str(last_event), "the hooks' cursor copied")
check(int(pg.sql("SELECT nextval(pg_get_serial_sequence('hook_deliveries', 'id'))", "migrated")) > 2,
      "new deliveries continue after the copied ids")

st = jr("status", "alpha", *pc).stdout
check(st.startswith("alpha: ready"), st)
st = jr("status", "beta", *pc).stdout
check("failed at stage 2/3" in st and "stage 2 refused" in st, st)
log = jr("log", "beta", *pc).stdout
check("stage 2 refused" in log, log)
audit = jr("audit", *pc).stdout
check("deploy alpha" in audit and "store migrate" in audit, audit)

# The failed job resumes at stage 2 with the clipboard stage 1 saved (one mark on it).
before = open(runs).read().splitlines()
r = jr("retry", "beta", *pc)
check(r.returncode == 0, r.stdout + r.stderr)
after = open(runs).read().splitlines()[len(before):]
check(after == ["beta 2 1", "beta 3 2"], f"resumed stages: {after}")
check(jr("status", "beta", *pc).stdout.startswith("beta: ready"), "beta ready on PostgreSQL")

rv = jr("token", "revoke", "ci", *pc)
check(rv.returncode == 0 and pg.sql("SELECT count(*) FROM api_tokens", "migrated") == "0", rv.stdout + rv.stderr)

g = jr("deploy", "gamma", *pc)
check(g.returncode == 0 and "(job 3)" in g.stdout + g.stderr, g.stdout + g.stderr)

again = jr("store", "migrate", "--from", f"sqlite:{j.state}/jarvis.db", *pc)
check(again.returncode == 1 and "already holds 3 jobs" in again.stderr and "nothing was copied" in again.stderr,
      again.stderr)
bad = jr("store", "migrate", "--from", f"{j.state}/jarvis.db", *pc)
check(bad.returncode == 2 and "sqlite:PATH" in bad.stderr, bad.stderr)
nopg = jr("store", "migrate", "--from", f"sqlite:{j.state}/jarvis.db", *sq)
check(nopg.returncode == 2 and "kind: postgres" in nopg.stderr, nopg.stderr)

pg.cleanup()
j.cleanup()
print("ok")
