"""Security findings of issue 17 on IRC, against a real ngircd:
  nickserv  - the NickServ password never reaches a client that registered the nick NickServ:
              IDENTIFY goes only to the configured server-qualified target, and never over
              plain TCP unless allowed (the old nickserv_password_* keys are refused);
  dm        - a job asked for by direct message reports to the person, not the nick: someone
              who takes the nick after the requester quit gets none of it;
  flood     - three clients flooding refused commands do not delay another user's status;
  controls  - colour codes and bidi overrides from a worker's stderr do not reach the channel.
JARVIS_TEST_SECTIONS=dm,flood runs only those (to show a section failing on older code)."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, wait_for  # noqa: E402
from irc_support import Client, Ngircd, bot_config, make_bot_files, write_design  # noqa: E402

binary, source, build = sys.argv[1:4]
sections = set(filter(None, os.environ.get("JARVIS_TEST_SECTIONS", "nickserv,dm,flood,controls").split(",")))
server = Ngircd()
work = server.dir
make_bot_files(work)
write_design(work, "loki")
password = "nickserv-pa55-77f3"
with open(f"{work}/nickserv.pass", "w") as f:
    f.write(password + "\n")
# A worker whose stderr paints its failure red and reverses part of it.
with open(f"{work}/workers/step/paint", "w") as f:
    f.write("#!/bin/sh\ncat >/dev/null\n"
            "printf '\\002\\00304,01red alert\\017 invoice \\342\\200\\256fdp.exe \\342\\201\\246x\\342\\201\\251\\n' >&2\n"
            "exit 1\n")
os.chmod(f"{work}/workers/step/paint", 0o755)
with open(f"{work}/pipelines/paint.yaml", "w") as f:
    f.write("name: paint\nmatch: {provider: paint}\ntasks: [step:paint]\n")
write_design(work, "painted", provider="paint")


def log_of(name):
    return open(f"{work}/{name}.log").read()


def start(name, cfg):
    return subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(f"{work}/{name}.log", "w"))


nickserv = f"""  nickserv:
    target: NickServ@services.test
    password_file: {work}/nickserv.pass
"""
impostor = Client(server, "NickServ")
bot = start("jarvis", bot_config(work, server, irc_extra=nickserv))
alice = Client(server, "alice", host="alice.example")
alice.join("#ops")
alice.wait_member("#ops", "jarvis", 20, "jarvis to join #ops")

if "nickserv" in sections:
    old = bot_config(work, server, name="oldform", irc_extra=f"  nickserv_password_file: {work}/nickserv.pass\n")
    p = subprocess.run([binary, "check-config", "--config", old], capture_output=True, text=True)
    check(p.returncode == 2 and "nickserv_password_file is no more" in p.stderr,
          f"the old nickserv_password_file must be refused: {p.returncode}\n{p.stderr}")
    wait_for(lambda: "identifying to NickServ@services.test" in log_of("jarvis"), 10, "IDENTIFY to the services target")
    wait_for(lambda: "NickServ@services.test is not on the network" in log_of("jarvis"), 10,
             "ngircd to say there is no such services server")
    # Over plain TCP the password is not sent at all.
    plain = start("plain", bot_config(work, server, name="plain", tls=False, irc_extra=nickserv))
    alice.wait_member("#ops", "plain", 20, "the plaintext bot to join")
    check("not identifying to NickServ@services.test: the connection is not verified TLS" in log_of("plain"),
          log_of("plain")[-2000:])
    alice.say("#ops", "plain: jobs")
    alice.expect("#ops", lambda t: t == "no jobs in flight", what="the plaintext bot answering")
    plain.terminate()
    plain.wait(timeout=30)
    time.sleep(0.5)
    got = "\n".join(impostor.lines)
    check(password not in got and "IDENTIFY" not in got, "the impostor NickServ received:\n" + got)

if "controls" in sections:
    alice.say("#ops", "jarvis: deploy painted")
    failed = alice.expect("#ops", lambda t: t.startswith("alice: painted failed at stage 1/1"), what="the failure")
    check("red alert" in failed and "fdp.exe" in failed, failed)
    for code, name in (("\x02", "bold"), ("\x03", "colour"), ("\x0f", "reset"), ("\u202e", "RLO"),
                       ("\u2066", "LRI"), ("\u2069", "PDI")):
        check(code not in failed, f"a {name} code reached #ops: {failed!r}")
    check(",01red" not in failed, f"the colour's digits reached #ops: {failed!r}")

if "dm" in sections:
    open(f"{work}/hold", "w").close()
    alice.say("jarvis", "deploy loki")
    alice.expect("alice", lambda t: t.startswith("loki: deploying with three"), what="the DM reply")
    alice.expect("alice", lambda t: "stage 2/3 step:run started" in t, what="progress by DM")
    alice.close()
    watcher = Client(server, "watcher")
    watcher.join("#ops")
    # Someone else takes the nick alice; the job ends; nothing about it reaches them.
    def alice_gone():
        watcher.send("ISON alice")  # each reply is read, and consumed, once
        reply = watcher.wait(lambda l: l.split(" ")[1:2] == ["303"], 5, "the ISON reply", keep_others=True)
        return not reply.rstrip().endswith(":alice")
    wait_for(alice_gone, 10, "alice to be gone")
    fake = Client(server, "alice", host="evil.example", ip="10.6.6.6")
    os.unlink(f"{work}/hold")
    watcher.expect("#ops", lambda t: t.startswith("alice: loki is ready"), what="ready in #ops")
    time.sleep(2)
    got = [l for l in fake.lines if " PRIVMSG alice " in l]
    check(not got, "the new holder of the nick got the job's lines:\n" + "\n".join(got))
    check("lines for alice!" in log_of("jarvis"), "the bot should say it held back the lines:\n" + log_of("jarvis")[-2000:])
    fake.close()
    alice = watcher

if "flood" in sections:
    flooders = [Client(server, f"flood{i}", user=f"f{i}", host=f"f{i}.example") for i in range(3)]
    bob = Client(server, "bob", host="bob.example")
    for c in (*flooders, bob):
        c.join("#ops")
    for _ in range(20):
        for c in flooders:
            c.say("#ops", "jarvis: deploy loki")
    time.sleep(1)
    start_at = time.monotonic()
    bob.say("#ops", "jarvis: status loki")
    bob.expect("#ops", lambda t: t.startswith("loki: "), timeout=60, what="bob's status")
    took = time.monotonic() - start_at
    check(took < 6, f"bob's status took {took:.1f}s behind the flood")
    refusals = [l for l in bob.lines if "you may not deploy" in l or "slow down" in l]
    check(len(refusals) <= 3, f"{len(refusals)} refusals for 60 refused commands:\n" + "\n".join(refusals))
    for c in (*flooders, bob):
        c.close()

bot.terminate()
check(bot.wait(timeout=30) == 0, "jarvis serve exits 0")
impostor.close()
server.cleanup()
print("irc security: ok")
