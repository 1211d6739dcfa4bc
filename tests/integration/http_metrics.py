"""/metrics of a real `jarvis serve`, scraped by Debian's real Prometheus (with the scrape
token), and PromQL through Prometheus's API returning the job counts the store holds."""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from http_support import Serve, add_token, setup_bot  # noqa: E402
from irc_support import free_port  # noqa: E402
from jarvis_test import Jarvis, check, fail, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
if not shutil.which("prometheus"):
    print("SKIP: Debian's prometheus is not installed (deploy/install-deps)")
    sys.exit(77)
j = Jarvis(binary, source, build)
scrape = os.path.join(j.tmp, "scrape-token")
with open(scrape, "w") as f:
    f.write("scrape-secret-123456\n")
os.chmod(scrape, 0o600)
marker = os.path.join(j.tmp, "failed-once")
config, port, ctx = setup_bot(j, tls=False, http_extra=f"  metrics_token_file: {scrape}\n",
                              designs={"loki": "", "web1": "", "flaky": f"fail_at: 2\nfail_marker: {marker}\n"})
op = add_token(j, config, "op", "operate")
bot = Serve(j, config, port, ctx)

st, d, _ = bot.request("GET", "/metrics")
check(st == 401, f"/metrics without the scrape token: {st}")
st, d, _ = bot.request("GET", "/metrics", op)
check(st == 401, f"/metrics with an API token instead of the scrape token: {st}")

for host in ("loki", "web1", "flaky"):
    st, d, _ = bot.request("POST", "/api/v1/deploy", op, {"design": host})
    check(st == 202, f"deploy {host}: {st} {d}")


def states():
    return sorted(x["state"] for x in bot.request("GET", "/api/v1/jobs", op)[1]["jobs"])


wait_for(lambda: states() == ["failed", "ready", "ready"], 30, "two ready, one failed")
st, text, h = bot.request("GET", "/metrics", "scrape-secret-123456")
check(st == 200 and h["content-type"].startswith("text/plain; version=0.0.4"), f"/metrics: {st} {h}")
for line in ('jarvis_jobs{state="ready"} 2', 'jarvis_jobs{state="failed"} 1',
             'jarvis_stage_failures_total{task="step:run"} 1', 'jarvis_stage_duration_seconds_count{task="step:run"} 7',
             "jarvis_store_writable 1", "# TYPE jarvis_stage_duration_seconds histogram"):
    check(line in text.splitlines(), f"{line!r} not in /metrics:\n{text}")
check("scrape-secret" not in text, "the scrape token in /metrics")

# The real Prometheus scrapes it every second.
pdir = os.path.join(j.tmp, "prometheus")
os.makedirs(pdir)
pport = free_port()
with open(f"{pdir}/prometheus.yml", "w") as f:
    f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: jarvis
    authorization:
      type: Bearer
      credentials_file: {scrape}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
""")
plog = open(f"{pdir}/prometheus.log", "w")
prom = subprocess.Popen(["prometheus", f"--config.file={pdir}/prometheus.yml", f"--storage.tsdb.path={pdir}/data",
                         f"--web.listen-address=127.0.0.1:{pport}"], stdout=plog, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL)


def query(q):
    if prom.poll() is not None:
        fail(f"prometheus exited {prom.returncode}: {open(plog.name).read()[-2000:]}")
    url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
    except OSError:
        return None
    return body["data"]["result"] if body.get("status") == "success" else None


try:
    result = wait_for(lambda: query('sum by (state) (jarvis_jobs{state=~"ready|failed"})'), 40,
                      "Prometheus to have scraped jarvis")
    got = {r["metric"]["state"]: float(r["value"][1]) for r in result}
    check(got == {"ready": 2.0, "failed": 1.0}, f"PromQL job counts: {got}")
    up = query('up{job="jarvis"}')
    check(up and up[0]["value"][1] == "1", f"up: {up}")
    fails = query("sum(jarvis_stage_failures_total)")
    check(fails and float(fails[0]["value"][1]) == 1.0, f"stage failures: {fails}")
finally:
    prom.terminate()
    prom.wait(timeout=20)
    bot.stop()
j.cleanup()
print("ok")
