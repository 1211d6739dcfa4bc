"""The CLI as an operator uses it without a serve: names from designs_dir, a job whose jarvis
was killed (status says so; retry takes it over in the foreground; cancel works), log with
times and -n, designs and pipelines, and every CLI action in the audit trail under the real
user@host."""
import getpass
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, step_setup, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
work = j.tmp
config = step_setup(j, "cat >/dev/null\necho \"stage $JARVIS_STAGE of $JARVIS_HOST\" >&2\n"
                       "[ -e \"$JARVIS_STATE_DIR/slow-$JARVIS_STAGE\" ] && sleep 30\nexit 0\n",
                    "name: three\nmatch: {provider: test}\ntasks:\n  - step:run\n  - {task: step:run, timeout: 45s}\n"
                    "  - step:run\n", ["op1", "op2"])
with open(f"{work}/designs/broken.yaml", "w") as f:
    f.write("instance:\n  hostname: -bad-\n")


def cli(*words, expect=None, timeout=60):
    p = subprocess.run([binary, *words, "--config", config], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    if expect is not None:
        check(p.returncode == expect, f"jarvis {' '.join(words)} exited {p.returncode}, expected {expect}:\n"
                                      f"{p.stdout}\n{p.stderr}")
    return p


# A bare name is read from designs_dir, as chat reads it.
run = cli("deploy", "op1", expect=0)
check("op1: ready (job 1, 3 stages in" in run.stdout, run.stdout)

# designs and pipelines: what can be deployed, and with what.
designs = cli("designs", expect=1).stdout
check("op1: host op1, three (3 stages)" in designs, designs)
check(re.search(r"^broken: cannot be deployed: .*hostname", designs, re.M), designs)
pipes = cli("pipelines", expect=0).stdout
check("three: 3 stages, for designs with provider=test" in pipes and "2. step:run (timeout 45s)" in pipes, pipes)

# A jarvis run killed mid-stage leaves its job in flight with nobody running it.
os.makedirs(j.state, exist_ok=True)
open(f"{j.state}/slow-2", "w").close()
p = subprocess.Popen([binary, "run", "op2", "--config", config], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
wait_for(lambda: "running stage 2/3" in cli("status", "op2").stdout, 20, "stage 2 to start")
running = cli("status", "op2").stdout.strip()
check(re.match(r"op2: running stage 2/3 step:run \(\w+ of 45s, job 2, started by .+@.+\)$", running), running)
p.send_signal(signal.SIGKILL)
p.wait()
stopped = cli("status", "op2", expect=0).stdout.strip()
check(re.match(r"op2: job 2 stopped at stage 2/3 when its jarvis stopped \(\w+ ago\); start jarvis serve "
               r"to resume it, or cancel op2$", stopped), stopped)
check("op2: job 2 stopped at stage 2/3" in cli("jobs").stdout, "jobs marks the stopped job")

# retry takes it over in the foreground and finishes it; the killed worker is gone.
os.remove(f"{j.state}/slow-2")
retry = cli("retry", "op2", expect=0)
check("op2: resuming job 2 from stage 2/3" in retry.stdout and "op2: ready (job 2" in retry.stdout, retry.stdout)

# log -n with times.
log = cli("log", "op2", "-n", "2", expect=0).stdout.strip().splitlines()
check(len(log) == 2 and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d op2 ", l) for l in log), log)
check(log[-1].endswith("stage 3 of op2"), log)

# A stopped job can be cancelled from the CLI too.
open(f"{j.state}/slow-1", "w").close()
p = subprocess.Popen([binary, "run", "op1", "--config", config], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
wait_for(lambda: "running stage 1/3" in cli("status", "op1").stdout, 20, "op1 to start")
p.kill()
p.wait()
cancel = cli("cancel", "op1", expect=0).stdout
check("op1: cancelled job 3" in cancel, cancel)
check(cli("status", "op1").stdout.startswith("op1: cancelled at stage 1/3"), cli("status", "op1").stdout)

# Retention: nothing here is old enough; a bad duration is a usage error.
pruned = cli("prune", "--older-than", "90d", expect=0).stdout
check(pruned.startswith("pruned 0 jobs that finished more than 2160h00m ago"), pruned)
check("--older-than needs a duration" in cli("prune", "--older-than", "soon", expect=2).stderr, "bad duration")

# Every CLI action is in the audit trail under the real user and host, not $USER.
me = f"{getpass.getuser() if os.geteuid() else 'root'}@{socket.gethostname()}"
env = dict(os.environ, USER="mallory")
audit = subprocess.run([binary, "audit", "--config", config], capture_output=True, text=True, env=env,
                       timeout=30).stdout
for command in ("deploy op1 -> ok: job 1", "deploy op2 -> ok: job 2", "retry op2 -> ok: job 2",
                "cancel op1 -> ok: job 3"):
    check(f"{me} (cli " in audit and command in audit, f"{command!r} not audited as {me}:\n{audit}")
check("mallory" not in audit, audit)
j.cleanup()
print("ok")
