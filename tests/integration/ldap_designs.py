"""Designs from a real slapd (StartTLS with a test certificate, a bind password from a file):
by full DN, by bare RDN, over ldaps://; a missing entry, a DN outside the base, a wrong
password (no password in the output), a filter injection that must not widen the search; then
the ldap:update_host worker creating and updating an entry, read back with ldapsearch, and a
whole deploy from LDAP whose last stage writes the host back."""
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head  # noqa: E402
from irc_support import make_bot_files  # noqa: E402
from ldap_support import Slapd  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
slapd = Slapd()
work = slapd.dir
make_bot_files(work, stage_sleep="0")
slapd.add_host("loki", fqdn="loki.example.com", ip="10.0.0.7", provider="test", size="512",
               locality="Atlanta", description=["web front", "owner: ops"])
slapd.add_host("thor", fqdn="thor.example.com", ip="10.0.0.8", provider="cmdb")
with open(f"{work}/reader.pass", "w") as f:
    f.write(slapd.reader_password + "\n")
with open(f"{work}/wrong.pass", "w") as f:
    f.write("not-the-password\n")
with open(f"{work}/writer.pass", "w") as f:
    f.write(slapd.writer_password + "\n")
with open(f"{work}/pipelines/cmdb.yaml", "w") as f:
    f.write("name: cmdb\nmatch: {provider: cmdb}\ntasks: [step:run, ldap:update_host]\n")

# The environment of the bot: workers get the writer's settings through env_allow only.
env = dict(os.environ, LDAPTLS_CACERT="/nonexistent",  # the bot must use its own ca_file
           JARVIS_LDAP_URI=slapd.uri, JARVIS_LDAP_HOSTS_OU=slapd.hosts_ou,
           JARVIS_LDAP_BIND_DN=slapd.writer_dn, JARVIS_LDAP_PASSWORD_FILE=f"{work}/writer.pass",
           JARVIS_LDAP_CA_FILE=slapd.ca_file)


WORKER_ENV = """  env_allow: [JARVIS_LDAP_URI, JARVIS_LDAP_HOSTS_OU, JARVIS_LDAP_BIND_DN, JARVIS_LDAP_PASSWORD_FILE,
              JARVIS_LDAP_CA_FILE]
"""


def config(name, uri=None, password_file="reader.pass", extra=""):
    path = f"{work}/{name}.yaml"
    with open(path, "w") as f:
        f.write(config_head(work, name, workers=[f"{build}/workers"], workers_extra=WORKER_ENV) + f"""ldap:
  uri: {uri or slapd.uri}
  ca_file: {slapd.ca_file}
  bind_dn: {slapd.reader_dn}
  bind_password_file: {password_file}
  base: {slapd.hosts_ou}
  timeout: 5s
{extra}""")
    return path


def jarvis(cfg, *words, timeout=60):
    p = subprocess.run([binary, "--config", cfg, *words], capture_output=True, text=True,
                       timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout + p.stderr


good = config("good")
secrets_seen = [slapd.reader_password, slapd.writer_password]

# By full DN and by bare RDN: the same entry, the mapped fields in the design.
rc, out = jarvis(good, "plan", f"cn=loki,{slapd.hosts_ou}")
check(rc == 0 and "loki: plan three (3 stages)" in out, f"plan by DN: {out}")
rc, out = jarvis(good, "plan", "cn=loki")
check(rc == 0 and "loki: plan three" in out, f"plan by RDN: {out}")
rc, out = jarvis(good, "plan", "CN=Loki")
check(rc == 0 and "loki: plan three" in out, f"plan by RDN in other case: {out}")
# ldaps:// from the start instead of StartTLS.
rc, out = jarvis(config("ldaps", uri=slapd.ldaps_uri), "plan", "cn=loki")
check(rc == 0 and "loki: plan three" in out, f"plan over ldaps: {out}")

# A whole job from LDAP: the design the workers see holds the entry's attributes.
rc, out = jarvis(good, "run", "cn=loki", timeout=120)
check(rc == 0 and "ready" in out, f"run cn=loki: {out}")
rc, out = jarvis(good, "log", "loki")
check(rc == 0, out)

# Not found, outside the base, not a name.
rc, out = jarvis(good, "plan", "cn=nosuch")
check(rc == 1 and f"no LDAP entry cn=nosuch under {slapd.hosts_ou}" in out, f"missing: {out}")
rc, out = jarvis(good, "plan", f"cn=nosuch,{slapd.hosts_ou}")
check(rc == 1 and f"no LDAP entry cn=nosuch,{slapd.hosts_ou}" in out, f"missing DN: {out}")
rc, out = jarvis(good, "plan", f"cn=jarvis,{slapd.base}")
check(rc == 1 and "is outside" in out, f"outside the base: {out}")
rc, out = jarvis(good, "plan", "1cn=loki")
check(rc == 1 and "is not an LDAP name" in out, f"bad attribute: {out}")

# Injection: the value is escaped (RFC 4515), so neither pattern matches both hosts.
for attempt in ["cn=*)(uid=*", "cn=*", "cn=lo*", "cn=loki)(|(cn=*"]:
    rc, out = jarvis(good, "plan", attempt)
    check(rc == 1 and "no LDAP entry" in out and "several entries" not in out,
          f"{attempt} was not taken literally: {out}")
log = open(slapd.log_path).read()
check("(cn=\\2a\\29\\28uid=\\2a)" in log.lower(), "slapd did not see the escaped filter")

# A wrong password: a clear refusal, and no password anywhere in the output.
rc, out = jarvis(config("wrong", password_file="wrong.pass"), "plan", "cn=loki")
check(rc == 1 and "Invalid credentials" in out and slapd.reader_dn in out, f"wrong password: {out}")
check("not-the-password" not in out, "the wrong password was echoed")
# Plaintext with a password is refused by the config check.
rc, out = jarvis(config("plain", extra="  starttls: false\n"), "check-config")
check(rc == 2 and "in clear" in out, f"plaintext bind accepted: {out}")
# A server that is not there: a clear error within the timeout.
rc, out = jarvis(config("down", uri="ldap://127.0.0.1:9"), "plan", "cn=loki")
check(rc == 1 and "Can't contact LDAP server" in out, f"server down: {out}")

# A server that accepts and then stalls the TLS handshake (ldaps://, or StartTLS answered and
# then silence): libldap 2.5 would wait forever, spinning; the lookup's deadline answers and
# frees the thread (issue 17, finding 10).
START_TLS_OK = bytes.fromhex("300c02010178070a010004000400")  # ExtendedResponse 1: success


def silent_server(answer_starttls):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            if answer_starttls:
                conn.settimeout(5)
                try:
                    conn.recv(4096)
                    conn.sendall(START_TLS_OK)
                except OSError:
                    pass
    threading.Thread(target=serve, daemon=True).start()
    return listener, held


for scheme, answer_starttls in [("ldaps", False), ("ldap", True)]:
    listener, held = silent_server(answer_starttls)
    port = listener.getsockname()[1]
    cfg = config(f"stall-{scheme}", uri=f"{scheme}://127.0.0.1:{port}", extra="  lookup_timeout: 2s\n")
    start = time.monotonic()
    rc, out = jarvis(cfg, "plan", "cn=loki", timeout=30)
    took = time.monotonic() - start
    check(rc == 1 and "LDAP did not answer within 2s (ldap.lookup_timeout)" in out and took < 6 and held,
          f"stalled {scheme} handshake ({took:.1f}s, {len(held)} connections): {out}")
    # The worker has its own deadline: three times its per-step timeout (JARVIS_LDAP_TIMEOUT).
    p = subprocess.run([f"{build}/workers/ldap/update_host"], capture_output=True, text=True, timeout=60,
                       input="instance: {hostname: odin, fqdn: odin.example.com, ip: 10.0.0.9}\n",
                       env={"PATH": "/usr/bin:/bin", "JARVIS_LDAP_URI": f"{scheme}://127.0.0.1:{port}",
                            "JARVIS_LDAP_HOSTS_OU": slapd.hosts_ou, "JARVIS_LDAP_CA_FILE": slapd.ca_file,
                            "JARVIS_LDAP_TIMEOUT": "1"})
    check(p.returncode == 3 and "did not answer within 3s" in p.stderr, f"worker, stalled {scheme}: {p.stderr}")
    listener.close()

# ldap:update_host, run directly: creates the entry, then a second run changes nothing.
worker = f"{build}/workers/ldap/update_host"
clipboard = """instance:
  hostname: freyr
  fqdn: freyr.example.com
  ip: 10.0.0.42
  ipv6: fd00::42
  provider: sandbox
  node_id: node-17
  size: '1024'
  datacenter: Atlanta
  ssh_fingerprints:
    ssh-ed25519: SHA256:abc
    ssh-rsa: SHA256:def
"""
wenv = {k: v for k, v in env.items() if k.startswith("JARVIS_LDAP_")}
wenv.update(PATH="/usr/bin:/bin", JARVIS_TASK="ldap:update_host", JARVIS_HOST="freyr")


def update_host(text):
    p = subprocess.run([worker], input=text, capture_output=True, text=True, env=wenv, timeout=30)
    for s in secrets_seen:
        check(s not in p.stdout + p.stderr, "a password reached the worker's output")
    return p


p = update_host(clipboard)
check(p.returncode == 0 and p.stdout == "" and "created" in p.stderr, f"create: {p.returncode} {p.stderr}")
dn = f"cn=freyr,{slapd.hosts_ou}"
entry = slapd.search(dn, attrs=("*", "modifyTimestamp", "entryCSN"))
check(len(entry) == 1, f"entry not written: {entry}")
e = entry[0]
check(sorted(e.get("ipHostNumber", [])) == ["10.0.0.42", "fd00::42"], f"ip: {e}")
check(e.get("associatedDomain") == ["freyr.example.com"] and e.get("jarvisProviderId") == ["node-17"], f"facts: {e}")
check(sorted(e.get("jarvisSshFingerprint", [])) == ["ssh-ed25519 SHA256:abc", "ssh-rsa SHA256:def"], f"prints: {e}")
csn = e.get("entryCSN")

p = update_host(clipboard)
check(p.returncode == 0 and "already up to date" in p.stderr, f"second run wrote: {p.stderr}")
check(slapd.search(dn, attrs=("entryCSN",))[0].get("entryCSN") == csn, "the second run changed the entry")

p = update_host(clipboard.replace("10.0.0.42", "10.0.0.43").replace("SHA256:def", "SHA256:xyz"))
check(p.returncode == 0 and "set ipHostNumber" in p.stderr and "set jarvisSshFingerprint" in p.stderr,
      f"update: {p.stderr}")
e = slapd.search(dn)[0]
check(sorted(e["ipHostNumber"]) == ["10.0.0.43", "fd00::42"], f"ip not updated: {e}")
check("ssh-rsa SHA256:xyz" in e["jarvisSshFingerprint"], f"prints not updated: {e}")

# Credentials come from the environment only: without them it refuses, whatever the clipboard says.
p = subprocess.run([worker], input=clipboard + "ldap:\n  uri: ldap://evil\n", capture_output=True,
                   text=True, env={"PATH": "/usr/bin:/bin"}, timeout=30)
check(p.returncode == 2 and "JARVIS_LDAP_URI" in p.stderr, f"no env: {p.stderr}")
# The reader may not write: a clear LDAP error.
renv = dict(wenv, JARVIS_LDAP_BIND_DN=slapd.reader_dn, JARVIS_LDAP_PASSWORD_FILE=f"{work}/reader.pass")
p = subprocess.run([worker], input=clipboard.replace("freyr", "odin"), capture_output=True, text=True,
                   env=renv, timeout=30)
check(p.returncode == 3 and "Insufficient access" in p.stderr, f"reader wrote: {p.stderr}")

# A deploy read from LDAP whose last stage writes the host back: nothing to change.
rc, out = jarvis(good, "run", "cn=thor", timeout=120)
check(rc == 0 and "ready" in out, f"run cn=thor: {out}")
rc, out = jarvis(good, "log", "thor")
check("already up to date" in out, f"update_host after an LDAP deploy: {out}")

slapd.cleanup(ok=True)
print("ldap designs: ok")
