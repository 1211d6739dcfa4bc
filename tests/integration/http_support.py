"""A `jarvis serve` with its HTTP API on a free loopback port (plain or TLS with a test
certificate), tokens made with the real `jarvis token add`, and a small client for JSON
requests and Server-Sent Events."""
import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import time

from irc_support import free_port, make_cert
from jarvis_test import check, fail, wait_for

SECRET = "s3cr3t-Root-Pw-4711"

# A worker that passes the clipboard on, says which stage it is on stderr (with the design's
# root password, which must never leave the bot unredacted), sleeps `sleep:` seconds and fails
# at stage `fail_at:` once (the `fail_marker:` file remembers it did).
WORKER = r"""#!/bin/sh
input=$(cat)
pw=$(printf '%s\n' "$input" | sed -n 's/^ *root_password: //p')
s=$(printf '%s\n' "$input" | sed -n 's/^sleep: //p')
f=$(printf '%s\n' "$input" | sed -n 's/^fail_at: //p')
m=$(printf '%s\n' "$input" | sed -n 's/^fail_marker: //p')
echo "stage $JARVIS_STAGE logging in with $pw" >&2
sleep "${s:-0}"
if [ "$f" = "$JARVIS_STAGE" ] && [ ! -e "$m" ]; then
  touch "$m"
  echo "broken on purpose" >&2
  exit 3
fi
printf '%s\n' "$input"
printf 'stage%s: done\n' "$JARVIS_STAGE"
"""


def setup_bot(j, tls, http_extra="", designs=None):
    """Worker, pipeline, designs and a config with an http: section in j.tmp; returns
    (config path, base URL, ssl context or None)."""
    w = j.tmp
    for d in ("workers/step", "pipelines", "designs"):
        os.makedirs(f"{w}/{d}", exist_ok=True)
    with open(f"{w}/workers/step/run", "w") as f:
        f.write(WORKER)
    os.chmod(f"{w}/workers/step/run", stat.S_IRWXU)
    with open(f"{w}/pipelines/three.yaml", "w") as f:
        f.write("name: three\nmatch: {provider: test}\ntasks: [step:run, step:run, step:run]\n")
    designs = designs or {}
    for host, extra in designs.items():
        with open(f"{w}/designs/{host}.yaml", "w") as f:
            f.write(f"instance:\n  hostname: {host}\n  provider: test\n  secrets:\n    root_password: {SECRET}\n{extra}")
    port = free_port()
    ctx = None
    tls_lines = ""
    if tls:
        cert, key = make_cert(w, "http")
        tls_lines = f"  tls_cert_file: {cert}\n  tls_key_file: {key}\n"
        ctx = ssl.create_default_context(cafile=cert)
    config = f"{w}/jarvis.yaml"
    with open(config, "w") as f:
        f.write(f"state_dir: {j.state}\npipelines_dir: {w}/pipelines\ndesigns_dir: {w}/designs\n"
                f"workers:\n  path: [{w}/workers]\n"
                f"http:\n  listen: 127.0.0.1:{port}\n{tls_lines}{http_extra}")
    return config, port, ctx


def add_token(j, config, name, role):
    p = subprocess.run([j.binary, "token", "add", name, "--role", role, "--config", config],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, f"token add {name}: {p.returncode} {p.stderr}")
    token = p.stdout.strip()
    check(token.startswith("jv_") and len(token) > 40, f"token printed: {token!r}")
    return token


class Serve:
    def __init__(self, j, config, port, ctx):
        self.j, self.config, self.port, self.ctx = j, config, port, ctx
        self.log = open(os.path.join(j.tmp, "serve.log"), "a")
        self.proc = subprocess.Popen([j.binary, "serve", "--config", config], stdin=subprocess.PIPE,
                                     stdout=self.log, stderr=self.log, text=True)
        wait_for(self.up, 20, "the HTTP API to answer /healthz")

    def up(self):
        try:
            return self.request("GET", "/api/v1/healthz")[0] == 200
        except OSError:
            if self.proc.poll() is not None:
                fail(f"serve exited {self.proc.returncode}: {open(self.log.name).read()[-2000:]}")
            return False

    def connection(self, timeout=30):
        if self.ctx:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, token=None, body=None, headers=None, raw_body=None):
        """(status, parsed JSON or text, headers)."""
        c = self.connection()
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        data = raw_body
        if body is not None:
            data = json.dumps(body)
            h["Content-Type"] = "application/json"
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            text = r.read().decode()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            return r.status, parsed, dict((k.lower(), v) for k, v in r.getheaders())
        finally:
            c.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sse:
    """A raw Server-Sent Events reader: (id, event, data) tuples as they come."""

    def __init__(self, serve, token, last_id=None, path="/api/v1/events"):
        self.sock = socket.create_connection(("127.0.0.1", serve.port), timeout=30)
        if serve.ctx:
            self.sock = serve.ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                           f"Accept: text/event-stream\r\n{extra}\r\n").encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1])

    def _until(self, sep):
        while sep not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("event stream closed")
            self.buf += chunk
        out, self.buf = self.buf.split(sep, 1)
        return out

    def next(self):
        while True:
            frame = self._until(b"\n\n").decode()
            ev = {"id": None, "event": None, "data": None}
            for line in frame.split("\n"):
                if line.startswith(":") or not line:
                    continue
                k, _, v = line.partition(": ")
                if k in ev:
                    ev[k] = v
            if ev["data"] is not None:
                return int(ev["id"]) if ev["id"] else None, ev["event"], json.loads(ev["data"])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
