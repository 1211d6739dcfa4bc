#!/usr/bin/env python3
"""The job store on PostgreSQL against SQLite, in the same run, on the same machine:
  - one store call's round trip (a read, a committed write), as the engine makes it on its loop
  - the engine's per-stage overhead (jarvis_bench overhead) and the 1000-job load (jarvis_bench
    load) on each store
  - jobs/s with one, two and three `jarvis serve` nodes on one PostgreSQL (300 jobs of three
    no-op stages, sent round-robin to the nodes' consoles), against one node on SQLite
PostgreSQL runs with its defaults (fsync and synchronous_commit on): every commit waits for the
WAL flush, as in production; SQLite is the bot's default (WAL, synchronous=NORMAL).
Usage: bench/postgres.py JARVIS JARVIS_BENCH SOURCE_DIR [load_jobs (1000)]"""
import os
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
from nodes_support import Cluster  # noqa: E402
from pg_support import Postgres  # noqa: E402

jarvis, bench, source = sys.argv[1:4]
load_jobs = sys.argv[4] if len(sys.argv) > 4 else "1000"
print(f"machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}")
pg = Postgres(durable=True)
try:
    def run(mode, jobs, db=None):
        env = dict(os.environ)
        if db:
            pg.create_database(db)
            env["JARVIS_BENCH_PG_URL"] = pg.url(db)
        p = subprocess.run([bench, mode, source, str(jobs)], capture_output=True, text=True, env=env, timeout=1800)
        sys.stdout.write(("[postgres] " if db else "[sqlite]   ") + p.stdout.replace("\n", "\n           ").rstrip() + "\n")
        if p.returncode != 0:
            sys.stdout.write(p.stderr)
    run("roundtrip", 2000)
    run("roundtrip", 2000, "rt")
    run("overhead", 100)
    run("overhead", 100, "overhead")
    run("load", load_jobs)
    run("load", load_jobs, "load")
finally:
    pg.cleanup()


def nodes_rate(n, jobs=300):
    work = tempfile.mkdtemp(prefix="jarvis-bench-nodes-")
    c = Cluster(jarvis, work, nodes=n, stages=3, max_running=32, lease="10s", delay="0")
    try:
        hosts = [f"n{i:03d}" for i in range(jobs)]
        for h in hosts:
            c.design(h)
        for i in range(1, n + 1):
            c.start(i)
        time.sleep(1.5)
        t0 = time.time()
        for k, h in enumerate(hosts):
            c.say(k % n + 1, f"deploy {h}")
        c.wait_ready(jobs, 600)
        took = time.time() - t0
        return jobs / took, took
    finally:
        c.cleanup()


def sqlite_rate(jobs=300):
    """The same 300 jobs through one serve on SQLite, the baseline."""
    work = tempfile.mkdtemp(prefix="jarvis-bench-sqlite-")
    c = Cluster(jarvis, work, nodes=1, stages=3, max_running=32, delay="0")
    c.pg.cleanup()
    with open(c.configs[0]) as f:
        text = f.read()
    with open(c.configs[0], "w") as f:
        f.write("\n".join(l for l in text.splitlines() if not l.startswith(("store:", "node:"))) + "\n")
    import sqlite3
    hosts = [f"n{i:03d}" for i in range(jobs)]
    for h in hosts:
        c.design(h)
    c.start(1)
    time.sleep(1.5)
    t0 = time.time()
    for h in hosts:
        c.say(1, f"deploy {h}")
    db = f"{work}/node-1/jarvis.db"

    def ready():
        try:
            con = sqlite3.connect(db, timeout=5)
            n = con.execute("SELECT count(*) FROM jobs WHERE state = 'ready'").fetchone()[0]
            con.close()
            return n
        except sqlite3.Error:
            return 0
    while ready() < jobs:
        time.sleep(0.05)
    took = time.time() - t0
    c.stop_all()
    return jobs / took, took


rate, took = sqlite_rate()
print(f"nodes: 1 node on SQLite (baseline): 300 jobs x 3 no-op stages in {took:.1f} s = {rate:.1f} jobs/s")
base = rate
for n in (1, 2, 3):
    rate, took = nodes_rate(n)
    print(f"nodes: {n} node(s) on PostgreSQL: 300 jobs in {took:.1f} s = {rate:.1f} jobs/s ({rate / base:.2f}x the SQLite node)")
