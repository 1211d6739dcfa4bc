"""What jarvis adds to the seed's whole redeploy on Linode, beyond its workers' own run time.

The world is tests/integration/linode_support.py's: the Linode API emulator (its new node a
real sshd on 127.0.0.2) and the real servers of the host stages (named, Alertmanager, slapd,
a keys repository over SSH, ansible-playbook). One warm-up redeploy, then N rounds of:

  baseline  the 19 workers of pipelines/redeploy-linode.yaml run by hand, one after the other,
            each with the clipboard the previous one printed and the environment jarvis would
            give it (no engine, no store, no chat)
  jarvis    `deploy loki` to `jarvis serve` (console front), until "loki: ready"

Reported, medians over the rounds: the baseline's time, jarvis's (the job's start to end in
its store records), the difference and its share of jarvis's total; and, from the job's stage
records, its total minus the sum of its stage runs (the time between stages, which is all the
store can see: a stage record spans the spawn, the worker and the commit of its result).

Usage: bench/linode_redeploy.py JARVIS_BINARY SOURCE_DIR BUILD_DIR [rounds (3)]"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

binary, source, build = sys.argv[1:4]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
sys.path.insert(0, os.path.join(source, "tests", "integration"))
sys.path.insert(0, os.path.join(source, "workers", "lib"))
import jarvis_worker as jw  # noqa: E402
from linode_support import LinodeWorld, job_figures, stage_times  # noqa: E402

work = tempfile.mkdtemp(prefix="jarvis-bench-linode-")
state = os.path.join(work, "state")
world = LinodeWorld(work, source, build)
cfg = world.config(state)
tasks = []
with open(os.path.join(source, "pipelines", "redeploy-linode.yaml")) as f:
    for line in f:
        m = re.match(r"\s*- (?:task: )?([a-z0-9_]+:[a-z0-9_]+)", line)
        if m:
            tasks.append(m[1])
assert len(tasks) == 19, tasks
env_base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "JARVIS_HOST": "loki",
            "JARVIS_STATE_DIR": state, "JARVIS_STAGES": "19", "JARVIS_ATTEMPT": "1",
            **{k: str(v) for k, v in world.env().items()}}


def by_hand(n):
    with open(os.path.join(world.designs, "loki.yaml")) as f:
        clipboard = f.read()
    start = time.perf_counter()
    per = []
    for i, task in enumerate(tasks, 1):
        t = time.perf_counter()
        module, name = task.split(":")
        env = {**env_base, "JARVIS_JOB": f"hand{n}", "JARVIS_TASK": task, "JARVIS_STAGE": str(i)}
        p = subprocess.run([os.path.join(source, "workers", module, name), name], input=clipboard,
                           env=env, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            sys.exit(f"baseline: {task} failed: {p.stderr[-2000:]}")
        if p.stdout.strip():
            jw.load(p.stdout)            # as jarvis checks it
            clipboard = p.stdout
        per.append((time.perf_counter() - t) * 1000)
    return time.perf_counter() - start, per


bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
lines = []
cond = threading.Condition()


def read():
    for line in bot.stdout:
        with cond:
            lines.append(line.rstrip("\n"))
            cond.notify_all()


threading.Thread(target=read, daemon=True).start()
jobs = 0


def with_jarvis():
    global jobs
    jobs += 1
    bot.stdin.write("deploy loki\n")
    bot.stdin.flush()
    end = time.time() + 300
    with cond:
        while not any(f"(job {jobs}" in l and ("loki: ready" in l or "loki: failed" in l) for l in lines):
            if time.time() > end:
                sys.exit("jarvis: the job did not end\n" + "\n".join(lines[-20:]))
            cond.wait(1)
        if not any(l.startswith(f"loki: ready (job {jobs},") for l in lines):
            sys.exit("jarvis: the job failed\n" + "\n".join(lines[-20:]))
    time.sleep(0.3)   # the store's last write is committed before the ready line; be safe
    return job_figures(state, jobs)


try:
    print(f"machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}")
    with_jarvis()                                   # warm-up: the old node becomes a jarvis one
    base, total, gaps = [], [], []
    per_base, per_jarvis = [[] for _ in tasks], [[] for _ in tasks]
    for n in range(1, rounds + 1):
        b, per = by_hand(n)
        base.append(b * 1000)
        t, w, _ = with_jarvis()
        for i, ms in enumerate(per):
            per_base[i].append(ms)
        for i, (_, ms) in enumerate(stage_times(state, jobs)):
            per_jarvis[i].append(ms)
        total.append(t)
        gaps.append(t - w)
        print(f"round {n}: baseline {base[-1]:.0f} ms, jarvis {t} ms (stage records: {w} ms in stages, "
              f"{t - w} ms between them)")
    print("per stage, median ms (by hand / in jarvis's stage record / difference):")
    for i, task in enumerate(tasks):
        hb, hj = statistics.median(per_base[i]), statistics.median(per_jarvis[i])
        print(f"  {i + 1:2}/19 {task:28} {hb:7.0f} {hj:7.0f} {hj - hb:+6.0f}   min {min(per_base[i]):6.0f} {min(per_jarvis[i]):6.0f}")
    diffs = [statistics.median(per_jarvis[i]) - statistics.median(per_base[i]) for i in range(len(tasks))]
    print(f"sum of the per-stage medians: by hand {sum(statistics.median(x) for x in per_base):.0f} ms, "
          f"in jarvis {sum(statistics.median(x) for x in per_jarvis):.0f} ms, difference {sum(diffs):+.0f} ms")
    lo_b, lo_j = sum(min(x) for x in per_base), sum(min(x) for x in per_jarvis)
    print(f"sum of the per-stage minimums (the least each stage took, the least noisy): by hand "
          f"{lo_b:.0f} ms, in jarvis {lo_j:.0f} ms, difference {lo_j - lo_b:+.0f} ms "
          f"({100 * (lo_j - lo_b) / lo_j:.1f}%)")
    b, t, g = statistics.median(base), statistics.median(total), statistics.median(gaps)
    print(f"median of {rounds}: baseline (19 workers by hand) {b:.0f} ms; jarvis {t:.0f} ms; "
          f"jarvis adds {t - b:.0f} ms = {100 * (t - b) / t:.1f}% of its total "
          f"(ratio jarvis/baseline {t / b:.3f}); between stages {g:.0f} ms")
finally:
    bot.stdin.close()
    bot.terminate()
    bot.wait(timeout=30)
    world.cleanup(True)
    import shutil
    shutil.rmtree(work, ignore_errors=True)
