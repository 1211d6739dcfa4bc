"""Chat latency through a real ngircd with the bot's default pacing (3 lines, then 1 a
second) and default levels, each figure with its baseline from the same run:
  1. `status` asked 20 times (one every 1.5 s) during a 19-stage deploy announced at level
     `all` in the same channel, against ngircd with its shipped penalties; baseline: the
     same 20 asks with nothing running.
  2. `status` asked at a human pace (one every 2 s, N times) on ngircd without penalties;
     baseline: the user's PING round trip to ngircd.
  3. one 5-stage deploy (instant stages) on a quiet channel: request to the end line, 10
     times; baseline: the job's own duration as the end line reports it.
Usage: bench/irc_chat.py JARVIS_BINARY SOURCE_DIR [idle_asks (50)]"""
import os
import re
import subprocess
import sys
import time

source = sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "integration"))
from irc_support import Client, Ngircd, bot_config, make_bot_files, write_design  # noqa: E402

binary = sys.argv[1]
idle_asks = int(sys.argv[3]) if len(sys.argv) > 3 else 50


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def run_bot(cfg, work):
    return subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(f"{work}/jarvis.log", "a"))


def ask_status(alice, host, expect):
    t = time.perf_counter()
    alice.say("#ops", f"jarvis: status {host}")
    alice.expect("#ops", lambda x: x.startswith(expect), timeout=30, what="status")
    return (time.perf_counter() - t) * 1000


# 1. status during a 19-stage deploy, shipped penalties.
server = Ngircd(throttle=True)
work = server.dir
make_bot_files(work, stage_sleep="4")
with open(f"{work}/pipelines/nineteen.yaml", "w") as f:
    f.write("name: nineteen\nmatch: {provider: nineteen}\ntasks: [" + ", ".join(["step:run"] * 19) + "]\n")
write_design(work, "loki", provider="nineteen")
write_design(work, "idle")
cfg = bot_config(work, server, levels="  announce_level: all\n",
                 chat_extra="  commands_per_minute: 600\n  command_burst: 60\n")
bot = run_bot(cfg, work)
alice = Client(server, "alice")
alice.join("#ops")
alice.wait_member("#ops", "jarvis", 30, "jarvis")
base = []
for i in range(20):
    base.append(ask_status(alice, "idle", "idle: no jobs yet"))
    time.sleep(1.5)
alice.say("#ops", "jarvis: deploy loki")
alice.expect("#ops", lambda x: x.startswith("loki: deploying"), what="deploy")
busy = []
for i in range(20):
    busy.append(ask_status(alice, "loki", "loki: running stage"))
    time.sleep(1.5)
print(f"1. status during a 19-stage deploy (level all, ngircd penalties on), 20 asks: "
      f"p50 {pct(busy, .5):.0f} ms, p99 {pct(busy, .99):.0f} ms; baseline nothing running: "
      f"p50 {pct(base, .5):.1f} ms, p99 {pct(base, .99):.1f} ms")
bot.terminate()
bot.wait(timeout=30)
server.cleanup()

# 2 and 3: no penalties.
server = Ngircd()
work = server.dir
make_bot_files(work, stage_sleep="0")
with open(f"{work}/pipelines/five.yaml", "w") as f:
    f.write("name: five\nmatch: {provider: five}\ntasks: [step:run, step:run, step:run, step:run, step:run]\n")
write_design(work, "loki")
for i in range(10):
    write_design(work, f"q{i}", provider="five")
cfg = bot_config(work, server, levels="", chat_extra="  commands_per_minute: 600\n  command_burst: 60\n")
bot = run_bot(cfg, work)
alice = Client(server, "alice")
alice.join("#ops")
alice.wait_member("#ops", "jarvis", 30, "jarvis")
ping, idle = [], []
for i in range(idle_asks):
    t = time.perf_counter()
    alice.send(f"PING :probe{i}")
    alice.wait(lambda l: "PONG" in l and f"probe{i}" in l, 10, "pong")
    ping.append((time.perf_counter() - t) * 1000)
    idle.append(ask_status(alice, "loki", "loki: no jobs yet"))
    time.sleep(2)
print(f"2. status at a human pace (one every 2 s), {idle_asks} asks, no penalties: p50 {pct(idle, .5):.2f} ms, "
      f"p99 {pct(idle, .99):.2f} ms; baseline PING to ngircd: p50 {pct(ping, .5):.2f} ms, p99 {pct(ping, .99):.2f} ms")
ready, own = [], []
for i in range(10):
    t = time.perf_counter()
    alice.say("#ops", f"jarvis: deploy q{i}")
    end = alice.expect("#ops", lambda x: f"q{i} is ready" in x, timeout=30, what="the end line")
    ready.append((time.perf_counter() - t) * 1000)
    m = re.search(r"5 stages in (\d+)ms", end)
    own.append(int(m.group(1)) if m else float("nan"))
    time.sleep(2)
print(f"3. one 5-stage deploy on a quiet channel, request to the end line, 10 runs: p50 {pct(ready, .5):.1f} ms, "
      f"max {max(ready):.1f} ms; baseline the job's own duration: p50 {pct(own, .5):.0f} ms, max {max(own):.0f} ms")
bot.terminate()
bot.wait(timeout=30)
server.cleanup()
