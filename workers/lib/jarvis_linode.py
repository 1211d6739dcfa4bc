"""Linode API v4 for the linode:* workers (see docs/workers.md, "Linode").

Settings come from the worker's environment only (the configuration's workers.env or
workers.env_allow), never from the design: a design can come from a chat user's gist, and
the API address and token must not be chosen by whoever wrote it.

    JARVIS_LINODE_TOKEN        a personal access token (Linodes: read/write), or
    JARVIS_LINODE_TOKEN_FILE   a file holding it (not readable by everyone)
    JARVIS_LINODE_API_URL      default https://api.linode.com/v4
    JARVIS_LINODE_CA_FILE      CA bundle to verify the API's certificate (default: the system's)
    JARVIS_LINODE_WAIT         how long a stage may wait and retry in all (default 4m); the
                               design's linode.wait may only shorten it

Every call is retried on 408, 429 (after its Retry-After), 5xx and network errors, with
backoff (1 s doubling to 20 s), until the stage's deadline; lists follow page/pages.
"""
import ipaddress
import json
import os
import re
import time

import requests

import jarvis_worker as jw

Failure, Skip = jw.Failure, jw.Skip
DEFAULT_URL = "https://api.linode.com/v4"
DEFAULT_WAIT = "4m"
PAGE_SIZE = 500                       # the API's largest page
LINODE_PRIVATE = ipaddress.ip_network("192.168.128.0/17")   # Linode's private addresses
RETRYABLE = (408, 429, 500, 502, 503, 504)
STATUS_NAMES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error",
                502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def clean(text, limit=200):
    """Text from the remote side, safe for one log line: no control characters, bounded."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text)).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def reasons(response):
    """The reasons of a Linode error body {"errors": [{"reason", "field"}]}, one line."""
    try:
        body = response.json()
        errors = body.get("errors") if isinstance(body, dict) else None
    except ValueError:
        errors = None
    if not isinstance(errors, list) or not errors:
        return clean(response.text[:200]) or "no reason given"
    parts = []
    for e in errors[:5]:
        if not isinstance(e, dict):
            continue
        reason = clean(e.get("reason", "?"), 160)
        parts.append(f"{clean(e['field'], 40)}: {reason}" if e.get("field") else reason)
    return "; ".join(parts) or "no reason given"


class ApiError(Failure):
    def __init__(self, message, status, reason, code=1):
        super().__init__(message, code)
        self.status, self.reason = status, reason


class Retryable(Exception):
    def __init__(self, what, retry_after=None):
        super().__init__(what)
        self.retry_after = retry_after


class Client:
    def __init__(self, w):
        self.w = w
        self.url = os.environ.get("JARVIS_LINODE_API_URL") or DEFAULT_URL
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?", self.url):
            raise Failure(f"JARVIS_LINODE_API_URL {jw._shown(self.url)} is not an http(s) URL", 2)
        self.url = self.url.rstrip("/")
        token = os.environ.get("JARVIS_LINODE_TOKEN")
        if not token and os.environ.get("JARVIS_LINODE_TOKEN_FILE"):
            token = jw.read_secret_file(os.environ["JARVIS_LINODE_TOKEN_FILE"],
                                        "JARVIS_LINODE_TOKEN_FILE").strip().splitlines()[0:1]
            token = token[0].strip() if token else ""
        if not token:
            raise Failure("no Linode token: set JARVIS_LINODE_TOKEN (workers.env_allow) or "
                          "JARVIS_LINODE_TOKEN_FILE (workers.env) in the configuration", 2)
        if any(c.isspace() or ord(c) < 0x21 for c in token):
            raise Failure("the Linode token has spaces or control characters in it", 2)
        self.session = requests.Session()
        self.session.trust_env = False          # no proxy or netrc of the bot's machine
        self.session.headers.update({"Authorization": f"Bearer {token}",
                                     "Accept": "application/json",
                                     "User-Agent": "jarvis-linode-worker"})
        self.verify = os.environ.get("JARVIS_LINODE_CA_FILE") or True
        wait = jw.duration_seconds(os.environ.get("JARVIS_LINODE_WAIT") or DEFAULT_WAIT,
                                   "JARVIS_LINODE_WAIT")
        design_wait = w.get("linode.wait")
        if design_wait not in (None, ""):
            wait = min(wait, jw.duration_seconds(design_wait, "linode.wait"))
        self.wait = wait
        self.deadline = time.monotonic() + wait
        self.retries = 0

    # --- one call, retried --------------------------------------------------------------------

    def _once(self, method, path, body=None, params=None, filter=None):
        headers = {}
        if filter is not None:
            headers["X-Filter"] = json.dumps(filter)
        left = self.deadline - time.monotonic()
        try:
            r = self.session.request(method, self.url + path, json=body, params=params,
                                     headers=headers, verify=self.verify,
                                     timeout=(min(10, max(1, left)), min(30, max(1, left))))
        except requests.exceptions.SSLError as e:
            raise Failure(f"cannot talk to the Linode API at {self.url}: TLS: {clean(e, 160)}", 1)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise Retryable(f"{type(e).__name__}: {clean(e, 120)}")
        if r.status_code in RETRYABLE:
            after = None
            if r.status_code == 429:
                try:
                    after = max(0.0, min(120.0, float(r.headers.get("Retry-After", ""))))
                except ValueError:
                    after = None
            raise Retryable(f"{r.status_code} {STATUS_NAMES.get(r.status_code, '')} "
                            f"({reasons(r)})".replace("  ", " "), after)
        return r

    def call(self, method, path, body=None, params=None, filter=None, ok=(200,), retry=True,
             allow=()):
        """One API call; returns the decoded JSON (or None for a status in `allow`)."""
        delay = 1.0
        while True:
            try:
                r = self._once(method, path, body, params, filter)
                break
            except Retryable as e:
                wait = e.retry_after if e.retry_after is not None else delay
                delay = min(delay * 2, 20.0)
                if not retry or time.monotonic() + wait > self.deadline:
                    raise Failure(f"the Linode API kept failing: {method} {path}: {e} "
                                  f"(gave up after {self.retries} retries within {int(self.wait)}s)",
                                  1)
                self.retries += 1
                self.w.log(f"Linode API: {method} {path}: {e}; retrying in {wait:g}s")
                time.sleep(wait)
        if r.status_code in allow:
            return None
        if r.status_code not in ok:
            why = reasons(r)
            if r.status_code == 401:
                raise ApiError(f"the Linode API refused the token (401: {why}): check "
                               "JARVIS_LINODE_TOKEN; it needs read/write access to Linodes",
                               401, why)
            if r.status_code == 403:
                raise ApiError(f"the Linode token may not do this (403: {why}): {method} {path} "
                               "needs a token with read/write access to Linodes", 403, why)
            raise ApiError(f"the Linode API refused {method} {path}: {r.status_code} "
                           f"{STATUS_NAMES.get(r.status_code, '')}: {why}".replace("  ", " "),
                           r.status_code, why)
        try:
            return r.json() if r.content else {}
        except ValueError:
            raise Failure(f"the Linode API answered {method} {path} with something that is "
                          "not JSON", 1)

    def all(self, path, filter=None):
        """Every item of a paginated list, following page/pages."""
        items, page = [], 1
        while True:
            body = self.call("GET", path, params={"page": page, "page_size": PAGE_SIZE},
                             filter=filter)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise Failure(f"the Linode API answered GET {path} without a data list", 1)
            items.extend(d for d in data if isinstance(d, dict))
            try:
                pages = int(body.get("pages", 1))
            except (TypeError, ValueError):
                pages = 1
            if page >= pages or page >= 1000:
                return items
            page += 1

    # --- what the workers need ---------------------------------------------------------------

    def by_label(self, label):
        found = [n for n in self.all("/linode/instances", filter={"label": label})
                 if n.get("label") == label]
        return found[0] if found else None

    def instance(self, node_id, missing_ok=False):
        return self.call("GET", f"/linode/instances/{int(node_id)}",
                         allow=(404,) if missing_ok else ())

    def wait_status(self, node_id, wanted, what, gone_ok=False):
        """Polls the node until its status is `wanted` (or it is gone, if gone_ok), until the
        deadline; returns the node (None if gone)."""
        delay = 1.0
        last = None
        while True:
            node = self.instance(node_id, missing_ok=True)
            if node is None:
                if gone_ok:
                    return None
                raise Failure(f"Linode {node_id} is gone while waiting for it to be {wanted}", 1)
            status = node.get("status")
            if status == wanted:
                return node
            if status != last:
                self.w.log(f"Linode {node_id} is {clean(status, 30)}; waiting for {wanted}")
                last = status
            if time.monotonic() + delay > self.deadline:
                raise Failure(f"Linode {node_id} ({self.w.host}) still {clean(status, 30)}, not "
                              f"{wanted}, after {int(self.wait)}s ({what}); see it in the "
                              "Linode manager, then retry", 1)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def job_tag(w):
    return f"jarvis-job-{jw.check_name(w.job, 'JARVIS_JOB')}"


def linode_worker(body):
    """jw.run for a linode:* task: checks the provider, builds the client."""
    def task(w):
        provider = str(w.get("instance.provider") or "")
        if provider.lower() != "linode":
            raise Failure(f"instance.provider is {provider!r}, not 'linode': {w.task} only "
                          "drives Linode", 2)
        body(w, Client(w))
    jw.run(task)


def label_of(w):
    host = w.host
    if len(host) < 3:
        raise Failure(f"instance.hostname {host!r} is too short for a Linode label (3 to 64 "
                      "characters)", 2)
    return host


def public_addresses(node):
    v4, private = None, None
    for a in node.get("ipv4") or []:
        try:
            ip = ipaddress.ip_address(str(a))
        except ValueError:
            continue
        if ip.version != 4:
            continue
        if ip in LINODE_PRIVATE:
            private = private or str(ip)
        else:
            v4 = v4 or str(ip)
    v6 = None
    raw = str(node.get("ipv6") or "").split("/")[0]
    if raw:
        try:
            v6 = str(ipaddress.IPv6Address(raw))
        except ValueError:
            v6 = None
    return v4, v6, private
