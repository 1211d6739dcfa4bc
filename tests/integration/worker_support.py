"""Running real workers by hand as the bot would (clean environment, clipboard on stdin), and
the real servers they talk to, each started in a temp dir on a free loopback port and stopped:
named (bind9), sshd (openssh-server), Alertmanager. slapd is in ldap_support.py."""
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check, fail, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.realpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "workers", "lib"))
import jarvis_worker as jw  # noqa: E402


def free_port(kind=socket.SOCK_STREAM):
    """A port free on 127.0.0.1 for both TCP and UDP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    fail("no free port")


def worker_env(state_dir, task, job="test-1", host="loki", **extra):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "JARVIS_JOB": job,
           "JARVIS_TASK": task, "JARVIS_STAGE": "1", "JARVIS_STAGES": "1",
           "JARVIS_ATTEMPT": "1", "JARVIS_HOST": host, "JARVIS_STATE_DIR": state_dir}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Result:
    def __init__(self, p):
        self.code, self.out, self.err = p.returncode, p.stdout, p.stderr
        self.last = next((l for l in reversed(p.stderr.splitlines()) if l.strip()), "")

    def clipboard(self, before):
        return jw.load(self.out) if self.out.strip() else jw.load(before)


def run_worker(task, clipboard, env, timeout=60, expect=None):
    """Runs workers/<module>/<task> with the clipboard (text) on stdin; returns a Result."""
    module, name = task.split(":")
    path = os.path.join(SOURCE, "workers", module, name)
    p = subprocess.run([path, name], input=clipboard, env=env, capture_output=True, text=True,
                       timeout=timeout)
    r = Result(p)
    if expect is not None and r.code != expect:
        fail(f"{task} exited {r.code}, expected {expect}\nstdout:\n{r.out}\nstderr:\n{r.err}")
    return r


def killed_midway(task, clipboard, env, delay):
    """Starts the worker, SIGKILLs its process group after `delay` seconds (as a cancel past
    the grace period or a crash of the bot would), and returns whether it was still running."""
    module, name = task.split(":")
    path = os.path.join(SOURCE, "workers", module, name)
    p = subprocess.Popen([path, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True, start_new_session=True)
    p.stdin.write(clipboard)
    p.stdin.close()
    time.sleep(delay)
    alive = p.poll() is None
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    p.stdout.close()
    p.stderr.close()
    return alive


def dump(data):
    return jw.dump(data)


# --- named ----------------------------------------------------------------------------------

class Named:
    """BIND 9 primary for `zone` (and a reverse zone) on 127.0.0.1:<free port>, updates allowed
    only with TSIG key `key_name` (HMAC-SHA256, made by tsig-keygen)."""

    def __init__(self, zone="example.com", reverse_zone="0.0.127.in-addr.arpa",
                 key_name="jarvis-key", records=""):
        self.dir = tempfile.mkdtemp(prefix="jarvis-named-")
        self.port = free_port()
        self.zone, self.reverse_zone, self.key_name = zone, reverse_zone, key_name
        self.key_file = os.path.join(self.dir, "jarvis-key.conf")
        key = subprocess.run(["tsig-keygen", "-a", "hmac-sha256", key_name], check=True,
                             capture_output=True, text=True).stdout
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        # A key with the right name and another secret: the server must refuse it.
        self.wrong_key_file = os.path.join(self.dir, "wrong-key.conf")
        wrong = subprocess.run(["tsig-keygen", "-a", "hmac-sha256", key_name], check=True,
                               capture_output=True, text=True).stdout
        fd = os.open(self.wrong_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(wrong)
        for z, extra in ((zone, records), (reverse_zone, "")):
            with open(os.path.join(self.dir, f"{z}.zone"), "w") as f:
                f.write(f"$TTL 300\n@ IN SOA ns1.{zone}. hostmaster.{zone}. (1 3600 600 604800 300)\n"
                        f"@ IN NS ns1.{zone}.\n" + (f"ns1 IN A 127.0.0.1\n" if z == zone else "")
                        + extra)
        zones = "".join(f'zone "{z}" {{ type primary; file "{self.dir}/{z}.zone"; '
                        f'allow-update {{ key "{key_name}"; }}; }};\n' for z in (zone, reverse_zone))
        self.conf = os.path.join(self.dir, "named.conf")
        with open(self.conf, "w") as f:
            f.write(f"""options {{
  directory "{self.dir}";
  listen-on port {self.port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  pid-file "{self.dir}/named.pid";
  session-keyfile "{self.dir}/session.key";
  managed-keys-directory "{self.dir}";
  recursion no;
  dnssec-validation no;
  notify no;
}};
include "{self.key_file}";
controls {{ }};
{zones}""")
        self.log_path = os.path.join(self.dir, "named.log")
        self.start()

    def start(self):
        """Starts named (again, after stop(): the same port, zones and journal)."""
        self.log = open(self.log_path, "a")
        # -g: foreground, log to stderr; as root named would switch to user bind with -u only.
        self.proc = subprocess.Popen(["/usr/sbin/named", "-g", "-c", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                fail(f"named exited {self.proc.returncode}:\n{self.log_tail()}")
            return "running" in open(self.log_path).read() and self.dig(f"ns1.{self.zone}", "A")
        wait_for(up, 20, "named to answer")

    def log_tail(self, n=30):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def dig(self, name, rdtype):
        """The sorted answers a real DNS query gets (dig +short, over UDP)."""
        for _ in range(5):   # a query lost under load is asked again, not taken for "no records"
            p = subprocess.run(["dig", "+short", "+norecurse", "+time=3", "+tries=3", "-p",
                                str(self.port), "@127.0.0.1", name, rdtype],
                               capture_output=True, text=True, timeout=30)
            lines = [l for l in p.stdout.splitlines() if l.strip()]
            if p.returncode == 0 and not any(l.startswith(";;") for l in lines):
                return sorted(lines)
            time.sleep(0.2)
        fail(f"dig {name} {rdtype} @127.0.0.1 -p {self.port} kept failing: {p.stdout} {p.stderr}")

    def settings(self, key_file=None):
        return {"server": "127.0.0.1", "port": self.port, "zone": self.zone,
                "key_file": key_file or self.key_file}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def cleanup(self, ok):
        self.stop()
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"named files kept in {self.dir}", file=sys.stderr)


# --- sshd -----------------------------------------------------------------------------------

def keygen(path, kind="ed25519", comment="test"):
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", path],
                   check=True, stdin=subprocess.DEVNULL)
    with open(path + ".pub") as f:
        return f.read().strip()


def fingerprint_of(pub_path):
    return subprocess.run(["ssh-keygen", "-l", "-f", pub_path], check=True, capture_output=True,
                          text=True).stdout.split()[1]


class Sshd:
    """OpenSSH's sshd on 127.0.0.1:<free port> with its own host keys (ed25519, ecdsa, rsa),
    public-key logins only, for one unprivileged user: as root, a user made for the test
    (removed at cleanup) with a home in the temp dir; otherwise the current user (sshd then
    runs unprivileged and can only log that user in). The client key (self.client_key) is in
    that user's test-only authorized_keys file."""

    def __init__(self, address="127.0.0.1"):
        self.address = address   # any of 127.0.0.0/8: a node "of its own" on loopback
        self.dir = tempfile.mkdtemp(prefix="jarvis-sshd-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.created_user = False
        if os.geteuid() == 0:
            self.user = f"jt{os.getpid() % 100000}"
            self.home = os.path.join(self.dir, "home")
            subprocess.run(["useradd", "-M", "-d", self.home, "-s", "/bin/sh", self.user],
                           check=True)
            self.created_user = True
            # A locked password ("!") makes sshd refuse the account even for key logins.
            subprocess.run(["usermod", "-p", "*", self.user], check=True)
            os.makedirs(self.home)
            pw = pwd.getpwnam(self.user)
            os.chown(self.home, pw.pw_uid, pw.pw_gid)
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # privilege separation dir
        else:
            self.user = pwd.getpwuid(os.getuid()).pw_name
            self.home = pwd.getpwuid(os.getuid()).pw_dir
        self.client_dir = os.path.join(self.dir, "client")
        os.makedirs(self.client_dir, mode=0o700)
        self.client_key = os.path.join(self.client_dir, "id_ed25519")
        client_pub = keygen(self.client_key, comment="jarvis-test-client")
        self.auth_keys = os.path.join(self.dir, "authorized_keys")
        with open(self.auth_keys, "w") as f:
            f.write(client_pub + "\n")
        os.chmod(self.auth_keys, 0o644)
        self.make_host_keys()
        self.conf = os.path.join(self.dir, "sshd_config")
        with open(self.conf, "w") as f:
            f.write(f"""Port {self.port}
ListenAddress {self.address}
{''.join(f'HostKey {self.dir}/host_{k}{chr(10)}' for k in ('ed25519', 'ecdsa', 'rsa'))}PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.auth_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
AllowUsers {self.user}
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
        self.proc = None
        self.start()

    def make_host_keys(self):
        for k in ("ed25519", "ecdsa", "rsa"):
            for suffix in ("", ".pub"):
                if os.path.exists(f"{self.dir}/host_{k}{suffix}"):
                    os.unlink(f"{self.dir}/host_{k}{suffix}")
            keygen(f"{self.dir}/host_{k}", k, "host")
        self.fingerprints = {k: fingerprint_of(f"{self.dir}/host_{k}.pub")
                             for k in ("ed25519", "ecdsa", "rsa")}

    def start(self):
        self.log_path = os.path.join(self.dir, "sshd.log")
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                fail(f"sshd exited {self.proc.returncode}:\n{open(self.log_path).read()[-3000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as s:
                    return s.recv(64).startswith(b"SSH-")
            except OSError:
                return False
        wait_for(up, 20, "sshd to answer")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        self.proc = None

    def ssh(self, *command):
        """Runs a command on the test host as the user, checking the host key for real."""
        known = os.path.join(self.client_dir, "known_hosts")
        with open(known, "w") as f:
            for k in ("ed25519", "ecdsa", "rsa"):
                with open(f"{self.dir}/host_{k}.pub") as pub:
                    f.write(f"[{self.address}]:{self.port} {' '.join(pub.read().split()[:2])}\n")
        return subprocess.run(["ssh", "-p", str(self.port), "-i", self.client_key, "-o",
                               "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o",
                               f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                               f"{self.user}@{self.address}", *command], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    def cleanup(self, ok):
        self.stop()
        if self.created_user:
            subprocess.run(["userdel", self.user], capture_output=True)
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"sshd files kept in {self.dir}", file=sys.stderr)


# --- Alertmanager ---------------------------------------------------------------------------

class Alertmanager:
    """Debian's prometheus-alertmanager on 127.0.0.1:<free port>, clustering off, a receiver
    that sends nothing."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="jarvis-alertmanager-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = os.path.join(self.dir, "alertmanager.yml")
        with open(conf, "w") as f:
            f.write("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
        self.log_path = os.path.join(self.dir, "alertmanager.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["/usr/bin/prometheus-alertmanager", f"--config.file={conf}",
             f"--storage.path={self.dir}/data", f"--web.listen-address=127.0.0.1:{self.port}",
             "--cluster.listen-address="], stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                fail(f"alertmanager exited {self.proc.returncode}:\n{open(self.log_path).read()[-3000:]}")
            try:
                return self.get("/api/v2/status") is not None
            except OSError:
                return False
        wait_for(up, 20, "alertmanager to answer")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read()

    def cleanup(self, ok):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"alertmanager files kept in {self.dir}", file=sys.stderr)
