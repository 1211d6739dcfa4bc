"""Security findings of issue 17 on Slack, against the Socket Mode emulator (real HTTPS/WSS):
  teams     - a Slack Connect user of another organisation never matches the home team's
              slack:T0TEST/* rule, even when the event's `team` is the home team;
  mentions  - replies never mention anyone a user (or a worker) named: no <@U...>, <!channel>,
              <!here> from input; the bot's own addressing of the requester stays;
  frames    - an events_api frame without a payload (and one with a bad event) is logged and
              ignored; serve carries on and answers the next command.
JARVIS_TEST_SECTIONS=teams,frames runs only those (to show a section failing on older code)."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head, wait_for  # noqa: E402
from irc_support import make_bot_files, write_design  # noqa: E402
from slack_emulator import SlackEmulator  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
sections = set(filter(None, os.environ.get("JARVIS_TEST_SECTIONS", "teams,mentions,frames").split(",")))
emu = SlackEmulator(ims={"U123ALICE": "D0ALICE"})
work = emu.directory
make_bot_files(work, stage_sleep="0.1")
for host in ("loki", "thor"):
    write_design(work, host)
with open(f"{work}/workers/step/shout", "w") as f:
    f.write("#!/bin/sh\ncat >/dev/null\necho 'ping <@U0CEO> and <!channel> <!here> &lt;@U0CEO&gt;' >&2\nexit 1\n")
os.chmod(f"{work}/workers/step/shout", 0o755)
with open(f"{work}/pipelines/shout.yaml", "w") as f:
    f.write("name: shout\nmatch: {provider: shout}\ntasks: [step:shout]\n")
write_design(work, "loud", provider="shout")
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
  announce: ["slack:C0OPS"]
  commands_per_minute: 600
  command_burst: 50
acl:
  rules:
    - who: ["slack:T0TEST/*"]
      commands: [deploy]
      where: ["slack:C0OPS"]
""")
log_path = f"{work}/jarvis.log"
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=open(log_path, "w"))
emu.wait_connections(1, 30)


def reply(predicate, what, timeout=20):
    """The raw text (as the bot sent it to Slack) of the next matching message in #ops."""
    return emu.wait_message(lambda m: m["channel"] == "C0OPS" and predicate(m["text"]), timeout=timeout,
                            what=what)["text"]


if "teams" in sections:
    # A Slack Connect user: their own team is T0OTHER; `team` says the channel's (home) team.
    emu.mention("U777EXT", "C0OPS", "deploy loki", extra={"user_team": "T0OTHER", "team": "T0TEST"})
    reply(lambda t: t == "<@U777EXT>: you may not deploy here; ask an admin to add you to the ACL",
          "the external user refused")
    emu.mention("U123ALICE", "C0OPS", "deploy loki")
    reply(lambda t: t.startswith("loki: deploying with three"), "a home-team user deploying")
    deploys = [m for m in emu.messages if "loki: deploying" in m["text"]]
    check(len(deploys) == 1, f"the external user's deploy ran: {[m['text'] for m in deploys]}")

if "mentions" in sections:
    emu.mention("U999MALLORY", "C0OPS", "status <@U0CEO>")
    t = reply(lambda t: "U0CEO" in t, "the reply about <@U0CEO>")
    check("<@U0CEO>" not in t, f"the reply mentions the CEO: {t!r}")
    emu.mention("U999MALLORY", "C0OPS", "status <!channel>")
    t = reply(lambda t: "channel" in t, "the reply about <!channel>")
    check("<!channel>" not in t, f"the reply pings the channel: {t!r}")
    emu.mention("U999MALLORY", "C0OPS", "log &lt;!here&gt;&lt;@U0CEO&gt;")  # typed as text
    t = reply(lambda t: "here" in t, "the reply about a typed <!here>")
    check("<!here>" not in t and "<@U0CEO>" not in t, f"typed markup became a mention: {t!r}")
    emu.mention("U123ALICE", "C0OPS", "deploy loud")
    t = reply(lambda t: t.startswith("<@U123ALICE>: loud failed"), "the failure of a worker that shouts", timeout=30)
    for markup in ("<@U0CEO>", "<!channel>", "<!here>"):
        check(markup not in t, f"the worker's {markup} reached Slack as markup: {t!r}")
    emu.mention("U777EXT", "C0OPS", "deploy thor", extra={"user_team": "T0OTHER"})
    reply(lambda t: t.startswith("<@U777EXT>: you may not deploy"), "the requester still addressed")

if "frames" in sections:
    emu.send_frame({"type": "events_api", "envelope_id": "bad-1"})
    emu.send_frame({"type": "events_api", "envelope_id": "bad-2", "payload": {"event_id": "Ev1", "event": "x"}})
    emu.send_frame({"type": "events_api", "envelope_id": "bad-3", "payload": ["not", "a", "map"]})
    time.sleep(0.5)
    check(bot.poll() is None, f"jarvis serve died of a malformed frame (exit {bot.poll()}):\n" + open(log_path).read()[-2000:])
    emu.mention("U123ALICE", "C0OPS", "status thor")
    reply(lambda t: t.startswith("thor: no jobs yet"), "an answer after the malformed frames")
    wait_for(lambda: "events_api frame without a payload" in open(log_path).read(), 5, "the bad frame logged")

bot.terminate()
check(bot.wait(timeout=20) == 0, "jarvis serve exits 0")
emu.cleanup()
print("slack security: ok")
