"""Verification after a deploy: a pipeline's verify: tasks (verify:tcp, verify:http against a
real HTTP server on loopback, verify:command over SSH to a real sshd) run after the deploy
stages. A failed check ends the job as "deployed but not verified: <reason>", said apart from
a failed deploy by `run`, `status` and `plan`; `retry` re-runs the verification from the
failed check and no deploy stage runs again."""
import http.server
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import Jarvis, check, step_setup  # noqa: E402
from worker_support import Sshd  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
work = j.tmp
ran = f"{work}/ran"
step_setup(j, f"cat >/dev/null\necho \"$JARVIS_STAGE\" >> {ran}\n",
           "name: checked\nmatch: {provider: test}\ntasks: [step:run, step:run]\n"
           "verify:\n  - verify:tcp\n  - {task: verify:http, timeout: 20s}\n  - verify:command\n", [])
j.workers_path = f"{work}/workers:{source}/workers"
j.pipelines_dir = f"{work}/pipelines"
down = f"{work}/down"


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 503 if os.path.exists(down) else 200
        body = b"ok\n" if code == 200 else b"unavailable\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
threading.Thread(target=web.serve_forever, daemon=True).start()
port = web.server_address[1]
sshd = Sshd()
known = f"{work}/known_hosts"
with open(known, "w") as f:
    for k in ("ed25519", "ecdsa", "rsa"):
        f.write(f"[127.0.0.1]:{sshd.port} {' '.join(open(f'{sshd.dir}/host_{k}.pub').read().split()[:2])}\n")
flag = f"{sshd.dir}/service-up"
os.chmod(sshd.dir, 0o755)
with open(f"{work}/designs/web1.yaml", "w") as f:
    f.write(f"""instance:
  hostname: web1
  provider: test
  ip: 127.0.0.1
  root_key_file: {sshd.client_key}
verify:
  tcp: {{port: {port}}}
  http:
    - {{url: "http://127.0.0.1:{port}/health?token=hunter2", status: 200, contains: ok}}
  command: {{run: "test -e {flag}", port: {sshd.port}, user: {sshd.user}, known_hosts: {known}}}
""")
design = f"{work}/designs/web1.yaml"
os.chmod(sshd.client_key, 0o600)

plan = j.run("plan", design, expect=0).stdout
check("3/5 verify:tcp (timeout 10m00s) VERIFY (after the deploy" in plan, plan)

# The HTTP check fails: deployed, not verified, said so everywhere.
open(down, "w").close()
p = j.run("run", design, expect=1)
check("web1: deployed but not verified at stage 4/5 verify:http: http://127.0.0.1:"
      f"{port}/health answered 503, expected 200" in p.stdout, p.stdout + p.stderr)
check("hunter2" not in p.stdout and "token" not in p.stdout.split("answered")[0].split("verify:http:")[-1],
      "the URL's query was shown")
st = j.status("web1")
check(st.startswith(f"web1: deployed but not verified at stage 4/5 verify:http: http://127.0.0.1:{port}/health "
                    "answered 503, expected 200 (job 1") and st.endswith('Say "retry web1" to re-run the verification.'), st)
check(open(ran).read() == "1\n2\n", "the deploy stages ran once")

# Fixed; retry re-runs the verification only; then the command check fails over SSH.
os.unlink(down)
p = j.run("retry", "web1", expect=1)
check("deployed but not verified at stage 5/5 verify:command: `test -e " in p.stdout and
      "exited 1, expected 0" in p.stdout, p.stdout + p.stderr)
open(flag, "w").close()
os.chmod(flag, 0o644)
p = j.run("retry", "web1", expect=0)
check(j.status("web1").startswith("web1: ready (job 1"), j.status("web1"))
check(open(ran).read() == "1\n2\n", f"a retry ran deploy stages again: {open(ran).read()!r}")
log = j.run("log", "web1", "-n", "100", expect=0).stdout
check(log.count("verify:tcp: 127.0.0.1 port") == 1, "verify:tcp (before the failed check) ran again:\n" + log)
check("answered 200" in log and "exited 0" in log, log)

web.shutdown()
sshd.cleanup(True)
j.cleanup()
print("ok")
