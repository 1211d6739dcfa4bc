"""A real OpenLDAP slapd for tests (temp dir, free loopback ports, StartTLS and ldaps://
with a test certificate, the jarvis schema, a few accounts and an ou of hosts). The OpenLDAP
command-line tools play the directory admin.

Run this file to check the harness itself: python3 tests/integration/ldap_support.py"""
import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

from irc_support import free_port, make_cert
from jarvis_test import check, fail, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
JARVIS_SCHEMA = os.path.join(HERE, "..", "..", "deploy", "ldap", "jarvis-schema.ldif")
SYSTEM_SCHEMAS = "/etc/ldap/schema"  # Debian's slapd package; the .ldif (cn=config) forms
MODULE_PATH = "/usr/lib/ldap"        # Debian builds the backends as modules, back_mdb too
SLAPD, SLAPADD, SLAPPASSWD = "/usr/sbin/slapd", "/usr/sbin/slapadd", "/usr/sbin/slappasswd"


def hash_password(password):
    """A salted {SSHA} hash, as an admin would store it."""
    return subprocess.run([SLAPPASSWD, "-s", password], check=True, capture_output=True,
                          text=True).stdout.strip()


def ldif_line(attr, value):
    """`attr: value`, or `attr:: base64` where plain LDIF cannot carry the value."""
    if (not value.isascii() or value[:1] in (" ", ":", "<") or value.endswith(" ")
            or "\n" in value or "\r" in value or "\0" in value):
        return f"{attr}:: {base64.b64encode(value.encode()).decode()}"
    return f"{attr}: {value}"


def parse_ldif(text):
    """ldapsearch -LLL output as [{"dn": dn, attr: [values]}], attribute names as the server
    spells them."""
    entries = []
    for record in text.split("\n\n"):
        lines = []
        for line in record.split("\n"):
            if line.startswith(" ") and lines:  # a folded line continues the previous one
                lines[-1] += line[1:]
            elif line and not line.startswith("#"):
                lines.append(line)
        entry = {}
        for line in lines:
            attr, _, value = line.partition(":")
            if value.startswith(":"):
                value = base64.b64decode(value[1:].strip()).decode(errors="replace")
            else:
                value = value[1:] if value.startswith(" ") else value
            if attr == "dn":
                entry["dn"] = value
            else:
                entry.setdefault(attr, []).append(value)
        if entry:
            entries.append(entry)
    return entries


class Slapd:
    """dc=example,dc=com with:
      cn=admin   the rootDN (self.admin_password), only in the config, not an entry
      cn=jarvis  the bot's reader account (self.reader_password): reads everything
      cn=cmdb    a writer account (self.writer_password): writes under ou=Hosts
      ou=Hosts   host entries (add_host)
    Simple binds need TLS (StartTLS or ldaps://); anonymous users see nothing."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="jarvis-slapd-")
        self.port, self.ldaps_port = free_port(), free_port()
        # 127.0.0.1, never localhost: for "localhost" libldap checks the certificate against
        # the machine's own hostname instead, and the TLS handshake fails.
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_uri = f"ldaps://127.0.0.1:{self.ldaps_port}"
        self.base = "dc=example,dc=com"
        self.hosts_ou = f"ou=Hosts,{self.base}"
        self.admin_dn, self.admin_password = f"cn=admin,{self.base}", secrets.token_hex(12)
        self.reader_dn, self.reader_password = f"cn=jarvis,{self.base}", secrets.token_hex(12)
        self.writer_dn, self.writer_password = f"cn=cmdb,{self.base}", secrets.token_hex(12)
        # The server's own certificate is the clients' CA: it is self-signed.
        self.cert, self.key = make_cert(self.dir, "slapd")
        self.ca_file = self.cert
        # The client tools read LDAPTLS_* before ldap.conf, whose TLS_CACERT is the system
        # bundle on Debian; demand makes a bad certificate or name an error, as in production.
        self.env = dict(os.environ, LDAPTLS_CACERT=self.ca_file, LDAPTLS_REQCERT="demand")
        self.config_dir = os.path.join(self.dir, "slapd.d")
        self.data_dir = os.path.join(self.dir, "data")
        os.makedirs(self.config_dir)
        os.makedirs(self.data_dir)
        self._hosts = 0
        self._load(self._config_ldif(), "config.ldif", "-n0")
        # The initial entries go in offline: slapadd needs no bind, so no TLS either.
        self._load(self._data_ldif(), "data.ldif", "-b", self.base)
        self.proc = None
        self.start()

    def _config_ldif(self):
        schemas = [os.path.join(SYSTEM_SCHEMAS, f"{name}.ldif")
                   for name in ("core", "cosine", "nis", "inetorgperson")] + [JARVIS_SCHEMA]
        schema_text = ""
        for path in schemas:
            with open(path) as f:
                schema_text += f.read().strip() + "\n\n"
        return f"""dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {self.dir}/slapd.pid
olcArgsFile: {self.dir}/slapd.args
olcTLSCertificateFile: {self.cert}
olcTLSCertificateKeyFile: {self.key}
olcSecurity: simple_bind=128

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_PATH}
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schema_text}dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {self.base}
olcRootDN: {self.admin_dn}
olcRootPW: {hash_password(self.admin_password)}
olcDbDirectory: {self.data_dir}
olcDbMaxSize: {64 * 1024 * 1024}
olcDbIndex: objectClass eq
olcDbIndex: cn,associatedDomain eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to dn.subtree="{self.hosts_ou}" by dn.exact="{self.writer_dn}" write
  by users read by * none
olcAccess: {{2}}to * by users read by * none
"""

    def _data_ldif(self):
        return f"""dn: {self.base}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {self.hosts_ou}
objectClass: organizationalUnit
ou: Hosts

dn: {self.reader_dn}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: jarvis
description: the jarvis bot
userPassword: {hash_password(self.reader_password)}

dn: {self.writer_dn}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: cmdb
description: the inventory, which owns the host entries
userPassword: {hash_password(self.writer_password)}
"""

    def _load(self, ldif, name, *where):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(ldif)
        p = subprocess.run([SLAPADD, "-F", self.config_dir, *where, "-l", path],
                           capture_output=True, text=True)
        if p.returncode != 0:
            fail(f"slapadd {name} exited {p.returncode}:\n{p.stdout}{p.stderr}")

    def start(self):
        self.log_path = os.path.join(self.dir, "slapd.log")
        self.log = open(self.log_path, "a")
        # -d keeps slapd in the foreground (so the test owns the process); "stats" logs one
        # line per connection and operation, which is what a failing test's log needs.
        self.proc = subprocess.Popen([SLAPD, "-F", self.config_dir, "-h",
                                      f"{self.uri}/ {self.ldaps_uri}/", "-d", "stats"],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                fail(f"slapd exited {self.proc.returncode}; log:\n{self.log_tail()}")
            return self.tool("ldapwhoami").returncode == 0
        wait_for(up, 15, "slapd to answer a StartTLS bind")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()

    def restart(self):
        """Same ports, same data."""
        self.stop()
        self.start()

    def cleanup(self, ok=True):
        """Stop; remove the temp dir only if the test passed (else keep it for reading)."""
        self.stop()
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"slapd files kept in {self.dir}", file=sys.stderr)

    def log_tail(self, lines=30):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def tool(self, name, *args, bind=None, uri=None, starttls=True, input=None):
        """Runs an OpenLDAP client tool with a simple bind: as the admin unless
        bind=(dn, password); StartTLS required unless starttls=False (moot on ldaps://)."""
        dn, password = bind or (self.admin_dn, self.admin_password)
        uri = uri or self.uri
        tls = ["-ZZ"] if starttls and uri.startswith("ldap://") else []
        return subprocess.run([name, "-x", *tls, "-H", uri, "-D", dn, "-w", password, *args],
                              input=input, env=self.env, capture_output=True, text=True,
                              timeout=30)

    def _write(self, name, ldif, bind=None):
        p = self.tool(name, bind=bind, input=ldif)
        if p.returncode != 0:
            fail(f"{name} exited {p.returncode}: {p.stderr.strip()}\nLDIF:\n{ldif}")

    def add(self, ldif, bind=None):
        self._write("ldapadd", ldif, bind)

    def modify(self, ldif, bind=None):
        self._write("ldapmodify", ldif, bind)

    def add_host(self, cn, fqdn=None, ip=None, provider=None, size=None, locality=None,
                 description=None, extra_ldif=""):
        """Adds cn=<cn>,ou=Hosts as a site's inventory would hold it (device + ipHost +
        domainRelatedObject, plus jarvisHost); `description` may be a list. extra_ldif is
        more `attr: value` lines for the entry. Returns the DN."""
        n, self._hosts = self._hosts, self._hosts + 1
        dn = f"cn={cn},{self.hosts_ou}"
        lines = [f"dn: {dn}", "objectClass: device", "objectClass: ipHost",
                 "objectClass: domainRelatedObject", "objectClass: jarvisHost",
                 ldif_line("cn", cn),
                 # ipHost and domainRelatedObject require these
                 f"ipHostNumber: {ip or f'10.0.{n // 250}.{n % 250 + 1}'}",
                 ldif_line("associatedDomain", fqdn or f"{cn}.example.com")]
        for attr, value in (("jarvisProvider", provider), ("jarvisSize", size),
                            ("l", locality)):
            if value is not None:
                lines.append(ldif_line(attr, value))
        if isinstance(description, str):
            description = [description]
        lines += [ldif_line("description", d) for d in description or ()]
        # A blank line would end the entry early.
        lines += [l for l in extra_ldif.strip().split("\n") if l.strip()]
        self.add("\n".join(lines) + "\n")
        return dn

    def search(self, base, filter="(objectClass=*)", scope="base", attrs=(), bind=None):
        """[{"dn": dn, attr: [values]}]; [] if `base` does not exist (or is hidden)."""
        p = self.tool("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b", base, "-s", scope,
                      filter, *attrs, bind=bind)
        if p.returncode == 32:  # noSuchObject
            return []
        if p.returncode != 0:
            fail(f"ldapsearch {base} {filter} exited {p.returncode}: {p.stderr.strip()}")
        return parse_ldif(p.stdout)


if __name__ == "__main__":
    s = Slapd()
    ok = False
    try:
        dn = s.add_host("web1", provider="vsphere", size="small", locality="dc1",
                        description=["first", "zweite Beschreibung: grün"],
                        extra_ldif="jarvisSshFingerprint: SHA256:abcDEF\n"
                                   "jarvisSshFingerprint: SHA256:ghiJKL\n")
        [entry] = s.search(dn)
        check(entry["dn"] == dn, f"dn: {entry}")
        check(entry["jarvisProvider"] == ["vsphere"] and entry["jarvisSize"] == ["small"]
              and entry["l"] == ["dc1"] and entry["ipHostNumber"] == ["10.0.0.1"]
              and entry["associatedDomain"] == ["web1.example.com"], f"attributes: {entry}")
        check(sorted(entry["description"]) == ["first", "zweite Beschreibung: grün"],
              f"descriptions: {entry}")
        check(len(entry["jarvisSshFingerprint"]) == 2, f"fingerprints: {entry}")

        reader = (s.reader_dn, s.reader_password)
        writer = (s.writer_dn, s.writer_password)
        hosts = s.search(s.hosts_ou, "(&(objectClass=jarvisHost)(associatedDomain=web1.*))",
                         "sub", ["cn", "jarvisSize"], bind=reader)
        check([h["cn"] for h in hosts] == [["web1"]], f"reader's search: {hosts}")
        [other] = s.search(s.reader_dn, bind=writer)
        check("userPassword" not in other, f"writer sees the reader's password: {other}")

        change = f"dn: {dn}\nchangetype: modify\nreplace: jarvisUpdatedByJob\n" \
                 "jarvisUpdatedByJob: job-1\n"
        s.modify(change, bind=writer)
        p = s.tool("ldapmodify", bind=reader, input=change)
        check(p.returncode == 50 and "Insufficient access (50)" in p.stderr,
              f"reader wrote a host: {p.returncode} {p.stderr}")

        p = s.tool("ldapwhoami", bind=reader, starttls=False)
        check(p.returncode == 13 and "Confidentiality required (13)" in p.stderr,
              f"plaintext bind: {p.returncode} {p.stderr}")
        p = s.tool("ldapwhoami", bind=(s.reader_dn, "wrong"))
        check(p.returncode == 49 and "Invalid credentials (49)" in p.stderr,
              f"wrong password: {p.returncode} {p.stderr}")
        p = subprocess.run(["ldapsearch", "-x", "-H", s.uri, "-b", s.base, "-LLL"],
                           env=s.env, capture_output=True, text=True, timeout=30)
        check(p.returncode == 32 and not p.stdout.strip(),
              f"anonymous search: {p.returncode} {p.stdout} {p.stderr}")

        p = s.tool("ldapwhoami", bind=reader, uri=s.ldaps_uri)
        check(p.returncode == 0 and p.stdout.strip() == f"dn:{s.reader_dn}",
              f"ldaps bind: {p.returncode} {p.stdout} {p.stderr}")
        # A client that does not trust the test certificate must be turned away.
        p = subprocess.run(["ldapwhoami", "-x", "-H", s.ldaps_uri],
                           env=dict(s.env, LDAPTLS_CACERT="/etc/ssl/certs/ca-certificates.crt"),
                           capture_output=True, text=True, timeout=30)
        check(p.returncode != 0, f"ldaps with an untrusted certificate: {p.stdout}")

        s.restart()
        [entry] = s.search(dn, attrs=["jarvisUpdatedByJob"], bind=reader)
        check(entry.get("jarvisUpdatedByJob") == ["job-1"], f"after restart: {entry}")
        ok = True
    finally:
        s.cleanup(ok)
    print("ldap_support: ok")
