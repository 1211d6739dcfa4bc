"""redeploy-ec2 end to end through `jarvis serve` (console front): the seed's 19 stages with
the ec2:* workers against the EC2 Query API emulator (SigV4 checked; the new instance is a
real sshd on 127.0.0.2) and the real servers of the host stages. At the end the old instance
is terminated and one new one runs, DNS answers its address, the LDAP entry names it."""
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import Jarvis, check, wait_for  # noqa: E402
from linode_support import NODE_ADDRESS, LinodeWorld  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
world = LinodeWorld(j.tmp, source, build, provider="ec2")
ok = False
bot = None
try:
    cfg = world.config(j.state)
    p = subprocess.run([binary, "plan", "loki", "--config", cfg], capture_output=True, text=True, timeout=60)
    check("loki: plan redeploy-ec2 (19 stages)" in p.stdout
          and "chosen because instance.provider is 'ec2' (match of redeploy-ec2)" in p.stdout, p.stdout + p.stderr)
    bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []

    def read():
        for line in bot.stdout:
            lines.append(line.rstrip("\n"))
    threading.Thread(target=read, daemon=True).start()
    bot.stdin.write("deploy loki\n")
    bot.stdin.flush()
    # loki is in production (its CMDB entry): stages 4 and 5 (stop and terminate) wait for a
    # second person; the CLI confirms, as someone other than the console that asked.
    prompt = wait_for(lambda: next((l for l in lines if "is in production" in l), None), 120, "the confirmation prompt")
    check("stage 4/19 ec2:power_off will power it off, then stage 5 deletes it. Say `confirm 1`" in prompt, prompt)
    confirmed = subprocess.run([binary, "confirm", "1", "--config", cfg], capture_output=True, text=True, timeout=60)
    check(confirmed.returncode == 0, confirmed.stdout + confirmed.stderr)
    wait_for(lambda: any("loki: ready" in l or "loki: failed" in l for l in lines), 180, "the job to end")
    log = j.run("log", "loki", "-n", "400").stdout
    check(lines[0] == "loki: deploying with redeploy-ec2, 19 stages (job 1)", lines[0])
    check(any(l.startswith("loki: ready (job 1, 19 stages") for l in lines), "\n".join(lines) + log[-4000:])
    emu = world.emu
    [new] = emu.named("loki")
    check(emu.state_of(world.old_node) == "terminated" and emu.state_of(new["id"]) == "running"
          and emu.count("RunInstances") == 1 and not emu.auth_failures, f"{new} {emu.auth_failures}")
    check(world.dig("loki.example.com", "A") == [NODE_ADDRESS], world.dig("loki.example.com", "A"))
    check(world.dig("loki.example.com", "AAAA") == [new["ipv6"]], world.dig("loki.example.com", "AAAA"))
    [e] = world.slapd.search(f"cn=loki,{world.slapd.hosts_ou}")
    check(e.get("jarvisProviderId") == [new["id"]] and e.get("jarvisProvider") == ["EC2"], e)
    check(f"launching an EC2 t3.nano from ami-0a1b2c3d4e5f60002 in us-east-1 for loki" in log, log[-3000:])
    ok = True
finally:
    if bot and bot.poll() is None:
        bot.stdin.close()
        bot.terminate()
        bot.wait(timeout=30)
    world.cleanup(ok)
    if ok:
        j.cleanup()
print("ec2_redeploy: ok")
