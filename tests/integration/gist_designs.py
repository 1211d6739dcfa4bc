"""Designs from gists and URLs, against an emulator of GitHub's gist API over real HTTPS (the
bot trusts its test certificate through gist.ca_file): one file, several files with and
without design.yaml, the #file- anchor, 404, a huge body (with and without Content-Length), a
slow server past the timeout, invalid YAML with its line, redirects, the token sent to the API
only, hosts that are not allowed, and TLS verification without the test CA."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from jarvis_test import check, config_head  # noqa: E402
from irc_support import make_bot_files  # noqa: E402
from gist_emulator import GistEmulator  # noqa: E402

binary, source, build = [os.path.abspath(a) for a in sys.argv[1:4]]
token = "ghp_test0token0value0123"
emu = GistEmulator(require_token=token)
work = emu.directory
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


def config(name, ca=True, token_file="token", extra=""):
    path = f"{work}/{name}.yaml"
    with open(path, "w") as f:
        f.write(config_head(work, name) + f"""gist:
  api_url: {emu.base_url}
  url_hosts: [127.0.0.1]
  timeout: 2s
{"  ca_file: " + emu.ca_file if ca else ""}
{"  token_file: " + token_file if token_file else ""}
{extra}""")
    return path


def plan(cfg, ref, timeout=60):
    p = subprocess.run([binary, "--config", cfg, "plan", ref], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    check(token not in out, f"the token appeared in the output: {out}")
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
check(rc == 1 and "gist bb22 has 3 files (README.md, thor.yaml, odin.yaml) and none is named design.yaml" in out,
      f"several files: {out}")
rc, out = plan(good, "https://gist.github.com/bb22#file-odin-yaml")
check(rc == 0 and "odin: plan three" in out, f"#file- anchor: {out}")
rc, out = plan(good, "https://gist.github.com/cc33")
check(rc == 0 and "freyr: plan three" in out, f"design.yaml among several: {out}")

rc, out = plan(good, "https://gist.github.com/ff66")
check(rc == 1 and "gist ff66 not found" in out, f"404: {out}")
rc, out = plan(good, "https://gist.github.com/dd44")
check(rc == 1 and "gist dd44 (broken.yaml): the design is not usable YAML: line 4" in out, f"invalid YAML: {out}")
rc, out = plan(good, "https://gist.github.com/ee55")
check(rc == 1 and "instance.hostname '-loki-' (line 2)" in out, f"invalid design: {out}")

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

# TLS is verified: without the test CA the emulator's certificate is refused.
rc, out = plan(config("noca", ca=False), "https://gist.github.com/aa11")
check(rc == 1 and ("TLS failed" in out or "certificate" in out), f"untrusted certificate accepted: {out}")
# Without the token the API refuses; the reply says where the token comes from.
rc, out = plan(config("notoken", token_file=None), "https://gist.github.com/aa11")
check(rc == 1 and "HTTP 401" in out and "gist.token" in out, f"no token: {out}")

# A whole job from a gist.
p = subprocess.run([binary, "--config", good, "run", "https://gist.github.com/aa11"],
                   capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
check(p.returncode == 0 and "ready" in p.stdout + p.stderr, p.stdout + p.stderr)

emu.stop()
print("gist designs: ok")
