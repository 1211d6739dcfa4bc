"""kill -9 `jarvis serve` while linode:create waits for its new node to boot (the POST done,
the node billed), start serve again: it resumes the job at that stage and the rerun finds the
node by its label and the job's tag instead of making a second one. deploy-linode (a new
host, stages 6-19) against the Linode emulator and the real host servers."""
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import Jarvis, check, wait_for  # noqa: E402
from linode_support import LinodeWorld  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
world = LinodeWorld(j.tmp, source, build)
ok = False
bot = None
try:
    world.write_design("odin", extra="")
    with open(os.path.join(world.designs, "odin.yaml")) as f:
        text = f.read().replace("  provider: Linode\n", "  provider: Linode\n  deployment: new\n")
    with open(os.path.join(world.designs, "odin.yaml"), "w") as f:
        f.write(text)
    world.emu.boot_s = 6.0          # time enough to be killed while create waits for running
    cfg = world.config(j.state)
    lines = []

    def serve():
        p = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

        def read():
            for line in p.stdout:
                lines.append(line.rstrip("\n"))
        threading.Thread(target=read, daemon=True).start()
        return p
    bot = serve()
    bot.stdin.write("deploy odin\n")
    bot.stdin.flush()
    wait_for(lambda: lines, 30, "the deploy's answer")
    check(lines[0] == "odin: deploying with deploy-linode, 14 stages (job 1)", lines[0])
    wait_for(lambda: len(world.emu.labelled("odin")) == 1, 60, "the node to be created")
    check(world.emu.labelled("odin")[0]["status"] != "running", world.emu.labelled("odin"))
    bot.kill()
    bot.wait()
    st = j.run("status", "odin").stdout
    check(st.startswith("odin: job 1 stopped at stage 2/14 when its jarvis stopped"), st)
    lines.clear()
    world.emu.boot_s = 0.5
    bot = serve()
    wait_for(lambda: any("odin: ready" in l or "odin: failed" in l for l in lines), 120, "the job to end")
    out = "\n".join(lines)
    log = j.run("log", "odin", "-n", "400").stdout
    check(any(l.startswith("odin: ready (job 1, 14 stages") for l in lines), f"{out}\n{log[-4000:]}")
    nodes = world.emu.labelled("odin")
    check(len(nodes) == 1 and nodes[0]["status"] == "running"
          and world.emu.count("POST", "/linode/instances") == 1, f"{nodes}")
    check("was already created by this job: reusing it" in log, log[-3000:])
    check(world.dig("odin.example.com", "A") == ["127.0.0.2"], world.dig("odin.example.com", "A"))
    ok = True
finally:
    if bot and bot.poll() is None:
        bot.terminate()
        bot.wait(timeout=30)
    world.cleanup(ok)
    if ok:
        j.cleanup()
print("linode_kill_resume: ok")
