"""git:update_root_key against a bare keys repository (gitolite-admin layout) reached over SSH
through a real sshd the test starts (an unprivileged user, host key checked), and as a local
path: the key committed as keydir/root@<fqdn>.pub and pushed, a second run commits nothing, a
new key replaces the old, a run killed midway then run again leaves one commit, and transports
that are not allowed are refused."""
import os
import pwd
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check  # noqa: E402
from worker_support import Sshd, dump, keygen, killed_midway, run_worker, worker_env  # noqa: E402

sshd = Sshd()
ok = False
state = tempfile.mkdtemp(prefix="jarvis-git-state-")
try:
    bare = os.path.join(sshd.home, "gitolite-admin.git")
    subprocess.run(["git", "init", "-q", "--bare", bare], check=True)
    # An admin's first commit, as a real gitolite-admin has.
    seed = tempfile.mkdtemp(prefix="jarvis-git-seed-")
    g = ["git", "-c", "user.name=admin", "-c", "user.email=admin@example.com"]
    subprocess.run(["git", "clone", "-q", bare, seed + "/w"], check=True, capture_output=True)
    os.makedirs(seed + "/w/keydir")
    os.makedirs(seed + "/w/conf")
    with open(seed + "/w/conf/gitolite.conf", "w") as f:
        f.write("repo gitolite-admin\n    RW+ = admin\n")
    with open(seed + "/w/keydir/admin.pub", "w") as f:
        f.write("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake admin\n")
    subprocess.run(g + ["-C", seed + "/w", "add", "."], check=True)
    subprocess.run(g + ["-C", seed + "/w", "commit", "-qm", "init"], check=True)
    subprocess.run(g + ["-C", seed + "/w", "push", "-q", "origin", "HEAD"], check=True, capture_output=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam(sshd.user)
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", bare], check=True)
    known = os.path.join(state, "known_hosts")
    with open(known, "w") as f:
        for k in ("ed25519", "ecdsa", "rsa"):
            with open(f"{sshd.dir}/host_{k}.pub") as pub:
                f.write(f"[127.0.0.1]:{sshd.port} {' '.join(pub.read().split()[:2])}\n")
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{bare}"
    env = worker_env(state, "git:update_root_key", JARVIS_GIT_SSH_KEY_FILE=sshd.client_key,
                     JARVIS_GIT_KNOWN_HOSTS=known)

    def log():
        return subprocess.run(["git", "--git-dir", bare, "log", "--format=%H %s"], capture_output=True,
                              text=True, check=True).stdout.splitlines()

    def show(path):
        p = subprocess.run(["git", "--git-dir", bare, "show", f"HEAD:{path}"], capture_output=True, text=True)
        return p.stdout if p.returncode == 0 else None

    k1 = keygen(os.path.join(state, "k1"), comment="root@loki.example.com")
    k2 = keygen(os.path.join(state, "k2"), comment="root@loki.example.com")

    def design(key, repo=url):
        return dump({"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "linode",
                                  "gitosis-admin": repo, "root_pubkey": key}})

    r = run_worker("git:update_root_key", design(k1), env, expect=0)
    check(show("keydir/root@loki.example.com.pub") == k1 + "\n", "key not pushed")
    check(show("keydir/admin.pub") is not None, "other keys must stay")
    commits = log()
    check(len(commits) == 2 and "Add root key of loki.example.com" in commits[0], commits)
    cb = r.clipboard("")
    check(cb["git"]["key"] == "keydir/root@loki.example.com.pub" and commits[0].startswith(cb["git"]["commit"]), cb)
    # Twice: nothing committed.
    r = run_worker("git:update_root_key", design(k1), env, expect=0)
    check(len(log()) == 2 and "already root's current key" in r.err, r.err)
    # A new key (a new job's): replaced, one commit; killed midway first.
    for delay in (0.1, 0.3):
        killed_midway("git:update_root_key", design(k2), env, delay)
    r = run_worker("git:update_root_key", design(k2), env, expect=0)
    check(show("keydir/root@loki.example.com.pub") == k2 + "\n", "key not replaced")
    check(len(log()) == 3 and "Replace root key" in log()[0], log())
    check(not os.listdir(os.path.join(state, "git-work")), "scratch clones left behind")
    # A local repository is refused unless the configuration allows the file transport.
    local = os.path.join(state, "local.git")
    subprocess.run(["git", "init", "-q", "--bare", local], check=True)
    r = run_worker("git:update_root_key", design(k1, repo=local), env, expect=1)
    check("transport 'file' not allowed" in r.last, r.last)
    r = run_worker("git:update_root_key", design(k1, repo=local),
                   dict(env, JARVIS_GIT_ALLOW_PROTOCOL="file"), expect=0)
    p = subprocess.run(["git", "--git-dir", local, "show", "HEAD:keydir/root@loki.example.com.pub"],
                       capture_output=True, text=True)
    check(p.stdout == k1 + "\n", f"push to an empty local repository: {p.stderr}")
    r = run_worker("git:update_root_key", design(k1, repo="ext::sh -c touch% /tmp/pwned"), env, expect=2)
    r = run_worker("git:update_root_key", design(k1, repo="https://user:tok@example.com/x.git"), env, expect=2)
    check("must not carry credentials" in r.last, r.last)
    r = run_worker("git:update_root_key", design("ssh-ed25519 AAAA\nevil"), env, expect=2)
    check("instance.root_pubkey" in r.last, r.last)
    # A host key that is not the server's: refused by ssh.
    with open(known, "w") as f:
        f.write(f"[127.0.0.1]:{sshd.port} {k1.split()[0]} {k1.split()[1]}\n")
    r = run_worker("git:update_root_key", design(k2), env, expect=1)
    check(r.last.startswith("git clone of ssh://") and "Host key verification failed" in r.last, r.last)
    r = run_worker("git:update_root_key", dump({"instance": {"hostname": "loki", "provider": "linode"}}), env, expect=0)
    check("skipped: no keys repository" in r.err, r.err)
    ok = True
finally:
    sshd.cleanup(ok)
print("worker_git: ok")
