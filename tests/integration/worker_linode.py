"""linode:* workers against the Linode API v4 emulator (real HTTPS, JSON errors, pagination,
429/5xx): the old node powered off and deleted, a new one created once (even through a lost
answer and a kill after the POST), its addresses, its boot kernel; each stage killed midway
and run again; a bad token, an unknown region/type/image, a quota, a non-Linode design."""
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check, wait_for  # noqa: E402
from linode_emulator import LinodeEmulator  # noqa: E402
from worker_support import SOURCE, dump, jw, run_worker, worker_env  # noqa: E402

tmp = tempfile.mkdtemp(prefix="jarvis-wlinode-")
state = os.path.join(tmp, "state")
os.makedirs(state)
pw = os.path.join(tmp, "root_password")
fd = os.open(pw, os.O_WRONLY | os.O_CREAT, 0o600)
with os.fdopen(fd, "w") as f:
    f.write("correct-horse-battery-staple\n")
token_file = os.path.join(tmp, "token")
fd = os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600)
with os.fdopen(fd, "w") as f:
    f.write("s3cret-token\n")

emu = LinodeEmulator(token="s3cret-token", addresses=["127.0.0.2"], page_cap=2, boot_s=1.0)


def env(task, **extra):
    e = {"JARVIS_LINODE_API_URL": emu.url, "JARVIS_LINODE_CA_FILE": emu.ca_file,
         "JARVIS_LINODE_TOKEN_FILE": token_file, "JARVIS_LINODE_WAIT": "30s"}
    e.update(extra)
    return worker_env(state, task, job="7", **e)


design = {"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "Linode",
                       "guestid": "Debian 12", "datacenter": "Tokyo", "size": "512",
                       "sshpubkey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7 whitejs@eir",
                       "root_password_file": pw},
          "keep": jw.load("k: '007'\n")["k"]}
text = dump(design)


def run_killed(task, clipboard, e, when, what):
    """Starts the worker, SIGKILLs its process group as soon as when() holds, returns."""
    module, name = task.split(":")
    p = subprocess.Popen([os.path.join(SOURCE, "workers", module, name), name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, text=True,
                         start_new_session=True)
    p.stdin.write(clipboard)
    p.stdin.close()
    wait_for(when, 20, what)
    if p.poll() is not None:
        check(False, f"{task} ended before it could be killed: {p.stderr.read()}")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    p.stdout.close()
    p.stderr.close()


ok = False
try:
    # --- refusals, each with a reason a person can act on ---------------------------------------
    r = run_worker("linode:create", dump({**design, "instance": {**design["instance"], "provider": "sandbox"}}),
                   env("linode:create"), expect=2)
    check("instance.provider is 'sandbox', not 'linode'" in r.last, r.last)
    r = run_worker("linode:create", text, env("linode:create", JARVIS_LINODE_TOKEN="wrong",
                                              JARVIS_LINODE_TOKEN_FILE=""), expect=1)
    check("the Linode API refused the token (401: Invalid Token)" in r.last and "wrong" not in r.err, r.last)
    r = run_worker("linode:create", text, env("linode:create", JARVIS_LINODE_TOKEN_FILE=""), expect=2)
    check(r.last.startswith("no Linode token: set JARVIS_LINODE_TOKEN"), r.last)
    for key, value, want in (("datacenter", "Atlantis", "no Linode region for instance.datacenter 'Atlantis' (there are: us-southeast (Atlanta)"),
                             ("size", "999999", "no Linode type has 999999 MB of memory (the largest has 16384 MB)"),
                             ("guestid", "Debian 6", "no Linode image for instance.guestid 'Debian 6' (public images: Alpine 3.19, Debian 11, Debian 12")):
        r = run_worker("linode:create", dump({**design, "instance": {**design["instance"], key: value}}),
                       env("linode:create"), expect=2)
        check(want in r.last, r.last)
    check(emu.count("POST", "/linode/instances") == 0, "nothing may be created by a refused design")
    # Pagination followed: 8 regions at 2 a page, Tokyo is on page 3.
    check(any(p == "/regions" and q.get("page") == "4" for _, p, q, _ in emu.requests), "pages not followed")

    # --- the old node: powered off (twice, killed midway), deleted (twice, killed) ---------------
    old = emu.add_node("loki", status="running", ipv4="192.0.2.50")
    emu.fault("GET", "/linode/instances", 429, times=1, headers={"Retry-After": "1"})
    emu.shutdown_s = 3.0
    run_killed("linode:power_off", text, env("linode:power_off"),
               lambda: emu.count("POST", f"/linode/instances/{old}/shutdown") == 1, "the shutdown")
    check(emu.status_of(old) == "shutting_down", f"{emu.status_of(old)} {emu.nodes[old]['_events']} {time.monotonic()}")
    r = run_worker("linode:power_off", text, env("linode:power_off"), expect=0)
    cb = r.clipboard(text)
    check(emu.status_of(old) == "offline" and str(cb["instance"]["previous_node_id"]) == str(old), r.err)
    check(emu.count("POST", f"/linode/instances/{old}/shutdown") == 1, "a second shutdown was sent")
    r = run_worker("linode:power_off", dump(cb), env("linode:power_off"), expect=0)
    check("is already offline" in r.err, r.err)
    off = dump(cb)
    # delete: a 429 with a long Retry-After holds the worker; killed there, then run again.
    emu.fault("DELETE", f"/linode/instances/{old}", 429, times=1, headers={"Retry-After": "20"})
    run_killed("linode:delete", off, env("linode:delete"),
               lambda: emu.count("DELETE", f"/linode/instances/{old}") == 1, "the first DELETE")
    check(old in emu.nodes, "deleted despite the 429")
    r = run_worker("linode:delete", off, env("linode:delete"), expect=0)
    check(old in emu.deleted and old not in emu.nodes, r.err)
    r = run_worker("linode:delete", off, env("linode:delete"), expect=0)
    check("skipped: Linode" in r.err and "already deleted" in r.err, r.err)

    # --- create: a 503 before, a lost answer (500 after the work), killed while booting ---------
    emu.boot_s = 4.0
    emu.fault("POST", "/linode/instances", 503, times=1)
    emu.fault("POST", "/linode/instances", 500, times=1, after=True)
    run_killed("linode:create", off, env("linode:create"),
               lambda: len(emu.labelled("loki")) == 1, "the node to be created")
    check(emu.labelled("loki")[0]["status"] in ("provisioning", "booting"), emu.labelled("loki"))
    start = time.time()
    r = run_worker("linode:create", off, env("linode:create"), expect=0)
    nodes = emu.labelled("loki")
    check(len(nodes) == 1 and nodes[0]["status"] == "running", f"{nodes}\n{r.err}")
    check("already created by this job: reusing it" in r.err, r.err)
    check(emu.count("POST", "/linode/instances") == 2, f"posts: {emu.count('POST', '/linode/instances')}")
    new = nodes[0]["id"]
    created = emu.nodes[new]
    check(created["type"] == "g6-nanode-1" and created["region"] == "ap-northeast"
          and created["image"] == "linode/debian12" and "jarvis-job-7" in created["tags"], created)
    check(created["_root_pass"] == "correct-horse-battery-staple" and "correct-horse" not in r.err, "root_pass")
    check(created["_authorized_keys"] == [design["instance"]["sshpubkey"]], created["_authorized_keys"])
    cb = r.clipboard(off)
    check(cb["instance"]["node_id"] == str(new) and cb["keep"].style == "'", dump(cb))
    # Another job finds a node it did not make: refused, not reused.
    r = run_worker("linode:create", off, worker_env(state, "linode:create", job="8",
                   JARVIS_LINODE_API_URL=emu.url, JARVIS_LINODE_CA_FILE=emu.ca_file,
                   JARVIS_LINODE_TOKEN_FILE=token_file), expect=1)
    check(f"a Linode labelled loki already exists (id {new}, running) that this job did not create" in r.last, r.last)
    created_text = dump(cb)

    # --- get_ip (killed while it waits out a 429, then again) -----------------------------------
    emu.fault("GET", f"/linode/instances/{new}", 429, times=1, headers={"Retry-After": "20"})
    run_killed("linode:get_ip", created_text, env("linode:get_ip"),
               lambda: emu.count("GET", f"/linode/instances/{new}") >= 1
               and not any(f["times"] for f in emu._faults), "the 429")
    r = run_worker("linode:get_ip", created_text, env("linode:get_ip"), expect=0)
    cb = r.clipboard(created_text)
    check(cb["instance"]["ip"] == "127.0.0.2" and cb["instance"]["ipv6"] == f"2001:db8::{new >> 16:x}:{new & 0xffff:x}"
          and cb["instance"]["private_ip"].startswith("192.168."), dump(cb["instance"]))

    # --- set_boot: skipped without an upgrade; GRUB 2 after one; killed; the seed's pv-grub ----
    r = run_worker("linode:set_boot", dump(cb), env("linode:set_boot"), expect=0)
    check("skipped: kernel not upgraded" in r.err and emu.configs[new][0]["kernel"] == "linode/latest-64bit", r.err)
    cb["kernel"] = {"upgraded": True}
    emu.fault("PUT", rf"/linode/instances/{new}/configs/\d+", 503, times=1, headers={"Retry-After": "20"})
    emu.fault("PUT", rf"/linode/instances/{new}/configs/\d+", 429, times=1, headers={"Retry-After": "20"})
    run_killed("linode:set_boot", dump(cb), env("linode:set_boot"),
               lambda: sum(1 for m, p, _, _ in emu.requests if m == "PUT") >= 2, "the 429")
    r = run_worker("linode:set_boot", dump(cb), env("linode:set_boot"), expect=0)
    check(emu.configs[new][0]["kernel"] == "linode/grub2" and r.clipboard(dump(cb))["kernel"]["boot"] == "linode/grub2", r.err)
    r = run_worker("linode:set_boot", dump({**cb, "linode": {"kernel": "linode/pv-grub_x86_64"}}), env("linode:set_boot"), expect=0)
    check(emu.configs[new][0]["kernel"] == "linode/pv-grub_x86_64", r.err)
    r = run_worker("linode:set_boot", dump({**cb, "linode": {"kernel": "linode/nope"}}), env("linode:set_boot"), expect=2)
    check("Linode has no kernel linode/nope" in r.last, r.last)

    # --- 429's Retry-After is waited out; network errors are retried too ------------------------
    emu.fault("GET", f"/linode/instances/{new}", 429, times=1, headers={"Retry-After": "3"})
    start = time.time()
    r = run_worker("linode:get_ip", created_text, env("linode:get_ip"), expect=0)
    check(time.time() - start >= 3 and "429 Too Many Requests (Too Many Requests); retrying in 3s" in r.err, r.err)
    start = time.time()
    r = run_worker("linode:get_ip", created_text, env("linode:get_ip", JARVIS_LINODE_API_URL="https://127.0.0.1:1/v4",
                                                      JARVIS_LINODE_WAIT="3s"), expect=1)
    check(r.last.startswith(f"the Linode API kept failing: GET /linode/instances/{new}: ConnectionError")
          and r.err.count("retrying in") >= 1 and time.time() - start < 8, r.err)

    # --- retries give up inside the stage's budget, with the reason -----------------------------
    emu.fault("GET", f"/linode/instances/{new}", 503, times=1000)
    start = time.time()
    r = run_worker("linode:get_ip", created_text, env("linode:get_ip", JARVIS_LINODE_WAIT="4s"), expect=1)
    check(time.time() - start < 8, f"took {time.time() - start:.1f}s")
    check(r.last.startswith(f"the Linode API kept failing: GET /linode/instances/{new}: 503 Service Unavailable")
          and "retries within 4s" in r.last, r.last)
    emu._faults.clear()

    # --- quota ------------------------------------------------------------------------------------
    emu.max_instances = 1
    other = dump({**design, "instance": {**design["instance"], "hostname": "thor"}})
    r = run_worker("linode:create", other, env("linode:create"), expect=1)
    check("Linode refused a new node for thor: the account's limit is reached (Account Limit reached." in r.last, r.last)
    check(len(emu.nodes) == 1, emu.nodes.keys())
    ok = True
finally:
    emu.stop()
    if ok:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"files kept in {tmp}", file=sys.stderr)
print("worker_linode: ok")
