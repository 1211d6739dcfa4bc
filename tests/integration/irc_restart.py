"""ngircd killed and restarted mid-job: the job goes on, the bot reconnects with backoff,
rejoins, and what was queued while it was offline arrives as each job's newest state (the
job's end, not its stale progress). Then the server hangs
(SIGSTOP): the bot's own keepalive notices the silence and it reconnects once the server is
back."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, wait_for  # noqa: E402
from irc_support import Client, Ngircd, bot_config, make_bot_files, write_design  # noqa: E402

binary, source, build = sys.argv[1:4]
server = Ngircd()
work = server.dir
make_bot_files(work)
write_design(work, "loki")
cfg = bot_config(work, server)
log_path = f"{work}/jarvis.log"
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.PIPE,
                       stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
cli = Jarvis(binary, source, build)
cli.state = f"{work}/state-jarvis"
cli.workers_path, cli.pipelines_dir = f"{work}/workers", f"{work}/pipelines"


def joined(client):
    client.wait_member("#ops", "jarvis", 30, "jarvis to join #ops")


alice = Client(server, "alice")
alice.join("#ops")
joined(alice)
open(f"{work}/hold", "w").close()
alice.say("#ops", "jarvis: deploy loki")
alice.expect("#ops", lambda t: t == "loki: deploying with three, 3 stages (job 1)", what="deploy")
alice.expect("#ops", lambda t: "stage 2/3 step:run started" in t, what="stage 2 running")

# The server goes away mid-job; the job finishes while the bot is offline.
server.stop()
wait_for(lambda: "irc: disconnected" in open(log_path).read(), 20, "the bot to notice")
os.unlink(f"{work}/hold")
wait_for(lambda: cli.status("loki").startswith("loki: ready"), 30, "the job to finish offline")
# A failed reconnect just now: the next is a doubled backoff away, time for alice to be in #ops
# before the bot (IRC keeps no history: lines sent before she joined never reach her).
failed = open(log_path).read().count("reconnecting in")
wait_for(lambda: open(log_path).read().count("reconnecting in") > failed, 40, "a failed reconnect")
server.start()
alice = Client(server, "alice")
alice.join("#ops")
joined(alice)
# The bot retries with a backoff of up to a minute: give it a full step after the server is back.
queued = alice.collect("#ops", lambda t: "loki is ready: 3 stages" in t, timeout=75, what="queued announcements")
check("alice: loki is ready: 3 stages" in queued, f"no end line after the reconnect:\n{queued}")
check("stage 3/3 step:run started" not in queued,
      f"stale progress was sent after the reconnect instead of the newest state:\n{queued}")
alice.say("#ops", "jarvis: status loki")
alice.expect("#ops", lambda t: t.startswith("loki: ready (job 1"), what="status after reconnect")
log = open(log_path).read()
check("reconnecting in" in log, log)

# A hung server: no EOF, just silence. The keepalive (ping 2s, timeout 6s) notices.
os.kill(server.proc.pid, signal.SIGSTOP)
wait_for(lambda: "ping timeout" in open(log_path).read(), 20, "the keepalive to notice")
os.kill(server.proc.pid, signal.SIGCONT)
watcher = Client(server, "watcher")
watcher.join("#ops")
watcher.wait_member("#ops", "jarvis", 40, "jarvis back after the hang")
watcher.say("#ops", "!status loki")
watcher.expect("#ops", lambda t: t.startswith("loki: ready (job 1"), what="the bot answering again")

bot.terminate()
check(bot.wait(timeout=30) == 0, "jarvis serve exits 0 on SIGTERM")
cli.cleanup()
server.cleanup()
print("ok")
