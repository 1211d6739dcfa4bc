"""One jarvis, three protocols at once: ngircd (IRC), Prosody (XMPP) and the Slack emulator.
A deploy started on IRC is followed with status from Slack and XMPP, its announcements reach
all three, one audit trail records all three, and XMPP's outage (Prosody stopped) leaves IRC
and Slack answering; XMPP gets what it missed when it is back."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head  # noqa: E402
from irc_support import Client as IrcClient, Ngircd, make_bot_files, write_design  # noqa: E402
from slack_emulator import SlackEmulator  # noqa: E402
from xmpp_support import Client as XmppClient, Prosody  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
irc = Ngircd()
work = irc.dir
make_bot_files(work)
write_design(work, "loki")
xmpp = Prosody()
for user in ("jarvis", "alice"):
    xmpp.register(user, f"{user}-pw-3f")
slack = SlackEmulator()
OPS_ROOM = xmpp.room_jid("ops")
for name, value in (("xmpp.pass", "jarvis-pw-3f"), ("app.token", slack.app_token), ("bot.token", slack.bot_token)):
    with open(f"{work}/{name}", "w") as f:
        f.write(value + "\n")
cfg = f"{work}/jarvis.yaml"
with open(cfg, "w") as f:
    f.write(config_head(work, "jarvis") + f"""irc:
  server: 127.0.0.1
  port: {irc.tls_port}
  tls: true
  tls_ca_file: {irc.cert}
  nick: jarvis
  channels: ["#ops"]
  ping_interval: 2s
  ping_timeout: 6s
  flood: {{burst: 20, per_second: 10}}
xmpp:
  jid: jarvis@localhost
  password_file: xmpp.pass
  server: 127.0.0.1
  port: {xmpp.port}
  tls_ca_file: {xmpp.cert}
  rooms: [{OPS_ROOM}]
  ping_interval: 2s
slack:
  app_token_file: app.token
  bot_token_file: bot.token
  api_url: {slack.api_url}
  ca_file: {slack.ca_file}
chat:
  announce: ["irc:#ops", "xmpp:{OPS_ROOM}", "slack:C0OPS"]
  announce_level: all
  announce_level_direct: all
  commands_per_minute: 600
  command_burst: 50
acl:
  rules:
    - who: ["irc:alice!*@*", "xmpp:alice@localhost", "slack:T0TEST/U123ALICE"]
      commands: [deploy, cancel, retry]
""")
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=open(f"{work}/jarvis.log", "w"))
irc_alice = IrcClient(irc, "alice")
irc_alice.join("#ops")
irc_alice.wait_member("#ops", "jarvis", 30, "jarvis on IRC")
xmpp_alice = XmppClient(xmpp, "alice", "alice-pw-3f")
xmpp_alice.join("ops", "alice")
xmpp_alice.wait_presence("ops", "jarvis", 30)
slack.wait_connections(1, 30)


def plain(text):
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# Deploy from IRC; stage 2 holds while <work>/hold exists.
open(f"{work}/hold", "w").close()
irc_alice.say("#ops", "jarvis: deploy loki")
irc_alice.expect("#ops", lambda t: t == "loki: deploying with three, 3 stages (job 1)", what="deploy on IRC")
irc_alice.expect("#ops", lambda t: t.startswith("loki: stage 2/3 step:run started"), what="stage 2 on IRC")

# The announcements reach the XMPP room and Slack too.
xmpp_alice.expect("ops", lambda t: t.startswith("loki: stage 2/3 step:run started"), what="an announcement in XMPP")
slack.wait_message(lambda m: m["channel"] == "C0OPS" and "loki: stage 2/3 step:run started" in plain(m["text"]),
                   what="the progress message in Slack")

# Status from Slack and from XMPP: the same job, started on IRC.
slack.mention("U123ALICE", "C0OPS", "status loki")
slack.wait_message(lambda m: m["channel"] == "C0OPS" and plain(m["text"]).startswith("loki: running stage 2/3 step:run")
                   and "started by alice" in m["text"], what="status from Slack")
xmpp_alice.say_room("ops", "jarvis: status loki")
xmpp_alice.expect("ops", lambda t: t.startswith("loki: running stage 2/3 step:run"), what="status from XMPP")

# XMPP goes down: IRC and Slack carry on.
xmpp.stop()
irc_alice.say("#ops", "jarvis: status loki")
irc_alice.expect("#ops", lambda t: t.startswith("loki: running stage 2/3"), what="IRC during the XMPP outage")
earlier = {id(m) for m in list(slack.messages)}  # the status answered before the outage matches too
slack.mention("U123ALICE", "C0OPS", "status loki")
slack.wait_message(lambda m: id(m) not in earlier and m["channel"] == "C0OPS"
                   and plain(m["text"]).startswith("loki: running stage 2/3"), what="Slack during the XMPP outage")
os.remove(f"{work}/hold")
irc_alice.expect("#ops", lambda t: t.startswith("alice: loki is ready: 3 stages"), timeout=30,
                 what="ready on IRC, naming alice (who asked there)")
slack.wait_message(lambda m: m["channel"] == "C0OPS" and plain(m["text"]).startswith("loki is ready: 3 stages"),
                   timeout=30, what="ready in Slack (the progress message)")

# XMPP is back: the bot rejoins and delivers what it missed.
xmpp.start()
xmpp_alice.reconnect()
xmpp_alice.wait_presence("ops", "jarvis", 60)
# Live, or in the room's history if the bot rejoined first (Prosody's history died with it).
xmpp_alice.expect("ops", lambda t: t.startswith("loki is ready: 3 stages"), timeout=30, delayed=None,
                  what="ready in XMPP after the outage")

# One audit trail for the three protocols.
irc_alice.say("#ops", "jarvis: audit loki")
lines = irc_alice.collect("#ops", lambda t: "(irc #ops): deploy loki" in t or t.startswith("no audit"), what="the audit")
irc_alice.say("#ops", "jarvis: audit")
trail = irc_alice.collect("#ops", lambda t: "audit loki" in t, what="the whole audit trail")
for proto in ("(irc #ops)", "(slack C0OPS)", f"(xmpp {OPS_ROOM})"):
    check(proto in trail, f"the audit trail lacks {proto}: {trail}")

slack.wait_all_acked(10)
check(slack.unacked() == [], f"unacknowledged envelopes: {slack.unacked()}")
bot.terminate()
bot.wait(timeout=20)
irc_alice.close()
xmpp_alice.close()
slack.stop()
xmpp.cleanup()
irc.cleanup()
print("three fronts: ok")
