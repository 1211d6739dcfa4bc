"""An emulator of the EC2 Query API over real HTTPS, for the ec2:* workers' tests.

Requests are form-encoded POSTs (Action=...&Version=2016-11-15); every one must carry a valid
AWS Signature Version 4, checked here independently of the SDK that made it (canonical
request, string to sign, the derived key, the credential scope's date, region and service,
the clock skew). Answers are EC2's XML, errors EC2's <Response><Errors><Error><Code>...
(AuthFailure, SignatureDoesNotMatch, InvalidAMIID.NotFound, InstanceLimitExceeded,
RequestLimitExceeded, InvalidInstanceID.NotFound). Instance states move with time.

    emu = Ec2Emulator(access_key="AKIDEXAMPLE", secret_key="...", region="us-east-1")
    emu.fault("RunInstances", "RequestLimitExceeded", 503, times=1)
    emu.stop()
"""
import datetime
import hashlib
import hmac
import http.server
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from xml.sax.saxutils import escape

from gist_emulator import Listener

NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1")
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
               "stopping": 64, "stopped": 80}
IMAGES = [("ami-0a1b2c3d4e5f60001", "debian-12-amd64-20240101-1614", "136693071363", "2024-01-01T00:00:00.000Z"),
          ("ami-0a1b2c3d4e5f60002", "debian-12-amd64-20240717-1811", "136693071363", "2024-07-17T00:00:00.000Z"),
          ("ami-0a1b2c3d4e5f60003", "debian-11-amd64-20240717-1811", "136693071363", "2024-07-17T00:00:00.000Z"),
          ("ami-0a1b2c3d4e5f60004", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240701",
           "099720109477", "2024-07-01T00:00:00.000Z")]


def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmazonEC2"
    sys_version = ""
    timeout = 30

    def log_message(self, *args):
        pass

    def _any(self):
        self.server.emulator._handle(self)

    do_GET = do_POST = _any


class Ec2Emulator:
    def __init__(self, access_key="AKIAJARVISTEST00001", secret_key="jarvis/test/secret+key0000000000000000",
                 region="us-east-1", addresses=None, start_s=0.5, stop_s=0.5, max_instances=None):
        self.dir = tempfile.mkdtemp(prefix="jarvis-ec2-")
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self.addresses = list(addresses or [])
        self.start_s, self.stop_s = start_s, stop_s
        self.max_instances = max_instances
        self.instances = {}        # id -> dict (with "_events")
        self.tokens = {}           # ClientToken -> instance id
        self.requests = []         # (action, params)
        self.auth_failures = []    # reasons, for the tests
        self._faults = []
        self._lock = threading.RLock()
        self._n = 0
        self._listener = Listener(_Handler, self, self.dir, "ec2")
        self.ca_file, self.port = self._listener.ca_file, self._listener.port
        self.url = f"https://127.0.0.1:{self.port}"

    def stop(self):
        self._listener.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def fault(self, action, code, status, times=1):
        with self._lock:
            self._faults.append({"action": action, "code": code, "status": status, "times": times})

    def add_instance(self, name, state="running", tags=None, ip="198.51.100.9"):
        with self._lock:
            iid = self._new(name, "ami-0a1b2c3d4e5f60003", "t3.micro", dict(tags or {}), ip)
            self.instances[iid]["_events"] = [(0, state)]
            return iid

    def state_of(self, iid):
        with self._lock:
            return self._state(self.instances[iid])

    def named(self, name, live=True):
        with self._lock:
            return [i for i in self.instances.values() if i["tags"].get("Name") == name
                    and (not live or self._state(i) != "terminated")]

    def count(self, action):
        with self._lock:
            return sum(1 for a, _ in self.requests if a == action)

    # --- model -----------------------------------------------------------------------------------

    def _new(self, name, image, itype, tags, ip):
        self._n += 1
        iid = f"i-0{self._n:016x}"
        if name:
            tags.setdefault("Name", name)
        self.instances[iid] = {"id": iid, "image": image, "type": itype, "tags": tags, "ip": ip,
                               "private": f"172.31.{self._n // 250}.{self._n % 250 + 4}",
                               "ipv6": f"2600:1f18:4a3:6902::{self._n:x}",
                               "launch": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                               "_events": []}
        return iid

    def _state(self, inst):
        now, state = time.monotonic(), inst["_events"][0][1]
        for at, s in inst["_events"]:
            if at <= now:
                state = s
        return state

    # --- SigV4 --------------------------------------------------------------------------------------

    def _check_signature(self, h, body):
        auth = h.headers.get("Authorization", "")
        m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9]+)/aws4_request,"
                         r"\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})", auth)
        if not m:
            return "AuthFailure", "AWS was not able to validate the provided access credentials"
        key, date, region, service, signed, signature = m.groups()
        if key != self.access_key:
            return "AuthFailure", "AWS was not able to validate the provided access credentials"
        if region not in REGIONS:
            return "AuthFailure", f"Credential should be scoped to a valid region, not '{region}'."
        if region != self.region or service != "ec2":
            return "SignatureDoesNotMatch", (f"Credential should be scoped to a valid region and "
                                             f"service: {self.region}/ec2, not {region}/{service}")
        amz_date = h.headers.get("X-Amz-Date", "")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
        except ValueError:
            return "AuthFailure", "X-Amz-Date is missing or malformed"
        if abs((datetime.datetime.utcnow() - when).total_seconds()) > 300 or amz_date[:8] != date:
            return "AuthFailure", "Signature expired: the request's date is more than 5 minutes off"
        names = signed.split(";")
        if "host" not in names:
            return "AuthFailure", "the Host header must be signed"
        headers = "".join(f"{n}:{' '.join(str(h.headers.get(n, '')).split())}\n" for n in names)
        payload = hashlib.sha256(body).hexdigest()
        if h.headers.get("X-Amz-Content-SHA256") not in (None, payload, "UNSIGNED-PAYLOAD"):
            return "SignatureDoesNotMatch", "the payload hash does not match"
        parsed = urllib.parse.urlsplit(h.path)
        query = "&".join(sorted(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                                for k, v in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)))
        canonical = "\n".join([h.command, urllib.parse.quote(parsed.path or "/", safe="/-_.~"),
                               query, headers, signed, payload])
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        k = _hmac(("AWS4" + self.secret_key).encode(), date)
        k = _hmac(_hmac(_hmac(k, region), service), "aws4_request")
        expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return "SignatureDoesNotMatch", ("The request signature we calculated does not match "
                                             "the signature you provided. Check your AWS Secret "
                                             "Access Key and signing method.")
        return None

    # --- HTTP ----------------------------------------------------------------------------------------

    def _send(self, h, status, xml):
        data = ('<?xml version="1.0" encoding="UTF-8"?>\n' + xml).encode()
        h.send_response(status)
        h.send_header("Content-Type", "text/xml;charset=UTF-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h, status, code, message):
        self._send(h, status, f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>"
                              f"{escape(message)}</Message></Error></Errors><RequestID>{uuid.uuid4()}"
                              "</RequestID></Response>")

    def _handle(self, h):
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        bad = self._check_signature(h, body)
        params = dict(urllib.parse.parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        action = params.get("Action", "")
        with self._lock:
            self.requests.append((action, params))
            if bad:
                self.auth_failures.append(bad)
            fault = next((f for f in self._faults if f["action"] == action and f["times"] > 0), None)
            if fault and not bad:
                fault["times"] -= 1
        if bad:
            return self._error(h, 401 if bad[0] == "AuthFailure" else 403, *bad)
        if fault:
            return self._error(h, fault["status"], fault["code"], f"{fault['code']} (injected)")
        with self._lock:
            result = getattr(self, f"_{action}", None)
            if result is None or params.get("Version") != "2016-11-15":
                return self._error(h, 400, "InvalidAction", f"The action {action} is not valid for this web service.")
            out = result(params)
        if isinstance(out, tuple):
            return self._error(h, *out)
        self._send(h, 200, f'<{action}Response xmlns="{NS}"><requestId>{uuid.uuid4()}</requestId>'
                           f"{out}</{action}Response>")

    # --- actions ---------------------------------------------------------------------------------------

    @staticmethod
    def _lists(params, prefix):
        """Filter.1.Name=..&Filter.1.Value.1=.. -> [(name, [values])]; InstanceId.N -> [..]."""
        out = {}
        for k, v in params.items():
            m = re.fullmatch(rf"{prefix}\.(\d+)(?:\.(.*))?", k)
            if m:
                out.setdefault(int(m[1]), {})[m[2] or ""] = v
        return [out[i] for i in sorted(out)]

    def _instance_xml(self, i):
        state = self._state(i)
        tags = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>" for k, v in i["tags"].items())
        running = state in ("pending", "running")
        return (f"<item><instanceId>{i['id']}</instanceId><imageId>{i['image']}</imageId>"
                f"<instanceState><code>{STATE_CODES[state]}</code><name>{state}</name></instanceState>"
                f"<instanceType>{i['type']}</instanceType><launchTime>{i['launch']}</launchTime>"
                f"<placement><availabilityZone>{self.region}a</availabilityZone></placement>"
                + (f"<privateIpAddress>{i['private']}</privateIpAddress>" if state != "terminated" else "")
                + (f"<ipAddress>{i['ip']}</ipAddress>" if running and i["ip"] else "")
                + f"<tagSet>{tags}</tagSet><networkInterfaceSet>"
                + (f"<item><networkInterfaceId>eni-{i['id'][2:]}</networkInterfaceId><ipv6AddressesSet>"
                   f"<item><ipv6Address>{i['ipv6']}</ipv6Address></item></ipv6AddressesSet></item>"
                   if state != "terminated" else "")
                + "</networkInterfaceSet></item>")

    def _DescribeInstances(self, p):
        ids = [d[""] for d in self._lists(p, "InstanceId")]
        for iid in ids:
            if iid not in self.instances:
                return 400, "InvalidInstanceID.NotFound", f"The instance ID '{iid}' does not exist"
        found = [self.instances[i] for i in ids] if ids else sorted(self.instances.values(), key=lambda i: i["id"])
        for f in self._lists(p, "Filter"):
            name = f.get("Name")
            values = [v for k, v in f.items() if k.startswith("Value.")]
            if name == "instance-state-name":
                found = [i for i in found if self._state(i) in values]
            elif name and name.startswith("tag:"):
                found = [i for i in found if i["tags"].get(name[4:]) in values]
            else:
                return 400, "InvalidParameterValue", f"The filter '{name}' is invalid"
        items = "".join(f"<item><reservationId>r-{i['id'][2:]}</reservationId><ownerId>123456789012</ownerId>"
                        f"<groupSet/><instancesSet>{self._instance_xml(i)}</instancesSet></item>" for i in found)
        return f"<reservationSet>{items}</reservationSet>"

    def _DescribeImages(self, p):
        owners = [d[""] for d in self._lists(p, "Owner")]
        found = [i for i in IMAGES if not owners or i[2] in owners]
        for f in self._lists(p, "Filter"):
            values = [v for k, v in f.items() if k.startswith("Value.")]
            if f.get("Name") == "name":
                found = [i for i in found if any(re.fullmatch(re.escape(v).replace(r"\*", ".*"), i[1]) for v in values)]
        items = "".join(f"<item><imageId>{i[0]}</imageId><name>{escape(i[1])}</name><imageOwnerId>{i[2]}"
                        f"</imageOwnerId><creationDate>{i[3]}</creationDate><imageState>available</imageState>"
                        "<architecture>x86_64</architecture><isPublic>true</isPublic></item>" for i in found)
        return f"<imagesSet>{items}</imagesSet>"

    def _RunInstances(self, p):
        token = p.get("ClientToken")
        if token and token in self.tokens:        # EC2's idempotency: the same instance again
            i = self.instances[self.tokens[token]]
            return (f"<reservationId>r-{i['id'][2:]}</reservationId><ownerId>123456789012</ownerId>"
                    f"<groupSet/><instancesSet>{self._instance_xml(i)}</instancesSet>")
        image = p.get("ImageId")
        if image not in [i[0] for i in IMAGES]:
            return 400, "InvalidAMIID.NotFound", f"The image id '[{image}]' does not exist"
        if not re.fullmatch(r"t3\.(nano|micro|small|medium|large|xlarge|2xlarge)", p.get("InstanceType", "")):
            return 400, "InvalidParameterValue", f"Invalid value '{p.get('InstanceType')}' for InstanceType."
        live = [i for i in self.instances.values() if self._state(i) != "terminated"]
        if self.max_instances is not None and len(live) >= self.max_instances:
            return 400, "InstanceLimitExceeded", ("You have requested more instances (1) than your "
                                                  f"current instance limit of {self.max_instances} allows")
        tags = {}
        for spec in self._lists(p, "TagSpecification"):
            for k, v in spec.items():
                m = re.fullmatch(r"Tag\.(\d+)\.Key", k)
                if m:
                    tags[v] = spec.get(f"Tag.{m[1]}.Value", "")
        iid = self._new(None, image, p["InstanceType"], tags,
                        self.addresses.pop(0) if self.addresses else f"198.51.100.{self._n + 20}")
        now = time.monotonic()
        self.instances[iid]["_events"] = [(now, "pending"), (now + self.start_s, "running")]
        if token:
            self.tokens[token] = iid
        return (f"<reservationId>r-{iid[2:]}</reservationId><ownerId>123456789012</ownerId><groupSet/>"
                f"<instancesSet>{self._instance_xml(self.instances[iid])}</instancesSet>")

    def _change(self, p, via, final, allowed):
        out = []
        for d in self._lists(p, "InstanceId"):
            iid = d[""]
            i = self.instances.get(iid)
            if i is None:
                return 400, "InvalidInstanceID.NotFound", f"The instance ID '{iid}' does not exist"
            before = self._state(i)
            if before not in allowed:
                return 400, "IncorrectInstanceState", f"The instance '{iid}' is not in a state from which it can be changed"
            if before != final:
                now = time.monotonic()
                i["_events"] = [(now, via), (now + self.stop_s, final)]
            after = self._state(i)
            out.append(f"<item><instanceId>{iid}</instanceId><currentState><code>{STATE_CODES[after]}</code>"
                       f"<name>{after}</name></currentState><previousState><code>{STATE_CODES[before]}</code>"
                       f"<name>{before}</name></previousState></item>")
        return f"<instancesSet>{''.join(out)}</instancesSet>"

    def _StopInstances(self, p):
        return self._change(p, "stopping", "stopped", ("pending", "running", "stopping", "stopped"))

    def _TerminateInstances(self, p):
        return self._change(p, "shutting-down", "terminated",
                            ("pending", "running", "stopping", "stopped", "shutting-down", "terminated"))
