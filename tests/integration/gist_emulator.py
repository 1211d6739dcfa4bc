"""An emulator of GitHub's gist REST API over real HTTPS, for tests of the gist design source.

The bot talks to it with libcurl, TLS verification on, trusting `ca_file` (the emulator's
self-signed certificate). Besides `GET /gists/<id>` and the files' raw URLs it serves the
hostile cases a fetcher must survive: huge bodies (with or without Content-Length), a server
that stalls after the headers, and redirect loops. Every request is recorded in `requests`.

    emu = GistEmulator(require_token="s3cret")
    emu.add_gist("abc123", {"loki.yaml": "instance: {hostname: loki}\\n"})
    ... point the bot at emu.base_url with emu.ca_file ...
    check(all(h.get("Authorization") == "Bearer s3cret" for _, _, h in emu.requests), "...")
    emu.stop()

Run this file to self-check it with curl.
"""
import http.server
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse

from irc_support import free_port, make_cert

DOCS = "https://docs.github.com/rest"
GIST_DOCS = "https://docs.github.com/rest/gists/gists#get-a-gist"
# GitHub's API returns at most this much of each file's content and flags it truncated.
GITHUB_TRUNCATE_AT = 1024 * 1024
# (type, language) by extension, as GitHub reports them; anything else is plain text.
FILE_TYPES = {".yaml": ("application/x-yaml", "YAML"), ".yml": ("application/x-yaml", "YAML"),
              ".json": ("application/json", "JSON"), ".md": ("text/markdown", "Markdown")}
RATE_LIMIT = 5000


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Without this server_close() joins every handler thread, daemon or not, and a stalled
    # handler would make stop() hang.
    block_on_close = False

    def __init__(self, address, handler, emulator, context):
        self.emulator = emulator
        self.context = context
        self.connections = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        # The TLS handshake happens here, in the connection's own thread, not in accept():
        # a client that connects and never says hello must not block everybody else.
        try:
            if self.context:
                request = self.context.wrap_socket(request, server_side=True)
            with self.connections_lock:
                self.connections.add(request)
            try:
                self.RequestHandlerClass(request, client_address, self)
            finally:
                with self.connections_lock:
                    self.connections.discard(request)
                request.close()
        except (OSError, ValueError):
            pass  # clients that hang up mid-body, fail the handshake or time out are routine

    def drop_connections(self):
        with self.connections_lock:
            for conn in list(self.connections):
                try:
                    # The plain socket's shutdown, not SSLSocket's: it only wakes the
                    # blocked reader and does not touch the TLS state another thread uses.
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
                except OSError:
                    pass


class Listener:
    """The emulators' server: `handler` on 127.0.0.1 in a thread of its own, for `emulator`
    (handlers reach it as self.server.emulator). With `cert_dir`, HTTPS with a self-signed
    certificate made there for `name` (its own CA: ca_file); without, plain HTTP."""

    def __init__(self, handler, emulator, cert_dir=None, name="emulator", alpn=False):
        context = None
        self.ca_file = None
        if cert_dir:
            cert, key = make_cert(cert_dir, name)
            self.ca_file = cert
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            if alpn:
                context.set_alpn_protocols(["http/1.1"])
        self.port = free_port()
        self.server = _Server(("127.0.0.1", self.port), handler, emulator, context)
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self):
        """Stops serving and ends every connection, stalled ones included; returns promptly."""
        self.server.shutdown()
        self.server.server_close()
        self.server.drop_connections()
        self._thread.join(5)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: libcurl reuses connections
    server_version = "GitHub.com"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end eventually

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.emulator._handle(self, head=False)

    def do_HEAD(self):
        self.server.emulator._handle(self, head=True)

    def _other(self):
        # Read the body so the connection stays usable, then answer as GitHub does for a
        # method a route does not have.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.emulator._handle(self, head=False, wrong_method=True)

    do_POST = do_PUT = do_PATCH = do_DELETE = _other


class GistEmulator:
    def __init__(self, directory=None, tls=True, require_token=None):
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="jarvis-gist-")
        self.require_token = require_token
        self.requests = []  # (method, path, headers dict), appended under _lock
        self._lock = threading.Lock()
        self._gists = {}
        self._routes = {}  # exact path -> callable(handler, head)
        self._remaining = RATE_LIMIT
        self._stopping = threading.Event()
        self._listener = Listener(_Handler, self, self.directory if tls else None, "gist", alpn=True)
        self.ca_file, self.port = self._listener.ca_file, self._listener.port
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def stop(self):
        """Stops serving and ends every connection, stalled ones included; returns promptly."""
        if self._stopping.is_set():
            return
        self._stopping.set()  # wakes slow and huge handlers
        self._listener.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- content -----------------------------------------------------------------------------

    def add_gist(self, gist_id, files, owner="octocat", truncated=None, description=""):
        """files: {filename: content}. truncated: filenames whose API content is cut to 1 MiB
        as GitHub does (or {filename: chars to keep}); they say "truncated": true and only
        their raw_url gives everything."""
        if truncated is not None and not isinstance(truncated, dict):
            truncated = {name: GITHUB_TRUNCATE_AT for name in truncated}
        self._gists[gist_id] = (dict(files), owner, truncated or {}, description)

    def add_raw(self, path, content, content_type="text/plain", status=200, headers=None):
        """Serves content (str or bytes) at path with that status; overrides gist routes."""
        body = content.encode() if isinstance(content, str) else content

        def route(h, head):
            self._send(h, status, body, content_type, headers, head)
        self._routes[path] = route

    def add_huge(self, path, size_bytes, chunked=False):
        """A YAML-comment body of size_bytes, streamed. chunked=True: Transfer-Encoding:
        chunked and no Content-Length, so the client has to count and give up by itself."""
        line = b"# " + b"x" * 61 + b"\n"
        block = line * 1024  # 64 KiB

        def route(h, head):
            h.send_response(200)
            h.send_header("Content-Type", "text/plain; charset=utf-8")
            if chunked:
                h.send_header("Transfer-Encoding", "chunked")
            else:
                h.send_header("Content-Length", str(size_bytes))
            h.end_headers()
            if head:
                return
            left = size_bytes
            while left > 0 and not self._stopping.is_set():
                piece = block[:left]
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                left -= len(piece)
            if left > 0:
                h.close_connection = True
            elif chunked:
                h.wfile.write(b"0\r\n\r\n")
        self._routes[path] = route

    def add_slow(self, path, delay_s, content="instance: {hostname: slow}\n"):
        """Sends status and headers at once, then stalls delay_s before the body."""
        body = content.encode()

        def route(h, head):
            h.send_response(200)
            h.send_header("Content-Type", "text/plain; charset=utf-8")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.flush()
            if head:
                return
            if self._stopping.wait(delay_s):  # an Event, not sleep: stop() cuts the stall
                h.close_connection = True
                return
            h.wfile.write(body)
        self._routes[path] = route

    def add_redirect(self, path, location, status=302):
        """location may be relative (e.g. add_redirect("/loop", "/loop")) or absolute."""
        def route(h, head):
            self._send(h, status, b"", "text/html; charset=utf-8", {"Location": location}, head)
        self._routes[path] = route

    # --- serving -----------------------------------------------------------------------------

    def _handle(self, h, head, wrong_method=False):
        with self._lock:
            self.requests.append((h.command, h.path, dict(h.headers.items())))
        path = urllib.parse.unquote(urllib.parse.urlsplit(h.path).path)
        if wrong_method:
            return self._json(h, 404, {"message": "Not Found", "documentation_url": DOCS,
                                       "status": "404"}, head)
        route = self._routes.get(path)
        if route:
            return route(h, head)
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "gists":
            return self._get_gist(h, parts[1], head)
        if len(parts) == 3 and parts[0] == "raw" and parts[1] in self._gists:
            files = self._gists[parts[1]][0]
            if parts[2] in files:
                return self._send(h, 200, files[parts[2]].encode(), "text/plain; charset=utf-8",
                                  None, head)
        self._send(h, 404, b"404: Not Found", "text/plain; charset=utf-8", None, head)

    def _get_gist(self, h, gist_id, head):
        # Only the API checks the token: raw URLs live on another host at GitHub.
        if self.require_token:
            auth = h.headers.get("Authorization")
            if auth is None:
                return self._json(h, 401, {"message": "Requires authentication",
                                           "documentation_url": DOCS, "status": "401"}, head)
            if auth not in (f"Bearer {self.require_token}", f"token {self.require_token}"):
                return self._json(h, 401, {"message": "Bad credentials",
                                           "documentation_url": DOCS, "status": "401"}, head)
        if gist_id not in self._gists:
            return self._json(h, 404, {"message": "Not Found", "documentation_url": GIST_DOCS,
                                       "status": "404"}, head)
        self._json(h, 200, self.gist_json(gist_id), head)

    def gist_json(self, gist_id):
        """The body of GET /gists/<id>, shaped like GitHub's."""
        files, owner, truncated, description = self._gists[gist_id]
        api = f"{self.base_url}/gists/{gist_id}"
        out = {}
        for name, content in files.items():
            kind, language = FILE_TYPES.get(os.path.splitext(name)[1].lower(),
                                             ("text/plain", "Text"))
            cut = truncated.get(name)
            out[name] = {
                "filename": name, "type": kind, "language": language,
                "raw_url": f"{self.base_url}/raw/{gist_id}/{urllib.parse.quote(name)}",
                "size": len(content.encode()),
                "truncated": cut is not None and cut < len(content),
                "content": content if cut is None else content[:cut],
            }
        stamp = "2024-01-02T03:04:05Z"
        return {
            "url": api, "forks_url": f"{api}/forks", "commits_url": f"{api}/commits",
            "id": gist_id, "node_id": "G_kwDOAAAAAA",
            "git_pull_url": f"https://gist.github.com/{gist_id}.git",
            "git_push_url": f"https://gist.github.com/{gist_id}.git",
            "html_url": f"https://gist.github.com/{gist_id}",
            "files": out, "public": True, "created_at": stamp, "updated_at": stamp,
            "description": description, "comments": 0, "user": None,
            "comments_url": f"{api}/comments",
            "owner": {"login": owner, "id": 1, "type": "User", "site_admin": False,
                      "html_url": f"https://github.com/{owner}"},
            "forks": [], "history": [], "truncated": False,
        }

    def _json(self, h, status, obj, head):
        with self._lock:
            self._remaining = max(self._remaining - 1, 0)
            used = RATE_LIMIT - self._remaining
        headers = {"X-RateLimit-Limit": str(RATE_LIMIT),
                   "X-RateLimit-Remaining": str(RATE_LIMIT - used),
                   "X-RateLimit-Reset": str(int(time.time()) + 3600),
                   "X-RateLimit-Used": str(used), "X-RateLimit-Resource": "core",
                   "X-GitHub-Media-Type": "github.v3; format=json"}
        self._send(h, status, json.dumps(obj, indent=2).encode(),
                   "application/json; charset=utf-8", headers, head)

    @staticmethod
    def _send(h, status, body, content_type, headers, head):
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        if not head:
            h.wfile.write(body)


# --- self-check ----------------------------------------------------------------------------------

def _self_check():
    import subprocess
    from jarvis_test import check

    def curl(emu, path, *args, timeout=30):
        p = subprocess.run(["curl", "-sS", "--cacert", emu.ca_file, *args, emu.base_url + path],
                           capture_output=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr.decode()

    emu = GistEmulator(require_token="s3cret")
    design = "instance: {hostname: loki}\nsize: small\n"
    emu.add_gist("abc123", {"loki.yaml": design, "notes.md": "# notes\n"}, owner="alice",
                 truncated={"notes.md": 3})
    auth = ["-H", "Authorization: Bearer s3cret"]

    # Verification is really on: without the CA file curl refuses the certificate.
    p = subprocess.run(["curl", "-sS", emu.base_url + "/gists/abc123"], capture_output=True)
    check(p.returncode == 60, f"curl without --cacert: {p.returncode} {p.stderr!r}")

    headers_file = os.path.join(emu.directory, "headers")
    rc, out, err = curl(emu, "/gists/abc123", *auth, "-D", headers_file)
    check(rc == 0, f"gist fetch: {rc} {err}")
    gist = json.loads(out)
    f = gist["files"]["loki.yaml"]
    check(gist["id"] == "abc123" and gist["owner"]["login"] == "alice"
          and gist["html_url"] == "https://gist.github.com/abc123"
          and gist["public"] is True and gist["truncated"] is False, f"gist shape: {gist}")
    check(f["content"] == design and f["size"] == len(design) and f["language"] == "YAML"
          and f["truncated"] is False and f["filename"] == "loki.yaml", f"file: {f}")
    n = gist["files"]["notes.md"]
    check(n["truncated"] is True and n["content"] == "# n" and n["size"] == 8, f"notes: {n}")
    with open(headers_file) as hf:
        head = hf.read().lower()
    check(head.startswith("http/1.1 200") and "content-type: application/json; charset=utf-8"
          in head and "x-ratelimit-remaining: 4999" in head, f"headers: {head}")

    rc, out, err = curl(emu, urllib.parse.urlsplit(f["raw_url"]).path)
    check(rc == 0 and out.decode() == design, f"raw: {rc} {out!r} {err}")
    rc, out, err = curl(emu, urllib.parse.urlsplit(n["raw_url"]).path)
    check(rc == 0 and out == b"# notes\n", f"raw of a truncated file: {rc} {out!r}")

    rc, out, _ = curl(emu, "/gists/nope", *auth, "-w", "\n%{http_code}")
    body, code = out.rsplit(b"\n", 1)
    check(code == b"404" and json.loads(body) == {"message": "Not Found", "documentation_url":
          GIST_DOCS, "status": "404"}, f"404: {out!r}")

    # Token check: missing and wrong are refused, both header schemes are accepted.
    for extra, want in (([], b"401"), (["-H", "Authorization: Bearer nope"], b"401"),
                        (["-H", "Authorization: token s3cret"], b"200"), (auth, b"200")):
        rc, out, _ = curl(emu, "/gists/abc123", *extra, "-o", os.devnull, "-w", "%{http_code}")
        check(out == want, f"token {extra}: {out!r}, expected {want!r}")
    rc, out, _ = curl(emu, "/gists/abc123", "-H", "Authorization: Bearer nope")
    check(json.loads(out)["message"] == "Bad credentials", f"bad credentials body: {out!r}")
    seen = [h.get("Authorization") for m, p, h in emu.requests if p == "/gists/abc123"]
    check("Bearer s3cret" in seen and None in seen, f"logged Authorization headers: {seen}")

    # Keep-alive: two URLs in one curl run share one connection.
    p = subprocess.run(["curl", "-sS", "--cacert", emu.ca_file, *auth, "-o", os.devnull,
                        "-o", os.devnull, "-w", "%{num_connects}\n",
                        emu.base_url + "/gists/abc123", emu.base_url + "/gists/abc123"],
                       capture_output=True, text=True)
    check(p.returncode == 0 and p.stdout.split() == ["1", "0"], f"keep-alive: {p.stdout!r}")

    emu.add_raw("/designs/odd.yaml", "oops", status=500)
    rc, out, _ = curl(emu, "/designs/odd.yaml", "-w", "%{http_code}")
    check(out == b"oops500", f"add_raw: {out!r}")

    # Huge with Content-Length: curl refuses before reading the body.
    emu.add_huge("/huge", 50 * 1024 * 1024)
    rc, _, err = curl(emu, "/huge", "--max-filesize", "1048576", "-o", os.devnull)
    check(rc == 63, f"huge: curl exited {rc}: {err}")
    # Chunked: no Content-Length, the exact size arrives (curl 7.88's --max-filesize, like
    # CURLOPT_MAXFILESIZE, does not apply without a Content-Length), and a client that walks away
    # mid-body leaves the server serving.
    emu.add_huge("/huge-chunked", 3 * 1024 * 1024 + 5, chunked=True)
    rc, out, err = curl(emu, "/huge-chunked", "-D", headers_file)
    with open(headers_file) as hf:
        head = hf.read().lower()
    check(rc == 0 and len(out) == 3 * 1024 * 1024 + 5 and out.startswith(b"# xxx")
          and "transfer-encoding: chunked" in head and "content-length" not in head,
          f"chunked: {rc} {len(out)} {head} {err}")
    p = subprocess.Popen(["curl", "-sS", "--cacert", emu.ca_file, emu.base_url + "/huge-chunked"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.read(100000)
    p.kill()
    p.wait()
    p.stdout.close()

    # A client that connects and never starts TLS does not hold anybody up either.
    silent = socket.create_connection(("127.0.0.1", emu.port))
    # Slow: headers then a stall; --max-time fires, and other requests are not held up.
    emu.add_slow("/slow", 10)
    start = time.monotonic()
    slow = subprocess.Popen(["curl", "-sS", "--cacert", emu.ca_file, "--max-time", "1",
                             emu.base_url + "/slow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    time.sleep(0.3)
    t = time.monotonic()
    rc, out, _ = curl(emu, "/gists/abc123", *auth)
    check(rc == 0 and time.monotonic() - t < 3, "a request during a stall was held up")
    slow.communicate(timeout=10)
    took = time.monotonic() - start
    check(slow.returncode == 28 and 0.9 < took < 3, f"slow: rc {slow.returncode}, {took:.2f}s")
    emu.add_slow("/slowish", 0.2, content="instance: {hostname: slowish}\n")
    rc, out, _ = curl(emu, "/slowish")
    check(rc == 0 and out == b"instance: {hostname: slowish}\n", f"slowish: {rc} {out!r}")

    emu.add_redirect("/loop", "/loop")
    before = sum(p == "/loop" for _, p, _ in emu.requests)
    rc, _, err = curl(emu, "/loop", "-L", "--max-redirs", "3")
    after = sum(p == "/loop" for _, p, _ in emu.requests)
    check(rc == 47 and after - before == 4, f"redirect loop: {rc} {after - before} {err}")
    emu.add_redirect("/old", "/designs/odd.yaml", status=301)
    rc, out, _ = curl(emu, "/old", "-L")
    check(out == b"oops", f"redirect: {out!r}")

    rc, _, _ = curl(emu, "/gists/abc123", "-I", *auth)
    check(rc == 0, "HEAD")

    # stop() returns promptly with a stalled request and a silent connection open.
    emu.add_slow("/stall", 60)
    stalled = subprocess.Popen(["curl", "-sS", "--cacert", emu.ca_file, emu.base_url + "/stall"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    t = time.monotonic()
    emu.stop()
    check(time.monotonic() - t < 1.5, f"stop() took {time.monotonic() - t:.2f}s")
    check(stalled.wait(5) != 0, "the stalled curl should have failed after stop()")
    silent.close()

    with GistEmulator(tls=False) as plain:
        plain.add_gist("p1", {"a.yml": "x: 1\n"})
        p = subprocess.run(["curl", "-sS", plain.base_url + "/gists/p1"], capture_output=True)
        check(p.returncode == 0 and json.loads(p.stdout)["files"]["a.yml"]["content"] == "x: 1\n",
              f"plain http: {p.stdout!r}")
    print("gist_emulator self-check: OK")


if __name__ == "__main__":
    _self_check()
