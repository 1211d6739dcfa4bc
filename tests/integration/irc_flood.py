"""50 concurrent deploys announced in one IRC channel, against an ngircd with its default
flood penalties: every job's progress and "ready" arrive (merged into fewer lines when the
bot falls behind, never dropped), and the bot is never disconnected. With --bench, prints
how long the announcements took."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
from jarvis_test import check, wait_for  # noqa: E402
from irc_support import Client, Ngircd, bot_config, make_bot_files, write_design  # noqa: E402

binary, source, build = sys.argv[1:4]
jobs = 50
server = Ngircd(throttle=True)
work = server.dir
make_bot_files(work, stage_sleep="0.05")
hosts = [f"h{i:02d}" for i in range(1, jobs + 1)]
for h in hosts:
    write_design(work, h, provider="five")
# ngircd delays a client beyond about 3 lines/s; stay under it.
cfg = bot_config(work, server, irc_extra="  flood: {burst: 3, per_second: 2}\n",
                 extra="max_running_jobs: 64\n")
log_path = f"{work}/jarvis.log"
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.PIPE,
                       stdout=subprocess.DEVNULL, stderr=open(log_path, "w"), text=True)
alice = Client(server, "alice")
alice.join("#ops")
alice.wait_member("#ops", "jarvis", 30, "jarvis to join #ops")

start = time.time()
for h in hosts:  # through the console front: the deploys all start at once
    bot.stdin.write(f"deploy {h}\n")
bot.stdin.flush()
seen = ""
ready = set()
lines = 0


def all_ready():
    global seen, lines
    text = alice.collect("#ops", lambda t: True, timeout=120, what="announcements")
    lines += 1
    seen += text + "\n"
    for h in hosts:
        if f"{h}: ready (job" in text:
            ready.add(h)
    return len(ready) == jobs


wait_for(all_ready, 300, "every job to be announced ready")
elapsed = time.time() - start
for h in hosts:
    for stage in range(1, 6):
        check(f"{h}: stage {stage}/5 step:run done" in seen, f"{h} stage {stage} never announced")
log = open(log_path).read()
check("irc: disconnected" not in log, "the bot was disconnected:\n" + log[-2000:])
check("Excess Flood" not in open(f"{server.dir}/ngircd.log").read(), "flood kill")
if "--bench" in sys.argv:
    print(f"50 concurrent 5-stage deploys: all announced ready after {elapsed:.1f} s, "
          f"{lines} IRC lines for {jobs * 12} events")
bot.terminate()
check(bot.wait(timeout=30) == 0, "jarvis serve exits 0")
server.cleanup()
print("ok")
