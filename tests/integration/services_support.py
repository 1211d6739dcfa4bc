"""A real IRC network with accounts for tests: InspIRCd 3 (SASL, account-notify,
extended-join, account-tag, WHOIS 330) linked to Atheme services (NickServ, SaslServ), both
in a temp dir on loopback ports, run as an unprivileged user when the test runs as root
(both refuse root). Accounts register without e-mail verification.

Its users are irc_support.Client's, with CAP/SASL (SaslClient), so they can log in."""
import atexit
import base64
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

from irc_support import Client, free_port, make_cert
from jarvis_test import fail, wait_for

INSPIRCD = "/usr/sbin/inspircd"
ATHEME = "/usr/bin/atheme-services"
MODULES = "/usr/lib/inspircd/modules"


def available():
    return os.access(INSPIRCD, os.X_OK) and os.access(ATHEME, os.X_OK)


def _unprivileged():
    """(uid, gid) to run the servers as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


class ServicesNetwork:
    """InspIRCd on .port (plain) and .tls_port (TLS, .cert), Atheme linked as services.test."""

    def __init__(self, caps="all"):
        """caps: "all" (account-tag, account-notify, extended-join), "notify" (no
        account-tag) or "none" (accounts only in WHOIS 330)."""
        self.dir = tempfile.mkdtemp(prefix="jarvis-inspircd-")
        self.port, self.tls_port, self.link_port = free_port(), free_port(), free_port()
        self.cert, self.key = make_cert(self.dir, "server")
        self.ids = _unprivileged()
        os.chmod(self.dir, 0o755)
        for f in (self.cert, self.key):
            os.chmod(f, 0o644)
        self.procs = []
        # A failing test exits at once: the servers go with it, their logs stay for reading.
        atexit.register(self.stop)
        self._write_inspircd(caps)
        self._write_atheme()
        if self.ids:
            for root, dirs, files in os.walk(self.dir):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), *self.ids)
            os.chown(self.dir, *self.ids)
        self.start()

    def _write_inspircd(self, caps):
        d = self.dir
        modules = ["cap", "ircv3", "ircv3_capnotify", "sasl", "services_account",
                   "spanningtree", "ssl_gnutls", "sslinfo"]
        if caps == "all":
            modules.append("ircv3_accounttag")
        notify = "yes" if caps in ("all", "notify") else "no"
        with open(f"{d}/motd", "w") as f:
            f.write("hello tests\n")
        with open(f"{d}/inspircd.conf", "w") as f:
            f.write(f"""<server name="irc.test" description="jarvis test server" network="JarvisTest" id="00A">
<admin name="test" nick="test" email="test@irc.test">
<path configdir="{d}" datadir="{d}" logdir="{d}" moduledir="{MODULES}" runtimedir="{d}">
<pid file="{d}/inspircd.pid">
<sslprofile name="test" provider="gnutls" certfile="{self.cert}" keyfile="{self.key}" dhfile="" hash="sha256" requestclientcert="yes">
<bind address="127.0.0.1" port="{self.port}" type="clients">
<bind address="127.0.0.1" port="{self.tls_port}" type="clients" sslprofile="test">
<bind address="127.0.0.1" port="{self.link_port}" type="servers">
<connect name="main" allow="*" timeout="60" pingfreq="120" hardsendq="1M" softsendq="1M" recvq="64K"
         threshold="1000" commandrate="100000" fakelag="no" localmax="1000" globalmax="1000"
         resolvehostnames="no" useident="no" limit="5000" modes="">
<link name="services.test" ipaddr="127.0.0.1" port="{self.link_port}" allowmask="127.0.0.0/8"
      sendpass="linkpw" recvpass="linkpw" timeout="30">
<uline server="services.test" silent="yes">
<sasl target="services.test" requiressl="no">
<ircv3 accountnotify="{notify}" awaynotify="yes" extendedjoin="{notify}">
<options prefixquit="" suffixquit="" fixedquit="" hostintopic="yes" pingwarning="15" splitwhois="no"
         exemptchanops="" invitebypassmodes="yes" nosnoticestack="no">
<security hidesplits="no" announceinvites="dynamic" hideulines="no" flatlinks="no" hidewhois=""
          hidebans="no" hidekills="" hideulinekills="yes" hidelinks="no" hidemodes="" restrictbannedusers="yes"
          genericoper="no" userstats="Pu" customversion="" runasuser="" runasgroup="">
<performance netbuffersize="10240" somaxconn="128" softlimit="12800" clonesonconnect="no" quietbursts="yes">
<limits maxnick="30" maxchan="64" maxmodes="20" maxident="11" maxhost="64" maxquit="255" maxtopic="307"
        maxkick="255" maxreal="128" maxaway="200">
<files motd="{d}/motd">
<dns server="127.0.0.1" timeout="1">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{d}/inspircd.log">
""")
            for m in modules:
                f.write(f'<module name="{m}">\n')

    def _write_atheme(self):
        d = self.dir
        modules = ["protocol/inspircd", "backend/opensex", "crypto/pbkdf2v2",
                   "nickserv/main", "nickserv/register", "nickserv/identify", "nickserv/logout",
                   "nickserv/cert", "nickserv/help", "nickserv/info",
                   "saslserv/main", "saslserv/plain", "saslserv/external"]
        with open(f"{d}/atheme.conf", "w") as f:
            for m in modules:
                f.write(f'loadmodule "modules/{m}";\n')
            f.write(f"""
serverinfo {{
    name = "services.test";
    desc = "jarvis test services";
    numeric = "00B";
    recontime = 2;
    netname = "JarvisTest";
    hidehostsuffix = "users.test";
    adminname = "test";
    adminemail = "test@irc.test";
    registeremail = "noreply@irc.test";
    auth = none;
    mta = "/bin/true";
    loglevel = {{ admin; error; info; network; register; }};
    maxlogins = 5;
    maxusers = 0;
    mdlimit = 30;
    emaillimit = 10;
    emailtime = 300;
}};
uplink "irc.test" {{
    host = "127.0.0.1";
    port = {self.link_port};
    send_password = "linkpw";
    receive_password = "linkpw";
}};
nickserv {{
    nick = "NickServ";
    user = "NickServ";
    host = "services.test";
    real = "Nickname Services";
    spam;
    maxnicks = 5;
    expire = 0;
}};
saslserv {{
    nick = "SaslServ";
    user = "SaslServ";
    host = "services.test";
    real = "SASL Authentication Agent";
}};
general {{
    helpchan = "#help";
    verbose_wallops;
    join_chans;
    leave_chans;
    uflags = {{ hidemail; }};
    cflags = {{ verbose; }};
    flood_msgs = 0;
    flood_time = 10;
    kline_time = 7;
    commit_interval = 5;
    default_clone_allowed = 1000;
    default_clone_warn = 1000;
    uplink_sendq_limit = 1048576;
    language = "en";
    maxchanacs = 0;
    mdlimit = 30;
}};
logfile "{d}/atheme.log" {{ debug; }};
""")
        # Atheme reads its database from the data dir; an empty one starts a fresh network.
        os.makedirs(f"{d}/data", exist_ok=True)

    def _spawn(self, argv, logname):
        log = open(os.path.join(self.dir, logname), "a")
        ids = self.ids

        def drop():
            if ids:
                os.setgroups([])
                os.setgid(ids[1])
                os.setuid(ids[0])
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=self.dir, preexec_fn=drop)
        self.procs.append(p)
        return p

    def start(self):
        self.ircd = self._spawn([INSPIRCD, "--config", f"{self.dir}/inspircd.conf", "--nofork", "--nopid"],
                                "inspircd.out")

        def up():
            if self.ircd.poll() is not None:
                fail("inspircd exited at start; see " + self.dir + "/inspircd.out and inspircd.log")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, 15, "inspircd to listen")
        self.services = self._spawn([ATHEME, "-n", "-c", f"{self.dir}/atheme.conf", "-D", f"{self.dir}/data",
                                     "-l", f"{self.dir}/atheme.out.log", "-p", f"{self.dir}/atheme.pid"],
                                    "atheme.out")
        wait_for(self.linked, 30, "atheme to link to inspircd (see " + self.dir + "/atheme.log)")

    def linked(self):
        if self.services.poll() is not None:
            fail("atheme exited; see " + self.dir + "/atheme.out and atheme.log")
        try:
            with open(f"{self.dir}/inspircd.log") as f:
                return "services.test" in f.read() and self._saslserv_here()
        except OSError:
            return False

    def _saslserv_here(self):
        """SaslServ is on the network (the burst is over) when a WHOIS finds it."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"NICK probe\r\nUSER probe 0 * :probe\r\n")
            buf = b""
            end = time.time() + 5
            sent = False
            while time.time() < end:
                try:
                    data = s.recv(4096)
                except OSError:
                    return False
                if not data:
                    return False
                buf += data
                if b" 001 " in buf and not sent:
                    s.sendall(b"WHOIS SaslServ\r\n")
                    sent = True
                if b" 311 probe SaslServ " in buf:
                    return True
                if b" 401 probe SaslServ " in buf:
                    return False
            return False

    def register(self, nick, password):
        """A NickServ account `nick` (no e-mail verification), then logged out again."""
        c = Client(self, nick)
        c.say("NickServ", f"REGISTER {password} {nick}@users.test")
        c.wait(lambda l: "NOTICE" in l and "registered" in l.lower(), 15, f"NickServ to register {nick}")
        c.close()
        time.sleep(0.2)

    def add_cert(self, account, password, cert, key):
        """Adds the fingerprint of a TLS client certificate to `account` (NickServ CERT ADD
        over a TLS connection made with it), for SASL EXTERNAL."""
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.load_cert_chain(cert, key)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.tls_port), timeout=10),
                             server_hostname="127.0.0.1") as s:
            buf = ""

            def until(text, what):
                nonlocal buf
                end = time.time() + 10
                while time.time() < end:
                    if text in buf:
                        return
                    data = s.recv(4096).decode(errors="replace")
                    if not data:
                        break
                    for line in data.split("\r\n"):
                        if line.startswith("PING "):
                            s.sendall(("PONG " + line[5:] + "\r\n").encode())
                    buf += data
                fail(f"timed out waiting for {what}; got:\n{buf[-2000:]}")
            s.sendall(b"NICK certadd\r\nUSER certadd 0 * :certadd\r\n")
            until(" 001 ", "registration over TLS with a client certificate")
            s.sendall(f"PRIVMSG NickServ :IDENTIFY {account} {password}\r\n".encode())
            until("You are now identified", "NickServ IDENTIFY")
            s.sendall(b"PRIVMSG NickServ :CERT ADD\r\n")
            until("to your fingerprint list", "NickServ CERT ADD")
            s.sendall(b"QUIT :done\r\n")

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class SaslClient(Client):
    """A user who asks for the account capabilities and, with a password, logs in with SASL
    PLAIN before registering. `.account_lines` is what the caps show."""

    def __init__(self, server, nick, password=None, caps="", user=None):
        self.want_password = password
        self.want_caps = caps
        super().__init__(server, nick, user=user)

    def send(self, line):
        # Client.__init__ sends NICK then USER: put CAP LS first, and SASL before CAP END.
        if line.startswith("NICK ") and not getattr(self, "_capped", False):
            self._capped = True
            super().send("CAP LS 302")
            super().send(line)
            return
        if line.startswith("USER ") and not getattr(self, "_negotiated", False):
            self._negotiated = True
            super().send(line)
            self.wait(lambda l: " CAP " in l and " LS " in l, 10, "CAP LS")
            want = (self.want_caps + (" sasl" if self.want_password else "")).strip()
            if want:
                super().send(f"CAP REQ :{want}")
                self.wait(lambda l: " CAP " in l and " ACK " in l, 10, "CAP ACK")
            if self.want_password:
                super().send("AUTHENTICATE PLAIN")
                self.wait(lambda l: l.split(" ")[-1].lstrip(":") == "+" and "AUTHENTICATE" in l, 10, "AUTHENTICATE +")
                blob = base64.b64encode(f"{self.nick}\0{self.nick}\0{self.want_password}".encode()).decode()
                super().send(f"AUTHENTICATE {blob}")
                self.wait(lambda l: " 903 " in l, 10, "SASL success")
            super().send("CAP END")
            return
        super().send(line)
