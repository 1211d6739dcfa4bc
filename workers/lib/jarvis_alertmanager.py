"""Prometheus Alertmanager's API v2, for monitoring:suppress and monitoring:enable.

Settings: the design's `monitoring:` mapping, else the environment:

    monitoring.alertmanager  JARVIS_ALERTMANAGER_URL   http(s)://host:port (required)
    monitoring.token_file    JARVIS_ALERTMANAGER_TOKEN_FILE   a bearer token, first line
                             JARVIS_ALERTMANAGER_TOKEN        or the token itself
    monitoring.ca_file       JARVIS_ALERTMANAGER_CA_FILE      CA bundle for https
    monitoring.timeout       JARVIS_ALERTMANAGER_TIMEOUT      per request, default 10s
"""
import os
import re

import jarvis_worker as jw


class Alertmanager:
    def __init__(self, w):
        import requests
        self.requests = requests
        url = w.setting("monitoring.alertmanager", "JARVIS_ALERTMANAGER_URL")
        if not url:
            raise jw.Failure("no Alertmanager configured: set monitoring.alertmanager in the "
                             "design or JARVIS_ALERTMANAGER_URL in workers.env", 2)
        url = jw.check_word(url, "monitoring.alertmanager", 512).rstrip("/")
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?", url):
            raise jw.Failure("monitoring.alertmanager must be an http:// or https:// URL "
                             "without credentials or query (http://alertmanager:9093)", 2)
        self.url = url
        self.timeout = jw.duration_seconds(
            w.setting("monitoring.timeout", "JARVIS_ALERTMANAGER_TIMEOUT", "10s"), "monitoring.timeout")
        self.headers = {"Accept": "application/json"}
        token = os.environ.get("JARVIS_ALERTMANAGER_TOKEN")
        token_file = w.setting("monitoring.token_file", "JARVIS_ALERTMANAGER_TOKEN_FILE")
        if token_file:
            token = jw.read_secret_file(token_file, "monitoring.token_file").strip().splitlines()[0]
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        ca = w.setting("monitoring.ca_file", "JARVIS_ALERTMANAGER_CA_FILE")
        self.verify = jw.check_line(ca, "monitoring.ca_file") if ca else True

    def call(self, method, path, what, ok=(200,), **kw):
        try:
            r = self.requests.request(method, self.url + path, headers=self.headers,
                                      timeout=self.timeout, verify=self.verify,
                                      allow_redirects=False, **kw)
        except self.requests.exceptions.ConnectionError as e:
            why = "connection refused" if "refused" in str(e).lower() else "could not connect"
            raise jw.Failure(f"Alertmanager at {self.url} could not be reached to {what}: {why} "
                             "(is it up, and is monitoring.alertmanager right?)", 1)
        except self.requests.exceptions.Timeout:
            raise jw.Failure(f"Alertmanager at {self.url} did not answer within "
                             f"{self.timeout:g}s to {what}", 1)
        except self.requests.exceptions.RequestException as e:
            raise jw.Failure(f"Alertmanager at {self.url}: {what} failed: {type(e).__name__}", 1)
        if r.status_code not in ok:
            body = " ".join(r.text.split())[:200]
            hint = {401: " (the token was not accepted)", 403: " (the token may not do this)"}
            raise jw.Failure(f"Alertmanager at {self.url} refused to {what}: HTTP "
                             f"{r.status_code}{hint.get(r.status_code, '')}: {body}", 1)
        return r

    def silences(self):
        r = self.call("GET", "/api/v2/silences", "list silences")
        try:
            data = r.json()
        except ValueError:
            raise jw.Failure(f"Alertmanager at {self.url} answered the silence list with "
                             "something that is not JSON: is that URL an Alertmanager?", 1)
        if not isinstance(data, list):
            raise jw.Failure(f"Alertmanager at {self.url}: the silence list is not a list", 1)
        return data

    def silence(self, sid):
        """The silence, or None if Alertmanager does not know it."""
        r = self.call("GET", f"/api/v2/silence/{sid}", f"read silence {sid}", ok=(200, 404))
        return None if r.status_code == 404 else r.json()

    def create(self, body):
        r = self.call("POST", "/api/v2/silences", "create a silence", json=body)
        return r.json().get("silenceID")

    def expire(self, sid):
        r = self.call("DELETE", f"/api/v2/silence/{sid}", f"expire silence {sid}",
                      ok=(200, 404, 500))
        return r.status_code
