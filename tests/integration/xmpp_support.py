"""A real Prosody for tests (temp dir, a free loopback c2s port, STARTTLS with a test
certificate, a MUC component with history) and a small slixmpp client that plays the users.

Server (Prosody 0.12):
  - domain "localhost", MUC "conference.localhost"; c2s on 127.0.0.1:<free port> only, STARTTLS
    required (no direct TLS port), no s2s, no HTTP, no component port;
  - accounts: internal_hashed (SCRAM); `register(user, password)` uses prosodyctl, which writes
    the account store directly (works while the server runs);
  - rooms: created by whoever joins first (that user becomes owner), unlocked at once (no
    XEP-0045 "instant room" dance: muc_room_locking = false), persistent (they survive the
    last occupant leaving and a Prosody restart, with their config; the in-memory history does
    not survive a restart), non-anonymous (every occupant sees every real JID:
    muc_room_default_public_jids = true) and with 20 messages of history replayed to joiners
    (XEP-0203 <delay xmlns="urn:xmpp:delay" from="room@conference.localhost" stamp=.../>);
  - semi-anonymous rooms (real JIDs visible to moderators only), two ways:
      Prosody(semianonymous_rooms=["anon"]) pre-creates anon@conference.localhost, owned by
      nobody who joins (owner@localhost), so every joiner -- the bot included -- is a plain
      participant and sees no real JIDs, whoever joins first;
      Client.configure_room_anonymous(room) as the owner (first joiner) of a room; do it before
      the others join (occupants already seen keep their known JIDs), and note the owner itself
      is a moderator and still sees everyone's JID.

Client: an XMPP user on its own asyncio loop in a daemon thread; every public method is
synchronous and may be called from any thread. Received messages are kept as Msg tuples
(kind, from_jid, room, nick, text, delayed) until an expect() consumes them."""
import asyncio
import collections
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from jarvis_test import check, fail, wait_for
from irc_support import free_port, make_cert

logging.getLogger("slixmpp").setLevel(logging.ERROR)  # not "Using slower stringprep" etc.
try:
    import slixmpp
except ImportError:  # CMake may pick a Python (pyenv, venv) without Debian's python3-slixmpp
    sys.path.append("/usr/lib/python3/dist-packages")
    import slixmpp
from slixmpp import JID  # noqa: E402

DOMAIN = "localhost"
MUC = "conference.localhost"

# Semi-anonymous rooms given to Prosody(semianonymous_rooms=...): created at start-up, owned by
# an account nobody logs in as, so joiners are participants (not moderators).
_TEST_ROOMS_MODULE = """-- jarvis tests: pre-created semi-anonymous rooms
local mod_muc = module:depends"muc";
local names = module:get_option_array("jarvis_semianonymous_rooms", {});
local owner = module:get_option_string("jarvis_room_owner", "owner@localhost");
module:hook_global("server-started", function ()
\tfor _, name in ipairs(names) do
\t\tlocal room_jid = name .. "@" .. module.host;
\t\tlocal room = mod_muc.get_room_from_jid(room_jid) or mod_muc.create_room(room_jid);
\t\troom:set_whois("moderators");
\t\troom:set_persistent(true);
\t\troom:set_affiliation(true, owner, "owner");
\t\troom:save(true);
\t\tmodule:log("info", "semi-anonymous test room %s ready", room_jid);
\tend
\tmodule:log("info", "jarvis-test: server started");
end);
"""


_STARTED = "jarvis-test: server started"


class Prosody:
    def __init__(self, semianonymous_rooms=(), log_level="debug", extra_mucs=()):
        """extra_mucs: more MUC components with the same defaults ("rooms.elsewhere.test"),
        as a room service on another server would look to the bot."""
        self.dir = tempfile.mkdtemp(prefix="jarvis-prosody-")
        self.port = free_port()
        self.domain, self.muc = DOMAIN, MUC
        self.mucs = [MUC, *extra_mucs]
        self.cert, self.key = make_cert(self.dir, "localhost")
        self.data = os.path.join(self.dir, "data")
        self.plugins = os.path.join(self.dir, "plugins")
        os.makedirs(self.data)
        os.makedirs(self.plugins)
        os.makedirs(os.path.join(self.dir, "certs"))
        with open(os.path.join(self.plugins, "mod_jarvis_test_rooms.lua"), "w") as f:
            f.write(_TEST_ROOMS_MODULE)
        os.chmod(self.dir, 0o755)
        for f in (self.cert, self.key):
            os.chmod(f, 0o644)
        self.log_path = os.path.join(self.dir, "prosody.log")
        self.out_path = os.path.join(self.dir, "prosody.out")  # stdout/stderr (early errors)
        self.config = os.path.join(self.dir, "prosody.cfg.lua")
        rooms = ", ".join(f'"{r}"' for r in semianonymous_rooms)
        with open(self.config, "w") as f:
            f.write(f"""-- jarvis integration tests
run_as_root = true  -- the CI runs the tests as root; harmless as a normal user
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.data}"
plugin_paths = {{ "{self.plugins}" }}
certificates = "{self.dir}/certs"  -- empty: only the explicit ssl below
log = {{ {{ levels = {{ min = "{log_level}" }}, to = "file", filename = "{self.log_path}" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
c2s_require_encryption = true
s2s_require_encryption = true
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "posix" }}
modules_disabled = {{ "s2s", "dialback", "offline", "http" }}
ssl = {{ certificate = "{self.cert}", key = "{self.key}" }}

VirtualHost "{DOMAIN}"
    ssl = {{ certificate = "{self.cert}", key = "{self.key}" }}

Component "{MUC}" "muc"
    modules_enabled = {{ "jarvis_test_rooms" }}
    muc_room_locking = false
    muc_room_default_public_jids = true
    muc_room_default_persistent = true
    muc_room_default_history_length = 20
    muc_tombstones = false
    jarvis_semianonymous_rooms = {{ {rooms} }}
    jarvis_room_owner = "owner@{DOMAIN}"
""" + "".join(f"""
Component "{muc}" "muc"
    muc_room_locking = false
    muc_room_default_public_jids = true
    muc_room_default_persistent = true
    muc_tombstones = false
""" for muc in extra_mucs))
        self.proc = None
        self.start()

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def start(self):
        started = self._read(self.log_path).count(_STARTED)
        out = open(self.out_path, "a")
        self.proc = subprocess.Popen(["prosody", "--config", self.config, "-F"],
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir)
        out.close()
        # The c2s port opens before "server-started" fires (when the semi-anonymous rooms are
        # made): wait for both.
        end = time.time() + 20
        while time.time() < end:
            if self.proc.poll() is not None:
                fail(f"prosody exited with {self.proc.returncode} at start-up:\n"
                     + self._read(self.out_path)[-3000:] + "\n" + self.log_tail(30))
            if self._read(self.log_path).count(_STARTED) > started and self._listening():
                return
            time.sleep(0.05)
        fail("prosody did not start within 20 s:\n" + self.log_tail(30))

    @staticmethod
    def _read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        wait_for(lambda: not self._listening(), 10, "prosody's port to close")

    def restart(self):
        """Same port, same accounts (and persistent rooms); connected clients are dropped."""
        self.stop()
        self.start()

    def register(self, user, password):
        p = subprocess.run(["prosodyctl", "--config", self.config, "register", user, DOMAIN,
                            password], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, cwd=self.dir)
        check(p.returncode == 0, f"prosodyctl register {user} failed ({p.returncode}):\n"
              f"{p.stdout}\n{p.stderr}")
        return f"{user}@{DOMAIN}"

    def jid(self, user):
        return f"{user}@{DOMAIN}"

    def room_jid(self, room):
        return room if "@" in room else f"{room}@{MUC}"

    def sasl_mechanisms(self):
        """The SASL mechanisms offered after STARTTLS (probed with a raw stream)."""
        return _probe_mechanisms(self.port, self.cert)

    def log_tail(self, n=40):
        lines = self._read(self.log_path).splitlines()
        return f"--- last {min(n, len(lines))} lines of {self.log_path}\n" + "\n".join(lines[-n:])

    def cleanup(self):
        """At the end of a passing test: stop and remove the temp dir (a failing test exits
        before this and leaves its logs for reading)."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _probe_mechanisms(port, cafile):
    header = (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
              "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").encode()

    def read_until(sock, marker):
        data = b""
        end = time.time() + 10
        while marker not in data and time.time() < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(header)
        read_until(raw, b"</stream:features>")
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        check("<proceed" in read_until(raw, b"proceed"), "STARTTLS was not accepted")
        ctx = ssl.create_default_context(cafile=cafile)
        with ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            tls.sendall(header)
            features = read_until(tls, b"</stream:features>")
    return re.findall(r"<mechanism>([^<]+)</mechanism>", features)


Msg0 = collections.namedtuple("Msg", "kind from_jid room nick text delayed")


class Msg(Msg0):
    """kind: "chat" (1:1; also "normal"/"headline" as sent), "groupchat", "private" (a
    private message from a room occupant) or "error"; from_jid: the sender's bare JID for
    chats, the occupant JID room@muc/nick for groupchat and private messages; room: the room
    local part or None; nick: the occupant nick or None; delayed: the message carries an
    XEP-0203 <delay/> (history replay). `xml` holds the stanza as received."""
    xml = ""


class _Xmpp(slixmpp.ClientXMPP):
    def __init__(self, jid, password, port):
        super().__init__(jid, password)
        self._test_port = port

    async def get_dns_records(self, domain, port=None):
        # Never resolve "localhost" (nor look up SRV records): the test server's address.
        return [(domain, "127.0.0.1", self._test_port)]


class Client:
    """A user on the test server (slixmpp on its own loop in a daemon thread)."""

    def __init__(self, server, user, password, resource="test", timeout=20):
        self.server = server
        self.user = user
        self.jid = f"{user}@{server.domain}"
        self.full_jid = f"{self.jid}/{resource}"
        self.password = password
        self.messages = []  # Msg, in arrival order, until consumed
        self.lock = threading.Condition()
        self.rooms = {}  # room JID -> our nick
        self._errors = []
        self._session = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"xmpp-{user}")
        self.thread.start()
        self.xmpp = self._call(self._make(), 10)
        self.connect(timeout)

    # -- plumbing -------------------------------------------------------------------------
    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro, timeout=20):
        """Run a coroutine on the client's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _make(self):
        x = _Xmpp(self.full_jid, self.password, self.server.port)
        x.loop = self.loop
        x.ca_certs = self.server.cert
        x.register_plugin("xep_0030")
        x.register_plugin("xep_0045")
        x.register_plugin("xep_0199")
        x.register_plugin("xep_0203")
        x.add_event_handler("session_start", self._on_session_start)
        x.add_event_handler("message", self._on_message)
        x.add_event_handler("message_error", self._on_message_error)
        x.add_event_handler("presence_available", self._on_presence)
        x.add_event_handler("failed_auth", lambda *_: self._errors.append("authentication failed"))
        x.add_event_handler("connection_failed",
                            lambda e: self._errors.append(f"connection failed: {e}"))
        x.add_event_handler("ssl_invalid_chain",
                            lambda e: self._errors.append(f"TLS certificate rejected: {e}"))
        x.add_event_handler("stream_error",
                            lambda e: self._errors.append(f"stream error: {e}"))
        x.add_event_handler("session_end", lambda *_: self._session.clear())
        x.add_event_handler("disconnected", lambda *_: self._session.clear())
        return x

    def _on_session_start(self, _event):
        self.xmpp.send_presence()

    def _on_presence(self, pres):
        # Prosody echoes our initial presence once it has made us available: only then are
        # messages to our bare JID delivered (rather than bounced: no offline storage).
        if pres["from"] == self.xmpp.boundjid and pres["type"] in ("available", ""):
            self._session.set()

    def _on_message_error(self, msg):
        m = Msg("error", msg["from"].bare, None, None,
                f"{msg['error']['condition']}: {msg['error']['text'] or msg['body']}",
                False)
        m.xml = str(msg)
        with self.lock:
            self.messages.append(m)
            self.lock.notify_all()

    def _on_message(self, msg):
        mtype = msg["type"]
        if mtype == "error":
            return  # _on_message_error
        frm = msg["from"]
        delayed = msg.xml.find("{urn:xmpp:delay}delay") is not None
        room = nick = None
        if mtype == "groupchat":
            kind, room, nick, from_jid = "groupchat", frm.user, frm.resource or None, str(frm)
        elif frm.domain == self.server.muc and frm.resource:
            kind, room, nick, from_jid = "private", frm.user, frm.resource, str(frm)
        else:
            kind, from_jid = mtype or "normal", frm.bare
        m = Msg(kind, from_jid, room, nick, msg["body"], delayed)
        m.xml = str(msg)
        with self.lock:
            self.messages.append(m)
            self.lock.notify_all()

    def _room(self, room):
        return self.server.room_jid(room)

    # -- connection -----------------------------------------------------------------------
    def connect(self, timeout=20):
        """(Re)connect and wait for the session (STARTTLS, SASL, bind, initial presence)."""
        self._errors.clear()
        self._session.clear()
        self.loop.call_soon_threadsafe(
            lambda: self.xmpp.connect(("127.0.0.1", self.server.port)))
        end = time.time() + timeout
        while not self._session.wait(0.1):
            if time.time() > end or "authentication failed" in self._errors:
                errors = "; ".join(self._errors) or "no error reported"
                fail(f"{self.jid}: no XMPP session ({errors}) after "
                     f"{timeout - max(0, end - time.time()):.1f}s\n" + self.server.log_tail(20))

    def reconnect(self, timeout=20, rejoin=True):
        """After the server restarted (or dropped us): a new session; rooms we were in are
        joined again with the same nicks unless rejoin=False."""
        rooms = dict(self.rooms)
        self.disconnect()
        self.connect(timeout)
        self.rooms.clear()
        if rejoin:
            for room, nick in rooms.items():
                self.join(room, nick, timeout=timeout)

    def connected(self):
        return self._session.is_set()

    def disconnect(self):
        async def bye():
            if self.xmpp.transport is not None:
                self.xmpp.disconnect(wait=2)
                try:
                    await asyncio.wait_for(asyncio.shield(self.xmpp.disconnected), 5)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    pass
            self.xmpp.cancel_connection_attempt()
        try:
            self._call(bye(), 10)
        except Exception:  # noqa: BLE001 -- already gone is fine
            pass
        self._session.clear()

    def close(self):
        """Disconnect and stop the client's loop (quietly: pending slixmpp tasks are cancelled
        and awaited first)."""
        self.disconnect()

        async def drain():
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self._call(drain(), 10)
        except Exception:  # noqa: BLE001
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()

    # -- chat -----------------------------------------------------------------------------
    def say(self, jid, text):
        """A type="chat" message to a (bare) JID."""
        self.loop.call_soon_threadsafe(
            lambda: self.xmpp.send_message(mto=jid, mbody=text, mtype="chat"))

    def join(self, room, nick, timeout=20, history=None, password=None):
        """Join room (local part or room JID) as nick and wait for our self-presence.
        history: None asks the room's default (20 stanzas), a number asks that many (0: none).
        Returns the affiliation and role the room gave us."""
        room_jid = self._room(room)

        async def go():
            muc = self.xmpp.plugin["xep_0045"]
            done = self.loop.create_future()

            def settle(pres):
                if not done.done():
                    done.set_result(pres)
            self.xmpp.add_event_handler(f"muc::{room_jid}::self-presence", settle)
            self.xmpp.add_event_handler(f"muc::{room_jid}::presence-error", settle)
            try:
                muc.rooms[JID(room_jid)] = {}
                muc.our_nicks[JID(room_jid)] = nick
                pres = self.xmpp.make_presence(pto=f"{room_jid}/{nick}")
                pres.enable("muc_join")
                if history is not None:
                    pres["muc_join"]["history"]["maxstanzas"] = str(history)
                if password is not None:
                    pres["muc_join"]["password"] = password
                pres.send()
                pres = await asyncio.wait_for(done, timeout)
            finally:
                self.xmpp.del_event_handler(f"muc::{room_jid}::self-presence", settle)
                self.xmpp.del_event_handler(f"muc::{room_jid}::presence-error", settle)
            if pres["type"] == "error":
                return None, f"{pres['error']['condition']} {pres['error']['text']}"
            return (pres["muc"]["affiliation"], pres["muc"]["role"]), None

        try:
            result, error = self._call(go(), timeout + 5)
        except (asyncio.TimeoutError, TimeoutError):
            fail(f"{self.jid}: no self-presence from {room_jid} within {timeout}s\n"
                 + self.server.log_tail(20))
        if error:
            fail(f"{self.jid}: joining {room_jid} as {nick} failed: {error}")
        self.rooms[room_jid] = nick
        return result

    def say_room(self, room, text):
        room_jid = self._room(room)
        self.loop.call_soon_threadsafe(
            lambda: self.xmpp.send_message(mto=room_jid, mbody=text, mtype="groupchat"))

    def say_private(self, room, nick, text):
        """A private message to a room occupant (room@muc/nick)."""
        to = f"{self._room(room)}/{nick}"
        self.loop.call_soon_threadsafe(
            lambda: self.xmpp.send_message(mto=to, mbody=text, mtype="chat"))

    def leave(self, room):
        room_jid = self._room(room)
        nick = self.rooms.pop(room_jid, None)
        if nick is None:
            return

        async def go():
            self.xmpp.plugin["xep_0045"].leave_muc(JID(room_jid), nick)
        self._call(go(), 10)

    def configure_room_anonymous(self, room, timeout=20):
        """As the room's owner: real JIDs visible to moderators only (semi-anonymous).
        Do it before the others join; the owner (a moderator) still sees every JID."""
        room_jid = self._room(room)

        async def go():
            form = self.xmpp["xep_0004"].make_form(ftype="submit")
            form.add_field(var="FORM_TYPE", ftype="hidden",
                           value="http://jabber.org/protocol/muc#roomconfig")
            form.add_field(var="muc#roomconfig_whois", value="moderators")
            await self.xmpp.plugin["xep_0045"].set_room_config(JID(room_jid), form,
                                                               timeout=timeout)
        try:
            self._call(go(), timeout + 5)
        except Exception as e:  # noqa: BLE001
            fail(f"{self.jid}: configuring {room_jid} semi-anonymous failed: {e!r}")

    def room_features(self, room, timeout=20):
        """The room's disco#info features (e.g. muc_nonanonymous / muc_semianonymous)."""
        room_jid = self._room(room)

        async def go():
            info = await self.xmpp.plugin["xep_0030"].get_info(jid=room_jid, timeout=timeout)
            return [f for f in info["disco_info"]["features"]]
        return self._call(go(), timeout + 5)

    # -- occupants ------------------------------------------------------------------------
    def occupants(self, room):
        """{nick: real bare JID or None (hidden)} as this client sees the room."""
        room_jid = JID(self._room(room))

        async def go():
            entries = self.xmpp.plugin["xep_0045"].rooms.get(room_jid, {})
            return {nick: (JID(e["jid"]).bare if e.get("jid") else None)
                    for nick, e in entries.items()}
        return self._call(go(), 10)

    def real_jid(self, room, nick):
        """The occupant's real bare JID as this client sees it, or None if hidden/absent."""
        return self.occupants(room).get(nick)

    def wait_presence(self, room, nick, timeout=20):
        """Until nick is an occupant of room (as this client sees it); returns its real JID
        (or None when the room hides it from us)."""
        end = time.time() + timeout
        while time.time() < end:
            occ = self.occupants(room)
            if nick in occ:
                return occ[nick]
            time.sleep(0.05)
        fail(f"{self.jid}: {nick} never showed up in {self._room(room)} within {timeout}s; "
             f"occupants: {sorted(self.occupants(room))}")

    def wait_absent(self, room, nick, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if nick not in self.occupants(room):
                return
            time.sleep(0.05)
        fail(f"{self.jid}: {nick} still in {self._room(room)} after {timeout}s")

    # -- expectations ---------------------------------------------------------------------
    def _source_matcher(self, source):
        """A bare user JID: its 1:1 messages; a room local part or room JID: that room's
        groupchat; "room/nick" or "room@muc/nick": that occupant's private messages."""
        if "/" in source:
            room, nick = source.split("/", 1)
            room = JID(self._room(room)).user
            return lambda m: m.kind == "private" and m.room == room and m.nick == nick
        if "@" not in source or source.split("@", 1)[1] in self.server.mucs:
            room_jid = self._room(source)
            return lambda m: m.kind == "groupchat" and JID(m.from_jid).bare == room_jid
        bare = JID(source).bare
        return lambda m: m.room is None and m.from_jid == bare

    def wait_message(self, predicate, timeout, what, stream=None):
        """The first Msg (in order) satisfying predicate(msg); it is consumed, and so are the
        earlier messages satisfying stream(msg), if given; all others are kept."""
        end = time.time() + timeout
        seen = 0
        with self.lock:
            while True:
                while seen < len(self.messages):
                    found = self.messages[seen]
                    if predicate(found):
                        rest = self.messages[seen + 1:]
                        before = self.messages[:seen]
                        if stream is not None:
                            before = [m for m in before if not stream(m)]
                        self.messages[:] = before + rest
                        return found
                    seen += 1
                left = end - time.time()
                if left <= 0:
                    break
                self.lock.wait(timeout=min(0.5, left))
            tail = "\n".join(repr(tuple(m)) for m in self.messages[-30:])
        fail(f"{self.jid}: timed out after {timeout}s waiting for {what}; unconsumed:\n{tail}")

    def expect(self, source, predicate=lambda text: True, timeout=20, what="a message",
               delayed=False, full=False):
        """The text of the next message from `source` whose text matches predicate.
        source: a bare user JID (its 1:1 messages), a room local part or room JID (that room's
        groupchat), or "room/nick" (that occupant's private messages). That source's earlier
        messages are consumed with it; other sources' messages are kept for later calls.
        delayed=False: live messages only (history replay is skipped and kept),
        True: history replay only, None: either. full=True returns the Msg, not the text."""
        from_source = self._source_matcher(source)

        def stream(m):
            return from_source(m) and (delayed is None or m.delayed == delayed)

        def match(m):
            return stream(m) and m.text is not None and predicate(m.text)
        found = self.wait_message(match, timeout, f"{what} from {source}", stream=stream)
        return found if full else found.text

    def collect(self, source, until, timeout=30, what="messages", delayed=False):
        """Every text from `source` up to and including the first that satisfies `until`,
        joined with newlines."""
        texts = []

        def grab(t):
            texts.append(t)
            return until(t)
        self.expect(source, grab, timeout, what, delayed=delayed)
        return "\n".join(texts)

    def pending(self, source=None):
        """A snapshot of the unconsumed messages (from `source` only, if given)."""
        with self.lock:
            msgs = list(self.messages)
        if source is None:
            return msgs
        match = self._source_matcher(source)
        return [m for m in msgs if match(m)]


def _self_check():
    t0 = time.time()
    server = Prosody(semianonymous_rooms=["anon"])
    for user in ("alice", "bob", "jarvis", "carol"):
        server.register(user, f"{user}-pw")
    mechs = server.sasl_mechanisms()
    check("SCRAM-SHA-1" in mechs and "PLAIN" in mechs, f"SASL mechanisms: {mechs}")
    alice = Client(server, "alice", "alice-pw")
    bob = Client(server, "bob", "bob-pw")

    # 1:1 both ways.
    alice.say("bob@localhost", "hello bob")
    check(bob.expect("alice@localhost", lambda t: t == "hello bob") == "hello bob", "1:1 a->b")
    bob.say("alice@localhost", "hi alice")
    alice.expect("bob@localhost", lambda t: t == "hi alice")

    # Room: alice creates "ops" (owner), speaks, then bob joins and gets it as history.
    check(alice.join("ops", "alice") == ("owner", "moderator"), "alice owns ops")
    check("muc_nonanonymous" in alice.room_features("ops"), "ops is non-anonymous")
    alice.say_room("ops", "before bob")
    alice.expect("ops", lambda t: t == "before bob")  # our own groupchat echo
    check(bob.join("ops", "bob") == ("none", "participant"), "bob is a participant")
    hist = bob.expect("ops", lambda t: t == "before bob", delayed=True, full=True)
    check(hist.delayed and hist.nick == "alice" and hist.room == "ops", f"history: {hist}")
    check('xmlns="urn:xmpp:delay"' in hist.xml and 'from="ops@conference.localhost"' in hist.xml,
          f"history stanza: {hist.xml}")
    print("history replay stanza:", hist.xml)

    # Groupchat both ways, live.
    bob.say_room("ops", "from bob")
    check(alice.expect("ops", lambda t: t == "from bob", full=True).nick == "bob", "b->room")
    alice.say_room("ops", "from alice")
    m = bob.expect("ops", lambda t: t == "from alice", full=True)
    check(m.nick == "alice" and not m.delayed, f"a->room: {m}")
    print("live groupchat stanza:", m.xml)

    # Real JIDs visible to a participant in the default (non-anonymous) room.
    check(bob.wait_presence("ops", "alice") == "alice@localhost", "bob sees alice's JID")
    check(alice.wait_presence("ops", "bob") == "bob@localhost", "alice sees bob's JID")

    # A pre-created semi-anonymous room: nobody who joins is a moderator; JIDs hidden.
    check(bob.join("anon", "bob") == ("none", "participant"), "bob is a participant in anon")
    check("muc_semianonymous" in bob.room_features("anon"), "anon is semi-anonymous")
    alice.join("anon", "alice")
    check(bob.wait_presence("anon", "alice") is None, "alice's JID hidden in anon")
    check(alice.wait_presence("anon", "bob") is None, "bob's JID hidden in anon")

    # A room its owner makes semi-anonymous: carol (joining later) sees no JIDs.
    alice.join("secret", "alice")
    alice.configure_room_anonymous("secret")
    check("muc_semianonymous" in alice.room_features("secret"), "secret is semi-anonymous")
    carol = Client(server, "carol", "carol-pw")
    carol.join("secret", "carol")
    check(carol.wait_presence("secret", "alice") is None, "alice's JID hidden from carol")
    check(alice.wait_presence("secret", "carol") == "carol@localhost", "owner sees carol")
    carol.close()

    # A private message from a room occupant.
    alice.say_private("ops", "bob", "psst")
    check(bob.expect("ops/alice", lambda t: t == "psst") == "psst", "private message")

    # Restart: accounts kept, clients reconnect and rejoin (the room persists).
    server.restart()
    wait_for(lambda: not alice.connected() and not bob.connected(), 10, "clients to be dropped")
    alice.reconnect()
    bob.reconnect()
    bob.wait_presence("ops", "alice")
    alice.say_room("ops", "after restart")
    m = bob.expect("ops", lambda t: t == "after restart", full=True)
    check(not m.delayed, "live after restart")
    bob.say("alice@localhost", "still here")
    alice.expect("bob@localhost", lambda t: t == "still here")
    bob.leave("ops")
    alice.wait_absent("ops", "bob")

    # The bot's account logs in too.
    jarvis = Client(server, "jarvis", "jarvis-pw", resource="bot")
    jarvis.close()
    alice.close()
    bob.close()
    server.cleanup()
    print(f"xmpp_support self-check OK in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    _self_check()
