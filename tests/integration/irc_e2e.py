"""jarvis in IRC against a real ngircd started here: TLS with certificate verification, the
commands, the ACL and its audit, direct messages, announcements, secrets and injection
attempts; a wrong certificate is refused."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, wait_for  # noqa: E402
from irc_support import Client, Ngircd, bot_config, make_bot_files, make_cert, write_design  # noqa: E402

binary, source, build = sys.argv[1:4]
server = Ngircd()
work = server.dir
canary = "canary-5e1f0a77"

make_bot_files(work)
# A worker that prints the root password and a CR-smuggled QUIT on stderr, then fails.
with open(f"{work}/workers/step/leak", "w") as f:
    f.write(f"""#!/bin/sh
cat >/dev/null
echo "logging in with {canary}" >&2
printf 'evil\\rQUIT :injected\\r\\n' >&2
exit 1
""")
os.chmod(f"{work}/workers/step/leak", 0o755)
with open(f"{work}/pipelines/leaky.yaml", "w") as f:
    f.write("name: leaky\nmatch: {provider: leaky}\ntasks: [step:leak]\n")
write_design(work, "loki")
write_design(work, "thor", provider="leaky", extra=f"  root_password: {canary}\n")


def config(name, ca_file, irc_extra=""):
    # This ngircd does not throttle (irc_flood tests pacing), so neither does the bot here.
    return bot_config(work, server, name=name, ca_file=ca_file,
                      irc_extra="  flood: {burst: 20, per_second: 10}\n" + irc_extra,
                      chat_extra="  commands_per_minute: 120\n  command_burst: 10\n")


bot = subprocess.Popen([binary, "serve", "--config", config("jarvis", server.cert)],
                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                       stderr=open(f"{work}/jarvis.log", "w"))
alice = Client(server, "alice")
mallory = Client(server, "mallory")
for c in (alice, mallory):
    c.join("#ops")
alice.wait_member("#ops", "jarvis", 20, "jarvis to join #ops over TLS")

# help lists what the asker may run.
alice.say("#ops", "jarvis: help")
alice.expect("#ops", lambda t: t.startswith('alice: I sent you the answer to "help"'), what="help's line in #ops")
alice.expect("alice", lambda t: t.startswith("deploy <design>"), what="help with deploy for alice, by DM")
mallory.say("#ops", "!help")
line = mallory.expect("mallory", lambda t: t.startswith("status <host|job>"), what="help for mallory")
mallory.say("#ops", "jarvis: help deploy")  # asking about it is fine; running it is not

# The ACL: mallory is refused, clearly, and it is audited.
mallory.say("#ops", "jarvis: deploy loki")
mallory.expect("#ops", lambda t: t == "mallory: you may not deploy here; ask an admin to add you to the ACL",
               what="a refusal")

# A deploy from alice: the reply, then progress announcements in #ops, then ready.
alice.say("#ops", "jarvis, deploy loki")
alice.expect("#ops", lambda t: t == "loki: deploying with three, 3 stages (job 1)", what="deploy reply")
alice.expect("#ops", lambda t: "stage 2/3 step:run done" in t, what="a stage announcement")
alice.expect("#ops", lambda t: t.startswith("alice: loki is ready: 3 stages in") and t.endswith("(job 1)"),
             what="ready, naming alice")
mallory.say("#ops", "!status loki")
mallory.expect("#ops", lambda t: t.startswith("loki: ready (job 1"), what="status for anyone")
alice.say("jarvis", "log loki")  # a direct message: the reply comes back directly
alice.expect("alice", lambda t: t.startswith("loki 3/3 step:run: stage 3 of loki"), what="log by DM")
alice.say("#ops", "jarvis: plan loki")  # a long answer asked in a channel goes by DM
alice.expect("#ops", lambda t: t == 'alice: I sent you the answer to "plan" (5 lines) in a direct message',
             what="one line in the channel about it")
alice.expect("alice", lambda t: t == "loki: plan three (3 stages); nothing runs", what="plan by DM")
alice.expect("alice", lambda t: t == "loki: chosen because instance.provider is 'test' (match of three)", what="why, by DM")

# cancel and retry, with stage 2 held.
open(f"{work}/hold", "w").close()
alice.say("#ops", "jarvis: deploy loki")
alice.expect("#ops", lambda t: t == "loki: deploying with three, 3 stages (job 2)", what="second deploy")
alice.expect("#ops", lambda t: "stage 2/3 step:run started" in t, what="stage 2 running")
mallory.say("#ops", "jarvis: cancel loki")  # refused; not answered: one refusal a minute per person
alice.say("#ops", "jarvis: jobs")
alice.expect("alice", lambda t: t.startswith("loki: running stage 2/3 step:run ("), what="jobs by DM")
alice.say("#ops", "jarvis: cancel loki")
alice.expect("#ops", lambda t: t == "loki: cancelling job 2 at stage 2/3", what="cancelling")
alice.expect("#ops", lambda t: t.startswith("alice: loki was cancelled at stage 2/3 step:run by alice"),
             what="cancelled")
os.unlink(f"{work}/hold")
alice.say("#ops", "jarvis: retry loki")
alice.expect("#ops", lambda t: t.startswith("loki: retrying job 2 from stage 2/3"), what="retry")
alice.expect("#ops", lambda t: t.startswith("alice: loki is ready: 3 stages") and "(job 2)" in t,
             what="ready after retry")

# Secrets and injection: a worker prints the root password and a CR-smuggled QUIT.
alice.say("#ops", "jarvis: deploy thor")
failed = alice.expect("#ops", lambda t: t.startswith("alice: thor failed at stage 1/1 step:leak"), what="failure")
check(canary not in failed and "[redacted]" in failed, failed)
alice.say("#ops", "jarvis: log thor")
alice.expect("alice", lambda t: "logging in with [redacted]" in t, what="redacted log")
alice.say("#ops", "jarvis: status thor")
alice.expect("#ops", lambda t: t.startswith("thor: failed"), what="jarvis still here after the injection attempt")
alice.say("#ops", "jarvis: audit loki")
alice.expect("#ops", lambda t: "irc:mallory!" in t and "deploy loki -> refused: not allowed by the ACL" in t,
             what="the refusal in the audit trail")
everything = "\n".join(alice.lines + mallory.lines)
check(canary not in everything, "the canary leaked into IRC")
check(canary not in open(f"{work}/jarvis.log").read(), "the canary leaked into the bot's log")

# A bot that does not trust the server's certificate refuses to talk to it.
wrong_ca, _ = make_cert(work, "other")
impostor = subprocess.Popen([binary, "serve", "--config", config("jarvis2", wrong_ca)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(f"{work}/jarvis2.log", "w"))
wait_for(lambda: "TLS handshake failed" in open(f"{work}/jarvis2.log").read(), 20,
         "the wrong certificate to be refused")
log2 = open(f"{work}/jarvis2.log").read()
check("certificate" in log2, log2)
alice.send("WHOIS jarvis2")
alice.wait(lambda l: " 401 alice jarvis2 " in l, 10, "jarvis2 not to be on the server")
impostor.terminate()
impostor.wait(timeout=20)

# The nick is taken: the bot falls back, answers to the fallback, and takes its nick back
# once it is free.
squatter = Client(server, "jarvis3")
third_cfg = config("jarvis3", server.cert, irc_extra="  nick_recover_interval: 1s\n")
third = subprocess.Popen([binary, "serve", "--config", third_cfg], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(f"{work}/jarvis3.log", "w"))
alice.wait_member("#ops", "jarvis3_", 20, "jarvis3_ to join")
alice.say("#ops", "jarvis3_: status loki")
alice.expect("#ops", lambda t: t.startswith("loki: no jobs yet"), what="an answer to the fallback nick (its own store)")
squatter.close()
alice.wait(lambda l: l.startswith(":jarvis3_!") and " NICK " in l and "jarvis3" in l.split(" NICK ")[1],
           20, "jarvis3 to take its nick back")
alice.say("#ops", "jarvis3: jobs")
alice.expect("#ops", lambda t: t == "no jobs in flight", what="an answer to the recovered nick")
third.terminate()
third.wait(timeout=30)

bot.terminate()
check(bot.wait(timeout=30) == 0, "jarvis serve exits 0 on SIGTERM")
alice.close()
mallory.close()
server.cleanup()
print("ok")
