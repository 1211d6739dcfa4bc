"""jarvis in XMPP against a real Prosody started here (STARTTLS with a test certificate, test
accounts, a MUC component): commands in a direct chat and in a room; an unauthorized JID
refused; an occupant of a room that hides real JIDs limited to open commands; a command in
the room's history not run when the bot joins; Prosody restarted mid-job: the bot
reconnects, rejoins and delivers the announcements that queued; a certificate from an
unknown CA refused."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head, wait_for  # noqa: E402
from irc_support import make_bot_files, make_cert, write_design  # noqa: E402
from xmpp_support import Client, Prosody  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
server = Prosody(semianonymous_rooms=["anon"])
work = server.dir
make_bot_files(work)
for host in ("loki", "thor", "odin"):
    write_design(work, host)
for user in ("jarvis", "alice", "mallory"):
    server.register(user, f"{user}-pw-77")
with open(f"{work}/xmpp.pass", "w") as f:
    f.write("jarvis-pw-77\n")
OPS, ANON = server.room_jid("ops"), server.room_jid("anon")


def config(name, ca_file):
    path = f"{work}/{name}.yaml"
    with open(path, "w") as f:
        f.write(config_head(work, name) + f"""xmpp:
  jid: jarvis@localhost
  password_file: xmpp.pass
  server: 127.0.0.1
  port: {server.port}
  tls_ca_file: {ca_file}
  rooms: [{OPS}, {ANON}]
  ping_interval: 2s
chat:
  announce: ["xmpp:{OPS}", "xmpp:nobody@localhost"]
  announce_level: all
  announce_level_direct: all
  commands_per_minute: 600
  command_burst: 50
acl:
  rules:
    - who: ["xmpp:alice@localhost"]
      commands: [deploy, cancel, retry]
      where: ["xmpp:{OPS}", "xmpp:{ANON}", "direct"]
""")
    return path


# A command said in the room before the bot arrives: it is history, and must never run.
alice = Client(server, "alice", "alice-pw-77")
alice.join("ops", "alice")
alice.say_room("ops", "jarvis: deploy thor")

bot = subprocess.Popen([binary, "serve", "--config", config("jarvis", server.cert)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=open(f"{work}/jarvis.log", "w"))
alice.wait_presence("ops", "jarvis", 30)

# Direct chat: the bare JID the server authenticated is the identity.
alice.say("jarvis@localhost", "status thor")
alice.expect("jarvis@localhost", lambda t: t.startswith("thor: no jobs yet"), what="history not executed")
alice.say("jarvis@localhost", "help")
alice.expect("jarvis@localhost", lambda t: t.startswith("deploy <design>"), what="help lists deploy for alice")

# In the room: a deploy, progress announcements, ready.
alice.say_room("ops", "jarvis: deploy loki")
alice.expect("ops", lambda t: t == "loki: deploying with three, 3 stages (job 1)", what="deploy reply in the room")
alice.expect("ops", lambda t: "stage 2/3 step:run done" in t, what="an announcement")
alice.expect("ops", lambda t: t.startswith("alice: loki is ready: 3 stages"), what="ready, naming alice's room nick")

# nobody@localhost, an announce place with no account behind it: Prosody bounces the lines
# (service-unavailable), and the log names the place and the reason.
wait_for(lambda: "refused a line for nobody@localhost: service-unavailable" in open(f"{work}/jarvis.log").read(), 20,
         "the bounced announcement to be logged with its place")

# check-config --online: the room is joined, the JID that is no room is called a person, and
# a room that does not exist is a problem (exit 1).
online_cfg = config("online", server.cert).replace("online.yaml", "online2.yaml")
with open(config("online", server.cert)) as f:
    text = f.read().replace('"xmpp:nobody@localhost"', '"xmpp:nobody@localhost", "xmpp:nosuchroom@conference.localhost"')
with open(online_cfg, "w") as f:
    f.write(text)
online = subprocess.run([binary, "check-config", "--online", "--config", online_cfg], capture_output=True, text=True,
                        timeout=60)
lines = online.stdout.splitlines()
check(online.returncode == 1, f"check-config --online exited {online.returncode}: {online.stdout}{online.stderr[-3000:]}")
check(f"xmpp: {OPS}: joined" in lines, online.stdout)
check(any(l.startswith("xmpp: nobody@localhost: not a room") for l in lines), online.stdout)
check("xmpp: nosuchroom@conference.localhost: refused: item-not-found (no such room)" in lines, online.stdout)
check(lines[-1] == "1 problem", f"not one problem: {lines[-3:]!r}")

# Someone the ACL does not name: refused, clearly, and audited.
mallory = Client(server, "mallory", "mallory-pw-77")
mallory.say("jarvis@localhost", "deploy odin")
mallory.expect("jarvis@localhost",
               lambda t: t == "mallory@localhost: you may not deploy; ask an admin to add you to the ACL",
               what="a refusal for mallory")
mallory.say("jarvis@localhost", "status loki")
mallory.expect("jarvis@localhost", lambda t: t.startswith("loki: ready (job 1"), what="status is open")

# A room that hides real JIDs: alice is anonymous there, so only open commands.
alice.join("anon", "alice")
alice.wait_presence("anon", "jarvis", 20)
check(alice.real_jid("anon", "jarvis") is None, "the anon room shows real JIDs")
alice.say_room("anon", "jarvis: deploy odin")
alice.expect("anon", lambda t: t == "alice: you may not deploy here; ask an admin to add you to the ACL",
             what="an anonymous occupant refused")
alice.say_room("anon", "jarvis: status loki")
alice.expect("anon", lambda t: t.startswith("loki: ready (job 1"), what="status for an anonymous occupant")

# Prosody restarts while a job runs (stage 2 waits for <work>/hold): the bot comes back,
# rejoins the room and delivers what was announced meanwhile.
open(f"{work}/hold", "w").close()
alice.say_room("ops", "jarvis: deploy odin")
alice.expect("ops", lambda t: t == "odin: deploying with three, 3 stages (job 2)", what="odin deploying")
alice.expect("ops", lambda t: t.startswith("odin: stage 2/3 step:run started"), what="odin at stage 2")
server.stop()
os.remove(f"{work}/hold")
time.sleep(2)  # the job finishes while the server is down: its announcements queue
server.start()
alice.reconnect()
alice.wait_presence("ops", "jarvis", 60)
# Whoever rejoins first decides how alice sees them: live, or (the bot was back first) in the
# room's history replay. Prosody's history does not survive its restart, so either way they
# were sent after it.
alice.expect("ops", lambda t: t.startswith("alice: odin is ready"), timeout=30, delayed=None,
             what="queued announcements after the restart")
alice.say_room("ops", "jarvis: status odin")
alice.expect("ops", lambda t: t.startswith("odin: ready (job 2"), what="status after the restart")

# A bot that trusts another CA refuses Prosody's certificate and says why.
other_ca, _ = make_cert(work, "other")
wrong = subprocess.Popen([binary, "serve", "--config", config("wrongca", other_ca)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(f"{work}/wrongca.log", "w"))
wait_for(lambda: "certificate refused" in open(f"{work}/wrongca.log").read(), 30, "the wrong CA to be refused")
check("logged in as" not in open(f"{work}/wrongca.log").read(), "logged in despite an untrusted certificate")
wrong.terminate()
wrong.wait(timeout=20)

bot.terminate()
bot.wait(timeout=20)
log = open(f"{work}/jarvis.log").read()
check("jarvis-pw-77" not in log, "the XMPP password reached the log")
for c in (alice, mallory):
    c.close()
server.cleanup()
print("xmpp e2e: ok")
