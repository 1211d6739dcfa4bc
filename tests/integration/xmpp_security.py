"""Security findings of issue 17 on XMPP, against a real Prosody:
  utf8     - a reply that echoes user text cut at a byte count stays valid UTF-8: Prosody
             does not close the stream as not-well-formed, the bot stays connected;
  muc      - real JIDs shown by a MUC service that is not trusted (another server's) do not
             count: its occupants get the open commands only; a room that does not exist is
             not created.
JARVIS_TEST_SECTIONS=muc runs only that (to show a section failing on older code)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head, wait_for  # noqa: E402
from irc_support import make_bot_files, write_design  # noqa: E402
from xmpp_support import Client, Prosody  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
sections = set(filter(None, os.environ.get("JARVIS_TEST_SECTIONS", "utf8,muc").split(",")))
ELSEWHERE = "rooms.elsewhere.test"
server = Prosody(extra_mucs=[ELSEWHERE])
work = server.dir
make_bot_files(work)
write_design(work, "loki")
for user in ("jarvis", "alice"):
    server.register(user, f"{user}-pw-77")
with open(f"{work}/xmpp.pass", "w") as f:
    f.write("jarvis-pw-77\n")
OPS, FOREIGN, MISSING = server.room_jid("ops"), f"ops@{ELSEWHERE}", server.room_jid("missing")
cfg = f"{work}/jarvis.yaml"
with open(cfg, "w") as f:
    f.write(config_head(work, "jarvis") + f"""xmpp:
  jid: jarvis@localhost
  password_file: xmpp.pass
  server: 127.0.0.1
  port: {server.port}
  tls_ca_file: {server.cert}
  rooms: [{OPS}, {FOREIGN}, {MISSING}]
  ping_interval: 2s
chat:
  commands_per_minute: 600
  command_burst: 50
acl:
  rules:
    - who: ["xmpp:alice@localhost"]
      commands: [deploy]
      where: ["*"]
""")
alice = Client(server, "alice", "alice-pw-77")
alice.join("ops", "alice")
alice.join(FOREIGN, "alice")  # both rooms exist (alice made them) and show real JIDs
log_path = f"{work}/jarvis.log"
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=open(log_path, "w"))
alice.wait_presence("ops", "jarvis", 30)


def log():
    return open(log_path).read()


if "utf8" in sections:
    word = "x" * 39 + "é" * 3  # the parse error echoes 40 bytes: the cut falls inside an é
    alice.say("jarvis@localhost", word)
    alice.expect("jarvis@localhost", lambda t: t.startswith("I don't know \"" + "x" * 39 + "\""),
                 what="the parse error, cut between characters")
    alice.say("jarvis@localhost", "status loki")
    alice.expect("jarvis@localhost", lambda t: t.startswith("loki: no jobs yet"), what="still connected")
    check("xmpp: disconnected" not in log(), "the bot lost its XMPP stream:\n" + log()[-2000:])
    check("not-well-formed" not in server.log_tail(400), server.log_tail(40))

if "muc" in sections:
    alice.wait_presence(FOREIGN, "jarvis", 30)
    check(alice.real_jid(FOREIGN, "alice") == "alice@localhost", "the foreign room shows real JIDs")
    alice.say_room(FOREIGN, "jarvis: deploy loki")
    alice.expect(FOREIGN, lambda t: t == "alice: you may not deploy here; ask an admin to add you to the ACL",
                 what="alice refused where her real JID comes from an untrusted service")
    alice.say_room("ops", "jarvis: deploy loki")
    alice.expect("ops", lambda t: t.startswith("loki: deploying with three"), what="alice deploying in a trusted room")
    wait_for(lambda: f"room {MISSING} does not exist; not joining it yet" in log(), 20, "the missing room refused")
    try:
        features = alice.room_features(MISSING, timeout=5)
    except Exception:  # noqa: BLE001 - item-not-found: the room does not exist
        features = None
    check(features is None, f"the bot created {MISSING}: {features}")
    # Once someone creates it, the bot finds it at its next ping and joins.
    alice.join(MISSING, "alice")
    alice.wait_presence(MISSING, "jarvis", 20)

bot.terminate()
code = bot.wait(timeout=20)
if code != 0:
    print(open(log_path).read()[-4000:], file=sys.stderr)
check(code == 0, f"jarvis serve exits 0, not {code}")
alice.close()
server.cleanup()
print("xmpp security: ok")
