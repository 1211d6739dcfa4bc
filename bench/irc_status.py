"""`status` round trip through a real ngircd: a user asks `jarvis: status loki` 200 times,
one after the other, and times each reply. The baseline, measured in the same run, is the
same user's round trip to the server alone (a PING answered by ngircd). ngircd's flood
penalties are off, and the bot's per-person limit and its own outgoing pacing are raised:
this measures the bot, not the flood control (which, at its defaults, lets 3 replies out at
once and then 1 per second). Usage: bench/irc_status.py JARVIS_BINARY SOURCE_DIR"""
import os
import statistics
import subprocess
import sys
import time

source = sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "integration"))
from irc_support import Client, Ngircd, bot_config, make_bot_files, write_design  # noqa: E402

binary = sys.argv[1]
server = Ngircd()
work = server.dir
make_bot_files(work, stage_sleep="0")
write_design(work, "loki")
cfg = bot_config(work, server, irc_extra="  flood: {burst: 1000, per_second: 1000}\n",
                 chat_extra="  commands_per_minute: 6000\n  command_burst: 1000\n")
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.PIPE,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
alice = Client(server, "alice")
alice.join("#ops")
alice.wait_member("#ops", "jarvis", 30, "jarvis")
alice.say("#ops", "jarvis: deploy loki")
alice.expect("#ops", lambda t: "loki is ready" in t, what="the job")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


server_rtt = []
for i in range(200):
    t = time.perf_counter()
    alice.send(f"PING :probe{i}")
    alice.wait(lambda l: f"PONG" in l and f"probe{i}" in l, 10, "pong")
    server_rtt.append((time.perf_counter() - t) * 1000)
bot_rtt = []
for i in range(200):
    t = time.perf_counter()
    alice.say("#ops", "jarvis: status loki")
    alice.expect("#ops", lambda t: t.startswith("loki: ready (job 1"), what="status")
    bot_rtt.append((time.perf_counter() - t) * 1000)
print(f"baseline: PING round trip to ngircd over 200: p50 {pct(server_rtt, .5):.2f} ms, p99 {pct(server_rtt, .99):.2f} ms")
print(f"status round trip through ngircd over 200: p50 {pct(bot_rtt, .5):.2f} ms, "
      f"p99 {pct(bot_rtt, .99):.2f} ms, mean {statistics.mean(bot_rtt):.2f} ms")
bot.terminate()
bot.wait(timeout=30)
server.cleanup()
