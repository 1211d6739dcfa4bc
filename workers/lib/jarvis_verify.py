"""Shared by the verify:* workers (docs/workers.md, "Verification"): the checks a design asks
for under verify.<kind>, one mapping or a list of them, each checked before it is used."""
import re
import urllib.parse

import jarvis_worker as jw


def checks(w, kind, limit=20):
    """The design's verify.<kind> as a list of dicts; Skip when the design asks for none."""
    value = w.get(f"verify.{kind}")
    if value is None or value == "" or value == []:
        raise jw.Skip(f"no verify.{kind} in the design: nothing to check")
    items = value if isinstance(value, list) else [value]
    if len(items) > limit:
        raise jw.Failure(f"verify.{kind} lists {len(items)} checks; at most {limit}", 2)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise jw.Failure(f"verify.{kind}[{i}] must be a mapping", 2)
    return items


def number(item, key, what, default, lo, hi):
    value = item.get(key, default)
    try:
        n = int(str(value))
    except ValueError:
        raise jw.Failure(f"{what}.{key} must be a whole number", 2)
    if not lo <= n <= hi:
        raise jw.Failure(f"{what}.{key} must be from {lo} to {hi}", 2)
    return n


def seconds(item, key, what, default):
    value = item.get(key)
    return default if value is None else jw.duration_seconds(value, f"{what}.{key}")


def target(w, item, what):
    """The host a check talks to: its own host:, else instance.ip, else instance.fqdn."""
    host = item.get("host") or w.get("instance.ip") or w.get("instance.fqdn")
    if not host:
        raise jw.Failure(f"{what}: no host (give host:, or instance.ip on the clipboard)", 2)
    host = str(host)
    try:
        return jw.check_ip(host, f"{what}.host")
    except jw.Failure:
        return jw.check_dns_name(host, f"{what}.host")


def shown_url(url):
    """A URL as it may be shown: no credentials, no query (tokens live there)."""
    u = urllib.parse.urlsplit(url)
    netloc = u.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if u.port:
        netloc += f":{u.port}"
    return f"{u.scheme}://{netloc}{u.path or '/'}"


def one_line(text, limit=200):
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."
