"""A `jarvis run` from a shell beside a running serve: its progress and its end are announced
by serve like any job's (here on the console front; chat fronts get the same events), and
the run is in the audit trail under the shell user's name."""
import os
import re
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, step_setup, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
config = step_setup(j, "cat >/dev/null\nsleep 0.7\n[ \"$JARVIS_HOST\" = bad ] && [ \"$JARVIS_STAGE\" = 2 ] && "
                       "{ echo 'no route to the switch' >&2; exit 4; }\nexit 0\n",
                    "name: three\nmatch: {provider: test}\ntasks: [step:run, step:run, step:run]\n", ["cli1", "bad"])

bot = subprocess.Popen([binary, "serve", "--config", config], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
lines = []
threading.Thread(target=lambda: [lines.append(l.rstrip("\n")) for l in bot.stdout], daemon=True).start()
bot.stdin.write("jobs\n")
bot.stdin.flush()
wait_for(lambda: "no jobs in flight" in lines, 10, "serve to answer")

run = subprocess.run([binary, "run", "cli1", "--config", config], capture_output=True, text=True, timeout=60)
check(run.returncode == 0, run.stdout + run.stderr)
wait_for(lambda: any(l.startswith("cli1: ready (job 1, 3 stages in") for l in lines), 10,
         f"serve to announce the CLI job's end: {lines}")
check(any(re.match(r"cli1: starting \(job 1, started by .+@.+\)", l) for l in lines), lines)
check(any(l.startswith("cli1: stage 2/3 step:run started (job 1)") for l in lines), lines)

failed = subprocess.run([binary, "run", "bad", "--config", config], capture_output=True, text=True, timeout=60)
check(failed.returncode == 1, failed.stdout + failed.stderr)
wait_for(lambda: any(l.startswith("bad: failed at stage 2/3 step:run: exit code 4: no route to the switch (job 2)")
                     for l in lines), 10, f"serve to announce the CLI job's failure: {lines}")
bot.terminate()
bot.wait(timeout=20)
j.cleanup()
print("ok")
