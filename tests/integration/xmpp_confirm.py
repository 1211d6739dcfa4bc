"""The safety catch on XMPP, against a real Prosody: a destructive stage of a host whose design
says instance.production waits, with the prompt in the room; the requester's own confirm is
refused (two_person); another person's confirm in a direct chat lets it run to ready."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head  # noqa: E402
from irc_support import make_bot_files, write_design  # noqa: E402
from xmpp_support import Client, Prosody  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
server = Prosody()
work = server.dir
make_bot_files(work)
marker = f"{work}/wiped"
os.makedirs(f"{work}/workers/disk", exist_ok=True)
with open(f"{work}/workers/disk/wipe", "w") as f:
    f.write(f"#!/bin/sh\ncat >/dev/null\ntouch {marker}\n")
os.chmod(f"{work}/workers/disk/wipe", 0o755)
with open(f"{work}/pipelines/risky.yaml", "w") as f:
    f.write("name: risky\nmatch: {provider: risky}\n"
            "tasks: [step:run, {task: disk:wipe, destructive: true}, step:run]\n")
write_design(work, "db1", provider="risky", extra="  fqdn: db1.example.com\n  production: true\n")
for user in ("jarvis", "alice", "bob"):
    server.register(user, f"{user}-pw-77")
with open(f"{work}/xmpp.pass", "w") as f:
    f.write("jarvis-pw-77\n")
OPS = server.room_jid("ops")
cfg = f"{work}/jarvis.yaml"
with open(cfg, "w") as f:
    f.write(config_head(work, "jarvis") + f"""xmpp:
  jid: jarvis@localhost
  password_file: xmpp.pass
  server: 127.0.0.1
  port: {server.port}
  tls_ca_file: {server.cert}
  rooms: [{OPS}]
  ping_interval: 2s
chat:
  announce: ["xmpp:{OPS}"]
acl:
  rules:
    - who: ["xmpp:alice@localhost", "xmpp:bob@localhost"]
      commands: [deploy, confirm]
safety:
  confirm_timeout: 2m
""")

alice = Client(server, "alice", "alice-pw-77")
alice.join("ops", "alice")
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=open(f"{work}/jarvis.log", "w"))
alice.wait_presence("ops", "jarvis", 30)
alice.say_room("ops", "jarvis: deploy db1")
alice.expect("ops", lambda t: t == "db1: deploying with risky, 3 stages (job 1)", what="deploy")
prompt = alice.expect("ops", lambda t: "is in production" in t, what="the prompt in the room")
check(prompt == "db1 (db1.example.com) is in production (the design's instance.production): stage 2/3 "
      "disk:wipe will wipe it. Say `confirm 1` within 2m, or `cancel 1`.", prompt)
time.sleep(1)
check(not os.path.exists(marker), "the destructive stage ran unconfirmed")
alice.say_room("ops", "jarvis: confirm 1")
r = alice.expect("ops", lambda t: "you asked for job 1 yourself" in t, what="two_person refusal")
check(not os.path.exists(marker), "the requester's confirm let it run")

bob = Client(server, "bob", "bob-pw-77")
bob.say("jarvis@localhost", "confirm 1")
r = bob.expect("jarvis@localhost", lambda t: "confirmed by" in t, what="bob's confirm")
check(r == "db1: confirmed by bob@localhost: stage 2/3 disk:wipe starts now (job 1)", r)
alice.expect("ops", lambda t: t.startswith("alice: db1 is ready"), what="ready after bob's confirm")
check(os.path.exists(marker), "the confirmed stage did not run")

bot.terminate()
bot.wait(timeout=20)
for c in (alice, bob):
    c.close()
server.cleanup()
print("xmpp confirm: ok")
