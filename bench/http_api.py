"""The HTTP API under load, each figure against a baseline from the same run.

(a) GET /api/v1/jobs/{id} every 5 ms on a kept-alive connection while 1000 jobs of 5 stages
    (sh + cat + sleep 50 ms) run at once, and a chat `status` through a real ngircd every
    20 ms beside it (flood limits off, as in bench/irc_status.py); baseline: the same requests
    with the bot idle. Each latency is from the request to its answer.
(b) Event-to-client latency over Server-Sent Events with 100 clients connected (emission
    time in the event's at_ms to the moment each client has read it), during 50 concurrent
    deploys; baseline: the same with 1 client.

usage: bench/http_api.py JARVIS SOURCE_DIR [JOBS (1000)]"""
import http.client
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time

binary, source = sys.argv[1], sys.argv[2]
jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
sys.path.insert(0, os.path.join(source, "tests", "integration"))
from irc_support import Client, Ngircd, bot_config, free_port, make_bot_files, write_design  # noqa: E402


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


HTTP = ("http:\n  listen: 127.0.0.1:{port}\n  requests_per_second: 100000\n  request_burst: 100000\n"
        "  max_connections: 1000\n  max_event_streams: 1000\nmax_running_jobs: {jobs}\n")


def setup(name, hosts, irc=None):
    """A bot with `hosts` designs of 5 stages; on IRC through `irc` (an Ngircd) when given."""
    w = irc.dir if irc else tempfile.mkdtemp(prefix=f"jarvis-bench-{name}-")
    make_bot_files(w, stage_sleep="0.05")
    for i in range(hosts):
        write_design(w, f"h{i}", provider="five")
    port = free_port()
    http_section = HTTP.format(port=port, jobs=max(hosts, 1))
    if irc:
        cfg = bot_config(w, irc, irc_extra="  flood: {burst: 1000, per_second: 1000}\n",
                         chat_extra="  commands_per_minute: 6000\n  command_burst: 1000\n", extra=http_section,
                         levels="  announce_level: quiet\n")
        text = open(cfg).read().replace('announce: ["irc:#ops"]', "announce: []\n  announce_to_requester: false")
        open(cfg, "w").write(text)
    else:
        cfg = f"{w}/jarvis.yaml"
        with open(cfg, "w") as f:
            f.write(f"state_dir: {w}/state\npipelines_dir: {w}/pipelines\ndesigns_dir: {w}/designs\n"
                    f"workers:\n  path: [{w}/workers]\n" + http_section)
    token = subprocess.run([binary, "token", "add", "bench", "--role", "operate", "--config", cfg],
                           capture_output=True, text=True, check=True).stdout.strip()
    bot = subprocess.Popen([binary, "serve", "--config", cfg], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/api/v1/healthz")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.05)
    return w, port, token, bot


def conn(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def get(c, path, token):
    c.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    body = r.read()
    return r.status, body


def deploy(port, token, host):
    c = conn(port)
    c.request("POST", "/api/v1/deploy", body=json.dumps({"design": host}),
              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse()
    d = json.loads(r.read())
    c.close()
    return d["job"]["id"] if r.status == 202 else None


def status_samples(alice, until, period=0.02):
    """`jarvis: status zz` in #ops every `period`; each latency from the line to the answer."""
    lat = []
    due = time.perf_counter()
    while not until():
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        t = time.perf_counter()
        alice.say("#ops", "jarvis: status zz")
        alice.expect("#ops", lambda x: x.startswith("zz: no jobs yet"), what="status")
        done_at = time.perf_counter()
        lat.append((done_at - t) * 1000)
        due = max(due + period, done_at)
    return lat


def sample(port, token, job, until, period=0.005):
    """GET /jobs/{job} every `period` (or as soon as the previous answer is in, when that took
    longer) until until() is true; each latency from the request to its answer."""
    c = conn(port)
    lat = []
    due = time.perf_counter()
    while not until():
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        t = time.perf_counter()
        status, _ = get(c, f"/api/v1/jobs/{job}", token)
        assert status == 200, status
        done_at = time.perf_counter()
        lat.append((done_at - t) * 1000)
        due = max(due + period, done_at)
    c.close()
    return lat


def stop(bot):
    bot.terminate()
    try:
        bot.wait(timeout=60)
    except subprocess.TimeoutExpired:
        bot.kill()


# (a) GET /jobs/{id} and console status, idle then during the load.
server = Ngircd()
import atexit  # noqa: E402
atexit.register(server.cleanup)
w, port, token, bot = setup("load", jobs, irc=server)
alice = Client(server, "alice")
alice.join("#ops")
alice.wait_member("#ops", "jarvis", 30, "jarvis")
first = deploy(port, token, "h0")
c = conn(port)
while json.loads(get(c, f"/api/v1/jobs/{first}", token)[1])["state"] != "ready":
    time.sleep(0.05)
c.close()
t_end = time.perf_counter() + 3
idle_get = sample(port, token, first, lambda: time.perf_counter() > t_end)
t_end = time.perf_counter() + 3
idle_status = status_samples(alice, lambda: time.perf_counter() > t_end)
ids = [first]
start = time.perf_counter()
threads = []
lock = threading.Lock()


def deploy_range(lo, hi):
    for i in range(lo, hi):
        j = deploy(port, token, f"h{i}")
        with lock:
            ids.append(j)


for k in range(8):
    lo = 1 + k * (jobs - 1) // 8
    hi = 1 + (k + 1) * (jobs - 1) // 8
    threads.append(threading.Thread(target=deploy_range, args=(lo, hi)))
for t in threads:
    t.start()
done = threading.Event()


def finished():
    c = conn(port)
    while True:
        st, body = get(c, "/api/v1/jobs?state=ready&limit=1", token)
        running = json.loads(get(c, "/api/v1/jobs?state=running&limit=1", token)[1])["jobs"]
        queued = json.loads(get(c, "/api/v1/jobs?state=queued&limit=1", token)[1])["jobs"]
        if all(not t.is_alive() for t in threads) and not running and not queued:
            done.set()
            return
        time.sleep(0.2)


threading.Thread(target=finished, daemon=True).start()
status_lat = []
st_thread = threading.Thread(target=lambda: status_lat.extend(status_samples(alice, done.is_set)))
st_thread.start()
load_get = sample(port, token, first, done.is_set)
st_thread.join()
wall = time.perf_counter() - start
c = conn(port)
ready = 0
cursor = None
while True:
    d = json.loads(get(c, "/api/v1/jobs?state=ready&limit=500" + (f"&cursor={cursor}" if cursor else ""), token)[1])
    ready += len(d["jobs"])
    cursor = d["next_cursor"]
    if not cursor:
        break
c.close()
print(f"(a) {jobs} jobs x 5 noop:sleep stages, all at once: {ready} ready in {wall:.1f} s")
print(f"    GET /api/v1/jobs/{{id}} idle:       p50 {pct(idle_get, .5):.2f} ms  p99 {pct(idle_get, .99):.2f} ms  ({len(idle_get)} requests)")
print(f"    GET /api/v1/jobs/{{id}} under load: p50 {pct(load_get, .5):.2f} ms  p99 {pct(load_get, .99):.2f} ms  "
      f"max {max(load_get):.1f} ms ({len(load_get)} requests)")
print(f"    IRC status idle:                 p50 {pct(idle_status, .5):.2f} ms  p99 {pct(idle_status, .99):.2f} ms")
print(f"    IRC status under load:           p50 {pct(status_lat, .5):.2f} ms  p99 {pct(status_lat, .99):.2f} ms  "
      f"({len(status_lat)} requests)")
stop(bot)


# (b) event-to-client latency over SSE.
def sse_reader(port, token, n, deploys, out):
    """n event streams read in one process; the emission-to-read latency of every event."""
    import re
    at = re.compile(rb'"at_ms":(\d+)')
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall((f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    lat, ends = [], 0
    out.put("ready")
    deadline = time.time() + 120
    while ends < n * deploys and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            chunk = s.recv(1 << 20)
            now_ms = time.time() * 1000
            bufs[s] += chunk
            frames = bufs[s].split(b"\n\n")
            bufs[s] = frames.pop()
            for frame in frames:
                m = at.search(frame)
                if m:
                    lat.append(now_ms - int(m.group(1)))
                    if b"event: job_ready" in frame:
                        ends += 1
    out.put(lat)


def sse_latency(clients, deploys, procs=4):
    import multiprocessing as mp
    w, port, token, bot = setup(f"sse{clients}", deploys)
    q = mp.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(min(procs, clients))]
    ps = [mp.Process(target=sse_reader, args=(port, token, n, deploys, q)) for n in per if n]
    for p in ps:
        p.start()
    got = [q.get() for _ in ps]  # all connected
    time.sleep(0.3)
    for i in range(deploys):
        deploy(port, token, f"h{i}")
    lat = []
    for _ in ps:
        lat.extend(q.get())
    for p in ps:
        p.join()
    stop(bot)
    return lat


one = sse_latency(1, 50)
many = sse_latency(100, 50)
print(f"(b) event to SSE client, 50 concurrent deploys, clients read by 4 processes (at_ms has 1 ms resolution):")
print(f"    1 client:    p50 {pct(one, .5):.1f} ms  p99 {pct(one, .99):.1f} ms  ({len(one)} events)")
print(f"    100 clients: p50 {pct(many, .5):.1f} ms  p99 {pct(many, .99):.1f} ms  ({len(many)} deliveries)  "
      f"p99 ratio {pct(many, .99) / max(pct(one, .99), 1):.1f}x")
