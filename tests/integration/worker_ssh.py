"""ssh:wait_fingerprints against a real sshd the test starts on loopback (with its own host
keys): it waits for sshd to come up, reads every host key, and a changed key (the console's
differs from what answers) fails the stage naming the mismatch. ssh:root_keypair makes a real
ed25519 key in a 0600 file under the state dir, never on the clipboard. Each twice, and killed
midway then run again."""
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check  # noqa: E402
from worker_support import Sshd, dump, free_port, killed_midway, run_worker, worker_env  # noqa: E402

sshd = Sshd()
ok = False
state = tempfile.mkdtemp(prefix="jarvis-ssh-state-")
try:
    env = worker_env(state, "ssh:wait_fingerprints")

    def design(port, wait="20s", console=None):
        d = {"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "linode",
                          "ip": "127.0.0.1", "ssh_port": port}, "ssh": {"wait": wait}}
        if console:
            d["instance"]["console_host_keys"] = console
        return dump(d)

    # 1. sshd comes up while the worker waits.
    sshd.stop()
    threading.Timer(2.0, sshd.start).start()
    t0 = time.time()
    r = run_worker("ssh:wait_fingerprints", design(sshd.port), env, expect=0)
    check(time.time() - t0 >= 1.5 and "waiting for sshd on 127.0.0.1:" in r.err, r.err)
    cb = r.clipboard("")
    check(dict(cb["instance"]["ssh_fingerprints"]) == sshd.fingerprints,
          f"{cb['instance']['ssh_fingerprints']} != {sshd.fingerprints}")
    # SSHFP data as OpenSSH itself computes it (ssh-keygen -r), SHA-256 only.
    want = set()
    for k in ("ed25519", "ecdsa", "rsa"):
        out = subprocess.run(["ssh-keygen", "-r", "loki", "-f", f"{sshd.dir}/host_{k}.pub"],
                             capture_output=True, text=True, check=True).stdout
        want |= {" ".join(l.split()[3:]) for l in out.splitlines() if l.split()[4] == "2"}
    check(set(cb["instance"]["sshfp"].values()) == want, f"{cb['instance']['sshfp']} != {want}")
    with open(f"{sshd.dir}/host_ed25519.pub") as f:
        check(cb["instance"]["ssh_host_keys"]["ed25519"] == " ".join(f.read().split()[:2]), "host key")

    # 2. Twice: the same answer. With the console's keys (fingerprints or key lines): they match.
    r2 = run_worker("ssh:wait_fingerprints", design(sshd.port), env, expect=0)
    check(r2.out == r.out, "a second run must give the same clipboard")
    with open(f"{sshd.dir}/host_rsa.pub") as f:
        console = {"ed25519": sshd.fingerprints["ed25519"], "rsa": f.read().strip()}
    r = run_worker("ssh:wait_fingerprints", design(sshd.port, console=console), env, expect=0)
    check("match the console's" in r.err, r.err)

    # 3. Killed midway (while it waits for a down sshd), then run again.
    sshd.stop()
    check(killed_midway("ssh:wait_fingerprints", design(sshd.port), env, 0.8), "should still wait")
    sshd.start()
    r = run_worker("ssh:wait_fingerprints", design(sshd.port), env, expect=0)
    check(r.out == r2.out, "after a kill")

    # 4. A changed host key is detected: the console reported the old ones.
    old = dict(sshd.fingerprints)
    sshd.stop()
    sshd.make_host_keys()
    sshd.start()
    r = run_worker("ssh:wait_fingerprints", design(sshd.port, console={"ed25519": old["ed25519"]}),
                   env, expect=1)
    check(r.last.startswith(f"host key mismatch on 127.0.0.1:{sshd.port}: its ed25519 key is "
                            f"{sshd.fingerprints['ed25519']}, the console reported {old['ed25519']}"),
          r.last)
    check(not r.out, "a failed stage prints nothing")

    # 5. Nobody answers: a bounded wait and a clear reason.
    t0 = time.time()
    r = run_worker("ssh:wait_fingerprints", design(free_port(), wait="3s"), env, expect=1)
    check(time.time() - t0 < 15, "the wait must be bounded")
    check(r.last.startswith("sshd on 127.0.0.1:") and "not up after 3s" in r.last, r.last)
    r = run_worker("ssh:wait_fingerprints", design("99999"), env, expect=2)
    check("instance.ssh_port" in r.last, r.last)

    # ssh:root_keypair
    kenv = worker_env(state, "ssh:root_keypair", job="7")
    text = design(sshd.port)
    r = run_worker("ssh:root_keypair", text, kenv, expect=0)
    cb = r.clipboard(text)
    key = cb["instance"]["root_key_file"]
    check(key == os.path.join(state, "secrets", "loki", "7", "id_ed25519"), key)
    check(stat.S_IMODE(os.stat(key).st_mode) == 0o600, "private key must be 0600")
    check(stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode) == 0o700, "key dir must be 0700")
    pub = cb["instance"]["root_pubkey"]
    check(pub.startswith("ssh-ed25519 ") and pub.endswith(" root@loki.example.com"), pub)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", key], capture_output=True, text=True,
                             check=True).stdout.split()[:2]
    check(pub.split()[:2] == derived, "the public key must be the private key's")
    with open(key) as f:
        private = f.read()
    body = private.splitlines()[1]
    check(body not in r.out and body not in r.err and "PRIVATE KEY" not in r.out, "private half leaked")
    r2 = run_worker("ssh:root_keypair", text, kenv, expect=0)
    check(r2.clipboard(text)["instance"]["root_pubkey"] == pub and "reusing" in r2.err, r2.err)
    # Killed midway, then again (job 8); and a key left without its .pub (job 7).
    kenv8 = worker_env(state, "ssh:root_keypair", job="8")
    killed_midway("ssh:root_keypair", text, kenv8, 0.1)
    r8 = run_worker("ssh:root_keypair", text, kenv8, expect=0)
    pub8 = r8.clipboard(text)["instance"]["root_pubkey"]
    check(pub8 != pub, "a new job gets a new key")
    check(not [n for n in os.listdir(os.path.dirname(key)) if n.startswith(".new-")], "temp dirs left")
    os.unlink(key + ".pub")
    r = run_worker("ssh:root_keypair", text, kenv, expect=0)
    check(r.clipboard(text)["instance"]["root_pubkey"] == pub and os.path.exists(key + ".pub"), r.err)
    r = run_worker("ssh:root_keypair", text, dict(kenv, JARVIS_JOB="../x"), expect=2)
    check("JARVIS_JOB" in r.last, r.last)
    ok = True
finally:
    sshd.cleanup(ok)
print("worker_ssh: ok")
