"""check-config catches what breaks at 3 a.m., each problem with its file (and line), exit 1;
a good config says "config ok" and exits 0."""
import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
w = j.tmp
for d in ("workers/m", "pipelines", "designs"):
    os.makedirs(f"{w}/{d}")
with open(f"{w}/workers/m/ok", "w") as f:
    f.write("#!/bin/sh\ncat >/dev/null\n")
os.chmod(f"{w}/workers/m/ok", stat.S_IRWXU)
with open(f"{w}/workers/m/noexec", "w") as f:
    f.write("#!/bin/sh\ncat >/dev/null\n")
os.chmod(f"{w}/workers/m/noexec", 0o600)
with open(f"{w}/pipelines/one.yaml", "w") as f:
    f.write("name: one\nmatch: {provider: test}\ntasks: [m:ok]\n")
with open(f"{w}/designs/host1.yaml", "w") as f:
    f.write("instance:\n  hostname: host1\n  provider: test\n")


def config(text, name):
    path = f"{w}/{name}.yaml"
    with open(path, "w") as f:
        f.write(f"state_dir: {j.state}\npipelines_dir: {w}/pipelines\n" + text)
    return path


def check_config(path):
    return subprocess.run([binary, "check-config", "--config", path], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)


good = config(f"designs_dir: {w}/designs\nworkers:\n  path: [{w}/workers]\n", "good")
p = check_config(good)
check(p.returncode == 0 and p.stdout.rstrip().endswith("config ok"), p.stdout + p.stderr)

# Now break it in every way at once.
with open(f"{w}/pipelines/two.yaml", "w") as f:
    f.write("name: two\nmatch: {provider: test}\ntasks: [m:noexec, m:gone]\n")
bad = config(f"""designs_dir: {w}/no-designs
workers:
  path: [{w}/workers, {w}/no-workers]
chat:
  announce: ["irc:#ops", "ops"]
  announce_pipelines:
    nosuch: ["xmpp:ops@conference.example.com"]
""", "bad")
p = check_config(bad)
out = p.stdout
check(p.returncode == 1, f"exit {p.returncode}: {out}{p.stderr}")
expect = [
    f"{bad}: the workers path entry {w}/no-workers is not a directory",
    f"{bad}: designs_dir {w}/no-designs is not a directory",
    f"{w}/pipelines/two.yaml: task m:noexec: {w}/workers/m/noexec is not an executable file (chmod +x it)",
    f"{w}/pipelines/two.yaml: task m:gone has no executable m/gone on the workers path",
    f"{bad}:7: announce place irc:#ops is on irc, which has no irc: section",
    f"{bad}:7: announce place ops names no protocol",
    f"{bad}:9: announce place xmpp:ops@conference.example.com is on xmpp, which has no xmpp: section",
    f"{bad}: chat.announce_pipelines names nosuch, which is no pipeline",
]
for line in expect:
    check(line in out, f"missing {line!r} in:\n{out}")
check(out.rstrip().endswith(f"{len(expect)} problems"), out)

# Two pipelines matching one design of designs_dir: a deploy of it would be refused.
both = config(f"designs_dir: {w}/designs\nworkers:\n  path: [{w}/workers]\n", "both")
p = check_config(both)
check(p.returncode == 1 and f"{w}/designs/host1.yaml: host1: pipelines one and two all match this design"
      in p.stdout, p.stdout)
j.cleanup()
print("ok")
