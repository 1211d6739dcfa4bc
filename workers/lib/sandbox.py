"""The sandbox: a pretend cloud kept in $JARVIS_STATE_DIR/sandbox/ (see docs/workers.md).

    nodes/<id>.yaml        one file per node; its label is the host name
    nodes/next_id          the next node id
    dns/<zone>.yaml        zone data; dns/<zone>.zone is the same as a BIND zone file
    cmdb.yaml              the CMDB (ou=Hosts)
    monitoring.yaml        what the monitoring system watches
    git/<repo>/            gitosis-admin repositories (keydir/, log)
    secrets/<host>/<job>/  root password and root keypair, mode 0600
    faults/                attempt counters for sandbox.fail

Every worker built on this module first sleeps sandbox.delay_ms, then injects
the failure sandbox.fail asks for, if it names this task; then runs its body
holding the sandbox lock.
"""
import base64
import contextlib
import fcntl
import glob
import hashlib
import os
import re
import resource
import signal
import sys
import tempfile
import time

import yaml

import jarvis_worker as jw
Failure, Skip, flag = jw.Failure, jw.Skip, jw.flag   # for the tasks: sandbox.Failure, ...
check_dns_name, check_name, check_line, check_word, check_ip = (
    jw.check_dns_name, jw.check_name, jw.check_line, jw.check_word, jw.check_ip)
ZONE_RECORD_TYPES = ("A", "AAAA", "CNAME", "SSHFP", "TXT", "MX")

FAIL_MODES = ("exit", "garbage", "hang", "crash")
DATACENTERS = ("atlanta", "dallas", "fremont", "newark", "london", "tokyo")
PLANS = ((1024, "g6-nanode-1"), (2048, "g6-standard-1"), (4096, "g6-standard-2"),
         (8192, "g6-standard-4"), (16384, "g6-standard-6"))
# guestid, lower case without spaces -> image, kernel it ships, newest kernel on the mirror
IMAGES = {
    "debian6": ("linode/debian6", "2.6.32-5-686", "2.6.32-48squeeze20-686"),
    "debian12": ("linode/debian12", "6.1.0-26-amd64", "6.1.0-26-amd64"),
    "ubuntu22.04": ("linode/ubuntu22.04", "5.15.0-119-generic", "5.15.0-125-generic"),
}
FIRST_NODE_ID = 4711


def safe_name(text):
    """text as one path component: other characters become '_', and so does a leading dot
    (never '.' or '..'). For ids the sandbox made itself; check_name() refuses design values."""
    name = re.sub(r"[^A-Za-z0-9._@-]", "_", str(text))[:128]
    return "_" + name[1:] if not name or name.startswith(".") else name


class SandboxWorker(jw.Worker):
    lock_body = True

    def prepare(self):
        if not self.state_dir:
            raise Failure("JARVIS_STATE_DIR is not set: the sandbox keeps its state there", 2)
        self.dir = os.path.join(self.state_dir, "sandbox")
        os.makedirs(self.dir, exist_ok=True)
        opts = self.get("sandbox") or {}
        if not isinstance(opts, dict):
            raise Failure("sandbox: in the design must be a mapping (delay_ms, fail, ...)", 2)
        self.opts = opts
        if self.module == "sandbox":
            provider = str(self.get("instance.provider") or "")
            if provider.lower() != "sandbox":
                raise Failure(f"instance.provider is {provider!r}, not 'sandbox': "
                              f"{self.task} only drives the local sandbox", 2)
        try:
            self.tick = int(str(opts.get("delay_ms", 200))) / 1000
            if self.tick < 0:
                raise ValueError
        except ValueError:
            raise Failure(f"sandbox.delay_ms {opts.get('delay_ms')!r} is not a number "
                          "of milliseconds >= 0", 2)
        faults = self._faults()
        self.pause()
        for fault in faults:
            if fault["task"] == self.task:
                self._inject(fault)

    def perform(self, body):
        if self.lock_body:
            with self.lock():
                body(self)
        else:
            body(self)

    def pause(self, ticks=1):
        """Simulated work: ticks * sandbox.delay_ms."""
        time.sleep(ticks * self.tick)

    # --- failure injection -------------------------------------------------

    def _faults(self):
        spec = self.opts.get("fail")
        faults = []
        for f in (spec if isinstance(spec, list) else [spec] if spec else []):
            if not isinstance(f, dict) or ":" not in str(f.get("task", "")):
                raise Failure("sandbox.fail must be {task: module:task, mode: exit|garbage|"
                              f"hang|crash, times: N}}, not {f!r}", 2)
            mode = str(f.get("mode", "exit")).lower()
            if mode not in FAIL_MODES:
                raise Failure(f"sandbox.fail: mode {mode!r} is not one of {', '.join(FAIL_MODES)}", 2)
            times = f.get("times")
            if times is not None and not str(times).isdigit():
                raise Failure(f"sandbox.fail: times {times!r} is not a whole number", 2)
            faults.append({"task": str(f["task"]), "mode": mode,
                           "times": None if times is None else int(str(times))})
        return faults

    def _inject(self, fault):
        # With `times`, count attempts per host and task; once the fault has
        # fired `times` times, let one attempt through and re-arm for the next job.
        of = ""
        if fault["times"] is not None:
            counter = os.path.join(self.dir, "faults", safe_name(f"{self.host}@{self.task}"))
            with self.lock():
                n = int(self.read(counter, 0)) + 1
                if n > fault["times"]:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(counter)
                    self.log(f"sandbox fault for {self.task} spent ({fault['times']} failures): running normally")
                    return
                self.write(counter, n)
            of = f", failure {n} of {fault['times']}"
        what = f"sandbox fault in {self.task}: {fault['mode']} (from the design's sandbox.fail{of})"
        mode = fault["mode"]
        if mode == "exit":
            raise Failure(f"{what}: giving up with exit 3", 3)
        self.log(what)
        if mode == "garbage":
            sys.stdout.write("{ this is not: yaml ]\n<html><body>502 Bad Gateway</body></html>\n")
            sys.stdout.flush()
            os._exit(0)
        if mode == "hang":
            while True:
                time.sleep(3600)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # crash: no core file
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)

    # --- state files -------------------------------------------------------

    @contextlib.contextmanager
    def lock(self):
        with open(os.path.join(self.dir, ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def read(self, path, default=None):
        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            return default
        return default if data is None else data

    def write(self, path, data, mode=0o644):
        """Write YAML (or a str as is) atomically."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp.")
        with os.fdopen(fd, "w") as f:
            f.write(data if isinstance(data, str) else jw.dump(data))
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def secret_dir(self):
        """secrets/<host>/<job>/, mode 0700: one set of secrets per job, so a rerun reuses them."""
        d = self.path("secrets", self.host, safe_name(self.job))
        os.makedirs(d, mode=0o700, exist_ok=True)
        return d

    # --- nodes -------------------------------------------------------------

    def nodes(self):
        return [self.read(p) for p in sorted(glob.glob(self.path("nodes", "*.yaml")))]

    def node_by_label(self, label):
        return next((n for n in self.nodes() if n.get("label") == label), None)

    def node(self):
        """The node this job created (instance.node_id)."""
        nid = self.need("instance.node_id", "did sandbox:create run?")
        node = self.read(self.path("nodes", f"{safe_name(nid)}.yaml"))
        if node is None:
            raise Failure(f"node {nid} ({self.host}) does not exist in the sandbox: deleted?", 1)
        return node

    def save_node(self, node):
        self.write(self.path("nodes", f"{node['id']}.yaml"), node)

    def delete_node(self, node):
        os.unlink(self.path("nodes", f"{node['id']}.yaml"))

    def next_node_id(self):
        nid = int(self.read(self.path("nodes", "next_id"), FIRST_NODE_ID))
        self.write(self.path("nodes", "next_id"), f"{nid + 1}\n")
        return nid

    def free_ipv4(self):
        used = {n.get("ipv4") for n in self.nodes()}
        for net in ("192.0.2", "198.51.100", "203.0.113"):    # documentation ranges
            for i in range(10, 255):
                if f"{net}.{i}" not in used:
                    return f"{net}.{i}"
        raise Failure("the sandbox is out of IPv4 addresses: delete some nodes", 1)

    # --- DNS ---------------------------------------------------------------

    def zone_set(self, fqdn, records, ttl=300):
        """Replace all records of fqdn in its zone with records [(type, data)].

        Bumps the serial only if they changed.  Returns (lines, zone, serial, changed)."""
        fqdn = check_dns_name(fqdn, "the record's name")
        owner, _, zone = fqdn.partition(".")
        if not owner or "." not in zone:
            raise Failure(f"{fqdn!r} is not a fully qualified name (host.example.com)", 2)
        for kind, data in records:
            if kind not in ZONE_RECORD_TYPES:
                raise Failure(f"{kind!r} is not a record type the sandbox zone takes", 2)
            check_line(data, f"the {kind} record of {fqdn}", 1024)
        data_file = self.path("dns", f"{safe_name(zone)}.yaml")
        data = self.read(data_file, {"zone": zone, "serial": 0, "records": {}})
        new = [[t, str(d)] for t, d in records]
        changed = data["records"].get(owner) != new
        if changed:
            data["records"][owner] = new
            data["serial"] = max(data["serial"] + 1, int(time.strftime("%Y%m%d00")))
            self.write(data_file, data)
            self.write(self.path("dns", f"{safe_name(zone)}.zone"), render_zone(data, ttl))
        return [f"{fqdn}. {ttl} IN {t} {d}" for t, d in new], zone, data["serial"], changed


def render_zone(data, ttl):
    zone = data["zone"]
    lines = [f"; {zone}: written by the jarvis sandbox (dns:update), do not edit",
             f"$ORIGIN {zone}.", f"$TTL {ttl}",
             f"@ IN SOA ns1.{zone}. hostmaster.{zone}. ({data['serial']} 3600 600 604800 {ttl})",
             f"@ IN NS ns1.{zone}."]
    for owner, records in sorted(data["records"].items()):
        lines += [f"{owner} IN {t} {d}" for t, d in records]
    return "\n".join(lines) + "\n"


def fingerprint(key_blob):
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def ssh_string(data):
    return len(data).to_bytes(4, "big") + data


def public_key(kind, comment=""):
    """A well-formed OpenSSH public key line with random key material (no private half)."""
    blob = {
        "ed25519": lambda: ssh_string(b"ssh-ed25519") + ssh_string(os.urandom(32)),
        "ecdsa": lambda: (ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp256")
                          + ssh_string(b"\x04" + os.urandom(64))),
        "rsa": lambda: ssh_string(b"ssh-rsa") + ssh_string(b"\x01\x00\x01")
                       + ssh_string(b"\x00\xc3" + os.urandom(255)),
    }[kind]()
    algo = blob[4:4 + int.from_bytes(blob[:4], "big")].decode()
    return f"{algo} {base64.b64encode(blob).decode()} {comment}".rstrip()


def key_blob(line):
    return base64.b64decode(str(line).split()[1])


class _UnlockedWorker(SandboxWorker):
    lock_body = False


def run(body, lock=True):
    """Run body(w) as a sandbox worker (see jarvis_worker.run). lock=False: the body
    takes w.lock() itself, for the parts that touch state (a task that waits)."""
    jw.run(body, SandboxWorker if lock else _UnlockedWorker)
