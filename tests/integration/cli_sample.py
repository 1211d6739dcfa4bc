"""The README's sample through the CLI: run, status, log, plan, a failure, retry, the per-host
lock across processes, cancel from another process, and bad input."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, wait_for  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
loki = f"{source}/config/designs/loki.yaml"
loki_fails = f"{source}/config/designs/loki-fails.yaml"

cfg = j.run("check-config", expect=0)
check("config ok" in cfg.stdout, cfg.stdout)

plan = j.run("plan", loki, expect=0)
check(plan.stdout.startswith("loki: plan redeploy-sandbox (19 stages); nothing runs"), plan.stdout)
check("4/19 sandbox:power_off" in plan.stdout and "DESTRUCTIVE" in plan.stdout, plan.stdout)
check("no jobs yet" in j.status("loki"), "plan must not create a job")

# The sample end to end: every stage announced, exit 0, status says ready.
run = j.run("run", loki, expect=0)
for stage in ("1/19 inventory:check_production", "10/19 dns:update", "19/19 monitoring:enable"):
    check(f"stage {stage} done" in run.stdout, f"missing {stage} in:\n{run.stdout}")
check("loki: ready (job 1, 19 stages in" in run.stdout, run.stdout)
check(j.status("loki").startswith("loki: ready (job 1, 19 stages in"), j.status("loki"))
log = j.run("log", "loki", expect=0).stdout
check("loki 19/19 monitoring:enable: monitoring enabled for loki" in log, log)

# A failure stops at the stage with the worker's reason; retry resumes there.
failed = j.run("run", loki_fails, expect=1)
check("loki: failed at stage 10/19 dns:update: exit code 3" in failed.stdout, failed.stdout)
check(failed.stdout.rstrip().endswith("(job 2). Resume it with: jarvis retry loki"), failed.stdout)
check(failed.stdout.count("failed at stage 10/19") == 1, "the failure is printed once:\n" + failed.stdout)
status = j.status("loki")
check(status.startswith("loki: failed at stage 10/19 dns:update: exit code 3")
      and re.search(r'\(job 2, \d\d:\d\d UTC\). Say "retry loki" to resume.$', status), status)
retry = j.run("retry", "loki", expect=0)
check("retrying job 2 from stage 10/19" in retry.stdout, retry.stdout)
check("stage 1/19" not in retry.stdout, "stages before the failed one must not run again")
check("stage 10/19 dns:update done" in retry.stdout, retry.stdout)
check(j.status("2").startswith("loki: ready (job 2, 19 stages"), j.status("2"))

# Per-host lock across processes, and cancel from another process.
slow = subprocess.Popen(j.args("run", loki), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, stdin=subprocess.DEVNULL)
wait_for(lambda: "running stage" in j.status("loki"), 30, "the slow run to start")
second = j.run("run", loki, expect=1)
check("loki already has a job in flight: loki: running stage" in second.stderr
      and "job 3" in second.stderr, second.stderr)
cancel = j.run("cancel", "loki", expect=0)
check(cancel.stdout.startswith("loki: cancelling job 3 at stage"), cancel.stdout)
out, err = slow.communicate(timeout=30)
check(slow.returncode == 1, f"a cancelled run exits 1, got {slow.returncode}")
check("loki: cancelled at stage" in out, out)
check(j.status("loki").startswith("loki: cancelled at stage"), j.status("loki"))

# Bad input: clear errors, nothing lost.
missing = j.run("run", f"{source}/config/designs/nope.yaml", expect=1)
check("cannot read design" in missing.stderr, missing.stderr)
check("no jobs yet" in j.run("status", "thor", expect=1).stdout, "unknown host")
check("neither a host name nor a job number" in j.run("status", "a;b", expect=1).stdout, "bad target")
usage = j.run("frobnicate", expect=2)
check('there is no command "frobnicate"' in usage.stderr, usage.stderr)
typo = j.run("stauts", "loki", expect=2)
check('did you mean "status"?' in typo.stderr, typo.stderr)
check(j.run("--version", expect=0).stdout.startswith("jarvis 0.1.0 (git "), "version")
check(j.run("help", "run", expect=0).stdout == j.run("run", "--help", expect=0).stdout, "one help text")
check("Usage: jarvis log" in j.run("help", "log", expect=0).stdout, "help log")
j.run("log", expect=2)
j.run("log", "loki", "-n", "many", expect=2)
jobs = j.run("jobs", expect=0).stdout
check("no jobs in flight" in jobs and "loki: cancelled" in jobs, jobs)

# Logs as JSON lines for machines, a job id on every line.
import json  # noqa: E402
js = j.run("--log-format", "json", "run", loki_fails)
records = [json.loads(line) for line in js.stderr.splitlines() if line.strip()]
check(records and all("job" in r and "level" in r and "msg" in r for r in records), js.stderr)
check(any(r["job"] == 4 and "dns:update failed" in r["msg"] for r in records), js.stderr)

# A broken pipeline file is reported as file:line.
bad_dir = os.path.join(j.tmp, "pipelines")
os.makedirs(bad_dir)
with open(os.path.join(bad_dir, "bad.yaml"), "w") as f:
    f.write("name: bad\ntasks:\n  - dns:update\n  - task: nope\n")
bad = Jarvis(binary, source, build, pipelines_dir=bad_dir)
out = bad.run("check-config", expect=1).stdout
check(f"{bad_dir}/bad.yaml:4: 'nope' is not a task name" in out, out)
bad.cleanup()
j.cleanup()
print("ok")
