"""Announcements through a real ngircd, at the default levels: quiet where the deploy was
asked (the answer, then one end line naming the requester), per-place levels (stages, all),
announce places joined at connect, a place that refuses the bot logged and counted, and on
SIGTERM the queue delivered and a QUIT with the reason; a restarted serve says it resumed
the job in flight."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
from jarvis_test import check, wait_for  # noqa: E402
from irc_support import Client, Ngircd, bot_config, make_bot_files, write_design  # noqa: E402

binary, source, build = sys.argv[1:4]
server = Ngircd()
work = server.dir
make_bot_files(work, stage_sleep="0.05")
write_design(work, "loki")

# #locked is invite-only before the bot comes: its JOIN is refused (473).
op = Client(server, "op")
op.join("#locked")
op.send("MODE #locked +i")
time.sleep(0.3)

cfg = bot_config(work, server, levels="", irc_extra="  flood: {burst: 20, per_second: 10}\n",
                 chat_extra='  announce: ["irc:#ops", "irc:#stages", "irc:#all", "irc:#locked"]\n'
                            '  announce_levels: {"irc:#stages": stages, "irc:#all": all}\n'
                            '  drain_timeout: 3s\n').replace('  announce: ["irc:#ops"]\n', "")
log_path = f"{work}/jarvis.log"


def start_bot():
    return subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "a"), text=True)


bot = start_bot()
alice = Client(server, "alice")
alice.join("#ops")
alice.join("#all")
watchers = {ch: Client(server, "w" + ch[1:]) for ch in ("#stages", "#all")}
for ch, w in watchers.items():  # not in irc.channels: joined because announcements go there
    w.join(ch)
    w.wait_member(ch, "jarvis", 30, f"jarvis to join {ch}")
wait_for(lambda: "#locked" in open(log_path).read() and "473" in open(log_path).read(), 20,
         "the refused JOIN of #locked to be logged")
check("refused a line for #locked" in open(log_path).read(), open(log_path).read()[-2000:])

# check-config --online connects as serve would (beside it, so under a fallback nick), joins
# every channel and announce place, says which were joined and which refused, and exits 1.
online = subprocess.run([binary, "check-config", "--online", "--config", cfg], capture_output=True, text=True,
                        timeout=60)
lines = online.stdout.splitlines()
check(online.returncode == 1, f"check-config --online with a refused place exited {online.returncode}: {online.stdout}")
check(any(l.startswith("irc: connected to 127.0.0.1:") and " as jarvis" in l for l in lines), online.stdout)
for ch in ("#ops", "#stages", "#all"):
    check(f"irc: {ch}: joined" in lines, f"{ch} not reported joined: {online.stdout}")
check(any(l.startswith("irc: #locked: refused: ") and l.endswith("(473)") for l in lines),
      f"the refusal of #locked was not reported with its reason: {online.stdout}")
check(any(l.startswith("irc: people are known by nick!user@host masks") for l in lines), online.stdout)
check(lines[-1] == "1 problem", f"the last line is not the count: {lines[-3:]!r}")

alice.say("#ops", "jarvis: deploy loki")
end = alice.expect("#ops", lambda t: "loki is ready" in t, timeout=30, what="the end line")
check(end.startswith("alice: loki is ready: 3 stages in ") and end.endswith("(job 1)"), end)


def texts(channel):
    return [l.split(" :", 1)[1] for l in list(watchers[channel].lines) if f" PRIVMSG {channel} :" in l]


# Each channel's lines leave on their own: wait for the end line in both, then a second more
# for anything late to show up in the counts below.
wait_for(lambda: end in texts("#stages") and end in texts("#all"), 20, "the end line in #stages and #all")
time.sleep(1)



stages, everything = texts("#stages"), texts("#all")
check(len(stages) == 4 and all("done in" in t for t in stages[:3]) and stages[3] == end,
      f"#stages: one line per finished stage and the end: {stages}")
check(len(everything) == 8 and everything[0].startswith("loki: starting (job 1") and everything[-1] == end,
      f"#all: started, 3 x (started, done), the end: {everything}")
with_ops = [l for l in alice.lines if " PRIVMSG #ops :" in l]
alice.lines.clear()
check(with_ops == [], f"#ops got more than the answer and the end: {with_ops}")
print(f"lines for one 3-stage deploy: quiet 2 (answer + end), stages {len(stages)}, all {len(everything)}")

# SIGTERM: a job held at stage 2; the bot says goodbye with a reason and the job resumes later.
open(f"{work}/hold", "w").close()
alice.say("#ops", "jarvis: deploy loki")
alice.expect("#ops", lambda t: t == "loki: deploying with three, 3 stages (job 2)", what="second deploy")
alice.expect("#all", lambda t: t.startswith("loki: stage 2/3 step:run started"), what="stage 2 running")
bot.send_signal(signal.SIGTERM)
quit_line = alice.wait(lambda l: l.startswith(":jarvis!") and " QUIT " in l, 15, "the bot's QUIT")
check("jarvis stopping (SIGTERM); 1 jobs in flight resume when it is back" in quit_line, quit_line)
check(bot.wait(timeout=20) == 0, "serve exits 0 after SIGTERM")
os.unlink(f"{work}/hold")
bot = start_bot()
back = alice.expect("#ops", lambda t: t.startswith("jarvis is back after a restart"), timeout=30,
                    what="the restart announcement")
check(back == "jarvis is back after a restart and resumed 1 job: loki (job 2, stage 2/3)", back)
alice.expect("#ops", lambda t: t.startswith("alice: loki is ready"), timeout=30, what="the resumed job's end")
bot.terminate()
check(bot.wait(timeout=30) == 0, "jarvis serve exits 0")
server.cleanup()
print("ok")
