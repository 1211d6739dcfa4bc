"""inventory:check_production and cmdb:update_host against a real slapd (ldap_support.py):
production and services read from the host's CMDB entry (StartTLS, the bot's reader account),
the design's instance.production winning over it, and cmdb:update_host (ldap:update_host
wired in) writing the entry; each twice, and killed midway then run again."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check  # noqa: E402
from ldap_support import Slapd  # noqa: E402
from worker_support import dump, killed_midway, run_worker, worker_env  # noqa: E402

build = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "..", "..", "build")
slapd = Slapd()
ok = False
state = tempfile.mkdtemp(prefix="jarvis-inv-state-")
try:
    slapd.add_host("loki", fqdn="loki.example.com",
                   extra_ldif="jarvisProduction: TRUE\njarvisService: www\njarvisService: smtp\n")
    slapd.add_host("thor", fqdn="thor.example.com", extra_ldif="jarvisProduction: FALSE\n")
    pw = {}
    for who, secret in (("reader", slapd.reader_password), ("writer", slapd.writer_password),
                        ("wrong", "not-the-password")):
        pw[who] = os.path.join(state, f"{who}.pass")
        fd = os.open(pw[who], os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
    ldap = {"JARVIS_LDAP_URI": slapd.uri, "JARVIS_LDAP_HOSTS_OU": slapd.hosts_ou,
            "JARVIS_LDAP_CA_FILE": slapd.ca_file, "JARVIS_LDAP_BIND_DN": slapd.reader_dn,
            "JARVIS_LDAP_PASSWORD_FILE": pw["reader"], "JARVIS_LDAP_TIMEOUT": "5",
            "JARVIS_LDAP_UPDATE_HOST": os.path.join(build, "workers", "ldap", "update_host")}
    env = worker_env(state, "inventory:check_production", **ldap)

    def design(host, **instance):
        return dump({"instance": {"hostname": host, "fqdn": f"{host}.example.com", "provider": "linode",
                                  **instance}})

    r = run_worker("inventory:check_production", design("loki"), env, expect=0)
    inv = r.clipboard("")["inventory"]
    check(inv["production"] == "true" and inv["services"] == ["www", "smtp"], inv)
    check(inv["source"] == f"CMDB entry cn=loki,{slapd.hosts_ou}", inv)
    check(slapd.reader_password not in r.err + r.out, "password leaked")
    r2 = run_worker("inventory:check_production", design("loki"), env, expect=0)
    check(r2.out == r.out, "twice: the same answer")
    killed_midway("inventory:check_production", design("loki"), env, 0.1)
    check(run_worker("inventory:check_production", design("loki"), env, expect=0).out == r.out, "after a kill")
    r = run_worker("inventory:check_production", design("thor"), env, expect=0)
    check(r.clipboard("")["inventory"]["production"] == "false", r.out)
    r = run_worker("inventory:check_production", design("odin"), env, expect=0)
    inv = r.clipboard("")["inventory"]
    check(inv["production"] == "false" and inv["source"].startswith("no CMDB entry cn=odin"), inv)
    # The design says so: it wins, LDAP is not asked.
    r = run_worker("inventory:check_production", design("loki", production="false"),
                   dict(env, JARVIS_LDAP_URI="ldap://127.0.0.1:1"), expect=0)
    check(r.clipboard("")["inventory"]["production"] == "false"
          and r.clipboard("")["inventory"]["source"] == "the design's instance.production", r.out)
    # Wrong password, server down, nothing configured: clear reasons.
    r = run_worker("inventory:check_production", design("loki"),
                   dict(env, JARVIS_LDAP_PASSWORD_FILE=pw["wrong"]), expect=1)
    check(f"refused the bind as {slapd.reader_dn}: invalidCredentials" in r.last, r.last)
    r = run_worker("inventory:check_production", design("loki"),
                   dict(env, JARVIS_LDAP_URI="ldap://127.0.0.1:1"), expect=1)
    check("could not be reached" in r.last, r.last)
    bare = {k: v for k, v in env.items() if not k.startswith("JARVIS_LDAP")}
    r = run_worker("inventory:check_production", design("loki"), bare, expect=2)
    check("cannot tell whether the host is in production" in r.last, r.last)

    # cmdb:update_host: ldap:update_host, as the CMDB's writer.
    wenv = worker_env(state, "cmdb:update_host", **dict(ldap, JARVIS_LDAP_BIND_DN=slapd.writer_dn,
                                                        JARVIS_LDAP_PASSWORD_FILE=pw["writer"]))
    facts = design("freyr", ip="127.0.0.9", size="'512'", ssh_fingerprints={"ed25519": "SHA256:abc"})
    r = run_worker("cmdb:update_host", facts, wenv, expect=0)
    check("created" in r.err and not r.out, r.err)
    [e] = slapd.search(f"cn=freyr,{slapd.hosts_ou}", attrs=("*", "entryCSN"))
    check(e["ipHostNumber"] == ["127.0.0.9"] and e["jarvisSshFingerprint"] == ["ed25519 SHA256:abc"], e)
    r = run_worker("cmdb:update_host", facts, wenv, expect=0)
    check("already up to date" in r.err, r.err)
    moved = facts.replace("127.0.0.9", "127.0.0.10")
    killed_midway("cmdb:update_host", moved, wenv, 0.05)
    run_worker("cmdb:update_host", moved, wenv, expect=0)
    [e2] = slapd.search(f"cn=freyr,{slapd.hosts_ou}", attrs=("*", "entryCSN"))
    check(e2["ipHostNumber"] == ["127.0.0.10"], e2)
    r = run_worker("cmdb:update_host", facts, worker_env(state, "cmdb:update_host"), expect=2)
    check("no CMDB configured" in r.last, r.last)
    ok = True
finally:
    slapd.cleanup(ok)
print("worker_inventory: ok")
