"""One user sends 50 deploys of a 5-stage pipeline and a `status` in one burst, through an
ngircd with its shipped flood penalties, to a bot with its default pacing (3 lines, then 1
a second) and default announcement level (quiet): every job's end arrives (merged into
few lines, nothing lost), the `status` is answered within 3 s of reaching the bot, no
answer comes after its own job's end, and the bot is never disconnected. The baseline, in
the same run, is the server itself: when a second user sees the burst's last line. With
--bench, prints the figures."""
import os
import re
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
# Default pacing and levels; the per-person command limit lets one person's 50 through.
cfg = bot_config(work, server, levels="", chat_extra="  commands_per_minute: 600\n  command_burst: 60\n",
                 extra="max_running_jobs: 64\n")
log_path = f"{work}/jarvis.log"
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=open(log_path, "w"), text=True)
alice = Client(server, "alice")
alice.join("#ops")
watcher = Client(server, "watcher")
watcher.join("#ops")
alice.wait_member("#ops", "jarvis", 30, "jarvis to join #ops")

burst = [f"PRIVMSG #ops :jarvis: deploy {h}" for h in hosts[:25]] + ["PRIVMSG #ops :jarvis: status h01"] + \
        [f"PRIVMSG #ops :jarvis: deploy {h}" for h in hosts[25:]]
start = time.time()
alice.sock.sendall(("\r\n".join(burst) + "\r\n").encode())

# Both users' lines, timed as they arrive (polled every 10 ms). The baseline is the server's
# own pace: when the watcher sees alice's last line, and her `status`.
ready, acked, order_ok, lines = set(), set(), True, 0
status_at = status_passed = server_done = None
passed = 0
seen = []
read = {"alice": 0, "watcher": 0}
deadline = start + 300
while time.time() < deadline and not (len(ready) == jobs and status_at and server_done):
    now = time.time()
    for who, client in (("alice", alice), ("watcher", watcher)):
        with client.lock:
            new = client.lines[read[who]:]
            read[who] = len(client.lines)
        for l in new:
            if who == "watcher" and l.startswith(":alice!") and " PRIVMSG #ops :" in l:
                passed += 1
                if l.endswith("status h01"):
                    status_passed = now
                if passed == len(burst):
                    server_done = now
            if who == "alice" and l.startswith(":jarvis!") and " PRIVMSG #ops :" in l:
                text = l.split(" PRIVMSG #ops :", 1)[1]
                lines += 1
                seen.append(f"{now - start:6.2f} {text[:150]}")
                if text.startswith("h01: ") and "deploying" not in text and status_at is None:
                    status_at = now
                for h in re.findall(r"\bh\d\d\b", text.split(" (")[0]):
                    if "deploying" in text:
                        order_ok = order_ok and h not in ready
                        acked.add(h)
                    if " is ready" in text or ": ready:" in text:
                        ready.add(h)
    time.sleep(0.01)
check(server_done and status_passed, f"the server passed {passed} of {len(burst)} lines on")
server_elapsed = server_done - start
check(status_at, "no answer to status:\n" + "\n".join(seen))
elapsed = max(float(x.split()[0]) for x in seen if " is ready" in x or ": ready:" in x)
check(ready == set(hosts), f"ends missing for {sorted(set(hosts) - ready)}")
check(acked == set(hosts), f"acks missing for {sorted(set(hosts) - acked)}")
check(order_ok, "an ack came after its job's end:\n" + "\n".join(seen))
status_wait = status_at - status_passed
log = open(log_path).read()
check("irc: disconnected" not in log, "the bot was disconnected:\n" + log[-2000:])
check("Excess Flood" not in open(f"{server.dir}/ngircd.log").read(), "flood kill")
check(status_wait < 3.0, f"status answered {status_wait:.1f} s after the server passed it on "
      f"({status_passed - start:.1f} s after the burst):\n" + "\n".join(seen))
check(elapsed < server_elapsed + 8, f"the ends took {elapsed:.1f} s, the server's own pace {server_elapsed:.1f} s")
if "--bench" in sys.argv:
    print(f"baseline: ngircd passes the burst of {len(burst)} commands on in {server_elapsed:.1f} s")
    print(f"50 deploys + status in one burst: every end after {elapsed:.1f} s, status {status_wait * 1000:.0f} ms "
          f"after the server passed it on ({status_at - start:.1f} s after the burst), {lines} IRC lines, "
          f"0 lost, 0 disconnects")
bot.terminate()
check(bot.wait(timeout=30) == 0, "jarvis serve exits 0")
server.cleanup()
print("ok")
