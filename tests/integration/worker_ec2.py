"""ec2:* workers (boto3) against the EC2 Query API emulator (real HTTPS, SigV4 checked by the
emulator's own implementation, XML answers and error codes): the old instance stopped and
terminated, a new one launched once (through a throttled call and a kill while it is
pending), its addresses; a wrong secret, a region that does not exist, an unknown image and
a quota give clear reasons."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ec2_emulator import Ec2Emulator  # noqa: E402
from jarvis_test import check, wait_for  # noqa: E402
from worker_support import SOURCE, dump, jw, run_worker, worker_env  # noqa: E402

tmp = tempfile.mkdtemp(prefix="jarvis-wec2-")
state = os.path.join(tmp, "state")
os.makedirs(state)
emu = Ec2Emulator(addresses=["127.0.0.3"], start_s=3.0, stop_s=2.0)
creds = os.path.join(tmp, "aws")
fd = os.open(creds, os.O_WRONLY | os.O_CREAT, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(f"{emu.access_key} {emu.secret_key}\n")


def env(task, job="7", **extra):
    e = {"JARVIS_EC2_ENDPOINT_URL": emu.url, "JARVIS_EC2_CA_FILE": emu.ca_file,
         "JARVIS_EC2_REGION": "us-east-1", "JARVIS_EC2_CREDENTIALS_FILE": creds, "JARVIS_EC2_WAIT": "30s"}
    e.update(extra)
    return worker_env(state, task, job=job, **e)


design = {"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "EC2",
                       "guestid": "Debian 12", "datacenter": "us-east-1", "size": "512"},
          "keep": jw.load("k: '007'\n")["k"]}
text = dump(design)


def run_killed(task, clipboard, e, when, what):
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
    r = run_worker("ec2:create", text, env("ec2:create", JARVIS_EC2_CREDENTIALS_FILE="",
                                           AWS_ACCESS_KEY_ID=emu.access_key, AWS_SECRET_ACCESS_KEY="wrong"), expect=1)
    check("EC2 refused the credentials (SignatureDoesNotMatch: The request signature we calculated" in r.last
          and "wrong" not in r.err, r.last)
    check(emu.auth_failures and emu.auth_failures[-1][0] == "SignatureDoesNotMatch", emu.auth_failures)
    r = run_worker("ec2:create", text, env("ec2:create", JARVIS_EC2_REGION="xx-nowhere-9"), expect=2)
    check("EC2 does not know region xx-nowhere-9 (AuthFailure: Credential should be scoped to a valid region" in r.last, r.last)
    r = run_worker("ec2:create", text, env("ec2:create", JARVIS_EC2_REGION="mars"), expect=2)
    check("JARVIS_EC2_REGION 'mars' is not an AWS region name" in r.last, r.last)
    r = run_worker("ec2:create", dump({**design, "instance": {**design["instance"], "guestid": "Debian 6"}}),
                   env("ec2:create"), expect=2)
    check("no EC2 image for instance.guestid 'Debian 6'" in r.last, r.last)
    r = run_worker("ec2:create", dump({**design, "instance": {**design["instance"], "image_id": "ami-00000000deadbeef"}}),
                   env("ec2:create"), expect=1)
    check("EC2 run_instances failed: InvalidAMIID.NotFound: The image id '[ami-00000000deadbeef]' does not exist" in r.last, r.last)
    check(not emu.instances, "nothing launched by the refusals")

    # The old instance: stopped (killed while stopping, then again), terminated (twice).
    old = emu.add_instance("loki", ip="198.51.100.9")
    run_killed("ec2:power_off", text, env("ec2:power_off"), lambda: emu.count("StopInstances") == 1, "the stop")
    check(emu.state_of(old) == "stopping", emu.state_of(old))
    emu.fault("DescribeInstances", "RequestLimitExceeded", 503, times=2)
    r = run_worker("ec2:power_off", text, env("ec2:power_off"), expect=0)
    cb = r.clipboard(text)
    check(emu.state_of(old) == "stopped" and cb["instance"]["previous_node_id"] == old
          and emu.count("StopInstances") == 1, r.err)
    off = dump(cb)
    r = run_worker("ec2:delete", off, env("ec2:delete"), expect=0)
    check(emu.state_of(old) == "terminated" and "is terminated" in r.err, r.err)
    r = run_worker("ec2:delete", off, env("ec2:delete"), expect=0)
    check("already terminated" in r.err and emu.count("TerminateInstances") == 1, r.err)

    # create: killed while the instance is pending, run again: one instance, reused.
    run_killed("ec2:create", off, env("ec2:create"), lambda: emu.count("RunInstances") == 2, "the launch")
    check(len(emu.named("loki")) == 1 and emu.state_of(emu.named("loki")[0]["id"]) == "pending", emu.named("loki"))
    r = run_worker("ec2:create", off, env("ec2:create"), expect=0)
    [new] = emu.named("loki")
    check(emu.state_of(new["id"]) == "running" and "already created by this job: reusing it" in r.err
          and emu.count("RunInstances") == 2, r.err)
    check(new["type"] == "t3.nano" and new["image"] == "ami-0a1b2c3d4e5f60002" and new["tags"]["jarvis-job"] == "7", new)
    cb = r.clipboard(off)
    check(cb["instance"]["node_id"] == new["id"] and cb["keep"].style == "'", dump(cb))
    # Another job does not take it over.
    r = run_worker("ec2:create", off, env("ec2:create", job="8"), expect=1)
    check(f"an EC2 instance named loki already exists ({new['id']}, running) that this job did not create" in r.last, r.last)
    r = run_worker("ec2:get_ip", dump(cb), env("ec2:get_ip"), expect=0)
    ip = r.clipboard(dump(cb))["instance"]
    check(ip["ip"] == "127.0.0.3" and ip["private_ip"].startswith("172.31.") and ip["ipv6"].startswith("2600:1f18:"), dump(ip))
    r = run_worker("ec2:set_boot", dump({**cb, "kernel": {"upgraded": True}}), env("ec2:set_boot"), expect=0)
    check(r.clipboard(dump(cb))["kernel"]["boot"] == "grub", r.err)

    # quota
    emu.max_instances = 1
    r = run_worker("ec2:create", dump({**design, "instance": {**design["instance"], "hostname": "thor"}}),
                   env("ec2:create"), expect=1)
    check("EC2 refused a new instance: the account's limit is reached (InstanceLimitExceeded:" in r.last, r.last)
    r = run_worker("ec2:create", dump({**design, "instance": {**design["instance"], "provider": "linode"}}),
                   env("ec2:create"), expect=2)
    check("instance.provider is 'linode', not 'ec2'" in r.last, r.last)
    ok = True
finally:
    emu.stop()
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"files kept in {tmp}", file=sys.stderr)
print("worker_ec2: ok")
