"""Designs from the network never block the bot: over IRC, a deploy from LDAP waits on a
slapd that stopped answering (SIGSTOP) while a deploy from a slow gist is in flight, and
`status` is answered at once all along; both then start and finish. A cluster from a gist
starts one job per host under its group, `status <cluster>` summarizes them, and a second
deploy of the cluster while it runs starts nothing."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check  # noqa: E402
from irc_support import Client, Ngircd, bot_config, make_bot_files  # noqa: E402
from ldap_support import Slapd  # noqa: E402
from gist_emulator import GistEmulator  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
server = Ngircd()
work = server.dir
make_bot_files(work, stage_sleep="0.3")
slapd = Slapd()
slapd.add_host("loki", fqdn="loki.example.com", ip="10.0.0.7", provider="test")
emu = GistEmulator()
emu.add_gist("bbb222", {"thor.yaml": "instance:\n  hostname: thor\n  provider: test\n"})
emu.add_slow("/gists/bbb222", 3, content=json.dumps(emu.gist_json("bbb222")))
emu.add_gist("ccc333", {"design.yaml": """cluster: web
instance: {provider: test}
instances:
  - {hostname: web1}
  - {hostname: web2}
  - {hostname: web3}
""", "README.md": "three web nodes\n"})
with open(f"{work}/reader.pass", "w") as f:
    f.write(slapd.reader_password + "\n")

cfg = bot_config(work, server, irc_extra="  flood: {burst: 20, per_second: 10}\n",
                 chat_extra="  commands_per_minute: 600\n  command_burst: 50\n",
                 extra=f"""ldap:
  uri: {slapd.uri}
  ca_file: {slapd.ca_file}
  bind_dn: {slapd.reader_dn}
  bind_password_file: reader.pass
  base: {slapd.hosts_ou}
  timeout: 10s
gist:
  api_url: {emu.base_url}
  ca_file: {emu.ca_file}
  timeout: 10s
  allow_private_addresses: true
""")
bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=open(f"{work}/jarvis.log", "w"))
alice = Client(server, "alice")
alice.join("#ops")
alice.wait_member("#ops", "jarvis", 20, "jarvis to join #ops")



def status_rtts(n, what):
    rtts = []
    for _ in range(n):
        start = time.monotonic()
        alice.say("#ops", "jarvis: status nosuch")
        # keep_others: a deploy's answer that comes meanwhile is expected below
        alice.expect("#ops", lambda t: t.startswith("nosuch: no jobs yet"), timeout=5, what=what, keep_others=True)
        rtts.append(time.monotonic() - start)
        time.sleep(0.1)
    return sorted(rtts)


idle = status_rtts(10, "a status reply with nothing in flight")
# LDAP stops answering: the lookup hangs in the bot's LDAP pool, not on its loop.
os.kill(slapd.proc.pid, signal.SIGSTOP)
try:
    alice.say("#ops", "jarvis: deploy cn=loki")
    alice.say("#ops", "jarvis: deploy https://gist.github.com/octocat/bbb222")
    busy = status_rtts(10, "a status reply while LDAP and the gist are in flight")
    print(f"status round trip, median/max: idle {idle[5] * 1000:.1f}/{idle[-1] * 1000:.1f} ms, "
          f"with an LDAP and a gist fetch in flight {busy[5] * 1000:.1f}/{busy[-1] * 1000:.1f} ms")
    check(busy[-1] < 1.0, f"status waited on a design fetch: {busy}")
finally:
    os.kill(slapd.proc.pid, signal.SIGCONT)
# Both start once their servers answer, in whichever order that happens, and get ready.
wanted = {"thor: deploying with three, 3 stages (job ": False, "loki: deploying with three, 3 stages (job ": False,
          "alice: thor is ready": False, "alice: loki is ready": False}
while not all(wanted.values()):
    line = alice.expect("#ops", lambda t: t.startswith(tuple(wanted)), timeout=30,
                        what=f"the gist and LDAP deploys starting and ready ({wanted})")
    wanted[next(w for w in wanted if line.startswith(w))] = True

# A cluster: one job per host under the group.
alice.say("#ops", "jarvis: plan https://gist.github.com/ccc333")
alice.expect("alice", lambda t: t == "cluster web: plan for 3 hosts; nothing runs", what="cluster plan, by DM")
alice.say("#ops", "jarvis: deploy https://gist.github.com/ccc333")
alice.expect("#ops", lambda t: t.startswith("cluster web: deploying 3 hosts with three: web1 (job 3), "
                                             "web2 (job 4), web3 (job 5)"), what="cluster deploy")
alice.say("#ops", "jarvis: deploy https://gist.github.com/ccc333")
alice.expect("#ops", lambda t: t == "cluster web: not starting any of its 3 hosts:", what="cluster refused")
alice.say("#ops", "jarvis: status web")
alice.expect("#ops", lambda t: t.startswith("cluster web: 3 hosts, ") and "all ready" not in t,
             what="cluster status in flight")
deadline = time.monotonic() + 60
while True:
    alice.say("#ops", "jarvis: status web")
    line = alice.expect("#ops", lambda t: t.startswith("cluster web: 3 hosts"), what="cluster status")
    if line.endswith("all ready"):
        break
    check(time.monotonic() < deadline, f"the cluster never got ready: {line}")
    time.sleep(1)
alice.expect("#ops", lambda t: t.startswith("web3: ready"), what="per-host lines under the summary")

bot.terminate()
bot.wait(timeout=20)
alice.close()
slapd.cleanup(ok=True)
emu.stop()
server.cleanup()
print("designs in chat: ok")
