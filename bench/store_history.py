"""`jobs`, `status` and `log` from the CLI against a store with 100,000 jobs in its history,
each against the same commands on a 10-job store in the same run (the baseline), and once
more with the finished-jobs index dropped (what the history cost before it).

usage: bench/store_history.py JARVIS [JOBS (100000)] [RUNS (21)]"""
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1]
big = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 21
tmp = tempfile.mkdtemp(prefix="jarvis-bench-")
TASKS = "".join(f"m:t{i}\t600000\t0\t0\n" for i in range(19))


def make_store(name, jobs):
    state = os.path.join(tmp, name)
    subprocess.run([binary, "jobs", "--state-dir", state], check=True, capture_output=True)
    conn = sqlite3.connect(os.path.join(state, "jarvis.db"))
    now = int(time.time() * 1000)
    rows, docs, stages, logs = [], [], [], []
    for i in range(1, jobs + 1):
        t0 = now - (jobs - i) * 60000
        state_ = ("ready", "failed", "cancelled")[i % 3]
        rows.append((i, f"h{i % 5000}", f"h{i % 5000}.yaml", "redeploy", TASKS, state_, 18, 1, "alice",
                     "irc:#ops", t0, t0, t0 + 30000, t0 + 29000, 0, "" if state_ == "ready" else "boom",
                     "", 0, "", 0, 19, ""))
        docs.append((i, "instance: {hostname: h}\n", "instance: {hostname: h}\n"))
        for s in range(3):
            stages.append((i, s, 1, f"m:t{s}", t0, t0 + 100, "ok", ""))
            logs.append((i, t0, s + 1, f"stage {s + 1} says hello"))
    conn.executemany("INSERT INTO jobs (id, host, design_ref, pipeline, tasks, state, stage, attempt, "
                     "requested_by, origin, created_ms, started_ms, ended_ms, stage_started_ms, "
                     "retry_at_ms, reason, owner, cancel_requested, cancelled_by, worker_pid, stage_count, "
                     "group_name) VALUES (" + ",".join("?" * 22) + ")", rows)
    conn.executemany("INSERT INTO job_documents VALUES (?, ?, ?)", docs)
    conn.executemany("INSERT INTO stages (job_id, stage, attempt, task, started_ms, ended_ms, result, "
                     "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", stages)
    conn.executemany("INSERT INTO log (job_id, at_ms, stage, line) VALUES (?, ?, ?, ?)", logs)
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return state


def median_ms(state, *words):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([binary, *words, "--state-dir", state], check=True, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


small = make_store("small", 10)
large = make_store("large", big)
commands = [("jobs",), ("status", "h7"), ("log", "h7"), ("status",)]
print(f"CLI against {big} jobs vs 10 jobs (median of {runs} runs, ms):")
for words in commands:
    a, b = median_ms(small, *words), median_ms(large, *words)
    print(f"  jarvis {' '.join(words):<10} 10 jobs {a:6.1f}   {big} jobs {b:6.1f}   ratio {b / a:4.2f}")
conn = sqlite3.connect(os.path.join(large, "jarvis.db"))
conn.execute("DROP INDEX jobs_finished_by_end")
conn.commit()
conn.close()
# The CLI recreates the index on open (CREATE INDEX IF NOT EXISTS): time the query as the
# unindexed store ran it, through sqlite3 in this process, against the same with the index.
conn = sqlite3.connect(os.path.join(large, "jarvis.db"))
q = ("SELECT id FROM jobs WHERE state IN ('ready', 'failed', 'cancelled') ORDER BY ended_ms DESC, "
     "id DESC LIMIT 5")


def query_ms():
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        conn.execute(q).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


without = query_ms()
conn.execute("CREATE INDEX jobs_finished_by_end ON jobs(ended_ms DESC, id DESC) "
             "WHERE state IN ('ready', 'failed', 'cancelled')")
q = q.replace("FROM jobs", "FROM jobs INDEXED BY jobs_finished_by_end")
with_index = query_ms()
conn.close()
print(f"  the last-finished query on {big} jobs: {without:.2f} ms unindexed, {with_index:.3f} ms indexed")
shutil.rmtree(tmp)
