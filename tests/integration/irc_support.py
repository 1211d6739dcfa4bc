"""A real ngircd for tests (temp dir, free loopback ports, a TLS port with a test
certificate) and a small raw IRC client that plays the users."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from jarvis_test import check, config_head, fail, wait_for


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory, name, cn="127.0.0.1"):
    """A self-signed certificate for 127.0.0.1 / localhost; returns (cert, key)."""
    cert, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", f"subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


class Ngircd:
    def __init__(self, throttle=False, password=None):
        """throttle=True: ngircd's default flood penalties and ping timeouts, as shipped;
        otherwise no penalties and 5 s ping timeouts, for fast tests."""
        self.dir = tempfile.mkdtemp(prefix="jarvis-ngircd-")
        self.port, self.tls_port = free_port(), free_port()
        self.cert, self.key = make_cert(self.dir, "server")
        self.dh = os.path.join(self.dir, "dh.pem")
        subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                        "group:ffdhe2048", "-out", self.dh], check=True, capture_output=True)
        os.makedirs(os.path.join(self.dir, "conf.d"))
        os.chmod(self.dir, 0o755)
        for f in (self.cert, self.key, self.dh):
            os.chmod(f, 0o644)
        self.conf = os.path.join(self.dir, "ngircd.conf")
        fast = "" if throttle else "    PingTimeout = 5\n    PongTimeout = 5\n    MaxPenaltyTime = 0"
        with open(self.conf, "w") as f:
            f.write(f"""[Global]
    Name = irc.test
    Info = jarvis test server
{f"    Password = {password}" if password else ""}
    Listen = 127.0.0.1
    Ports = {self.port}
    MotdPhrase = hello tests
[Limits]
    MaxConnectionsIP = 0
    MaxNickLength = 30
{fast}
[Options]
    DNS = no
    Ident = no
    PAM = no
    IncludeDir = {self.dir}/conf.d
    WebircPassword = webpw
[SSL]
    CertFile = {self.cert}
    KeyFile = {self.key}
    DHFile = {self.dh}
    Ports = {self.tls_port}
""")
        self.proc = None
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "ngircd.log"), "a")
        self.proc = subprocess.Popen(["/usr/sbin/ngircd", "-n", "-f", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, "ngircd to listen")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def cleanup(self):
        """At the end of a passing test: stop and remove the temp dir (a failing test exits
        before this and leaves its logs for reading)."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    """A user on the test server: raw IRC over a socket, lines collected as they come."""

    def __init__(self, server, nick, user=None, host=None, ip="10.1.2.3", password=None):
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.lines = []
        self.lock = threading.Condition()
        self.closed = False
        # A reader thread answers PINGs at once, so a user never times out while the test
        # is busy with another one.
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if password:
            self.send(f"PASS {password}")
        if host:  # WEBIRC lets a test user show up as nick!user@host
            self.send(f"WEBIRC webpw {user or nick} {host} {ip}")
        self.send(f"NICK {nick}")
        self.send(f"USER {user or nick} 0 * :{nick}")
        self.wait(lambda l: " 001 " in l, 10, "registration")

    def send(self, line):
        self.sock.sendall((line + "\r\n").encode())

    def _read(self):
        buf = b""
        self.sock.settimeout(None)
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            buf += data
            while b"\r\n" in buf:
                raw, buf = buf.split(b"\r\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith("PING "):
                    try:
                        self.send("PONG " + line[5:])
                    except OSError:
                        pass
                with self.lock:
                    self.lines.append(line)
                    self.lock.notify_all()

    def wait(self, predicate, timeout, what, keep_others=False):
        """The first line (in order) that satisfies `predicate`; it and the lines before it
        are consumed, unless keep_others, which consumes only the matching line."""
        end = time.time() + timeout
        seen = 0
        while time.time() < end:
            with self.lock:
                while seen < len(self.lines):
                    if predicate(self.lines[seen]):
                        found = self.lines[seen]
                        if keep_others:
                            del self.lines[seen]
                        else:
                            del self.lines[:seen + 1]
                        return found
                    seen += 1
                self.lock.wait(timeout=max(0.0, min(0.5, end - time.time())))
        with self.lock:
            tail = "\n".join(self.lines[-30:])
        fail(f"{self.nick}: timed out after {timeout}s waiting for {what}; got:\n" + tail)

    def join(self, channel):
        self.send(f"JOIN {channel}")
        self.wait(lambda l: f" 366 {self.nick} {channel} " in l, 10, f"joining {channel}")

    def wait_member(self, channel, nick, timeout=30, what=None):
        """Until `nick` is in `channel` (asked with NAMES, so it does not matter whether it
        joined before or after us); other lines are left for later expectations."""
        end = time.time() + timeout
        while time.time() < end:
            self.send(f"NAMES {channel}")
            names = []

            def grab(line):
                if f" 353 {self.nick} " in line:
                    names.extend(n.lstrip("@+%~&") for n in line.split(" :", 1)[1].split())
                    return False
                return f" 366 {self.nick} {channel} " in line
            self.wait(grab, 10, f"NAMES {channel}", keep_others=True)
            with self.lock:
                self.lines = [l for l in self.lines if f" 353 {self.nick} " not in l]
            if nick in names:
                return
            time.sleep(0.2)
        fail(f"{self.nick}: {nick} never showed up in {channel} ({what or 'waiting'})")

    def say(self, target, text):
        self.send(f"PRIVMSG {target} :{text}")

    def expect(self, target, predicate, timeout=20, what="a line", keep_others=False):
        """The next PRIVMSG to `target` (a channel, or this nick) whose text matches; the lines
        before it are consumed unless keep_others."""
        def match(line):
            parts = line.split(" ", 3)
            return (len(parts) == 4 and parts[1] == "PRIVMSG" and parts[2] == target
                    and predicate(parts[3][1:]))
        line = self.wait(match, timeout, what, keep_others)
        return line.split(" ", 3)[3][1:]

    def collect(self, target, until, timeout=30, what="lines"):
        """Every PRIVMSG text to `target` up to and including the first that satisfies `until`
        (merged announcement lines carry several events, so check the joined text)."""
        texts = []

        def grab(t):
            texts.append(t)
            return until(t)
        self.expect(target, grab, timeout, what)
        return "\n".join(texts)

    def close(self):
        try:
            self.send("QUIT :bye")
        except OSError:
            pass
        self.sock.close()


def make_bot_files(work, stage_sleep="0.2"):
    """Workers, pipelines and designs for chat tests: step:run logs and sleeps; stage 2 waits
    while <work>/hold exists."""
    os.makedirs(f"{work}/workers/step", exist_ok=True)
    with open(f"{work}/workers/step/run", "w") as f:
        f.write(f"""#!/bin/sh
cat >/dev/null
echo "stage $JARVIS_STAGE of $JARVIS_HOST" >&2
while [ "$JARVIS_STAGE" = 2 ] && [ -e {work}/hold ]; do sleep 0.1; done
sleep {stage_sleep}
""")
    os.chmod(f"{work}/workers/step/run", 0o755)
    os.makedirs(f"{work}/pipelines", exist_ok=True)
    with open(f"{work}/pipelines/three.yaml", "w") as f:
        f.write("name: three\nmatch: {provider: test}\ntasks: [step:run, step:run, step:run]\n")
    with open(f"{work}/pipelines/five.yaml", "w") as f:
        f.write("name: five\nmatch: {provider: five}\ntasks: [step:run, step:run, step:run, step:run, step:run]\n")
    os.makedirs(f"{work}/designs", exist_ok=True)


def write_design(work, host, provider="test", extra=""):
    with open(f"{work}/designs/{host}.yaml", "w") as f:
        f.write(f"instance:\n  hostname: {host}\n  provider: {provider}\n{extra}")


# Every event in channels and direct messages, as the tests that follow stages expect; the
# default levels (quiet in channels, stages by DM) have their own tests.
ALL_LEVELS = "  announce_level: all\n  announce_level_direct: all\n"


def bot_config(work, server, name="jarvis", tls=True, ca_file=None, irc_extra="", chat_extra="",
               extra="", levels=ALL_LEVELS, who='"irc:alice!*@*"', workers=()):
    """A jarvis config for the test server: TLS with the test certificate, #ops, fast
    keepalive, announcements in #ops, and an ACL that lets alice (or `who`) deploy, cancel
    and retry (`extra` follows the ACL's rules: more "    - who: ..." rules, then top-level
    keys). `workers`: more worker directories besides <work>/workers."""
    path = f"{work}/{name}.yaml"
    with open(path, "w") as f:
        f.write(config_head(work, name, workers) + f"""irc:
  server: 127.0.0.1
  port: {server.tls_port if tls else server.port}
  tls: {"true" if tls else "false"}
  tls_ca_file: {ca_file or server.cert}
  nick: {name}
  channels: ["#ops"]
  ping_interval: 2s
  ping_timeout: 6s
{irc_extra}chat:
  announce: ["irc:#ops"]
{levels}{chat_extra}acl:
  rules:
    - who: [{who}]
      commands: [deploy, cancel, retry]
      where: ["irc:#ops", "direct"]
{extra}""")
    return path
