"""kill -9 soak: `jarvis serve` with 30 jobs in flight is killed at random moments 100 times
and started again each time. Every worker run is recorded. Afterwards: no job lost, no stage
committed twice, no two workers of one stage running at once, no worker that ran with an
empty or short stdin. Prints the counts.

usage: serve_kill9_soak.py JARVIS SOURCE BUILD [KILLS]"""
import os
import random
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
kills = int(sys.argv[4]) if len(sys.argv) > 4 else 100
jobs_wanted, stages = 30, 4
j = Jarvis(binary, source, build)
workers = os.path.join(j.tmp, "workers")
pipelines = os.path.join(j.tmp, "pipelines")
designs = os.path.join(j.tmp, "designs")
trace = os.path.join(j.tmp, "trace")
for d in (f"{workers}/soak", pipelines, designs):
    os.makedirs(d)

# The worker records its start (with its stdin's size and whether another live process holds
# this job's stage), works a little, and adds its mark. A worker killed by an adopter leaves
# no "end" line.
with open(f"{workers}/soak/step", "w") as f:
    f.write(f"""#!/usr/bin/python3
import os, random, sys, time
data = sys.stdin.read()
job, stage, me = os.environ["JARVIS_JOB"], os.environ["JARVIS_STAGE"], os.getpid()
want = (b"JARVIS_JOB=" + job.encode(), b"JARVIS_STAGE=" + stage.encode(),
        b"JARVIS_STATE_DIR=" + os.environ["JARVIS_STATE_DIR"].encode())
others = []
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == me:
        continue
    try:
        env = open(f"/proc/{{pid}}/environ", "rb").read().split(b"\\0")
        state = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        continue
    if state != "Z" and all(w in env for w in want):
        others.append(pid)
expected = data.count("\\n")
with open("{trace}", "a") as t:
    t.write(f"start {{job}} {{stage}} {{me}} {{len(data)}} {{','.join(others) or '-'}}\\n")
time.sleep(random.uniform(0.05, 0.3))
sys.stdout.write(data.rstrip("\\n") + f"\\nmark_{{stage}}: {{job}}\\n")
sys.stdout.flush()
with open("{trace}", "a") as t:
    t.write(f"end {{job}} {{stage}} {{me}}\\n")
""")
os.chmod(f"{workers}/soak/step", stat.S_IRWXU)
with open(f"{pipelines}/soak.yaml", "w") as f:
    f.write("name: soak\nmatch: {provider: test}\ntasks: [" + ", ".join(["soak:step"] * stages) + "]\n")
for n in range(1, jobs_wanted + 1):
    with open(f"{designs}/s{n}.yaml", "w") as f:
        f.write(f"instance:\n  hostname: s{n}\n  provider: test\n")
config = os.path.join(j.tmp, "jarvis.yaml")
with open(config, "w") as f:
    f.write(f"state_dir: {j.state}\npipelines_dir: {pipelines}\ndesigns_dir: {designs}\n"
            f"workers:\n  path: [{workers}]\n")
j.workers_path, j.pipelines_dir = workers, pipelines


def serve():
    return subprocess.Popen([binary, "serve", "--config", config], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


bot = serve()
replies = []
threading.Thread(target=lambda: [replies.append(l.strip()) for l in bot.stdout], daemon=True).start()
for n in range(1, jobs_wanted + 1):
    bot.stdin.write(f"deploy s{n}\n")
bot.stdin.flush()
acked = wait_for(lambda: (lambda a: a if len(a) == jobs_wanted else None)(
    [int(m.group(1)) for m in (re.search(r"^s\d+: deploying .*\(job (\d+)\)$", l) for l in replies) if m]),
    30, "30 deploys acknowledged")

rng = random.Random(int(os.environ.get("SOAK_SEED", "9")))
started = time.time()
for k in range(kills):
    time.sleep(rng.uniform(0.05, 0.6))
    bot.kill()
    bot.wait()
    bot = serve()
kill_seconds = time.time() - started
bot.stdin.close()


def unfinished():
    conn = sqlite3.connect(os.path.join(j.state, "jarvis.db"), timeout=30)
    rows = conn.execute("SELECT id, state FROM jobs WHERE state != 'ready'").fetchall()
    conn.close()
    return rows


wait_for(lambda: not unfinished(), 180, "every job to finish after the last kill")
bot.terminate()
bot.wait(timeout=30)

conn = sqlite3.connect(os.path.join(j.state, "jarvis.db"))
ids = [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY id")]
check(sorted(acked) == ids, f"acknowledged {sorted(acked)} but the store has {ids}")
twice = conn.execute("SELECT job_id, stage, count(*) FROM stages WHERE result = 'ok' GROUP BY job_id, "
                     "stage HAVING count(*) > 1").fetchall()
interrupted = conn.execute("SELECT count(*) FROM stages WHERE result = 'interrupted'").fetchone()[0]
for job in ids:
    clip = conn.execute("SELECT clipboard FROM job_documents WHERE job_id = ?", (job,)).fetchone()[0]
    marks = re.findall(r"^mark_(\d+): (\d+)$", clip, re.M)
    check(marks == [(str(s), str(job)) for s in range(1, stages + 1)],
          f"job {job}: the clipboard holds {marks}, not one mark per stage")
conn.close()

runs = [l.split() for l in open(trace).read().splitlines()]
starts = [r for r in runs if r[0] == "start"]
ends = {(r[1], r[2], r[3]) for r in runs if r[0] == "end"}
overlaps = [r for r in starts if r[5] != "-"]
short_stdin = [r for r in starts if int(r[4]) == 0]
killed = [r for r in starts if (r[1], r[2], r[3]) not in ends]
print(f"soak: {kills} kills in {kill_seconds:.0f}s with {jobs_wanted} jobs x {stages} stages; "
      f"{len(starts)} worker runs ({len(starts) - jobs_wanted * stages} reruns, {len(killed)} killed "
      f"mid-run, {interrupted} stage rows interrupted); jobs lost 0; stages committed twice "
      f"{len(twice)}; overlapping workers {len(overlaps)}; empty stdin {len(short_stdin)}")
check(not twice, f"stages committed twice: {twice}")
check(not overlaps, f"two workers of one stage ran at once: {overlaps[:5]}")
check(not short_stdin, f"workers ran with an empty stdin: {short_stdin[:5]}")
j.cleanup()
print("ok")
