"""dns:update and services:migrate against a real named (bind9) that the test starts on
loopback with a zone and a TSIG key: records checked with real DNS queries (dig), stale records
replaced, a second run changes nothing, an update signed with the wrong key is refused with a
clear reason, a run killed midway and run again ends as one clean run, and the sandbox
fallback still writes the sandbox's zone file."""
import base64
import hashlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check  # noqa: E402
from worker_support import Named, dump, killed_midway, run_worker, worker_env  # noqa: E402

named = Named(records="loki IN A 192.0.2.99\nloki IN AAAA 2001:db8::99\n"
                      "loki IN SSHFP 4 2 " + "ab" * 32 + "\n"
                      "www IN A 10.1.1.1\nsmtp IN CNAME loki\n")
ok = False
state = tempfile.mkdtemp(prefix="jarvis-dns-state-")
try:
    digests = {k: hashlib.sha256(k.encode()).digest() for k in ("ed25519", "rsa")}
    prints = {k: "SHA256:" + base64.b64encode(d).decode().rstrip("=") for k, d in digests.items()}
    want_sshfp = sorted([f"4 2 {digests['ed25519'].hex().upper()}", f"1 2 {digests['rsa'].hex().upper()}"])

    def design(ip="127.0.0.5", ipv6="2001:db8::5", key_file=None, **instance):
        d = {"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "linode",
                          "ip": ip, "ipv6": ipv6, "ssh_fingerprints": dict(prints), **instance},
             "dns": dict(named.settings(key_file), reverse_zone=named.reverse_zone),
             "note": "'007'"}
        if ipv6 is None:
            del d["instance"]["ipv6"]
        return dump(d).replace("note: '''007'''", "note: '007'")

    env = worker_env(state, "dns:update")

    def sshfp():
        return sorted(" ".join(r.split()[:2] + ["".join(r.split()[2:]).upper()])
                      for r in named.dig("loki.example.com", "SSHFP"))

    def serial():
        return int(named.dig("example.com", "SOA")[0].split()[2])

    # 1. The first run replaces the stale A, AAAA and SSHFP and adds the PTR.
    text = design()
    r = run_worker("dns:update", text, env, expect=0)
    check(named.dig("loki.example.com", "A") == ["127.0.0.5"], named.dig("loki.example.com", "A"))
    check(named.dig("loki.example.com", "AAAA") == ["2001:db8::5"], "AAAA")
    check(sshfp() == want_sshfp, f"SSHFP {sshfp()} != {want_sshfp}")
    check(named.dig("5.0.0.127.in-addr.arpa", "PTR") == ["loki.example.com."], "PTR")
    check("replacing" in r.err and "192.0.2.99" in r.err, r.err)
    cb = r.clipboard(text)
    check(cb["note"] == "007" and cb["note"].style == "'", "quoting kept")
    check(int(cb["dns"]["serial"]) == serial() and len(cb["dns"]["records"]) == 5, cb["dns"])
    check(str(cb["dns"]["port"]) == str(named.port) and cb["dns"]["primary"] == f"127.0.0.1:{named.port}", cb)

    # 2. Twice: nothing sent, the serial stays.
    s1 = serial()
    r = run_worker("dns:update", text, env, expect=0)
    check("already up to date" in r.err and "already there" in r.err, r.err)
    check(serial() == s1, "a second run must not change the zone")
    r2 = run_worker("dns:update", r.out or text, env, expect=0)   # its own output as input too
    check(serial() == s1, "a run on its own output must not change the zone")

    # 3. A new address and no IPv6: the old A is replaced, the AAAA removed, not added to.
    text = design(ip="127.0.0.6", ipv6=None)
    run_worker("dns:update", text, env, expect=0)
    check(named.dig("loki.example.com", "A") == ["127.0.0.6"], named.dig("loki.example.com", "A"))
    check(named.dig("loki.example.com", "AAAA") == [], "the stale AAAA must go")
    check(named.dig("6.0.0.127.in-addr.arpa", "PTR") == ["loki.example.com."], "PTR 6")

    # 4. The wrong key: refused, with a reason an operator can act on; the zone is untouched.
    s2 = serial()
    r = run_worker("dns:update", design(ip="127.0.0.7", key_file=named.wrong_key_file), env,
                   expect=1)
    check(r.last.startswith("the server refused the query for loki.example.com")
          or r.last.startswith("the server refused the update"), r.last)
    check(f"NOTAUTH (TSIG key jarvis-key not accepted by 127.0.0.1:{named.port}" in r.last, r.last)
    check("secret" not in r.err.lower() or "the secret differs" in r.err, r.err)
    check(serial() == s2 and named.dig("loki.example.com", "A") == ["127.0.0.6"], "wrong key changed the zone")
    with open(named.wrong_key_file) as f:
        wrong_secret = f.read().split('secret "')[1].split('"')[0]
    check(wrong_secret not in r.err and wrong_secret not in r.out, "the secret must never be printed")

    # 5. Killed midway, then run again: the end state is that of one clean run.
    text = design(ip="127.0.0.8")
    for delay in (0.05, 0.15, 0.3):
        killed_midway("dns:update", text, env, delay)
        run_worker("dns:update", text, env, expect=0)
        check(named.dig("loki.example.com", "A") == ["127.0.0.8"], f"after a kill at {delay}s")
        check(sshfp() == want_sshfp, "SSHFP after a kill")

    # 6. Bad values and missing settings: refused (exit 2) naming the field, nothing sent.
    s3 = serial()
    bad = design().replace("fqdn: loki.example.com", "fqdn: \"loki.example.com\\nevil IN A 6.6.6.6\"")
    r = run_worker("dns:update", bad, env, expect=2)
    check("instance.fqdn" in r.last and "not a DNS name" in r.last, r.last)
    r = run_worker("dns:update", design(ip="300.1.2.3"), env, expect=2)
    check("instance.ip" in r.last, r.last)
    r = run_worker("dns:update", design().replace("fqdn: loki.example.com", "fqdn: loki.example.org"),
                   env, expect=2)
    check("not in zone example.com" in r.last, r.last)
    nodns = dump({"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "linode",
                               "ip": "127.0.0.9", "ssh_fingerprints": prints}})
    r = run_worker("dns:update", nodns, env, expect=2)
    check("no DNS server configured" in r.last, r.last)
    check(serial() == s3, "refused runs must not change the zone")

    # 7. Settings from the environment (workers.env) instead of the design.
    envd = dict(env, JARVIS_DNS_SERVER="127.0.0.1", JARVIS_DNS_PORT=str(named.port),
                JARVIS_DNS_KEY_FILE=named.key_file)
    run_worker("dns:update", nodns, envd, expect=0)
    check(named.dig("loki.example.com", "A") == ["127.0.0.9"], "settings from the environment")

    # 8. services:migrate: www (an A) and smtp (a CNAME to loki) now point at thor.
    menv = worker_env(state, "services:migrate")
    mig = dump({"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "linode"},
                "inventory": {"production": True, "services": ["www", "smtp"]},
                "services": {"standby": "thor"}, "dns": named.settings()})
    r = run_worker("services:migrate", mig, menv, expect=0)
    check(named.dig("www.example.com", "CNAME") == ["thor.example.com."], named.dig("www.example.com", "CNAME"))
    check("10.1.1.1" not in named.dig("www.example.com", "A"), "www's old A must go")
    check(named.dig("smtp.example.com", "CNAME") == ["thor.example.com."], "smtp")
    cb = r.clipboard(mig)
    check(cb["migration"]["to"] == "thor.example.com", cb)
    check(cb["migration"]["previous"]["www.example.com"] == ["A 10.1.1.1"], cb["migration"])
    check(cb["migration"]["previous"]["smtp.example.com"] == ["CNAME loki.example.com."], cb["migration"])
    s4 = serial()
    r = run_worker("services:migrate", mig, menv, expect=0)
    check("already pointing at thor.example.com" in r.err and serial() == s4, r.err)
    # What they pointed to survives a rerun on the clipboard from before the stage.
    check(r.clipboard(mig)["migration"]["previous"]["www.example.com"] == ["A 10.1.1.1"], r.out)
    # Killed midway, then again (a new job: its own memo).
    menv2 = worker_env(state, "services:migrate", job="test-2")
    mig2 = mig.replace("standby: thor", "standby: odin")
    killed_midway("services:migrate", mig2, menv2, 0.1)
    r = run_worker("services:migrate", mig2, menv2, expect=0)
    check(named.dig("www.example.com", "CNAME") == ["odin.example.com."], "after a kill")
    check(r.clipboard(mig2)["migration"]["previous"]["www.example.com"] == ["CNAME thor.example.com."],
          r.clipboard(mig2)["migration"])
    # Not in production: skipped; a standby outside the zone's syntax: refused.
    r = run_worker("services:migrate", mig.replace("production: true", "production: false"), menv, expect=0)
    check("skipped: loki is not in production" in r.err and not r.out, r.err)
    r = run_worker("services:migrate", mig.replace("standby: thor", "standby: 'th or'"), menv, expect=2)
    check("services.standby" in r.last, r.last)
    r = run_worker("services:migrate", mig.replace("standby: thor", "standby: loki.example.com"), menv, expect=2)
    check("itself" in r.last, r.last)

    # 9. The sandbox's pretend world still gets the sandbox zone file.
    sb = dump({"instance": {"hostname": "loki", "fqdn": "loki.websages.com", "provider": "sandbox",
                            "ip": "192.0.2.10", "ssh_fingerprints": prints},
               "sandbox": {"delay_ms": 0}})
    r = run_worker("dns:update", sb, env, expect=0)
    check(os.path.exists(os.path.join(state, "sandbox", "dns", "websages.com.zone")), r.err)
    check(r.clipboard(sb)["dns"]["zone"] == "websages.com", r.out)
    ok = True
finally:
    named.cleanup(ok)
print("worker_dns: ok")
