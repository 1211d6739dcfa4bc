"""Fault injection on the real binary: `jarvis serve` whose state dir fills up, is locked by
another process, turns read-only, or loses its database, must stay honest: nothing
acknowledged that was not stored, deploys refused with the reason, and everything resumed
once the store can be written again.

usage: store_faults.py JARVIS SOURCE BUILD {full|lock10|lock60|gone}
The full and read-only cases need root (a small tmpfs as the state dir)."""
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, fail, wait_for  # noqa: E402

binary, source, build, case = sys.argv[1:5]
j = Jarvis(binary, source, build)
workers = os.path.join(j.tmp, "workers")
pipelines = os.path.join(j.tmp, "pipelines")
designs = os.path.join(j.tmp, "designs")
for d in (f"{workers}/big", pipelines, designs, j.state):
    os.makedirs(d)
os.chmod(j.state, 0o700)

# Each stage replaces a 300 KB blob (so every stage stores a new 300 KB clipboard) and adds
# its mark; the marks let the test see that every stage's work is in the final clipboard.
with open(f"{workers}/big/step", "w") as f:
    f.write("""#!/usr/bin/python3
import os, sys, time, yaml
doc = yaml.safe_load(sys.stdin)
time.sleep(float(os.environ.get("STEP_SLEEP", "0.2")))
doc["blob"] = os.urandom(150000).hex()
doc.setdefault("marks", []).append(int(os.environ["JARVIS_STAGE"]))
print(yaml.safe_dump(doc))
""")
os.chmod(f"{workers}/big/step", stat.S_IRWXU)
with open(f"{pipelines}/big.yaml", "w") as f:
    f.write("name: big\nmatch: {provider: test}\ntasks: [big:step, big:step, big:step, big:step, "
            "big:step, big:step]\n")
for n in range(1, 9):
    with open(f"{designs}/b{n}.yaml", "w") as f:
        f.write(f"instance:\n  hostname: b{n}\n  provider: test\n")
config = os.path.join(j.tmp, "jarvis.yaml")
with open(config, "w") as f:
    f.write(f"state_dir: {j.state}\npipelines_dir: {pipelines}\ndesigns_dir: {designs}\n"
            f"workers:\n  path: [{workers}]\n  env_allow: [STEP_SLEEP]\n")
j.workers_path, j.pipelines_dir = workers, pipelines
mounted = False


def mount_tmpfs(size):
    global mounted
    if os.geteuid() != 0:
        print(f"SKIP: the {case} case needs root to mount a small tmpfs as the state dir")
        sys.exit(77)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", j.state], check=True)
    mounted = True


def remount(options):
    subprocess.run(["mount", "-o", f"remount,{options}", j.state], check=True)


class Serve:
    """jarvis serve with the console front; stdout lines collected by a thread."""

    def __init__(self, sleep="0.2"):
        env = dict(os.environ, STEP_SLEEP=sleep)
        self.p = subprocess.Popen([binary, "serve", "--config", config], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []
        self.err = []
        threading.Thread(target=self._read, args=(self.p.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True).start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def say(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def reply_to(self, text, pattern, timeout=20):
        start = len(self.lines)
        self.say(text)
        return wait_for(lambda: next((l for l in self.lines[start:] if re.search(pattern, l)), None),
                        timeout, f"a reply to {text!r} matching {pattern!r}; got {self.lines[start:]}")

    def seen(self, pattern, timeout, what):
        return wait_for(lambda: next((l for l in self.lines if re.search(pattern, l)), None), timeout,
                        f"{what}; stdout: {self.lines[-20:]}; stderr: {self.err[-10:]}")

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.alive():
            self.p.terminate()
            self.p.wait(timeout=30)


def db():
    conn = sqlite3.connect(os.path.join(j.state, "jarvis.db"), timeout=30)
    return conn


def check_jobs_complete(acknowledged):
    """Every acknowledged job exists, is ready, holds every stage's mark, and has exactly one
    successful row per stage."""
    conn = db()
    for job in acknowledged:
        row = conn.execute("SELECT state, host FROM jobs WHERE id = ?", (job,)).fetchone()
        check(row is not None, f"job {job} was acknowledged but is not in the store")
        check(row[0] == "ready", f"job {job} ({row[1]}) ended {row[0]}")
        clip = conn.execute("SELECT clipboard FROM job_documents WHERE job_id = ?", (job,)).fetchone()[0]
        marks = re.search(r"marks:\n((?:- \d+\n)+)", clip)
        check(marks and [int(m) for m in re.findall(r"\d+", marks.group(1))] == [1, 2, 3, 4, 5, 6],
              f"job {job}: the clipboard lacks some stage's work: {marks.group(0) if marks else clip[:200]}")
        oks = conn.execute("SELECT stage, count(*) FROM stages WHERE job_id = ? AND result = 'ok' "
                           "GROUP BY stage", (job,)).fetchall()
        check(oks == [(s, 1) for s in range(6)], f"job {job}: successful stage rows {oks}")
    conn.close()


def deploy(bot, host):
    line = bot.reply_to(f"deploy {host}", rf"^{host}: ")
    m = re.search(r"\(job (\d+)\)$", line)
    return int(m.group(1)) if m and "deploying" in line else None, line


try:
    if case == "full":
        mount_tmpfs("2m")
        bot = Serve()
        acknowledged = []
        for n in range(1, 4):
            job, line = deploy(bot, f"b{n}")
            check(job, f"deploy b{n} before the disk filled: {line}")
            acknowledged.append(job)
        bot.seen(r"^jarvis cannot write its job store: the job store is full \(state dir .*free\)", 60,
                 "the store-full announcement")
        check(bot.alive(), "serve exited when its disk filled: " + "\n".join(bot.err[-5:]))
        job, line = deploy(bot, "b4")
        check(job is None and re.match(r"b4: cannot accept deploys: the job store is full \(state dir "
                                       + re.escape(j.state) + r", .* free\)$", line), line)
        status = j.run("status", "b1").stdout.strip()
        check(status.startswith("b1: "), f"status answers from the store while it is full: {status}")
        reply = bot.reply_to("status b2", r"^(b2: |note: )", 10)
        check(reply, reply)
        # Announced done only when stored: every "done" line names a stage the store has.
        dones = [l for l in bot.lines if " done in " in l]
        time.sleep(1)
        conn = db()
        for l in dones:
            m = re.match(r"(b\d): stage (\d)/6 big:step done in .* \(job (\d+)\)", l)
            check(m, l)
            ok = conn.execute("SELECT count(*) FROM stages WHERE job_id = ? AND stage = ? AND "
                              "result = 'ok'", (int(m.group(3)), int(m.group(2)) - 1)).fetchone()[0]
            check(ok == 1, f"announced but not stored: {l}")
        conn.close()
        remount("size=64m")
        bot.seen(r"^jarvis: the job store can be written again", 30, "the recovery announcement")
        wait_for(lambda: all(j.status(f"b{n}").startswith(f"b{n}: ready") for n in range(1, 4)), 90,
                 "every job to finish once space was freed: " +
                 "; ".join(j.status(f"b{n}") for n in range(1, 4)))
        check_jobs_complete(acknowledged)

        # Restarted on a full disk: a deploy is refused, or acknowledged and then really there.
        bot.stop()
        filler = os.path.join(j.state, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        bot = Serve()
        time.sleep(2)
        check(bot.alive(), "serve exited on a full disk: " + "\n".join(bot.err[-5:]))
        if any("waiting until it can be written" in l for l in bot.err):
            os.remove(filler)  # it could not even open the store: it starts once there is room
            filler = None
        job, line = deploy(bot, "b5")
        check(job is not None or "cannot accept deploys: the job store is full" in line, line)
        if filler:
            os.remove(filler)
        if job is not None:
            wait_for(lambda: j.status("b5").startswith("b5: ready"), 60, "b5 to finish: " + j.status("b5"))
            acknowledged.append(job)
        check_jobs_complete(acknowledged)
        job, line = deploy(bot, "b6")
        check(job, f"deploys are accepted again: {line}")
        wait_for(lambda: j.status("b6").startswith("b6: ready"), 60, "b6 to finish")
        check_jobs_complete(acknowledged + [job])

        # (A read-only remount under a running serve is refused by the kernel while serve
        # holds the database open for writing, so read-only is tried at start.)
        bot.stop()
        # Starting on a read-only state dir names the cause (not "another serve is running").
        remount("ro")
        p = subprocess.run([binary, "serve", "--config", config], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=30)
        check(p.returncode == 2 and "read-only file system" in p.stderr and "another jarvis serve" not in p.stderr,
              f"serve on a read-only state dir: exit {p.returncode}: {p.stderr}")
        remount("rw")

    elif case in ("lock10", "lock60"):
        hold = 10 if case == "lock10" else 60
        bot = Serve(sleep="0.5")
        job, line = deploy(bot, "b1")
        check(job, line)
        time.sleep(0.3)
        conn = sqlite3.connect(os.path.join(j.state, "jarvis.db"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        t0 = time.time()
        bot.seen(r"^jarvis cannot write its job store: the job store is locked by another process", 15,
                 "the locked announcement")
        _, line = deploy(bot, "b2")
        check("cannot accept deploys: the job store is locked by another process" in line, line)
        status = j.run("status", "b1", timeout=30).stdout.strip()
        check(status.startswith("b1: "), f"status while locked: {status}")
        while time.time() - t0 < hold:
            check(bot.alive(), f"serve exited while the store was locked: {bot.err[-5:]}")
            time.sleep(0.5)
        conn.execute("COMMIT")
        conn.close()
        wait_for(lambda: j.status("b1").startswith("b1: ready"), 60, "b1 to finish after the lock")
        check_jobs_complete([job])
        job2, line = deploy(bot, "b2")
        check(job2, f"deploys accepted after the lock: {line}")
        bot.stop()

    elif case == "gone":
        bot = Serve(sleep="1")
        job, line = deploy(bot, "b1")
        check(job, line)
        time.sleep(0.3)
        os.remove(os.path.join(j.state, "jarvis.db"))
        bot.seen(r"^jarvis stops: the job store .*jarvis.db was deleted while jarvis was using it", 10,
                 "the store-lost announcement")
        code = bot.p.wait(timeout=20)
        check(code == 1, f"serve must exit 1 when its database is deleted, got {code}")
        # The serve lock is the state dir itself: deleting files cannot let a second one in.
        bot = Serve()
        time.sleep(0.5)
        for name in ("serve.lock",):
            try:
                os.remove(os.path.join(j.state, name))
            except FileNotFoundError:
                pass
        dup = subprocess.run([binary, "serve", "--config", config], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=30)
        check(dup.returncode == 2 and "another jarvis serve is running" in dup.stderr, dup.stderr)
        bot.stop()
    else:
        fail(f"unknown case {case}")
finally:
    if mounted:
        subprocess.run(["umount", "-l", j.state])
j.cleanup()
print("ok")
