"""jarvis in Slack (Socket Mode) against an emulator of Slack's Web API and WebSocket over real
HTTPS/WSS (the bot's libcurl and Beast code paths; only the base URL differs): commands from
an app mention and a direct message, the ACL by Slack user id, a job's progress as one
message edited in place, a redelivered event not run twice, a 429 with Retry-After honoured
without losing the message, a refresh (disconnect) and a dropped connection survived, and
every envelope acknowledged."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head  # noqa: E402
from irc_support import make_bot_files, write_design  # noqa: E402
from slack_emulator import SlackEmulator  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
emu = SlackEmulator(ims={"U123ALICE": "D0ALICE", "U999MALLORY": "D0MALLORY"}, outside=("C0SECRET",))
work = emu.directory
make_bot_files(work, stage_sleep="0.3")
for host in ("loki", "thor", "odin"):
    write_design(work, host)
with open(f"{work}/app.token", "w") as f:
    f.write(emu.app_token + "\n")
with open(f"{work}/bot.token", "w") as f:
    f.write(emu.bot_token + "\n")
cfg = f"{work}/jarvis.yaml"
with open(cfg, "w") as f:
    f.write(config_head(work, "jarvis") + f"""slack:
  app_token_file: app.token
  bot_token_file: bot.token
  api_url: {emu.api_url}
  ca_file: {emu.ca_file}
chat:
  announce: ["slack:C0OPS", "slack:C0SECRET"]
  announce_level: all
  announce_level_direct: all
  commands_per_minute: 600
  command_burst: 50
acl:
  rules:
    - who: ["slack:T0TEST/U123ALICE"]
      commands: [deploy, cancel, retry]
      where: ["slack:C0OPS", "direct"]
""")
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=open(f"{work}/jarvis.log", "w"))
emu.wait_connections(1, 30)


def plain(text):
    """What Slack shows for a message's text (the bot escapes & < > as Slack requires)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def in_channel(channel, predicate):
    return lambda m: m["channel"] == channel and predicate(plain(m["text"]))


# An app mention in a channel, and a direct message.
emu.mention("U123ALICE", "C0OPS", "status loki")
emu.wait_message(in_channel("C0OPS", lambda t: t.startswith("loki: no jobs yet")), what="status reply in #ops")
emu.dm("U123ALICE", "help")
emu.wait_message(in_channel("D0ALICE", lambda t: t.startswith("deploy <design>")), what="help by DM")

# A deploy: the reply, then the job's progress as one message edited in place until ready.
deploy = emu.mention("U123ALICE", "C0OPS", "deploy loki")
emu.wait_message(in_channel("C0OPS", lambda t: t == "loki: deploying with three, 3 stages (job 1)"), what="deploy reply")
progress = emu.wait_message(lambda m: m["channel"] == "C0OPS" and m["updates"]
                            and plain(m["text"]).startswith("<@U123ALICE>: loki is ready: 3 stages"), timeout=30,
                            what="the progress message reaching ready")
# The end is also a new message, so that the mention notifies alice (an edit does not).
ended = emu.wait_message(lambda m: m["channel"] == "C0OPS" and not m["updates"]
                         and plain(m["text"]).startswith("<@U123ALICE>: loki is ready"),
                         what="a new message naming alice at the end")
check(ended["text"].startswith("<@U123ALICE>:"), f"the mention was escaped: {ended}")
check(len(progress["updates"]) >= 2, f"the progress message was not edited in place: {progress}")
stage_posts = [m for m in emu.messages if m["channel"] == "C0OPS" and "loki: stage" in m.get("first_text", m["text"])]
check(len(stage_posts) <= 1, f"progress came as a stream of messages: {[m['text'] for m in stage_posts]}")

# C0SECRET is an announce place the bot was never invited to: Slack says not_in_channel, and
# the log says so with the place (the line is counted, not retried forever).
log = open(f"{work}/jarvis.log").read()
check("refused a line for C0SECRET: not_in_channel" in log, f"not_in_channel was not logged with its place: {log[-2000:]}")

# Slack delivers the deploy again (a retry): acknowledged, not run twice.
emu.redeliver(deploy)
emu.mention("U123ALICE", "C0OPS", "status loki")
emu.wait_message(in_channel("C0OPS", lambda t: t.startswith("loki: ready (job 1")) , what="status after the redelivery")
deploying = [m for m in emu.messages if "loki: deploying" in m["text"] or "already in flight" in m["text"]]
check(len(deploying) == 1, f"the redelivered deploy ran again: {[m['text'] for m in deploying]}")

# Asked in a thread: the answer goes in that thread, not into the channel.
emu.mention("U123ALICE", "C0OPS", "status loki", thread_ts="1700000000.000100")
threaded = emu.wait_message(lambda m: m["channel"] == "C0OPS" and plain(m["text"]).startswith("loki: ready (job 1")
                            and m["thread_ts"], what="a status reply in the thread")
check(threaded["thread_ts"] == "1700000000.000100", f"the reply went to another thread: {threaded}")
# A thread_ts that is not Slack's digits-and-a-dot is not used as a target.
emu.mention("U123ALICE", "C0OPS", "status baldr", thread_ts="1/../x")
odd = emu.wait_message(in_channel("C0OPS", lambda t: t.startswith("baldr: no jobs yet")), what="status with an odd thread_ts")
check(not odd["thread_ts"], f"a malformed thread_ts was used: {odd}")

# Someone the ACL does not name: refused by user id, with a mention.
emu.mention("U999MALLORY", "C0OPS", "deploy thor")
emu.wait_message(in_channel("C0OPS", lambda t: t == "<@U999MALLORY>: you may not deploy here; ask an admin to add you to the ACL"),
                 what="a refusal for mallory")

# A 429 on chat.postMessage: the reply waits Retry-After and still arrives.
emu.rate_limit("chat.postMessage", times=1, retry_after=1)
start = time.monotonic()
emu.mention("U123ALICE", "C0OPS", "status thor")
emu.wait_message(in_channel("C0OPS", lambda t: t.startswith("thor: no jobs yet")), what="a reply after a 429")
took = time.monotonic() - start
check(took >= 0.9, f"the 429's Retry-After was not honoured ({took:.2f}s)")
check(sum(1 for c in emu.calls if c[0] == "chat.postMessage" and c[2] == 429) == 1, "no 429 was served")

# Slack asks for a refresh: a new connection first, then the old one goes; nothing is missed.
total = emu.connection_count_total
emu.request_disconnect("refresh_requested")
emu.wait_connections(total + 1, 20, total=True)
emu.mention("U123ALICE", "C0OPS", "status odin")
emu.wait_message(in_channel("C0OPS", lambda t: t.startswith("odin: no jobs yet")), what="a reply after the refresh")

# The connection drops without a word: the bot reconnects and answers again.
total = emu.connection_count_total
emu.drop_connections()
emu.wait_connections(total + 1, 30, total=True)
emu.mention("U123ALICE", "C0OPS", "deploy odin")
emu.wait_message(in_channel("C0OPS", lambda t: t.startswith("<@U123ALICE>: odin is ready")), timeout=30,
                 what="a deploy after a dropped connection")

# check-config --online: both tokens checked without opening a socket (which would take a
# share of the running bot's events); a wrong bot token is a problem, named.
online = subprocess.run([binary, "check-config", "--online", "--config", cfg], capture_output=True, text=True, timeout=60)
check(online.returncode == 0, f"check-config --online exited {online.returncode}: {online.stdout}")
check(any(l.startswith(f"slack: connected to {emu.api_url} as ") for l in online.stdout.splitlines()), online.stdout)
check(online.stdout.splitlines()[-1] == "config ok; every server reached and every place joined", online.stdout)
with open(f"{work}/bad.token", "w") as f:
    f.write("xoxb-wrong\n")
with open(f"{work}/bad.yaml", "w") as f:
    f.write(open(cfg).read().replace("bot_token_file: bot.token", "bot_token_file: bad.token"))
bad = subprocess.run([binary, "check-config", "--online", "--config", f"{work}/bad.yaml"], capture_output=True,
                     text=True, timeout=60)
check(bad.returncode == 1 and "slack: cannot connect to" in bad.stdout and "check slack.bot_token" in bad.stdout,
      f"a wrong bot token: {bad.returncode} {bad.stdout}")
check("xoxb-wrong" not in bad.stdout + bad.stderr, "the token was echoed")

emu.wait_all_acked(10)
check(emu.unacked() == [], f"envelopes never acknowledged: {emu.unacked()}")
bot.terminate()
bot.wait(timeout=20)
log = open(f"{work}/jarvis.log").read()
for secret in (emu.app_token, emu.bot_token):
    check(secret not in log, "a Slack token reached the log")
emu.stop()
print("slack e2e: ok")
