"""The dashboard's first render with 10,000 jobs in the history, in Debian's headless
chromium (bench/dashboard_render.mjs, playwright-core from tests/browser), against the same
with 10 jobs in the same run (the baseline).

usage: bench/dashboard_render.py JARVIS SOURCE_DIR [JOBS (10000)]"""
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

binary, source = sys.argv[1], sys.argv[2]
big = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
sys.path.insert(0, os.path.join(source, "tests", "integration"))
from irc_support import free_port  # noqa: E402

TASKS = "".join(f"m:t{i}\t600000\t0\t0\n" for i in range(19))


def make_store(jobs):
    w = tempfile.mkdtemp(prefix="jarvis-bench-dash-")
    state = f"{w}/state"
    subprocess.run([binary, "jobs", "--state-dir", state], check=True, capture_output=True)
    conn = sqlite3.connect(f"{state}/jarvis.db")
    now = int(time.time() * 1000)
    rows, stages = [], []
    for i in range(1, jobs + 1):
        t0 = now - (jobs - i) * 60000
        st = ("ready", "failed", "cancelled")[i % 3]
        rows.append((i, f"h{i % 500}", f"h{i % 500}.yaml", "redeploy", TASKS, st, 18, 1, "alice", "irc:#ops",
                     t0, t0, t0 + 30000, t0 + 29000, 0, "" if st == "ready" else "boom", "", 0, "", 0, 19, ""))
        for s in range(19):
            stages.append((i, s, 1, f"m:t{s}", t0 + s * 1000, t0 + s * 1000 + 900, "ok", ""))
    conn.executemany("INSERT INTO jobs (id, host, design_ref, pipeline, tasks, state, stage, attempt, requested_by, "
                     "origin, created_ms, started_ms, ended_ms, stage_started_ms, retry_at_ms, reason, owner, "
                     "cancel_requested, cancelled_by, worker_pid, stage_count, group_name) VALUES (" +
                     ",".join("?" * 22) + ")", rows)
    conn.executemany("INSERT INTO stages (job_id, stage, attempt, task, started_ms, ended_ms, result, reason) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", stages)
    conn.commit()
    conn.close()
    port = free_port()
    cfg = f"{w}/jarvis.yaml"
    with open(cfg, "w") as f:
        f.write(f"state_dir: {state}\npipelines_dir: {source}/pipelines\nhttp:\n  listen: 127.0.0.1:{port}\n")
    token = subprocess.run([binary, "token", "add", "bench", "--role", "read", "--config", cfg],
                           capture_output=True, text=True, check=True).stdout.strip()
    return cfg, port, token


def render(jobs):
    cfg, port, token = make_store(jobs)
    bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/api/v1/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        env = dict(os.environ, JARVIS_URL=f"http://127.0.0.1:{port}", TOKEN=token,
                   BROWSER_DIR=os.path.join(source, "tests", "browser"))
        out = subprocess.run(["node", os.path.join(source, "bench", "dashboard_render.mjs")], env=env,
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            sys.exit(f"dashboard_render.mjs failed: {out.stderr}")
        return json.loads(out.stdout)
    finally:
        bot.terminate()
        bot.wait(timeout=30)


small = render(10)
large = render(big)
print(f"dashboard first render (navigation to the recent-jobs table), median of {len(small['times'])} loads:")
print(f"  10 jobs in history:    {small['median']} ms (max {small['max']} ms)")
print(f"  {big} jobs in history: {large['median']} ms (max {large['max']} ms)  ratio {large['median'] / max(small['median'], 1):.2f}x")
