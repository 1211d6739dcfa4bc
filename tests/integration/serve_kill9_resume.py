"""kill -9 `jarvis serve` in the middle of a stage, start it again, and see the job complete
with every stage run (the interrupted one again, at least once), driven through the console
front on stdin; status from a separate CLI process all along."""
import os
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
workers = os.path.join(j.tmp, "workers")
pipelines = os.path.join(j.tmp, "pipelines")
designs = os.path.join(j.tmp, "designs")
trace = os.path.join(j.tmp, "trace")
for d in (f"{workers}/step", pipelines, designs):
    os.makedirs(d)
# Each stage records that it ran, then takes a second: time enough to be killed mid-stage.
with open(f"{workers}/step/slow", "w") as f:
    f.write(f"#!/bin/sh\ncat >/dev/null\necho \"$JARVIS_STAGE $$\" >> {trace}\nsleep 1\n")
os.chmod(f"{workers}/step/slow", stat.S_IRWXU)
with open(f"{pipelines}/five.yaml", "w") as f:
    f.write("name: five\nmatch: {provider: test}\ntasks: [step:slow, step:slow, step:slow, "
            "step:slow, step:slow]\n")
with open(f"{designs}/kt.yaml", "w") as f:
    f.write("instance:\n  hostname: kt\n  provider: test\nkeep: '007'\n")
config = os.path.join(j.tmp, "jarvis.yaml")
with open(config, "w") as f:
    f.write(f"state_dir: {j.state}\npipelines_dir: {pipelines}\ndesigns_dir: {designs}\n"
            f"workers:\n  path: [{workers}]\n")
j.workers_path, j.pipelines_dir = workers, pipelines


def serve():
    return subprocess.Popen([binary, "serve", "--config", config], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trace_lines():
    try:
        with open(trace) as f:
            return [line.split() for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


bot = serve()
bot.stdin.write("deploy kt\n")
bot.stdin.flush()
first = bot.stdout.readline().strip()
check(first == "kt: deploying with five, 5 stages (job 1)", f"deploy reply: {first!r}")
wait_for(lambda: len(trace_lines()) >= 3, 20, "stage 3 to start")
bot.kill()  # SIGKILL: no chance to clean up (at once: stage 3 lasts a second)
bot.wait()
check(j.status("kt").startswith("kt: job 1 stopped at stage 3/5 when its jarvis stopped"), j.status("kt"))
interrupted_worker = int(trace_lines()[2][1])

again = serve()
wait_for(lambda: j.status("kt").startswith("kt: ready"), 30, "the job to finish after restart")
stages = [int(s) for s, _ in trace_lines()]
check(stages == [1, 2, 3, 3, 4, 5], f"stages run: {stages}")
try:
    os.kill(interrupted_worker, 0)
    check(open(f"/proc/{interrupted_worker}/stat").read().split(")")[1].split()[0] == "Z",
          "the worker left by the killed bot must be stopped")
except ProcessLookupError:
    pass
log = j.run("log", "kt", expect=0).stdout
check("resumed by engine-" in log and "at stage 3/5" in log, log)

# A second bot on the same state dir is refused; the first stops cleanly on SIGTERM.
dup = subprocess.run([binary, "serve", "--config", config], capture_output=True, text=True,
                     stdin=subprocess.DEVNULL, timeout=30)
check(dup.returncode == 2 and "another jarvis serve is running" in dup.stderr, dup.stderr)
# The console still answers (announcements from the resumed job come first on stdout).
again.stdin.write("help status\n")
again.stdin.flush()
seen = []
wait_for(lambda: seen.append(again.stdout.readline().strip()) or seen[-1].startswith("status <host|job>:"),
         10, "the help reply")
check(any(s.startswith("kt: resuming at stage 3/5") for s in seen), seen)
again.send_signal(signal.SIGTERM)
check(again.wait(timeout=20) == 0, "serve exits 0 on SIGTERM")
j.cleanup()
print("ok")
