"""An emulator of Linode's API v4 over real HTTPS, for the linode:* workers' tests.

It speaks the wire format the workers meet in production: JSON bodies, `Authorization:
Bearer`, errors as {"errors": [{"reason": ..., "field": ...}]}, lists paginated as
{"data", "page", "pages", "results"} (page_size 25-500; `page_cap` serves fewer per page to
make the client follow pages), X-Filter on labels and tags, 429 with Retry-After, 5xx, and
nodes whose status moves with time (provisioning -> booting -> running, shutting_down ->
offline). Faults are injected per route; every request is recorded.

    emu = LinodeEmulator(token="s3cret", addresses=["127.0.0.2"])
    emu.fault("POST", "/linode/instances", 503, times=1)            # before the work
    emu.fault("POST", "/linode/instances", 500, times=1, after=True) # the answer is lost
    emu.fault("GET", "/linode/instances", 429, headers={"Retry-After": "1"})
    ... JARVIS_LINODE_API_URL=emu.url, JARVIS_LINODE_CA_FILE=emu.ca_file ...
    emu.stop()
"""
import http.server
import json
import re
import shutil
import tempfile
import threading
import time
import urllib.parse

from gist_emulator import Listener

REGIONS = [("us-southeast", "Atlanta, GA", "us"), ("us-central", "Dallas, TX", "us"),
           ("us-west", "Fremont, CA", "us"), ("us-east", "Newark, NJ", "us"),
           ("eu-west", "London, UK", "gb"), ("ap-northeast", "Tokyo, JP", "jp"),
           ("eu-central", "Frankfurt, DE", "de"), ("ap-south", "Singapore, SG", "sg")]
TYPES = [("g6-nanode-1", "Nanode 1GB", "nanode", 1024, 5.0), ("g6-standard-1", "Linode 2GB", "standard", 2048, 12.0),
         ("g6-standard-2", "Linode 4GB", "standard", 4096, 24.0), ("g6-standard-4", "Linode 8GB", "standard", 8192, 48.0),
         ("g6-dedicated-2", "Dedicated 4GB", "dedicated", 4096, 36.0),
         ("g6-standard-6", "Linode 16GB", "standard", 16384, 96.0)]
IMAGES = [("linode/debian11", "Debian 11", False), ("linode/debian12", "Debian 12", False),
          ("linode/ubuntu22.04", "Ubuntu 22.04 LTS", False), ("linode/ubuntu24.04", "Ubuntu 24.04 LTS", False),
          ("linode/centos7", "CentOS 7", True), ("linode/alpine3.19", "Alpine 3.19", False)]
KERNELS = ["linode/grub2", "linode/latest-64bit", "linode/direct-disk", "linode/pv-grub_x86_64",
           "linode/pv-grub_x86_32", "linode/grub-legacy"]


def _error(status, reason, field=None):
    e = {"reason": reason}
    if field:
        e["field"] = field
    return status, {"errors": [e]}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 30

    def log_message(self, *args):
        pass

    def _any(self):
        self.server.emulator._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = _any


class LinodeEmulator:
    def __init__(self, token="test-token", addresses=None, page_cap=None, boot_s=1.0,
                 provision_s=0.5, shutdown_s=0.5, max_instances=None):
        self.dir = tempfile.mkdtemp(prefix="jarvis-linode-")
        self.token = token
        self.addresses = list(addresses or [])
        self.page_cap = page_cap
        self.boot_s, self.provision_s, self.shutdown_s = boot_s, provision_s, shutdown_s
        self.max_instances = max_instances
        self.requests = []   # (method, path, query dict, body or None)
        self.nodes = {}      # id -> node dict (with "_events": [(time, status)])
        self.configs = {}    # id -> [config dicts]
        self.next_id = 58000000
        self.deleted = []    # ids
        self._faults = []    # dicts: method, path (regex), status, times, headers, after
        self._lock = threading.RLock()
        self._listener = Listener(_Handler, self, self.dir, "linode")
        self.ca_file, self.port = self._listener.ca_file, self._listener.port
        self.url = f"https://127.0.0.1:{self.port}/v4"

    def stop(self):
        self._listener.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- test controls ---------------------------------------------------------------------------

    def fault(self, method, path, status, times=1, headers=None, reason=None, after=False):
        """The next `times` requests of `method` to a path matching `path` (a regex, whole
        path after /v4) answer `status`; after=True does the work first (a lost answer)."""
        with self._lock:
            self._faults.append({"method": method, "path": re.compile(path), "status": status,
                                 "times": times, "headers": headers or {}, "after": after,
                                 "reason": reason or {429: "Too Many Requests",
                                                      500: "Internal Server Error",
                                                      502: "Bad Gateway",
                                                      503: "Service Unavailable"}.get(status, "error")})

    def add_node(self, label, status="running", tags=(), region="us-southeast", type_="g6-nanode-1",
                 image="linode/debian11", ipv4="192.0.2.50"):
        """A node that exists before the test (the host's old one)."""
        with self._lock:
            nid = self._new_id()
            self.nodes[nid] = self._node(nid, label, region, type_, image, list(tags), ipv4)
            self.nodes[nid]["_events"] = [(0, status)]
            self.configs[nid] = [self._config(nid, "linode/grub2")]
            return nid

    def status_of(self, nid):
        with self._lock:
            return self._status(self.nodes[nid]) if nid in self.nodes else None

    def labelled(self, label):
        with self._lock:
            return [self._public(n) for n in self.nodes.values() if n["label"] == label]

    def count(self, method, path):
        with self._lock:
            return sum(1 for m, p, _, _ in self.requests if m == method and p == path)

    # --- the model ---------------------------------------------------------------------------------

    def _new_id(self):
        self.next_id += 1
        return self.next_id

    def _config(self, nid, kernel):
        return {"id": nid * 10 + 1, "label": "My Debian Profile", "kernel": kernel,
                "root_device": "/dev/sda", "run_level": "default", "virt_mode": "paravirt",
                "memory_limit": 0, "helpers": {"updatedb_disabled": True, "distro": True,
                                               "modules_dep": True, "network": True,
                                               "devtmpfs_automount": True},
                "devices": {"sda": {"disk_id": nid * 10 + 2, "volume_id": None}}}

    def _node(self, nid, label, region, type_, image, tags, ipv4):
        t = next(t for t in TYPES if t[0] == type_)
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        return {"id": nid, "label": label, "group": "", "region": region, "type": type_,
                "image": image, "tags": tags, "ipv4": [ipv4, f"192.168.{128 + nid % 100}.{nid % 250 + 1}"],
                "ipv6": f"2001:db8::{nid >> 16:x}:{nid & 0xffff:x}/128", "hypervisor": "kvm", "watchdog_enabled": True,
                "created": now, "updated": now, "host_uuid": f"{nid:032x}",
                "specs": {"disk": 25600, "memory": t[3], "vcpus": 1, "gpus": 0, "transfer": 1000},
                "alerts": {"cpu": 90, "io": 10000, "network_in": 10, "network_out": 10,
                           "transfer_quota": 80}, "backups": {"enabled": False}}

    def _status(self, node):
        now = time.monotonic()
        status = node["_events"][0][1]
        for at, s in node["_events"]:
            if at <= now:
                status = s
        return status

    def _public(self, node):
        out = {k: v for k, v in node.items() if not k.startswith("_")}
        out["status"] = self._status(node)
        return out

    # --- HTTP --------------------------------------------------------------------------------------

    def _send(self, h, status, body, headers=None):
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("X-OAuth-Scopes", "linodes:read_write")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h):
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        path = parsed.path
        if not path.startswith("/v4/"):
            return self._send(h, *_error(404, "Not found"))
        path = path[3:]
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return self._send(h, *_error(400, "Invalid JSON"))
        with self._lock:
            self.requests.append((h.command, path, query, body))
            fault = None
            for f in self._faults:
                if f["times"] > 0 and f["method"] == h.command and f["path"].fullmatch(path):
                    f["times"] -= 1
                    fault = f
                    break
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(h, *_error(401, "Invalid Token"))
        if fault and not fault["after"]:
            return self._send(h, *_error(fault["status"], fault["reason"]), fault["headers"])
        with self._lock:
            status, out = self._route(h.command, path, query, body, h.headers)
        if fault:
            return self._send(h, *_error(fault["status"], fault["reason"]), fault["headers"])
        self._send(h, status, out)

    def _page(self, items, query):
        try:
            page = int(query.get("page", 1))
            size = int(query.get("page_size", 100))
        except ValueError:
            return _error(400, "Must be an integer", "page")
        if not 25 <= size <= 500:
            return _error(400, "Must be between 25 and 500", "page_size")
        if self.page_cap:
            size = min(size, self.page_cap)
        pages = max(1, (len(items) + size - 1) // size)
        if page < 1 or page > pages:
            return _error(404, "Not found")
        return 200, {"data": items[(page - 1) * size:page * size], "page": page, "pages": pages,
                     "results": len(items)}

    def _filtered(self, items, headers):
        raw = headers.get("X-Filter")
        if not raw:
            return items
        try:
            flt = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(flt, dict):
            return None

        def ok(item):
            for k, v in flt.items():
                if k == "tags":
                    if v not in item.get("tags", []):
                        return False
                elif item.get(k) != v:
                    return False
            return True
        return [i for i in items if ok(i)]

    def _route(self, method, path, query, body, headers):
        if method == "GET" and path == "/regions":
            return self._page([{"id": i, "label": l, "country": c, "status": "ok",
                                "capabilities": ["Linodes", "NodeBalancers", "Block Storage"]}
                               for i, l, c in REGIONS], query)
        if method == "GET" and path == "/linode/types":
            return self._page([{"id": i, "label": l, "class": c, "memory": m, "vcpus": max(1, m // 2048),
                                "disk": m * 25, "transfer": 1000,
                                "price": {"hourly": round(p / 730, 4), "monthly": p}}
                               for i, l, c, m, p in TYPES], query)
        if method == "GET" and path == "/images":
            return self._page([{"id": i, "label": l, "deprecated": d, "is_public": True,
                                "vendor": l.split()[0], "type": "manual", "size": 2500,
                                "status": "available"} for i, l, d in IMAGES], query)
        m = re.fullmatch(r"/linode/kernels/(linode/[a-z0-9._-]+)", path)
        if method == "GET" and m:
            if m[1] not in KERNELS:
                return _error(404, "Not found")
            return 200, {"id": m[1], "label": m[1], "architecture": "x86_64", "kvm": True}
        if path == "/linode/instances":
            if method == "GET":
                items = self._filtered([self._public(n) for n in sorted(self.nodes.values(),
                                                                        key=lambda n: n["id"])],
                                       headers)
                if items is None:
                    return _error(400, "Invalid filter")
                return self._page(items, query)
            if method == "POST":
                return self._create(body or {})
        m = re.fullmatch(r"/linode/instances/(\d+)(/.*)?", path)
        if m:
            nid = int(m[1])
            node = self.nodes.get(nid)
            if node is None:
                return _error(404, "Not found")
            rest = m[2] or ""
            now = time.monotonic()
            if rest == "" and method == "GET":
                return 200, self._public(node)
            if rest == "" and method == "DELETE":
                del self.nodes[nid]
                self.deleted.append(nid)
                return 200, {}
            if rest == "/shutdown" and method == "POST":
                node["_events"] = [(now, "shutting_down"), (now + self.shutdown_s, "offline")]
                return 200, {}
            if rest == "/boot" and method == "POST":
                node["_events"] = [(now, "booting"), (now + self.boot_s, "running")]
                return 200, {}
            if rest == "/configs" and method == "GET":
                return self._page(self.configs.get(nid, []), query)
            mc = re.fullmatch(r"/configs/(\d+)", rest)
            if mc and method == "PUT":
                for c in self.configs.get(nid, []):
                    if c["id"] == int(mc[1]):
                        kernel = (body or {}).get("kernel")
                        if kernel is not None:
                            if kernel not in KERNELS:
                                return _error(400, "Invalid kernel", "kernel")
                            c["kernel"] = kernel
                        return 200, c
                return _error(404, "Not found")
        return _error(404, "Not found")

    def _create(self, body):
        region, type_, image = body.get("region"), body.get("type"), body.get("image")
        if region not in [r[0] for r in REGIONS]:
            return _error(400, "region is not valid", "region")
        if type_ not in [t[0] for t in TYPES]:
            return _error(400, "A valid plan type by that ID was not found", "type")
        if image is not None and image not in [i[0] for i in IMAGES]:
            return _error(400, "image is not valid", "image")
        label = body.get("label")
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,62}[A-Za-z0-9]", label):
            return _error(400, "Label must be 3-64 characters", "label")
        if any(n["label"] == label for n in self.nodes.values()):
            return _error(400, "Label must be unique among your linodes", "label")
        if image and not (isinstance(body.get("root_pass"), str) and 7 <= len(body["root_pass"]) <= 128):
            return _error(400, "root_pass is required", "root_pass")
        if self.max_instances is not None and len(self.nodes) >= self.max_instances:
            return _error(400, "Account Limit reached. Please open a support ticket.")
        nid = self._new_id()
        ipv4 = self.addresses.pop(0) if self.addresses else f"192.0.2.{nid % 200 + 20}"
        node = self._node(nid, label, region, type_, image, list(body.get("tags") or []), ipv4)
        node["_root_pass"] = body.get("root_pass")
        node["_authorized_keys"] = list(body.get("authorized_keys") or [])
        now = time.monotonic()
        if body.get("booted", True):
            node["_events"] = [(now, "provisioning"), (now + self.provision_s, "booting"),
                               (now + self.provision_s + self.boot_s, "running")]
        else:
            node["_events"] = [(now, "provisioning"), (now + self.provision_s, "offline")]
        self.nodes[nid] = node
        self.configs[nid] = [self._config(nid, "linode/latest-64bit")]
        return 200, self._public(node)
