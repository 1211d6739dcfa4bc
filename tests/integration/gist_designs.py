"""Designs from gists and URLs, against an emulator of GitHub's gist API over real HTTPS (the
bot trusts its test certificate through gist.ca_file): one file, several files with and
without design.yaml, the #file- anchor, 404, a huge body (with and without Content-Length), a
slow server past the timeout, invalid YAML with its line, redirects, the token sent to the API
only, hosts that are not allowed, and TLS verification without the test CA.

Then what a design fetch must not do (issue 17): follow a redirect to a host or port that
gist.url_hosts does not list (an "internal" server next to the emulator, a closed port),
connect to a loopback address when private addresses are refused (checked after name
resolution), echo curl's words, addresses or ports into the reply, list a gist's file names,
echo a design's field values, or throw out of the handler on a gist API answer of the wrong
shape (which would end serve)."""
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head  # noqa: E402
from irc_support import make_bot_files  # noqa: E402
from gist_emulator import GistEmulator  # noqa: E402
from irc_support import free_port  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
token = "ghp_test0token0value0123"
emu = GistEmulator(require_token=token)
work = emu.directory
# A server the bot can reach but must not fetch from: another port on the same machine.
internal = GistEmulator()
internal.add_raw("/internal/secrets.yaml", "instance:\n  hostname: intranet\n  provider: test\n"
                 "  root_password: internal-secret\n")
# One bundle trusts both test certificates, so only jarvis's own checks can refuse internal.
bundle = f"{work}/both-cas.pem"
with open(bundle, "w") as f:
    f.write(open(emu.ca_file).read() + open(internal.ca_file).read())
make_bot_files(work, stage_sleep="0")
with open(f"{work}/token", "w") as f:
    f.write(token + "\n")

LOKI = "instance:\n  hostname: loki\n  provider: test\n"
emu.add_gist("aa11", {"loki.yaml": LOKI})
emu.add_gist("bb22", {"README.md": "# notes\n", "thor.yaml": LOKI.replace("loki", "thor"),
                      "odin.yaml": LOKI.replace("loki", "odin")})
emu.add_gist("cc33", {"README.md": "# notes\n", "design.yaml": LOKI.replace("loki", "freyr")})
emu.add_gist("dd44", {"broken.yaml": "instance:\n  hostname: loki\n  provider: [test\n"})
emu.add_gist("ee55", {"bad.yaml": "instance:\n  hostname: -loki-\n  provider: test\n"})
emu.add_raw("/designs/baldr.yaml", LOKI.replace("loki", "baldr"))
emu.add_huge("/designs/huge.yaml", 5 << 20)
emu.add_huge("/designs/huge-chunked.yaml", 5 << 20, chunked=True)
emu.add_slow("/designs/slow.yaml", 30)
emu.add_redirect("/designs/loop.yaml", "/designs/loop.yaml")
emu.add_redirect("/designs/moved.yaml", "/designs/baldr.yaml")


def config(name, ca=True, token_file="token", extra="", private=True,
           url_hosts=f"127.0.0.1:{emu.port}"):
    path = f"{work}/{name}.yaml"
    with open(path, "w") as f:
        f.write(config_head(work, name) + f"""gist:
  api_url: {emu.base_url}
  url_hosts: [{url_hosts}]
  timeout: 2s
{"  allow_private_addresses: true" if private else ""}
{"  ca_file: " + bundle if ca else ""}
{"  token_file: " + token_file if token_file else ""}
{extra}""")
    return path


def plan(cfg, ref, timeout=60, split=False):
    p = subprocess.run([binary, "--config", cfg, "plan", ref], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    check(token not in out, f"the token appeared in the output: {out}")
    if split:  # the reply (what chat would see) and the log
        return p.returncode, p.stdout, p.stderr
    return p.returncode, out


good = config("good")
rc, out = plan(good, "https://gist.github.com/aa11")
check(rc == 0 and "loki: plan three (3 stages)" in out, f"single-file gist: {out}")
rc, out = plan(good, "https://gist.github.com/octocat/aa11")
check(rc == 0 and "loki: plan three" in out, f"/<user>/<id> gist URL: {out}")
api_calls = [r for r in emu.requests if r[1].startswith("/gists/")]
check(api_calls and all(r[2].get("Authorization") == f"Bearer {token}" for r in api_calls),
      "the gist API was called without the token")

rc, out = plan(good, "https://gist.github.com/bb22")
check(rc == 1 and "gist bb22 has 3 files and none is named design.yaml" in out and "thor.yaml" not in out,
      f"several files: {out}")
rc, out = plan(good, "https://gist.github.com/bb22#file-odin-yaml")
check(rc == 0 and "odin: plan three" in out, f"#file- anchor: {out}")
rc, out = plan(good, "https://gist.github.com/cc33")
check(rc == 0 and "freyr: plan three" in out, f"design.yaml among several: {out}")

rc, out = plan(good, "https://gist.github.com/ff66")
check(rc == 1 and "gist ff66 not found" in out, f"404: {out}")
rc, out = plan(good, "https://gist.github.com/dd44")
check(rc == 1 and "gist dd44: the design is not usable YAML: line 4" in out and "broken.yaml" not in out,
      f"invalid YAML: {out}")
rc, out = plan(good, "https://gist.github.com/ee55")
check(rc == 1 and "instance.hostname (line 2) is not a host name" in out and "-loki-" not in out,
      f"invalid design: {out}")

# --- A secret gist read with the bot's token (finding 11) ----------------------------------
# Its file names are not listed and its values are not echoed, whichever way it fails.
emu.add_gist("5ec7e7", {"prod-db-hunter2.md": "# notes\n", "root-password-hunter2.txt": "hunter2\n"})
emu.add_gist("5ec7e8", {"design.yaml": "instance:\n  hostname: loki\n  provider: test\n"
                                       "  size: 'hunter2 the db root password'\n"})
emu.add_gist("5ec7e9", {"design.yaml": "instance:\n  hostname: loki\n  provider: hunter2-db\n"})
rc, out = plan(good, "https://gist.github.com/5ec7e7")
check(rc == 1 and "gist 5ec7e7 has 2 files and none is named design.yaml" in out and "hunter2" not in out,
      f"a secret gist's file names were listed: {out}")
rc, out = plan(good, "https://gist.github.com/5ec7e8")
check(rc == 1 and "instance.size (line 4) is not a size" in out and "hunter2" not in out,
      f"a secret gist's value was echoed: {out}")
rc, out = plan(good, "https://gist.github.com/5ec7e9")
check(rc == 1 and "no pipeline matches this design (by its instance.provider)" in out and "hunter2" not in out,
      f"a secret gist's provider was echoed: {out}")

# Raw URLs from an allowed host; no token goes to them.
emu.requests.clear()
rc, out = plan(good, f"{emu.base_url}/designs/baldr.yaml")
check(rc == 0 and "baldr: plan three" in out, f"raw URL: {out}")
check(all("Authorization" not in r[2] for r in emu.requests), "the token was sent to a raw URL")
rc, out = plan(good, f"{emu.base_url}/designs/moved.yaml")
check(rc == 0 and "baldr: plan three" in out, f"one redirect: {out}")
rc, out = plan(good, f"{emu.base_url}/designs/loop.yaml")
check(rc == 1 and "too many redirects (more than 3)" in out, f"redirect loop: {out}")
for huge in ["huge.yaml", "huge-chunked.yaml"]:
    rc, out = plan(good, f"{emu.base_url}/designs/{huge}")
    check(rc == 1 and "too big: over the 1048576-byte limit" in out, f"{huge}: {out}")
start = time.monotonic()
rc, out = plan(good, f"{emu.base_url}/designs/slow.yaml")
took = time.monotonic() - start
check(rc == 1 and "timed out after 2s" in out and took < 8, f"slow server ({took:.1f}s): {out}")

# Refused before any request: other hosts, plain http, credentials in the URL.
emu.requests.clear()
rc, out = plan(good, "https://example.org/design.yaml")
check(rc == 1 and "host example.org is not one jarvis fetches designs from" in out, out)
rc, out = plan(good, f"http://127.0.0.1:{emu.port}/designs/baldr.yaml")
check(rc == 1 and "only https:// URLs are allowed" in out, out)
rc, out = plan(good, f"https://user:pw@127.0.0.1:{emu.port}/designs/baldr.yaml")
check(rc == 1 and "user name or password" in out, out)
rc, out = plan(good, "https://gist.github.com/a/b/c")
check(rc == 1 and "is not a gist URL" in out, out)
check(not emu.requests, f"refused refs still reached the server: {emu.requests}")

# TLS is verified: without the test CA the emulator's certificate is refused. The reply is
# generic; curl's words are in the log.
rc, reply, log = plan(config("noca", ca=False), "https://gist.github.com/aa11", split=True)
check(rc == 1 and "could not be reached or the connection failed" in reply and "certificate" not in reply
      and "SSL" not in reply, f"untrusted certificate: {reply}")
check("certificate" in log or "SSL" in log or "TLS" in log, f"the TLS detail is not in the log: {log}")

# --- SSRF (issue 17, finding 3) ------------------------------------------------------------
# A redirect from an allowed host to another port on the same machine: refused before any
# request reaches it, and the reply names neither its port nor its path.
closed = free_port()
emu.add_redirect("/designs/r-a.yaml", f"https://127.0.0.1:{internal.port}/internal/secrets.yaml")
emu.add_redirect("/designs/r-c.yaml", f"https://localhost:{emu.port}/designs/baldr.yaml")
emu.add_redirect("/designs/r-d.yaml", f"https://127.0.0.1:{closed}/x.yaml")
emu.add_redirect("/designs/r-e.yaml", "http://169.254.169.254/latest/meta-data/")
emu.add_redirect("/designs/r-b.yaml", "/designs/r-a.yaml")
for path in ["r-a.yaml", "r-b.yaml", "r-c.yaml", "r-d.yaml", "r-e.yaml"]:
    rc, reply, log = plan(good, f"{emu.base_url}/designs/{path}", split=True)
    check(rc == 1 and "redirects to a host jarvis does not fetch designs from" in reply,
          f"redirect {path} was not refused: {reply}{log}")
    for leak in [str(internal.port), str(closed), "internal", "localhost", "169.254", "Connection refused"]:
        check(leak not in reply, f"redirect {path}: the reply shows {leak!r}: {reply}")
    check("redirect refused" in log, f"redirect {path}: the log does not say why: {log}")
check(not internal.requests, f"a redirect reached the internal server: {internal.requests}")
# The same reply for a closed port and an open one: no port-scan oracle.
_, r1, _ = plan(good, f"{emu.base_url}/designs/r-a.yaml", split=True)
_, r2, _ = plan(good, f"{emu.base_url}/designs/r-d.yaml", split=True)
check(r1.replace("r-a", "X") == r2.replace("r-d", "X"), f"closed and open ports differ: {r1} / {r2}")
# A port that url_hosts does not list is refused before the request, even on an allowed host.
rc, out = plan(good, f"https://127.0.0.1:{internal.port}/internal/secrets.yaml")
check(rc == 1 and f"is not one jarvis fetches designs from (gist.url_hosts)" in out, f"other port: {out}")
check(not internal.requests, f"the internal server was reached: {internal.requests}")

# With private addresses refused (the default), the emulator on 127.0.0.1 is refused after
# name resolution: by address, by a name that resolves to it, for raw URLs and the gist API.
emu.requests.clear()
strict = config("strict", private=False, url_hosts=f"127.0.0.1:{emu.port}, localhost:{emu.port}")
for ref in [f"{emu.base_url}/designs/baldr.yaml", f"https://localhost:{emu.port}/designs/baldr.yaml",
            "https://gist.github.com/aa11"]:
    rc, reply, log = plan(strict, ref, split=True)
    check(rc == 1 and "loopback, private or link-local address" in reply, f"{ref} was fetched: {reply}{log}")
    check("127.0.0.1 is loopback" in log or "::1 is loopback" in log, f"{ref}: the log does not say why: {log}")
check(not emu.requests, f"a private address was connected to: {emu.requests}")

# --- Tokens in URLs (finding 12) ------------------------------------------------------------
# The URL's token still reaches the server, but not the reply, the log, the audit trail or
# the job record.
url_token = "glpat-url0token0hunter2"
emu.requests.clear()
for ref in [f"{emu.base_url}/designs/baldr.yaml?access_token={url_token}&ref=main",
            f"{emu.base_url}/designs/nosuch.yaml?token={url_token}"]:
    p = subprocess.run([binary, "--config", good, "plan", ref], capture_output=True, text=True, timeout=60)
    check(url_token not in p.stdout + p.stderr, f"the URL's token was shown: {p.stdout}{p.stderr}")
check(any(url_token in r[1] for r in emu.requests), f"the URL's token did not reach the server: {emu.requests}")
p = subprocess.run([binary, "--config", good, "run", f"{emu.base_url}/designs/baldr.yaml?access_token={url_token}"],
                   capture_output=True, text=True, timeout=120)
check(p.returncode == 0 and url_token not in p.stdout + p.stderr, f"run with a URL token: {p.stdout}{p.stderr}")
for words in [["jobs"], ["log", "baldr"], ["status", "baldr"]]:
    p = subprocess.run([binary, "--config", good, *words], capture_output=True, text=True, timeout=60)
    check(url_token not in p.stdout + p.stderr, f"{words}: the URL's token is stored: {p.stdout}")
with sqlite3.connect(f"{work}/state-good/jarvis.db") as db:
    audited = [row[0] for row in db.execute("SELECT command FROM audit")]
    refs = [row[0] for row in db.execute("SELECT design_ref FROM jobs")]
check(any("access_token=[redacted]&ref=main" in c for c in audited) and not any(url_token in c for c in audited),
      f"the audit trail: {audited}")
check(refs and not any(url_token in r for r in refs), f"the job records: {refs}")
for suffix in ["", "-wal"]:
    if os.path.exists(f"{work}/state-good/jarvis.db{suffix}"):
        check(url_token.encode() not in open(f"{work}/state-good/jarvis.db{suffix}", "rb").read(),
              f"the URL's token is in jarvis.db{suffix}")

# --- Answers of the wrong shape (finding 21) -----------------------------------------------
for gist_id, body in [("bad1", '{"files": {"design.yaml": "instance: {hostname: x}"}}'),
                      ("bad2", '{"files": ["design.yaml"]}'),
                      ("bad3", '{"files": {"design.yaml": {"content": {"a": 1}}}}'),
                      ("bad4", '{"files": {"design.yaml": null}}')]:
    emu.add_raw(f"/gists/{gist_id}", body, content_type="application/json")
    rc, out = plan(good, f"https://gist.github.com/{gist_id}")
    check(rc == 1 and (f"gist {gist_id}: the gist API answer was not understood" in out
                       or f"gist {gist_id}: the design file has no content" in out), f"{gist_id}: {rc} {out}")
# ... and serve carries on after one.
bot = subprocess.Popen([binary, "--config", good, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
bot.stdin.write("plan https://gist.github.com/bad1\nplan https://gist.github.com/aa11\n")
bot.stdin.flush()
lines = []
while len(lines) < 50:
    line = bot.stdout.readline()
    if not line:
        break
    lines.append(line)
    if any("loki: plan three" in l for l in lines) and any("not understood" in l for l in lines):
        break
check(any("the gist API answer was not understood" in l for l in lines) and bot.poll() is None
      and any("loki: plan three" in l for l in lines), f"serve after a bad gist answer: {lines} rc={bot.poll()}")
bot.terminate()
bot.wait(10)
# Without the token the API refuses; the reply says where the token comes from.
rc, out = plan(config("notoken", token_file=None), "https://gist.github.com/aa11")
check(rc == 1 and "HTTP 401" in out and "gist.token" in out, f"no token: {out}")

# A whole job from a gist.
p = subprocess.run([binary, "--config", good, "run", "https://gist.github.com/aa11"],
                   capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
check(p.returncode == 0 and "ready" in p.stdout + p.stderr, p.stdout + p.stderr)

emu.stop()
internal.stop()
print("gist designs: ok")
