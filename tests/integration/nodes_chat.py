"""Three `jarvis serve` nodes on one real PostgreSQL and one real ngircd: only the node that
leads chat is on IRC; deploys asked in #ops and on the runners' consoles run on any node; the
chat node is killed with SIGKILL mid-job and another node is back on IRC within 10 s; every
job ends ready and every end line reaches #ops exactly once (the events go through the event
table with the leader's cursor, whichever node ran the job)."""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from irc_support import Client, Ngircd  # noqa: E402
from jarvis_test import check, fail, wait_for  # noqa: E402
from nodes_support import Cluster  # noqa: E402

binary, source, build = sys.argv[1:4]
server = Ngircd()
work = tempfile.mkdtemp(prefix="jarvis-nodes-chat-")
irc = f"""irc:
  server: 127.0.0.1
  port: {server.tls_port}
  tls: true
  tls_ca_file: {server.cert}
  nick: jarvis
  channels: ["#ops"]
  ping_interval: 2s
  ping_timeout: 6s
  flood: {{burst: 20, per_second: 10}}
chat:
  announce: ["irc:#ops"]
  commands_per_minute: 120
  command_burst: 20
acl:
  rules:
    - who: ["irc:alice!*@*"]
      commands: [deploy, cancel, retry, status]
      where: ["irc:#ops", "direct"]
"""
c = Cluster(binary, work, stages=3, max_running=30, lease="3s", delay="3", extra=irc)
try:
    hosts = [f"c{n}" for n in range(9)]
    for h in hosts:
        c.design(h)
    watch = Client(server, "watch")
    watch.join("#ops")
    alice = Client(server, "alice")
    alice.join("#ops")
    for i in (1, 2, 3):
        c.start(i)
    watch.wait_member("#ops", "jarvis", 20, "the chat leader to join")
    first = wait_for(c.leader, 10, "a node to say it leads chat")
    check(sum(1 for i in c.procs if "leads chat" in c.errors(i)) == 1, "exactly one node leads chat")
    # Three deploys asked in #ops (answered by the leader), six on the runners' consoles.
    for h in hosts[:3]:
        alice.say("#ops", f"jarvis: deploy {h}")
    followers = [i for i in (1, 2, 3) if i != first]
    for n, h in enumerate(hosts[3:]):
        c.say(followers[n % 2], f"deploy {h}")
    for h in hosts[:3]:
        alice.expect("#ops", lambda t, h=h: t.startswith(f"{h}: deploying"), 20, f"the answer to deploy {h}")
    wait_for(lambda: sum(1 for (h, s) in c.starts() if s == 2) >= 6, 30, "jobs at stage 2")
    nodes = {n for ns in c.starts().values() for n in ns}
    check(len(nodes) >= 2, f"jobs ran on several nodes: {nodes}")
    mark = len(watch.lines)  # the first leader's JOIN is in what came before
    c.kill9(first)
    killed_at = time.time()
    # Another node takes the connection over (the nick is free once ngircd notices the dead
    # socket, or the new leader uses a fallback nick at first).
    second = wait_for(c.leader, 15, "another node to lead chat")
    check(second != first, f"node {second} leads now")
    wait_for(lambda: any(" JOIN " in l and l.startswith(":jarvis") and "#ops" in l for l in list(watch.lines)[mark:]),
             15, "the bot back in #ops")
    took = time.time() - killed_at
    check(took < 10, f"the IRC connection came back on another node after {took:.1f}s (must be < 10 s)")
    c.wait_ready(9, 60)

    def said():
        return [l.split(" ", 3)[3][1:] for l in list(watch.lines) if " PRIVMSG #ops :" in l]
    wait_for(lambda: all(any(f"{h} is ready" in t for t in said()) for h in hosts), 30, "every job's end line in #ops")
    time.sleep(1)  # room for a line announced twice to show
    texts = said()
    for h in hosts:
        ends = [t for t in texts if f"{h} is ready" in t]
        check(len(ends) == 1, f"{h}'s end line reached #ops {len(ends)} times: {ends}\nall:\n" + "\n".join(texts))
    dups = {t for t in texts if texts.count(t) > 1}
    check(not dups, f"lines announced twice: {dups}")
    print(f"nodes_chat: chat back on node {second} {took:.1f}s after the kill; 9 end lines, each once")
finally:
    c.cleanup()
server.cleanup()
shutil.rmtree(work, ignore_errors=True)
print("ok")
