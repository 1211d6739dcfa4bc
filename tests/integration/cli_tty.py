"""`jarvis run` on a terminal (a real pseudo-terminal): a progress display with no log lines
breaking into it, the failure printed once with its reason, and the next step as a shell
command."""
import os
import pty
import re
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, step_setup  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
config = step_setup(j, "cat >/dev/null\necho \"working on stage $JARVIS_STAGE\" >&2\nsleep 0.3\n"
                       "[ \"$JARVIS_STAGE\" = 2 ] && { echo 'the switch said no' >&2; exit 3; }\nexit 0\n",
                    "name: three\nmatch: {provider: test}\ntasks: [step:run, {task: step:run, retries: 1}, step:run]\n",
                    ["tty1"], "  retry_backoff: 100ms\n")

master, slave = pty.openpty()
p = subprocess.Popen([binary, "run", "tty1", "--config", config], stdin=slave, stdout=slave, stderr=slave)
os.close(slave)
out = b""
end = time.time() + 60
while time.time() < end:
    r, _, _ = select.select([master], [], [], 0.5)
    if r:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    elif p.poll() is not None:
        break
p.wait(timeout=10)
os.close(master)
text = out.decode("utf-8", "replace")
check(p.returncode == 1, f"exit {p.returncode}: {text}")
plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r", "\n")
lines = [l for l in plain.split("\n") if l.strip()]
check(not any(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", l) for l in lines),
      "log lines broke into the progress display:\n" + "\n".join(lines))
check(sum("the switch said no" in l and "✗" in l for l in lines) == 1,
      "the failure must be printed once:\n" + "\n".join(lines))
check(any("resume it at this stage: jarvis retry tty1" in l for l in lines), "\n".join(lines))
check(any(l.strip().startswith("✓") and "1/3 step:run" in l for l in lines), "\n".join(lines))
check(any("↻" in l and "retrying in" in l for l in lines), "the retry is shown:\n" + "\n".join(lines))
check(any("│ working on stage 1" in l for l in lines), "worker lines are shown in the display")
j.cleanup()
print("ok")
