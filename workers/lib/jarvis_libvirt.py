"""libvirt for the libvirt:* workers (see docs/workers.md, "libvirt: KVM and VMware ESX").

python3-libvirt, so one set of workers drives KVM/QEMU (qemu:///system, qemu+ssh://...) and
VMware ESX (libvirt's esx:// driver). The design's instance.provider picks the connection
URI from the worker environment (never from the design):

    kvm     JARVIS_LIBVIRT_KVM_URI      default qemu:///system
    vmware  JARVIS_LIBVIRT_VMWARE_URI   e.g. esx://esx1.example.com/?no_verify=0; required
    libvirt JARVIS_LIBVIRT_URI          any other libvirt URI (test:///... in the tests)

    JARVIS_LIBVIRT_USER, JARVIS_LIBVIRT_PASSWORD_FILE   credentials for URIs that ask (ESX)
    JARVIS_LIBVIRT_NETWORK     the network new domains join (default "default")
    JARVIS_LIBVIRT_DISK        the new domain's disk, {host} and {guest} replaced
                               (default /var/lib/libvirt/images/{host}.qcow2, made beforehand)
    JARVIS_LIBVIRT_WAIT        how long a stage waits for a state (default 2m)
"""
import os
import re
import time

import jarvis_worker as jw

Failure, Skip = jw.Failure, jw.Skip
NS = "https://github.com/jarvis-bot/jarvis/libvirt/1"
URIS = {"kvm": ("JARVIS_LIBVIRT_KVM_URI", "qemu:///system"), "vmware": ("JARVIS_LIBVIRT_VMWARE_URI", None),
        "libvirt": ("JARVIS_LIBVIRT_URI", None)}


def connect(w):
    import libvirt
    provider = str(w.get("instance.provider") or "").lower()
    if provider not in URIS:
        raise Failure(f"instance.provider is {w.get('instance.provider')!r}: {w.task} drives "
                      "kvm, vmware or libvirt designs", 2)
    env, default = URIS[provider]
    uri = os.environ.get(env) or default
    if not uri:
        raise Failure(f"no libvirt URI for provider {provider}: set {env} in workers.env "
                      "(esx://esx1.example.com/ for VMware ESX)", 2)
    jw.check_line(uri, env)
    libvirt.registerErrorHandler(lambda *_: None, None)   # errors come as exceptions, once

    def auth(creds, _):
        for cred in creds:
            if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                cred[4] = os.environ.get("JARVIS_LIBVIRT_USER") or cred[3] or "root"
            elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                path = os.environ.get("JARVIS_LIBVIRT_PASSWORD_FILE")
                if not path:
                    return -1
                cred[4] = jw.read_secret_file(path, "JARVIS_LIBVIRT_PASSWORD_FILE").strip()
        return 0
    try:
        conn = libvirt.openAuth(uri, [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], auth, None], 0)
    except libvirt.libvirtError as e:
        raise Failure(f"cannot connect to libvirt at {uri}: {clean(e.get_error_message())}", 1)
    return libvirt, conn, uri


def clean(text, limit=200):
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text)).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def lookup(libvirt, conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise Failure(f"libvirt: looking up domain {name}: {clean(e.get_error_message())}", 1)


def job_of(libvirt, dom):
    try:
        m = re.search(r"<job>([^<]*)</job>", dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS))
        return m[1] if m else None
    except libvirt.libvirtError:
        return None


STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
          6: "crashed", 7: "pmsuspended"}


def state(dom):
    return STATES.get(dom.state()[0], "unknown")


def wait_state(w, dom, wanted, what, deadline):
    delay = 0.2
    while state(dom) not in wanted:
        if time.monotonic() + delay > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    return True


def deadline():
    return time.monotonic() + jw.duration_seconds(os.environ.get("JARVIS_LIBVIRT_WAIT") or "2m",
                                                  "JARVIS_LIBVIRT_WAIT")


def libvirt_worker(body):
    def task(w):
        libvirt, conn, uri = connect(w)
        try:
            body(w, libvirt, conn, uri)
        except libvirt.libvirtError as e:
            raise Failure(f"libvirt at {uri}: {clean(e.get_error_message())}", 1)
        finally:
            conn.close()
    jw.run(task)
