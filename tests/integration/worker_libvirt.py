"""libvirt:* workers (python3-libvirt) against libvirt's own test driver: `test:///<node.xml>`,
a real libvirt API with no hypervisor. The test driver keeps its state in the process that
opened it, so each run starts from a node XML the test writes for that moment of the
redeploy (the old domain running, then shut off, then gone; the new one made by this job or
by someone else), and what the worker did is read from its clipboard and its log. The
provider (kvm, vmware) picks the URI from the environment."""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jarvis_test import check  # noqa: E402
from worker_support import dump, jw, run_worker, worker_env  # noqa: E402

try:
    import libvirt  # noqa: F401
except ImportError:
    print("python3-libvirt is not installed: skipped")
    sys.exit(77)

tmp = tempfile.mkdtemp(prefix="jarvis-wlibvirt-")
state = os.path.join(tmp, "state")
os.makedirs(state)
UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
NS = "https://github.com/jarvis-bot/jarvis/libvirt/1"


def node(domain=None):
    """A test-driver node: a NAT network with DHCP, and `domain` (XML) if given."""
    path = os.path.join(tmp, f"node{len(os.listdir(tmp))}.xml")
    with open(path, "w") as f:
        f.write(f"""<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads><active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>8388608</memory>
  <network><name>default</name><bridge name='virbr0'/><forward/>
    <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip>
  </network>
  {domain or ''}
</node>
""")
    return f"test://{path}"


def domain(name="loki", running=True, job=None, kernel=True):
    meta = f"<metadata><j:jarvis xmlns:j='{NS}'><j:job>{job}</j:job></j:jarvis></metadata>" if job else ""
    return (f"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><name>{name}</name>"
            f"<uuid>{UUID}</uuid><memory>524288</memory><vcpu>1</vcpu>{meta}<os><type>hvm</type>"
            + ("<kernel>/boot/vmlinuz-6.1.0-26-amd64</kernel><cmdline>root=/dev/vda1</cmdline>" if kernel else "")
            + "</os><devices><interface type='network'><mac address='52:54:00:11:22:33'/><source network='default'/>"
            f"</interface></devices>{'' if running else '<test:runstate>5</test:runstate>'}</domain>")


design = {"instance": {"hostname": "loki", "fqdn": "loki.example.com", "provider": "kvm",
                       "guestid": "Debian 12", "size": "512"}, "keep": jw.load("k: '007'\n")["k"]}
text = dump(design)


def env(task, uri, **extra):
    return worker_env(state, task, job="7", JARVIS_LIBVIRT_KVM_URI=uri, JARVIS_LIBVIRT_WAIT="10s", **extra)


ok = False
try:
    # power_off: the old domain running -> shut off; already off; none.
    r = run_worker("libvirt:power_off", text, env("libvirt:power_off", node(domain())), expect=0)
    cb = r.clipboard(text)
    check(cb["instance"]["previous_node_id"] == UUID and f"shutting down domain loki ({UUID})" in r.err
          and "is shut off" in r.err, r.err)
    r = run_worker("libvirt:power_off", text, env("libvirt:power_off", node(domain(running=False))), expect=0)
    check("shutting down" not in r.err and r.clipboard(text)["instance"]["previous_node_id"] == UUID, r.err)
    r = run_worker("libvirt:power_off", text, env("libvirt:power_off", node()), expect=0)
    check("skipped: no domain loki" in r.err, r.err)
    off = dump(cb)
    # delete: only the shut-off domain power_off named; gone = skipped; running = refused.
    r = run_worker("libvirt:delete", off, env("libvirt:delete", node(domain(running=False))), expect=0)
    check(f"undefined domain loki ({UUID})" in r.err, r.err)
    r = run_worker("libvirt:delete", off, env("libvirt:delete", node()), expect=0)
    check("skipped: domain" in r.err and "already undefined" in r.err, r.err)
    r = run_worker("libvirt:delete", off, env("libvirt:delete", node(domain(running=True))), expect=1)
    check("domain loki is running, not shut off: run libvirt:power_off first" in r.last, r.last)
    # create: defined and started; this job's reused and started; someone else's refused.
    r = run_worker("libvirt:create", off, env("libvirt:create", node()), expect=0)
    made = r.clipboard(off)
    check("defined domain loki (" in r.err and "started domain loki" in r.err
          and made["instance"]["plan"] == "512 MiB" and made["keep"].style == "'", r.err + dump(made))
    check(made["instance"]["node_id"] != UUID and len(made["instance"]["node_id"]) == 36, dump(made))
    r = run_worker("libvirt:create", off, env("libvirt:create", node(domain(running=False, job="7"))), expect=0)
    check("was already created by this job: reusing it" in r.err and "started domain loki" in r.err
          and r.clipboard(off)["instance"]["node_id"] == UUID, r.err)
    r = run_worker("libvirt:create", off, env("libvirt:create", node(domain(job="3"))), expect=1)
    check("a domain named loki already exists" in r.last and "that this job did not create" in r.last, r.last)
    r = run_worker("libvirt:create", dump({**design, "instance": {**design["instance"], "size": "lots"}}),
                   env("libvirt:create", node()), expect=2)
    check("instance.size 'lots' is not a size in MB" in r.last, r.last)
    # get_ip from the network's DHCP leases; set_boot drops the direct kernel boot.
    new = dump({**made, "instance": {**made["instance"], "node_id": UUID}})
    r = run_worker("libvirt:get_ip", new, env("libvirt:get_ip", node(domain(job="7"))), expect=0)
    ip = r.clipboard(new)["instance"]["ip"]
    check(ip.startswith("192.168.122.") and jw.check_ip(ip, "ip", 4), r.err)
    r = run_worker("libvirt:set_boot", new, env("libvirt:set_boot", node(domain(job="7"))), expect=0)
    check("skipped: kernel not upgraded" in r.err, r.err)
    up = dump({**jw.load(new), "kernel": {"upgraded": True}})
    r = run_worker("libvirt:set_boot", up, env("libvirt:set_boot", node(domain(job="7"))), expect=0)
    check("direct kernel boot removed" in r.err and r.clipboard(up)["kernel"]["boot"] == "bootloader", r.err)
    r = run_worker("libvirt:set_boot", up, env("libvirt:set_boot", node(domain(job="7", kernel=False))), expect=0)
    check("already boots its own bootloader" in r.err, r.err)
    # provider -> URI: vmware reads JARVIS_LIBVIRT_VMWARE_URI, and says so when it is not set.
    vm = dump({**design, "instance": {**design["instance"], "provider": "VMware"}})
    r = run_worker("libvirt:power_off", vm, env("libvirt:power_off", "qemu:///nowhere"), expect=2)
    check("no libvirt URI for provider vmware: set JARVIS_LIBVIRT_VMWARE_URI" in r.last, r.last)
    r = run_worker("libvirt:power_off", vm, env("libvirt:power_off", "qemu:///nowhere",
                                                JARVIS_LIBVIRT_VMWARE_URI=node(domain())), expect=0)
    check("is shut off" in r.err, r.err)
    r = run_worker("libvirt:power_off", dump({**design, "instance": {**design["instance"], "provider": "linode"}}),
                   env("libvirt:power_off", node()), expect=2)
    check("instance.provider is 'linode'" in r.last, r.last)
    r = run_worker("libvirt:power_off", text, env("libvirt:power_off", "test:///nonexistent/node.xml"), expect=1)
    check(r.last.startswith("cannot connect to libvirt at test:///nonexistent/node.xml:"), r.last)
    ok = True
finally:
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"files kept in {tmp}", file=sys.stderr)
print("worker_libvirt: ok")
