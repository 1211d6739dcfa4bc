"""redeploy-real end to end through `jarvis serve` (console front), with every server up: named
(TSIG), sshd (an unprivileged user; Ansible in check mode), Alertmanager, slapd, and a keys
repository over SSH. The provider stages are the sandbox's, its node standing for this
machine's sshd (sandbox.address). Checked at the end: the DNS answers, the silence (active
during the job, expired after), the LDAP entry, the keys repository."""
import os
import pwd
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import Jarvis, check, wait_for  # noqa: E402
from ldap_support import Slapd  # noqa: E402
from worker_support import Alertmanager, Named, Sshd  # noqa: E402

binary, source, build = sys.argv[1:4]
j = Jarvis(binary, source, build)
named = Named(records="loki IN A 192.0.2.99\nwww IN CNAME loki\n")
sshd = Sshd()
am = Alertmanager()
slapd = Slapd()
ok = False
try:
    slapd.add_host("loki", fqdn="loki.example.com", extra_ldif="jarvisProduction: TRUE\njarvisService: www\n")
    writer_pw = os.path.join(j.tmp, "cmdb.pass")
    fd = os.open(writer_pw, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(slapd.writer_password + "\n")
    bare = os.path.join(sshd.home, "gitolite-admin.git")
    subprocess.run(["git", "init", "-q", "--bare", bare], check=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam(sshd.user)
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", bare], check=True)
    known = os.path.join(j.tmp, "git_known_hosts")
    with open(known, "w") as f:
        for k in ("ed25519", "ecdsa", "rsa"):
            with open(f"{sshd.dir}/host_{k}.pub") as pub:
                f.write(f"[127.0.0.1]:{sshd.port} {' '.join(pub.read().split()[:2])}\n")
    playbook = os.path.join(j.tmp, "site.yml")
    with open(playbook, "w") as f:
        f.write("- hosts: all\n  gather_facts: false\n  tasks:\n    - name: hello\n"
                "      ansible.builtin.command: echo hello from {{ jarvis_fqdn }}\n"
                "      changed_when: false\n      check_mode: false\n")
    designs = os.path.join(j.tmp, "designs")
    os.makedirs(designs)
    with open(os.path.join(designs, "loki.yaml"), "w") as f:
        f.write(f"""instance:
  hostname: loki
  fqdn: loki.example.com
  provider: sandbox
  guestid: Debian 12
  datacenter: Atlanta
  size: 512
  ssh_port: {sshd.port}
  gitosis-admin: 'ssh://{sshd.user}@127.0.0.1:{sshd.port}{bare}'
  mounts:
    - {{device: tmpfs, path: {sshd.home}/data, fstype: tmpfs, options: 'size=1m'}}
services:
  standby: thor
config:
  user: {sshd.user}
  become: false
  check_mode: true
keep: '007'
sandbox:
  delay_ms: 0
  address: 127.0.0.1
""")
    config = os.path.join(j.tmp, "jarvis.yaml")
    env = {"JARVIS_DNS_SERVER": "127.0.0.1", "JARVIS_DNS_PORT": named.port,
           "JARVIS_DNS_KEY_FILE": named.key_file, "JARVIS_DNS_REVERSE_ZONE": named.reverse_zone,
           "JARVIS_ALERTMANAGER_URL": am.url,
           "JARVIS_LDAP_URI": slapd.uri, "JARVIS_LDAP_HOSTS_OU": slapd.hosts_ou,
           "JARVIS_LDAP_CA_FILE": slapd.ca_file, "JARVIS_LDAP_BIND_DN": slapd.writer_dn,
           "JARVIS_LDAP_PASSWORD_FILE": writer_pw,
           "JARVIS_LDAP_UPDATE_HOST": f"{build}/workers/ldap/update_host",
           "JARVIS_GIT_SSH_KEY_FILE": sshd.client_key, "JARVIS_GIT_KNOWN_HOSTS": known,
           "JARVIS_ANSIBLE_SSH_KEY_FILE": sshd.client_key, "JARVIS_ANSIBLE_PLAYBOOK": playbook}
    with open(config, "w") as f:
        f.write(f"state_dir: {j.state}\npipelines_dir: {source}/pipelines\ndesigns_dir: {designs}\n"
                f"workers:\n  path: [{source}/workers, {build}/workers]\n  env:\n"
                "    PATH: /usr/local/bin:/usr/bin:/bin\n    LANG: C.UTF-8\n"
                + "".join(f"    {k}: '{v}'\n" for k, v in env.items()))
    check_cfg = subprocess.run([binary, "check-config", "--config", config], capture_output=True, text=True)
    check(check_cfg.returncode == 0 and "redeploy-real: 19 stages" in check_cfg.stdout, check_cfg.stdout + check_cfg.stderr)

    seen_silences = []

    def watch():
        while not done.is_set():
            try:
                seen_silences.extend(s for s in am.get("/api/v2/silences")
                                     if s["status"]["state"] == "active" and s["createdBy"] == "jarvis job 1")
            except OSError:
                pass
            time.sleep(0.2)
    done = threading.Event()
    watcher = threading.Thread(target=watch)
    watcher.start()
    bot = subprocess.Popen([binary, "serve", "--config", config], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bot.stdin.write("deploy loki with redeploy-real\n")
    bot.stdin.flush()
    lines = []

    def read():
        for line in bot.stdout:
            lines.append(line.rstrip("\n"))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # loki is in production (its CMDB entry): stage 4 waits for someone else to confirm.
    prompt = wait_for(lambda: next((l for l in lines if "is in production" in l), None), 120, "the confirmation prompt")
    check("stage 4/19 sandbox:power_off will power it off, then stage 5 deletes it. Say `confirm 1`" in prompt, prompt)
    confirmed = subprocess.run([binary, "confirm", "1", "--config", config], capture_output=True, text=True)
    check(confirmed.returncode == 0, confirmed.stdout + confirmed.stderr)
    wait_for(lambda: any("loki: ready" in l or "loki: failed" in l for l in lines), 240, "the job to end")
    done.set()
    watcher.join()
    bot.stdin.close()
    bot.terminate()
    bot.wait(timeout=30)
    out = "\n".join(lines)
    log = j.run("log", "loki").stdout
    check(any("loki: ready (job 1, 19 stages" in l for l in lines), f"{out}\n--- log:\n{log[-6000:]}")
    check(lines[0] == "loki: deploying with redeploy-real, 19 stages (job 1)", lines[0])

    # DNS: the new records, the stale A gone, www moved to the standby, the PTR.
    check(named.dig("loki.example.com", "A") == ["127.0.0.1"], named.dig("loki.example.com", "A"))
    check(len(named.dig("loki.example.com", "SSHFP")) == 3, named.dig("loki.example.com", "SSHFP"))
    check(named.dig("www.example.com", "CNAME") == ["thor.example.com."], "www not moved")
    check(named.dig("1.0.0.127.in-addr.arpa", "PTR") == ["loki.example.com."], "PTR")
    # The silence: active during the job, expired after.
    ids = {s["id"] for s in seen_silences}
    check(len(ids) == 1, f"one silence during the job: {ids}")
    [sid] = ids
    check(am.get(f"/api/v2/silence/{sid}")["status"]["state"] == "expired", "silence not expired")
    # LDAP: the entry updated with the new facts.
    [e] = slapd.search(f"cn=loki,{slapd.hosts_ou}")
    check(e["ipHostNumber"] == ["127.0.0.1"] and len(e.get("jarvisSshFingerprint", [])) == 3
          and e.get("jarvisProduction") == ["TRUE"], e)
    # The keys repository: root's new key.
    key = subprocess.run(["git", "--git-dir", bare, "show", "HEAD:keydir/root@loki.example.com.pub"],
                         capture_output=True, text=True)
    check(key.returncode == 0 and key.stdout.startswith("ssh-ed25519 "), key.stderr)
    check("config:run: TASK [hello]" in log and "config:run: ok: [loki]" in log and "check mode" in log and "keep" not in out, log[-3000:])
    ok = True
finally:
    for s in (named, sshd, am, slapd):
        s.cleanup(ok)
    if ok:
        j.cleanup()
print("worker_redeploy_real: ok")
