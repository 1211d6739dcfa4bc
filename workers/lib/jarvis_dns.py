"""RFC 2136 dynamic updates signed with TSIG, for dns:update and services:migrate.

Works with any server that takes RFC 2136 updates (BIND, Knot, PowerDNS). Settings come
from the design's `dns:` mapping, else from the environment (the configuration's
workers.env or workers.env_allow):

    dns.server    JARVIS_DNS_SERVER     the primary's address or name (required)
    dns.port      JARVIS_DNS_PORT       default 53
    dns.zone      JARVIS_DNS_ZONE       default: instance.fqdn without its first label
    dns.key_name  JARVIS_DNS_KEY_NAME   default: the name in the key file
    dns.key_file  JARVIS_DNS_KEY_FILE   a BIND key file (tsig-keygen's output), 0600
                  JARVIS_DNS_KEY_SECRET or the secret itself, base64, environment only
    dns.ttl       JARVIS_DNS_TTL        default 300
    dns.timeout   JARVIS_DNS_TIMEOUT    per query, default 10s

The secret is never logged or put on the clipboard. Updates and checks go over TCP to the
server named (the primary), not through a resolver.
"""
import os
import re
import socket

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

import jarvis_worker as jw

ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256, "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512, "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}
_KEY_RE = re.compile(r'key\s+"?([A-Za-z0-9._-]+)"?\s*\{(.*?)\}\s*;', re.S)


def parse_key_file(text, path):
    """(name, algorithm, secret) from a BIND key file. Errors never quote the file."""
    m = _KEY_RE.search(text)
    if not m:
        raise jw.Failure(f"dns.key_file {path} is not a BIND key file (key \"name\" "
                         "{ algorithm hmac-sha256; secret \"...\"; }; as tsig-keygen writes)", 2)
    name, body = m.group(1), m.group(2)
    algo = re.search(r"algorithm\s+\"?([A-Za-z0-9-]+)\"?\s*;", body)
    secret = re.search(r"secret\s+\"([A-Za-z0-9+/=]+)\"\s*;", body)
    if not secret:
        raise jw.Failure(f"dns.key_file {path}: key {name} has no secret \"...\"; line", 2)
    algorithm = (algo.group(1) if algo else "hmac-sha256").lower()
    if algorithm not in ALGORITHMS:
        raise jw.Failure(f"dns.key_file {path}: algorithm {algorithm} is not one of "
                         f"{', '.join(ALGORITHMS)}", 2)
    return name, algorithm, secret.group(1)


class Server:
    """One RFC 2136 primary and the TSIG key to sign with."""

    def __init__(self, w, zone_default):
        server = w.setting("dns.server", "JARVIS_DNS_SERVER")
        if not server:
            raise jw.Failure("no DNS server configured: set dns.server in the design or "
                             "JARVIS_DNS_SERVER in workers.env", 2)
        server = jw.check_line(server, "dns.server", 253)
        try:
            self.address = jw.check_ip(server, "dns.server")
        except jw.Failure:
            name = jw.check_dns_name(server, "dns.server")
            try:
                self.address = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0]
            except OSError as e:
                raise jw.Failure(f"dns.server {name} does not resolve: {e}", 1)
        self.port = jw.check_port(w.setting("dns.port", "JARVIS_DNS_PORT", 53), "dns.port")
        self.where = f"{self.address}:{self.port}" if ":" not in self.address \
            else f"[{self.address}]:{self.port}"
        self.zone = jw.check_dns_name(w.setting("dns.zone", "JARVIS_DNS_ZONE", zone_default),
                                      "dns.zone")
        self.ttl = int(jw.duration_seconds(w.setting("dns.ttl", "JARVIS_DNS_TTL", 300), "dns.ttl"))
        self.timeout = jw.duration_seconds(w.setting("dns.timeout", "JARVIS_DNS_TIMEOUT", "10s"),
                                           "dns.timeout")
        key_file = w.setting("dns.key_file", "JARVIS_DNS_KEY_FILE")
        key_name = w.setting("dns.key_name", "JARVIS_DNS_KEY_NAME")
        algorithm = str(w.setting("dns.key_algorithm", "JARVIS_DNS_KEY_ALGORITHM",
                                  "hmac-sha256")).lower()
        secret = os.environ.get("JARVIS_DNS_KEY_SECRET")
        if key_file:
            name, algorithm, secret = parse_key_file(jw.read_secret_file(key_file, "dns.key_file"),
                                                     key_file)
            key_name = key_name or name
        if not secret:
            raise jw.Failure("no TSIG key configured: set dns.key_file (a tsig-keygen file) in "
                             "the design, or JARVIS_DNS_KEY_FILE / JARVIS_DNS_KEY_SECRET", 2)
        if not key_name:
            raise jw.Failure("no TSIG key name: set dns.key_name or JARVIS_DNS_KEY_NAME", 2)
        self.key_name = str(key_name).rstrip(".")
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,252})", self.key_name):
            raise jw.Failure("dns.key_name is not a key name (letters, digits, '.', '-', '_')", 2)
        if algorithm not in ALGORITHMS:
            raise jw.Failure(f"dns.key_algorithm {algorithm} is not one of {', '.join(ALGORITHMS)}", 2)
        try:
            self.key = dns.tsig.Key(self.key_name, secret, ALGORITHMS[algorithm])
        except Exception:
            raise jw.Failure(f"the secret of TSIG key {self.key_name} is not valid base64", 2)

    def in_zone(self, fqdn, what):
        if not (fqdn == self.zone or fqdn.endswith("." + self.zone)):
            raise jw.Failure(f"{what} {fqdn} is not in zone {self.zone} (dns.zone)", 2)
        return fqdn

    def _ask(self, message, what):
        try:
            return dns.query.tcp(message, self.address, port=self.port, timeout=self.timeout)
        except dns.tsig.PeerBadKey:
            raise jw.Failure(f"the server refused the {what}: NOTAUTH (TSIG key {self.key_name} "
                             f"not accepted by {self.where}: the server does not know that key "
                             "name)", 1)
        except dns.tsig.PeerBadSignature:
            raise jw.Failure(f"the server refused the {what}: NOTAUTH (TSIG key {self.key_name} "
                             f"not accepted by {self.where}: bad signature, the secret differs "
                             "from the server's)", 1)
        except dns.tsig.PeerBadTime:
            raise jw.Failure(f"the server refused the {what}: NOTAUTH (TSIG key {self.key_name}: "
                             f"{self.where} says our clock is off: check NTP here and there)", 1)
        except dns.exception.Timeout:
            raise jw.Failure(f"the DNS server {self.where} did not answer the {what} within "
                             f"{self.timeout:g}s", 1)
        except ConnectionRefusedError:
            raise jw.Failure(f"the DNS server {self.where} refused the connection (is it up, "
                             "and is dns.port right?)", 1)
        except (OSError, EOFError) as e:
            raise jw.Failure(f"the DNS server {self.where} could not be reached for the {what}: "
                             f"{getattr(e, 'strerror', None) or e}", 1)
        except dns.exception.DNSException as e:
            raise jw.Failure(f"the DNS server {self.where} sent an answer to the {what} that "
                             f"could not be read: {e}", 1)

    def lookup(self, fqdn, rdtype):
        """The set of record texts of type rdtype at fqdn, asked of the primary itself,
        and their TTL (None if there are none)."""
        q = dns.message.make_query(fqdn + ".", rdtype)
        q.flags &= ~dns.flags.RD
        q.use_tsig(self.key)
        r = self._ask(q, f"query for {fqdn} {rdtype}")
        code = r.rcode()
        if code == dns.rcode.REFUSED:
            raise jw.Failure(f"the DNS server {self.where} refused a query for {fqdn}: is it "
                             f"the primary for zone {self.zone}?", 1)
        if code not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise jw.Failure(f"the DNS server {self.where} answered {dns.rcode.to_text(code)} "
                             f"to a query for {fqdn} {rdtype}", 1)
        want = dns.name.from_text(fqdn + ".")
        for rrset in r.answer:
            if rrset.name == want and rrset.rdtype == dns.rdatatype.from_text(rdtype):
                return {rd.to_text() for rd in rrset}, rrset.ttl
        return set(), None

    def serial(self, zone=None):
        texts, _ = self.lookup(zone or self.zone, "SOA")
        return int(next(iter(texts)).split()[2]) if texts else None

    def current(self, fqdn, rdtypes):
        """{type: (set of texts, ttl)} for each type that has records at fqdn."""
        found = {}
        for t in rdtypes:
            texts, ttl = self.lookup(fqdn, t)
            if texts:
                found[t] = (texts, ttl)
        return found

    def update(self, changes, what, zone=None):
        """changes: [(fqdn, [types to delete], [(type, text), ...] to add)], in one signed
        message (the server applies it all or nothing)."""
        u = dns.update.UpdateMessage((zone or self.zone) + ".", keyring=self.key)
        for fqdn, delete, add in changes:
            name = dns.name.from_text(fqdn + ".")
            for t in delete:
                if t == "ANY":
                    u.delete(name)
                else:
                    u.delete(name, t)
            for t, text in add:
                u.add(name, self.ttl, t, text)
        r = self._ask(u, what)
        code = r.rcode()
        if code != dns.rcode.NOERROR:
            hint = {
                dns.rcode.REFUSED: f"{self.where} does not allow updates of zone {self.zone} "
                                   f"with key {self.key_name} (allow-update / update-policy)",
                dns.rcode.NOTAUTH: f"{self.where} is not authoritative for zone {self.zone}, "
                                   f"or TSIG key {self.key_name} was not accepted",
                dns.rcode.NOTZONE: f"a name is outside zone {self.zone}",
                dns.rcode.SERVFAIL: f"{self.where} failed; see its log",
            }.get(code, "")
            raise jw.Failure(f"the server refused the {what}: {dns.rcode.to_text(code)}"
                             + (f" ({hint})" if hint else ""), 1)


def canonical(rdtype, text):
    """A record's data as the server will print it back (so sets compare)."""
    rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=dns.name.root)
    return rd.to_text()


def absolute(name):
    return name.rstrip(".") + "."
