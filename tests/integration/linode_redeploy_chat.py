"""The seed's whole redeploy from chat: `jarvis: deploy loki` in a real ngircd channel, the design
on Linode, all 19 stages of redeploy-linode against the Linode API emulator (whose new node is
a real sshd on 127.0.0.2) and the real servers of the host stages (named, sshd, Alertmanager,
slapd, a git keys repository, ansible-playbook). `status loki` is asked after every stage and
must name a later one. At the end: DNS answers, the silence is expired, the LDAP entry and the
keys repository are updated, the old node is gone and one new one runs, the channel says ready.
Then a second redeploy with named down at stage 10 (dns:update fails), named back, `retry
loki`, ready. Prints what jarvis added to the first job beyond its workers' own run time."""
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from irc_support import Client, Ngircd  # noqa: E402
from jarvis_test import Jarvis, check, wait_for  # noqa: E402
from linode_support import NODE_ADDRESS, LinodeWorld, job_figures  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
server = Ngircd()
world = LinodeWorld(j.tmp, source, build)
ok = False
bot = None
try:
    irc = f"""irc:
  server: 127.0.0.1
  port: {server.tls_port}
  tls: true
  tls_ca_file: {server.cert}
  nick: jarvis
  channels: ["#ops"]
  ping_interval: 2s
  ping_timeout: 6s
  flood: {{burst: 1000, per_second: 1000}}
chat:
  announce: ["irc:#ops"]
  announce_level: all
  announce_level_direct: all
  commands_per_minute: 6000
  command_burst: 1000
acl:
  rules:
    - who: ["irc:alice!*@*"]
      commands: [deploy, cancel, retry]
      where: ["irc:#ops", "direct"]
"""
    cfg = world.config(j.state, extra=irc, workers_extra="  retry_backoff: 500ms\n")
    # plan: which pipeline, and why.
    p = subprocess.run([binary, "plan", "loki", "--config", cfg], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and p.stdout.startswith("loki: plan redeploy-linode (19 stages); nothing runs\n"
                                                    "loki: chosen because instance.provider is 'linode' "
                                                    "(match of redeploy-linode)\n"), p.stdout + p.stderr)
    check("4/19 linode:power_off (timeout 5m00s) DESTRUCTIVE" in p.stdout
          and "7/19 linode:create (timeout 5m00s, 2 retries)" in p.stdout, p.stdout)
    with open(os.path.join(world.designs, "odin.yaml"), "w") as f:
        f.write("instance: {hostname: odin, provider: linode, deployment: new}\n")
    p = subprocess.run([binary, "plan", "odin", "--config", cfg], capture_output=True, text=True, timeout=60)
    check("odin: plan deploy-linode (14 stages)" in p.stdout
          and "instance.deployment is 'new' (match of deploy-linode); redeploy-linode matches too" in p.stdout, p.stdout)
    os.unlink(os.path.join(world.designs, "odin.yaml"))

    bot_log = open(os.path.join(j.tmp, "serve.log"), "w")
    bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.PIPE,
                           stdout=bot_log, stderr=subprocess.STDOUT, text=True)
    alice = Client(server, "alice")
    alice.join("#ops")
    alice.wait_member("#ops", "jarvis", 30, "jarvis")

    seen_silences = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            try:
                seen_silences.update(s["id"] for s in world.am.get("/api/v2/silences")
                                     if s["status"]["state"] == "active")
            except OSError:
                pass
            time.sleep(0.2)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def follow(job, on_stage_done=None, end=("is ready",)):
        """Reads #ops until the job's end line; after each "stage N/19 ... done" asks
        `status loki` and records (N, the reply). Returns (answers, end line)."""
        answers, pending = [], []
        result = {}

        def line(raw):
            parts = raw.split(" ", 3)
            if len(parts) < 4 or parts[1] != "PRIVMSG" or parts[2] != "#ops":
                return False
            text = parts[3][1:]
            m = re.search(r"stage (\d+)/19 \S+ done", text)
            if m:
                n = int(m[1])
                pending.append(n)
                if on_stage_done:
                    on_stage_done(n)
                alice.say("#ops", "jarvis: status loki")
            elif text.startswith("loki: ") and pending and re.match(r"loki: (running stage|ready|failed|retrying stage)", text):
                answers.append((pending.pop(0), text))
            if any(e in text for e in end) and f"(job {job})" in text:
                result["end"] = text
            return "end" in result and not pending
        alice.wait(line, 240, f"job {job} to end, with every status answered")
        return answers, result["end"]

    t0 = time.time()
    alice.say("#ops", "jarvis: deploy loki")
    alice.expect("#ops", lambda t: t == "loki: deploying with redeploy-linode, 19 stages (job 1)",
                 what="the deploy accepted")
    answers, end = follow(1)
    wall = time.time() - t0
    check(end.startswith("alice: loki is ready: loki.example.com, 127.0.0.2") and "19 stages in" in end, end)
    check([n for n, _ in answers] == list(range(1, 20)), f"status after every stage: {answers}")
    for n, text in answers:
        m = re.match(r"loki: running stage (\d+)/19", text)
        check((m and int(m[1]) > n) or text.startswith("loki: ready"),
              f"after stage {n} done, status said: {text}")

    # The world after the job.
    check(world.dig("loki.example.com", "A") == [NODE_ADDRESS], world.dig("loki.example.com", "A"))
    sshfp = world.dig("loki.example.com", "SSHFP")
    check(len(sshfp) == 3, sshfp)
    check(world.dig("www.example.com", "CNAME") == ["thor.example.com."], "www not moved to the standby")
    check(world.dig("2.0.0.127.in-addr.arpa", "PTR") == ["loki.example.com."], "PTR")
    check(len(seen_silences) == 1, f"one silence during job 1: {seen_silences}")
    [sid] = seen_silences
    check(world.am.get(f"/api/v2/silence/{sid}")["status"]["state"] == "expired", "silence not expired")
    [e] = world.slapd.search(f"cn=loki,{world.slapd.hosts_ou}")
    v6 = world.emu.labelled("loki")[0]["ipv6"].split("/")[0]
    check(world.dig("loki.example.com", "AAAA") == [v6], world.dig("loki.example.com", "AAAA"))
    check(sorted(e["ipHostNumber"]) == sorted([NODE_ADDRESS, v6]) and len(e.get("jarvisSshFingerprint", [])) == 3
          and e.get("jarvisProviderId") == [str(world.emu.labelled("loki")[0]["id"])], e)
    key = subprocess.run(["git", "--git-dir", world.bare, "show", "HEAD:keydir/root@loki.example.com.pub"],
                         capture_output=True, text=True)
    check(key.returncode == 0 and key.stdout.startswith("ssh-ed25519 "), key.stderr)
    nodes = world.emu.labelled("loki")
    check(world.old_node in world.emu.deleted and len(nodes) == 1 and nodes[0]["status"] == "running"
          and world.emu.count("POST", "/linode/instances") == 1, f"{nodes} {world.emu.deleted}")
    total, workers, runs = job_figures(j.state, 1)
    print(f"job 1: 19 stages ({runs} runs) in {total} ms, workers {workers} ms, jarvis added "
          f"{total - workers} ms ({100 * (total - workers) / total:.1f}% of the total); "
          f"deploy said to ready line seen: {wall:.1f}s", file=sys.stderr)

    # Job 2: a new node (new host keys), named down at stage 10, retry.
    world.new_node_keys()
    world.sshd.stop()                      # the new node's sshd comes up once named is down

    def at_stage(n):
        if n == 8:
            world.named.stop()
            world.sshd.start()
    alice.say("#ops", "jarvis: deploy loki")
    alice.expect("#ops", lambda t: t == "loki: deploying with redeploy-linode, 19 stages (job 2)",
                 what="the second deploy")
    answers, end = follow(2, at_stage, end=("failed at stage 10/19 dns:update",))
    check("loki failed at stage 10/19 dns:update" in end or "failed at stage 10/19 dns:update" in end, end)
    alice.say("#ops", "jarvis: status loki")
    st = alice.expect("#ops", lambda t: t.startswith("loki: failed"), what="status of the failure")
    check(st.startswith("loki: failed at stage 10/19 dns:update") and 'Say "retry loki"' in st, st)
    world.named.start()
    alice.say("#ops", "jarvis: retry loki")
    alice.expect("#ops", lambda t: t.startswith("loki: retrying job 2 from stage 10/19 dns:update"),
                 what="the retry")
    answers, end = follow(2)
    check(end.startswith("alice: loki is ready: loki.example.com, 127.0.0.2"), end)
    check([n for n, _ in answers] == list(range(10, 20)), answers)
    new_sshfp = world.dig("loki.example.com", "SSHFP")
    check(len(new_sshfp) == 3 and not set(new_sshfp) & set(sshfp), f"SSHFP not the new node's: {new_sshfp}")
    nodes = world.emu.labelled("loki")
    check(len(nodes) == 1 and world.emu.count("POST", "/linode/instances") == 2
          and len(world.emu.deleted) == 2, f"{nodes} {world.emu.deleted}")
    done.set()
    watcher.join()
    check(len(seen_silences) == 2 and all(world.am.get(f"/api/v2/silence/{s}")["status"]["state"] == "expired"
                                          for s in seen_silences), seen_silences)
    ok = True
finally:
    if bot:
        if bot.poll() is None:
            bot.terminate()
            try:
                bot.wait(timeout=30)
            except subprocess.TimeoutExpired:
                bot.kill()
    if not ok:
        try:
            print(open(os.path.join(j.tmp, "serve.log")).read()[-5000:], file=sys.stderr)
            print(j.run("log", "loki").stdout[-5000:], file=sys.stderr)
        except Exception:
            pass
    world.cleanup(ok)
    if ok:
        server.cleanup()
        j.cleanup()
    else:
        server.stop()       # its log stays in its temp dir
        print(f"files kept in {j.tmp} and {server.dir}", file=sys.stderr)
print("linode_redeploy_chat: ok")
