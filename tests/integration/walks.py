"""Walks: a pipeline with `schedule: {every: 2s}` over three ready hosts, run by serve. One
host starts failing: one announcement on the change, none while it stays failing, one on
recovery. A host being deployed is not walked. After serve is down for 10 intervals, one
catch-up round, not ten. `walks` lists them with each host's last result and the next run."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, step_setup, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
work = j.tmp
walked = f"{work}/walked"
config = step_setup(j, f"cat >/dev/null\nwhile [ -e {work}/hold-$JARVIS_HOST ] && [ \"$JARVIS_STAGE\" = 2 ]; do sleep 0.1; done\n",
                    "name: three\nmatch: {provider: test}\ntasks: [step:run, step:run, step:run]\n",
                    ["web1", "web2", "web3"])
os.makedirs(f"{work}/workers/probe")
with open(f"{work}/workers/probe/check", "w") as f:
    f.write(f"""#!/bin/sh
cat >/dev/null
echo "$JARVIS_HOST $(date +%s.%N)" >> {walked}
if [ -e {work}/fail-$JARVIS_HOST ]; then echo "port 80 closed" >&2; exit 1; fi
""")
os.chmod(f"{work}/workers/probe/check", 0o755)
with open(f"{work}/pipelines/health.yaml", "w") as f:
    f.write("name: health\nschedule: {every: 2s}\ntargets: all\ntasks: [probe:check]\n")
j.workers_path, j.pipelines_dir = f"{work}/workers", f"{work}/pipelines"
for host in ("web1", "web2", "web3"):
    j.run("run", host, "--config", config, expect=0)
check(not os.path.exists(walked), "a walk ran without serve")
out_path = f"{work}/console.out"


def serve():
    return subprocess.Popen(j.args("serve", "--config", config), stdin=subprocess.PIPE, text=True,
                            stdout=open(out_path, "a"), stderr=open(f"{work}/serve.log", "a"))


def console():
    return open(out_path).read()


def runs(host=None):
    if not os.path.exists(walked):
        return []
    lines = [l.split() for l in open(walked).read().splitlines()]
    return [float(t) for h, t in lines if host is None or h == host]


bot = serve()
wait_for(lambda: len(runs()) >= 6, 20, "two rounds over three hosts")
check("walk health" not in console(), "a passing walk was announced:\n" + console())

# web2 fails: announced once, not again while it stays failing; then once on recovery.
open(f"{work}/fail-web2", "w").close()
wait_for(lambda: "walk health: web2 is failing" in console(), 10, "the failure announced")
line = [l for l in console().splitlines() if "walk health: web2" in l][0]
check(line == "walk health: web2 is failing: probe:check: exit code 1: port 80 closed (was passing)", line)
n = len(runs("web2"))
wait_for(lambda: len(runs("web2")) >= n + 3, 15, "three more rounds while failing")
check(console().count("web2 is failing") == 1, "announced again while still failing:\n" + console())
os.unlink(f"{work}/fail-web2")
wait_for(lambda: "walk health: web2 has recovered" in console(), 10, "the recovery announced")
n = len(runs("web2"))
wait_for(lambda: len(runs("web2")) >= n + 2, 10, "two more rounds")
check(console().count("web2 has recovered") == 1 and console().count("web2 is failing") == 1, console())

# A host being deployed is not walked; the others are.
open(f"{work}/hold-web1", "w").close()
bot.stdin.write("deploy web1\n")
bot.stdin.flush()
wait_for(lambda: "web1: stage 2/3 step:run started" in console(), 10, "web1's deploy at stage 2")
t0 = time.time()
time.sleep(5)
t1 = time.time()
during = [t for t in runs("web1") if t0 < t < t1]
check(not during, f"web1 was walked while it was deployed: {during}")
check(len([t for t in runs("web3") if t0 < t < t1]) >= 2, "the other hosts went on being walked")
os.unlink(f"{work}/hold-web1")
wait_for(lambda: "web1: ready (job 4" in console(), 10, "web1's deploy to end")
n = len(runs("web1"))
wait_for(lambda: len(runs("web1")) > n, 10, "web1 walked again once ready")

# Down for 10 intervals: one catch-up round when serve is back, then the schedule.
bot.send_signal(signal.SIGTERM)
check(bot.wait(timeout=30) == 0, "serve exits 0 on SIGTERM")
before = len(runs())
time.sleep(20)
check(len(runs()) == before, "walks ran while serve was down")
bot = serve()
start = time.time()
wait_for(lambda: len(runs()) >= before + 3, 10, "the catch-up round")
time.sleep(max(0.0, start + 1.5 - time.time()))
check(len(runs()) == before + 3, f"{len(runs()) - before} runs within 1.5s of the restart, not one round of 3")
wait_for(lambda: len(runs()) >= before + 6, 10, "the schedule resumed")

bot.stdin.write("walks\n")
bot.stdin.flush()
wait_for(lambda: "walk health (every 2s, every ready host): 0 failing, last run " in console(), 10, "walks")
line = [l for l in console().splitlines() if l.startswith("walk health (every")][-1]
check("; web1 ok; web2 ok; web3 ok" in line and "next run " in line, line)
bot.send_signal(signal.SIGTERM)
check(bot.wait(timeout=30) == 0, "serve exits 0 on SIGTERM")
j.cleanup()
print("ok")
