"""The safety catch through the real chat path (ngircd), the console front and the CLI: a
production redeploy (the sandbox's 19 stages) stops before stage 4 sandbox:power_off and
runs nothing destructive (the sandbox's node stays up); the requester's own confirm is
refused (two_person), someone without the right is refused by the ACL; a kill -9 of serve
while it waits resumes waiting after the restart, and another operator's confirm then
takes the job to ready. With a short confirm_timeout the job fails "not confirmed within
5s; nothing was done", can be retried, and is confirmed from the CLI (`jarvis confirm`).
A freeze from the console refuses alice's deploy naming who, why and until when; bob's
`deploy!` is forced through, announced and audited."""
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, wait_for  # noqa: E402
from irc_support import Client, Ngircd, bot_config, make_bot_files  # noqa: E402

binary, source, build = sys.argv[1:4]
server = Ngircd()
work = server.dir
make_bot_files(work)
shutil.copy(f"{source}/pipelines/redeploy-sandbox.yaml", f"{work}/pipelines/")
state = f"{work}/state-jarvis"
nodes = f"{state}/sandbox/nodes"


def write_loki(production):
    with open(f"{work}/designs/loki.yaml", "w") as f:
        f.write("instance:\n  hostname: loki\n  fqdn: loki.websages.com\n  provider: sandbox\n"
                "  guestid: Debian 6\n  datacenter: Atlanta\n  size: 512\n"
                f"sandbox:\n  delay_ms: 0\n  production: {'true' if production else 'false'}\n")


def config(timeout):
    rules = """    - who: ["irc:alice!*@*"]
      commands: [confirm]
    - who: ["irc:bob!*@*"]
      commands: [deploy, "deploy!", confirm, cancel, retry, freeze, unfreeze]
"""
    return bot_config(work, server, workers=(f"{source}/workers", f"{build}/workers"),
                      extra=rules + f"safety:\n  confirm_timeout: {timeout}\n")


def node(node_id):
    path = f"{nodes}/{node_id}.yaml"
    return yaml.safe_load(open(path)) if os.path.exists(path) else None


def stages_run(job, from_stage):
    """Stage attempts recorded for `job` at or after `from_stage` (1-based)."""
    with sqlite3.connect(f"file:{state}/jarvis.db?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM stages WHERE job_id = ? AND stage >= ?",
                          (job, from_stage - 1)).fetchone()[0]


class Serve:
    def __init__(self, cfg):
        self.out = open(f"{work}/console.out", "a")
        self.log = open(f"{work}/jarvis.log", "a")
        self.proc = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.PIPE,
                                     stdout=self.out, stderr=self.log, text=True)

    def say(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()


def console_has(text):
    return text in open(f"{work}/console.out").read()


cli = Jarvis(binary, source, build)
cli.state, cli.workers_path, cli.pipelines_dir = state, f"{source}/workers:{build}/workers", f"{work}/pipelines"
bot = Serve(config("1m"))
alice, bob, mallory = Client(server, "alice"), Client(server, "bob"), Client(server, "mallory")
for c in (alice, bob, mallory):
    c.join("#ops")
alice.wait_member("#ops", "jarvis", 30, "jarvis to join #ops")

# A first deploy (not in production) makes the node the redeploy will be about.
write_loki(False)
alice.say("#ops", "jarvis: deploy loki")
alice.expect("#ops", lambda t: t.startswith("alice: loki is ready"), timeout=60, what="first deploy")
check(node(4711)["status"] == "running", "node 4711 runs after the first deploy")

# plan says where a deploy would stop, and on what fact.
write_loki(True)
alice.say("#ops", "jarvis: plan loki")
plan = alice.collect("alice", lambda t: t.startswith("19/19"), what="the plan by DM")
check("4/19 sandbox:power_off (timeout 30s) DESTRUCTIVE: stops for a confirmation if stage 1 "
      "inventory:check_production finds loki in production" in plan, plan)
check("5/19 sandbox:delete (timeout 30s) DESTRUCTIVE (covered by the confirmation before it)" in plan, plan)

# The production redeploy stops before stage 4, says what it would do, and touches nothing.
alice.say("#ops", "jarvis: deploy loki")
alice.expect("#ops", lambda t: t == "loki: deploying with redeploy-sandbox, 19 stages (job 2)", what="deploy")
prompt = alice.expect("#ops", lambda t: "is in production" in t, timeout=30, what="the confirmation prompt")
check(prompt == "loki (loki.websages.com, sandbox 4711, 192.0.2.10) is in production "
      "(inventory:check_production: the design's sandbox.production): stage 4/19 sandbox:power_off "
      "will power it off, then stage 5 deletes it. Say `confirm 2` within 1m, or `cancel 2`.", prompt)
time.sleep(1.5)
check(node(4711)["status"] == "running", f"node 4711 was touched while waiting: {node(4711)}")
check(stages_run(2, 4) == 0, "a stage from 4 on ran while waiting for a confirmation")
alice.say("#ops", "jarvis: status loki")
st = alice.expect("#ops", lambda t: t.startswith("loki: "), what="status while waiting")
check(st.startswith("loki: waiting for a confirmation before stage 4/19 sandbox:power_off until ") and
      "nothing of it has run" in st and 'Say "confirm 2" or "cancel 2".' in st, st)

# Refusals: the requester under two_person; someone without the confirm right.
alice.say("#ops", "jarvis: confirm 2")
r = alice.expect("#ops", lambda t: t.startswith("alice: "), what="own confirm refused")
check("you asked for job 2 yourself; someone else with the confirm right must confirm it" in r, r)
mallory.say("#ops", "jarvis: confirm 2")
r = mallory.expect("#ops", lambda t: t.startswith("mallory: "), what="ACL refusal")
check(r.startswith("mallory: you may not confirm here"), r)

# kill -9 while waiting: the restarted serve waits again (same deadline), still touching nothing.
bot.proc.kill()
bot.proc.wait()
bot = Serve(config("1m"))
alice.expect("#ops", lambda t: t.startswith("jarvis is back after a restart"), timeout=40, what="restart")
again = alice.expect("#ops", lambda t: "is in production" in t, timeout=20, what="the prompt after the restart")
check("Say `confirm 2` within 1m" in again, again)
alice.say("#ops", "jarvis: status loki")
st = alice.expect("#ops", lambda t: t.startswith("loki: "), what="status after the restart")
check(st.startswith("loki: waiting for a confirmation before stage 4/19"), st)
check(node(4711)["status"] == "running" and stages_run(2, 4) == 0, "something ran after the restart")

# Another operator confirms: the job goes on to ready and the old node is gone.
bob.say("#ops", "jarvis: confirm 2")
r = bob.expect("#ops", lambda t: t.startswith("loki: confirmed"), what="bob's confirm")
check(r == "loki: confirmed by bob: stage 4/19 sandbox:power_off starts now (job 2)", r)
alice.expect("#ops", lambda t: t.startswith("alice: loki is ready"), timeout=60, what="ready after confirm")
check(node(4711) is None and node(4712)["status"] == "running", "the redeploy replaced node 4711 by 4712")

# A short timeout: nothing confirmed, nothing done; retry asks again; the CLI confirms.
bot.proc.terminate()
check(bot.proc.wait(timeout=30) == 0, "serve exits 0 on SIGTERM")
bot = Serve(config("5s"))
alice.wait_member("#ops", "jarvis", 30, "jarvis back")
bob.say("#ops", "jarvis: deploy loki")
bob.expect("#ops", lambda t: t.startswith("loki: deploying") and "(job 3)" in t, what="job 3")
alice.expect("#ops", lambda t: "Say `confirm 3` within 5s" in t, timeout=30, what="prompt of job 3")
end = alice.expect("#ops", lambda t: "loki failed" in t, timeout=20, what="the timeout")
check(end.startswith("bob: loki failed at stage 4/19 sandbox:power_off: not confirmed within 5s; "
                     "nothing was done (job 3)"), end)
check(node(4712)["status"] == "running" and stages_run(3, 4) == 0, "the timed-out job touched the node")
bob.say("#ops", "jarvis: retry loki")
alice.expect("#ops", lambda t: "Say `confirm 3` within 5s" in t, timeout=30, what="prompt after retry")
p = cli.run("confirm", "3")
check(p.returncode == 0 and "loki: confirmed by " in p.stdout, p.stdout + p.stderr)
alice.expect("#ops", lambda t: "loki: confirmed by" in t and "starts now" in t, timeout=10, what="CLI confirm announced")
bob.expect("#ops", lambda t: t.startswith("bob: loki is ready"), timeout=60, what="ready after the CLI confirm")

# A freeze from the console refuses a deploy, naming who, why and until when; deploy! forces it.
bot.say("freeze loki for 2h release week")
wait_for(lambda: console_has("freeze 1: loki is frozen by "), 10, "the console's freeze answer")
ann = alice.expect("#ops", lambda t: t.startswith("freeze 1: loki is frozen by "), what="freeze announced")
check("(release week)" in ann and "until " in ann, ann)
bob.say("#ops", "jarvis: deploy loki")
r = bob.expect("#ops", lambda t: t.startswith("loki: "), what="deploy into the freeze")
check(r.startswith("loki: not deploying: loki is frozen by ") and "(release week)" in r and
      'an admin can force it with "deploy! loki"' in r, r)
check(cli.status("loki").startswith("loki: ready (job 3"), "a job started into the freeze")
alice.say("#ops", "jarvis: deploy! loki")
r = alice.expect("#ops", lambda t: t.startswith("alice: "), what="deploy! without the right")
check(r.startswith("alice: you may not deploy! here"), r)
bob.say("#ops", "jarvis: deploy! loki")
forced = bob.collect("#ops", lambda t: "forced a deploy through the freeze" in t, what="forced deploy")
check("loki: deploying with redeploy-sandbox, 19 stages (job 4); forced through the freeze by " in forced, forced)
alice.expect("#ops", lambda t: "Say `confirm 4`" in t, timeout=30, what="the forced job waits for a confirmation too")
# The console is another front (and another person than bob): its confirm goes through.
bot.say("confirm 4")
wait_for(lambda: console_has("loki: confirmed by "), 10, "the console's confirm answer")
bob.expect("#ops", lambda t: t.startswith("bob: loki is ready"), timeout=60, what="ready after the console's confirm")
bob.say("#ops", "jarvis: unfreeze loki")
r = bob.expect("#ops", lambda t: t.startswith("loki is unfrozen by bob"), what="unfreeze")

audit = cli.run("audit", expect=0).stdout
for needle in ("confirmation requested for loki (job 2, stage 4/19) -> waiting until",
               "confirm 2 -> refused: alice: you asked for job 2 yourself",
               "irc:mallory!~mallory@127.0.0.1 (irc #ops): confirm 2 -> refused: not allowed by the ACL",
               "irc:bob!~bob@127.0.0.1 (irc #ops): confirm 2 -> ok",
               "confirmation timed out for loki (job 3, stage 4/19) -> failed: not confirmed within 5s",
               "confirm 3 -> ok", "freeze loki for 2h release week -> ok",
               "deploy loki -> refused: loki: not deploying: loki is frozen by",
               "irc:alice!~alice@127.0.0.1 (irc #ops): deploy! loki -> refused: not allowed by the ACL",
               "(console stdin): confirm 4 -> ok",
               "irc:bob!~bob@127.0.0.1 (irc #ops): deploy! loki -> ok"):
    check(needle in audit, f"the audit trail lacks {needle!r}:\n{audit}")

bot.proc.terminate()
check(bot.proc.wait(timeout=30) == 0, "serve exits 0 on SIGTERM")
for c in (alice, bob, mallory):
    c.close()
server.cleanup()
print("ok")
