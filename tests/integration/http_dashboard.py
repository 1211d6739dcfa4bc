"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright
(tests/browser/dashboard.mjs) against a real `jarvis serve`: log in with a token (an
HttpOnly, SameSite=Strict session cookie), watch a deploy's stages turn green live, open the
job page (screenshot), cancel a job, read the audit page, and CSRF refused."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from http_support import SECRET, Serve, add_token, setup_bot  # noqa: E402
from jarvis_test import Jarvis, check  # noqa: E402

binary, source, build = sys.argv[1:4]
browser_dir = os.path.join(os.path.abspath(source), "tests", "browser")
node = shutil.which("node")
if not os.path.exists("/usr/bin/chromium") or not node or \
        not os.path.isdir(os.path.join(browser_dir, "node_modules", "playwright-core")):
    print("SKIP: needs /usr/bin/chromium, node and tests/browser/node_modules (deploy/install-deps)")
    # In CI the browser is installed by deploy/install-deps: its absence is a failure there.
    sys.exit(1 if os.environ.get("CI") == "true" else 77)
j = Jarvis(binary, source, build)
marker = os.path.join(j.tmp, "failed-once")
config, port, ctx = setup_bot(j, tls=False, designs={"loki": "sleep: 1\n", "slowpoke": "sleep: 60\n",
                                                     "flaky": f"sleep: 0.5\nfail_at: 2\nfail_marker: {marker}\n"})
tokens = {"op": add_token(j, config, "op", "operate"), "reader": add_token(j, config, "reader", "read")}
bot = Serve(j, config, port, ctx)
shots = os.path.join(j.tmp, "screenshots")
os.makedirs(shots)
env = dict(os.environ, JARVIS_URL=f"http://127.0.0.1:{port}", OP_TOKEN=tokens["op"], READ_TOKEN=tokens["reader"],
           SHOTS=shots, SECRET=SECRET)
p = subprocess.run([node, os.path.join(browser_dir, "dashboard.mjs")], env=env, cwd=browser_dir,
                   capture_output=True, text=True, timeout=240)
print(p.stdout)
bot.stop()
check(p.returncode == 0, f"dashboard.mjs exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
check(os.path.getsize(os.path.join(shots, "job.png")) > 10000, "the job page screenshot")
if os.environ.get("JARVIS_KEEP_SCREENSHOTS"):
    shutil.copytree(shots, os.environ["JARVIS_KEEP_SCREENSHOTS"], dirs_exist_ok=True)
j.cleanup()
print("ok")
