"""An emulator of Slack's Web API and Socket Mode, over real HTTPS and WSS, for tests that
drive the real bot: only the base URL (and the CA file) differ from production.

One TLS port serves both: `POST /api/<method>` (the Web API, JSON or form bodies, Bearer
tokens) and `GET /link/?ticket=...` (the Socket Mode WebSocket, tickets from
apps.connections.open, single-use). The asyncio server runs in a daemon thread; the Python
API below is synchronous and thread-safe.

    with SlackEmulator() as slack:
        ...start the bot with slack.api_url, slack.app_token, slack.bot_token, slack.ca_file...
        slack.wait_connections(1, 20)
        env = slack.mention("U123ALICE", "C0OPS", "status loki")
        slack.wait_ack(env)
        reply = slack.wait_message(lambda m: m["channel"] == "C0OPS" and "loki" in m["text"])

Run this file to check the emulator itself: /usr/bin/python3 tests/integration/slack_emulator.py
"""
import asyncio
import http
import json
import os
import random
import shutil
import ssl
import string
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

import websockets
import websockets.exceptions
import websockets.legacy.http
import websockets.legacy.server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from irc_support import make_cert  # noqa: E402
from jarvis_test import check, fail, wait_for  # noqa: E402

TEAM_ID = "T0TEST"
TEAM_NAME = "Test Team"
BOT_USER_ID = "UBOT"
BOT_NAME = "jarvis"
BOT_ID = "BBOT"
APP_ID = "A0TEST"

# Methods that want the app-level token; every other method wants the bot token.
APP_TOKEN_METHODS = {"apps.connections.open"}


class _Conn:
    """One Socket Mode WebSocket connection, as the emulator sees it."""

    def __init__(self, cid, ws, ticket):
        self.id = cid
        self.ws = ws
        self.ticket = ticket
        self.opened = time.time()
        self.hello_sent = False
        self.closed = None          # time the TCP connection went away
        self.close_code = None      # close code the client sent / we saw (1006: none)
        self.closed_by = None       # "client", "server" (a close frame we sent), "dropped"
        self.disconnects = []       # reasons sent with {"type": "disconnect"}
        self.close_timer = None

    def info(self):
        return {"id": self.id, "ticket": self.ticket, "opened": self.opened,
                "closed": self.closed, "close_code": self.close_code,
                "closed_by": self.closed_by, "disconnects": list(self.disconnects)}


class _Protocol(websockets.legacy.server.WebSocketServerProtocol):
    """websockets' server protocol, taught to read any HTTP/1.x request with a body, so the
    Web API (POST) and the WebSocket (GET + Upgrade) share one port: process_request answers
    /api/ itself (websockets then writes the response and closes), /link/ goes on to the
    WebSocket handshake."""

    emulator = None  # set on a per-emulator subclass

    async def read_http_request(self):
        try:
            line = await self.reader.readline()
            if not line.endswith(b"\r\n"):
                raise EOFError("connection closed while reading the request line")
            method, raw_path, version = line[:-2].split(b" ", 2)
            if not version.startswith(b"HTTP/1."):
                raise ValueError(f"unsupported HTTP version {version!r}")
            headers = await websockets.legacy.http.read_headers(self.reader)
            body = b""
            if method in (b"POST", b"PUT"):
                if headers.get("Expect", "").lower() == "100-continue":
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if "chunked" in headers.get("Transfer-Encoding", "").lower():
                    while True:
                        size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
                        if size == 0:
                            while (await self.reader.readline()) not in (b"\r\n", b""):
                                pass
                            break
                        body += await self.reader.readexactly(size)
                        await self.reader.readexactly(2)
                else:
                    body = await self.reader.readexactly(int(headers.get("Content-Length", "0")))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise websockets.exceptions.InvalidMessage("did not receive a valid HTTP request") from exc
        self.http_method = method.decode("ascii", "replace")
        self.http_body = body
        self.path = raw_path.decode("ascii", "surrogateescape")
        self.request_headers = headers
        return self.path, headers

    async def process_request(self, path, headers):
        return await self.emulator._http(self, path, headers)


def _dumps(obj, slack_json=True):
    """Compact JSON. slack_json: the way Slack's backend writes it (PHP json_encode's
    defaults): "/" escaped as "\\/" and everything beyond ASCII as \\uXXXX, characters
    outside the BMP (emoji) as a surrogate pair "\\ud83d\\ude80". Otherwise raw UTF-8."""
    text = json.dumps(obj, ensure_ascii=slack_json, separators=(",", ":"))
    # "/" only ever appears inside JSON strings, so this is safe
    return text.replace("/", "\\/") if slack_json else text


def _json_response(status, obj, extra_headers=(), slack_json=True):
    body = _dumps(obj, slack_json)
    headers = [("Content-Type", "application/json; charset=utf-8")] + list(extra_headers)
    return (http.HTTPStatus(status), headers, body.encode())


class SlackEmulator:
    """Slack's Web API + Socket Mode for one workspace, one bot user (UBOT / BBOT, app
    A0TEST), some public channels and some IM channels (user id -> D channel id)."""

    def __init__(self, directory=None, bot_token="xoxb-test-bot", app_token="xapp-test-app",
                 channels=("C0OPS",), ims={"U123ALICE": "D0ALICE"}, refresh_close_delay=2.0,
                 outside=(),
                 echo_bot_messages="im", ping_interval=20, slack_json=True):
        """echo_bot_messages: "im" (default; the bot's own posts and edits in IM channels come
        back as message events, as with a `message.im` subscription), "all" (also public
        channels, as with `message.channels`), or None.
        slack_json: every JSON the emulator sends (API answers, Socket Mode frames) escapes
        "/" and non-ASCII (emoji as \\ud83d\\ude80 surrogate pairs) as Slack does; False
        sends raw UTF-8."""
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="jarvis-slack-")
        os.makedirs(self.directory, exist_ok=True)
        self.bot_token, self.app_token = bot_token, app_token
        self.channels = list(channels)
        self.outside = list(outside)  # channels that exist but the bot is not a member of
        self.ims = dict(ims or {})
        self.refresh_close_delay = refresh_close_delay
        self.echo_bot_messages = echo_bot_messages
        self.slack_json = slack_json
        self.cert, self.key = make_cert(self.directory, "slack")
        self.ca_file = self.cert
        self.log_file = os.path.join(self.directory, "slack-emulator.log")
        self._logf = open(self.log_file, "a", buffering=1)

        self._cond = threading.Condition()
        self.messages = []           # {channel, ts, text, thread_ts, updates, first_text}
        self._by_ts = {}             # (channel, ts) -> message
        self.calls = []              # (method, params, http_status)
        self.requests = []           # dicts with more detail (token, content type, response)
        self.acks = []               # {envelope_id, payload, connection, time, known}
        self.bad_frames = []         # frames from the client that are not acks
        self._envelopes = {}         # envelope_id -> record
        self._pending = []           # envelope ids waiting for a connection
        self._tickets = {}           # ticket -> time issued
        self._conns = {}             # id -> _Conn (all ever accepted)
        self.connection_count_total = 0
        self._ratelimits = {}        # method -> [times, retry_after]
        self._failures = {}          # method -> [times, error, status]
        self._delays = {}            # method -> [times, seconds]
        self._ws_rejects = [0, 503]
        self._methods = {}           # extra methods added by tests
        self._last_ts = 0
        self._event_ids = set()
        self._stopped = False

        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, args=(ping_interval,),
                                        name="slack-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(20) or self._start_error:
            raise RuntimeError(f"slack emulator did not start: {self._start_error}")
        self.api_url = f"https://127.0.0.1:{self.port}/api/"
        self.base_url = f"https://127.0.0.1:{self.port}/"
        self._log(f"listening on 127.0.0.1:{self.port}")

    # ---------------------------------------------------------------- server plumbing

    def _run(self, ping_interval):
        asyncio.set_event_loop(self._loop)
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.cert, self.key)
            ctx.set_alpn_protocols(["http/1.1"])
            proto = type("SlackProtocol", (_Protocol,), {"emulator": self})
            self._server = self._loop.run_until_complete(websockets.serve(
                self._ws_handler, "127.0.0.1", 0, ssl=ctx, create_protocol=proto,
                ping_interval=ping_interval, ping_timeout=ping_interval, close_timeout=3,
                max_size=2 ** 22))
            self.port = self._server.sockets[0].getsockname()[1]
        except Exception as exc:  # noqa: BLE001 - reported to the constructor
            self._start_error = repr(exc)
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def _call(self, coro, timeout=15):
        if self._stopped:
            raise RuntimeError("slack emulator stopped")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _log(self, line):
        try:
            self._logf.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {line}\n")
        except ValueError:  # closed
            pass

    def _dumps(self, obj):
        return _dumps(obj, self.slack_json)

    def _next_ts(self):
        with self._cond:
            micros = max(int(time.time() * 1e6), self._last_ts + 100)
            self._last_ts = micros
            return f"{micros // 10**6}.{micros % 10**6:06d}"

    def _new_event_id(self):
        with self._cond:
            while True:
                eid = "Ev0" + "".join(random.choices(string.ascii_uppercase + string.digits, k=8))
                if eid not in self._event_ids:
                    self._event_ids.add(eid)
                    return eid

    # ---------------------------------------------------------------- HTTP: the Web API

    async def _http(self, proto, path, headers):
        url = urllib.parse.urlsplit(path)
        if url.path.startswith("/link"):
            return self._ws_gate(proto, url, headers)
        if not url.path.startswith("/api/"):
            return _json_response(404, {"ok": False, "error": "not_found"})
        method = url.path[len("/api/"):].strip("/")
        # Arguments: query string, then the body (form or JSON).
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        ctype = headers.get("Content-Type", "")
        body = proto.http_body
        warnings = []
        if body:
            text = body.decode("utf-8", "replace")
            if ctype.split(";")[0].strip().lower() == "application/json":
                if "charset" not in ctype.lower():
                    warnings.append("missing_charset")
                try:
                    parsed = json.loads(text)
                except ValueError:
                    return self._answer(method, params, ctype, None, 200,
                                        {"ok": False, "error": "invalid_json"})
                if not isinstance(parsed, dict):
                    return self._answer(method, params, ctype, None, 200,
                                        {"ok": False, "error": "invalid_json"})
                params.update(parsed)
            else:
                params.update({k: v[-1] for k, v in
                               urllib.parse.parse_qs(text, keep_blank_values=True).items()})
        auth = headers.get("Authorization", "")
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else None
        if token is None and "token" in params and not ctype.startswith("application/json"):
            token = params["token"]
        params.pop("token", None)

        with self._cond:
            delay = self._take(self._delays, method)
        if delay:
            await asyncio.sleep(delay[1])

        with self._cond:
            limited = self._take(self._ratelimits, method)
            failure = None if limited else self._take(self._failures, method)
        if limited:
            return self._answer(method, params, ctype, token, 429,
                                {"ok": False, "error": "ratelimited"},
                                [("Retry-After", str(limited[1]))])
        if failure:
            return self._answer(method, params, ctype, token, failure[2],
                                {"ok": False, "error": failure[1]})

        want = self.app_token if method in APP_TOKEN_METHODS else self.bot_token
        if not token:
            result = {"ok": False, "error": "not_authed"}
        elif token == want:
            try:
                result = self._method(method, params)
            except Exception as exc:  # noqa: BLE001 - a bug here must show in the test
                self._log(f"!! {method} raised {exc!r}")
                result = {"ok": False, "error": "internal_error", "emulator_error": repr(exc)}
        elif token in (self.app_token, self.bot_token):
            result = {"ok": False, "error": "not_allowed_token_type"}
        else:
            result = {"ok": False, "error": "invalid_auth"}
        status = 404 if result.get("error") == "unknown_method" else 200
        if warnings and result.get("ok"):
            result["warning"] = ",".join(warnings)
            result.setdefault("response_metadata", {})["warnings"] = warnings
        return self._answer(method, params, ctype, token, status, result)

    @staticmethod
    def _take(table, method):
        entry = table.get(method)
        if entry and entry[0] > 0:
            entry[0] -= 1
            return entry
        return None

    def _answer(self, method, params, ctype, token, status, result, extra_headers=()):
        with self._cond:
            self.calls.append((method, params, status))
            self.requests.append({"method": method, "params": params, "status": status,
                                  "content_type": ctype, "token": token, "response": result,
                                  "time": time.time()})
            self._cond.notify_all()
        self._log(f"API {method} {json.dumps(params, ensure_ascii=False)[:300]} -> {status} "
                  f"{json.dumps(result, ensure_ascii=False)[:300]}")
        return _json_response(status, result, extra_headers, self.slack_json)

    def _method(self, method, p):
        if method in self._methods:
            return self._methods[method](dict(p))
        if method == "api.test":
            return {"ok": True, "args": p}
        if method == "auth.test":
            return {"ok": True, "url": "https://test.slack.com/", "team": TEAM_NAME,
                    "user": BOT_NAME, "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                    "bot_id": BOT_ID, "is_enterprise_install": False}
        if method == "apps.connections.open":
            ticket = uuid.uuid4().hex
            with self._cond:
                self._tickets[ticket] = time.time()
            return {"ok": True,
                    "url": f"wss://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={APP_ID}"}
        if method == "chat.postMessage":
            return self._post_message(p)
        if method == "chat.update":
            return self._update(p)
        if method == "conversations.open":
            users = str(p.get("users", "")).split(",")
            if len(users) != 1 or not users[0]:
                return {"ok": False, "error": "users_list_not_supplied"}
            with self._cond:
                ch = self.ims.setdefault(users[0], "D0" + users[0].lstrip("U"))
            return {"ok": True, "channel": {"id": ch}}
        return {"ok": False, "error": "unknown_method", "req_method": method}

    def _channel(self, ch):
        with self._cond:
            if ch in self.channels or ch in self.ims.values():
                return ch
            return self.ims.get(ch)  # posting to a user id goes to the IM with them

    def _post_message(self, p):
        if str(p.get("channel", "")) in self.outside:
            return {"ok": False, "error": "not_in_channel"}
        ch = self._channel(str(p.get("channel", "")))
        if not ch:
            return {"ok": False, "error": "channel_not_found"}
        text = p.get("text")
        text = "" if text is None else str(text)
        if not text.strip() and not p.get("blocks") and not p.get("attachments"):
            return {"ok": False, "error": "no_text"}
        if len(text) > 40000:
            return {"ok": False, "error": "msg_too_long"}
        thread_ts = p.get("thread_ts") or None
        ts = self._next_ts()
        msg = {"channel": ch, "ts": ts, "text": text, "thread_ts": thread_ts, "updates": [],
               "first_text": text, "params": dict(p)}
        with self._cond:
            self.messages.append(msg)
            self._by_ts[(ch, ts)] = msg
            self._cond.notify_all()
        wire = self._bot_message(text, ts, thread_ts)
        self._echo(ch, dict(wire, channel=ch, event_ts=ts))
        return {"ok": True, "channel": ch, "ts": ts, "message": wire}

    def _bot_message(self, text, ts, thread_ts=None):
        m = {"type": "message", "text": text, "user": BOT_USER_ID, "bot_id": BOT_ID,
             "app_id": APP_ID, "ts": ts, "team": TEAM_ID,
             "bot_profile": {"id": BOT_ID, "app_id": APP_ID, "name": BOT_NAME,
                             "deleted": False, "team_id": TEAM_ID}}
        if thread_ts:
            m["thread_ts"] = thread_ts
        return m

    def _update(self, p):
        ch = self._channel(str(p.get("channel", "")))
        if not ch:
            return {"ok": False, "error": "channel_not_found"}
        ts = str(p.get("ts", ""))
        text = p.get("text")
        text = "" if text is None else str(text)
        with self._cond:
            msg = self._by_ts.get((ch, ts))
        if not msg:
            return {"ok": False, "error": "message_not_found"}
        if not text.strip() and not p.get("blocks") and not p.get("attachments"):
            return {"ok": False, "error": "no_text"}
        if len(text) > 40000:
            return {"ok": False, "error": "msg_too_long"}
        with self._cond:
            old = msg["text"]
            msg["text"] = text
            msg["updates"].append(text)
            self._cond.notify_all()
        now = self._next_ts()
        new = dict(self._bot_message(text, ts, msg["thread_ts"]),
                   edited={"user": BOT_USER_ID, "ts": now})
        self._echo(ch, {"type": "message", "subtype": "message_changed", "hidden": True,
                        "message": new, "previous_message": self._bot_message(old, ts, msg["thread_ts"]),
                        "channel": ch, "ts": now, "event_ts": now})
        return {"ok": True, "channel": ch, "ts": ts, "text": text, "message": new}

    def _echo(self, ch, event):
        """The bot's own post/edit, coming back as an event (runs in the loop thread)."""
        is_im = ch in self.ims.values()
        if self.echo_bot_messages == "all" or (self.echo_bot_messages == "im" and is_im):
            event["channel_type"] = "im" if is_im else "channel"
            self._loop.create_task(self._send_new(event, 0, None, "newest", ""))

    # ---------------------------------------------------------------- Socket Mode

    def _ws_gate(self, proto, url, headers):
        """Before the WebSocket handshake: the ticket must be one we issued, unused."""
        query = urllib.parse.parse_qs(url.query)
        ticket = (query.get("ticket") or [""])[0]
        with self._cond:
            if self._ws_rejects[0] > 0:
                self._ws_rejects[0] -= 1
                self._log(f"WS handshake rejected on purpose ({self._ws_rejects[1]})")
                return (http.HTTPStatus(self._ws_rejects[1]), [("Content-Type", "text/plain")],
                        b"rejected by the test\n")
            ok = self._tickets.pop(ticket, None) is not None
        if not ok:
            self._log(f"WS handshake with bad/used ticket {ticket!r}")
            return (http.HTTPStatus.UNAUTHORIZED, [("Content-Type", "text/plain")],
                    b"invalid or already used ticket\n")
        proto.slack_ticket = ticket
        return None  # go on with the WebSocket handshake

    async def _ws_handler(self, ws):
        with self._cond:
            self.connection_count_total += 1
            conn = _Conn(self.connection_count_total, ws, getattr(ws, "slack_ticket", None))
            self._conns[conn.id] = conn
            n = sum(1 for c in self._conns.values() if c.closed is None)
        self._log(f"WS #{conn.id} open ({n} open)")
        try:
            await ws.send(self._dumps({
                "type": "hello", "num_connections": n,
                "debug_info": {"host": "applink-emulator", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID}}))
            with self._cond:
                conn.hello_sent = True
                pending, self._pending = self._pending, []
                self._cond.notify_all()
            for eid in pending:
                await self._send_envelope(conn, eid)
            async for frame in ws:
                self._on_frame(conn, frame)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            with self._cond:
                conn.closed = time.time()
                conn.close_code = ws.close_code
                if conn.closed_by is None:
                    conn.closed_by = "client" if ws.close_code not in (None, 1006) else "dropped"
                if conn.close_timer:
                    conn.close_timer.cancel()
                self._cond.notify_all()
            self._log(f"WS #{conn.id} closed (code {ws.close_code}, by {conn.closed_by})")

    def _on_frame(self, conn, frame):
        self._log(f"WS #{conn.id} <- {frame if isinstance(frame, str) else repr(frame)}"[:500])
        try:
            obj = json.loads(frame)
        except (TypeError, ValueError):
            obj = None
        with self._cond:
            if isinstance(obj, dict) and isinstance(obj.get("envelope_id"), str):
                rec = self._envelopes.get(obj["envelope_id"])
                ack = {"envelope_id": obj["envelope_id"], "payload": obj.get("payload"),
                       "connection": conn.id, "time": time.time(), "known": rec is not None}
                self.acks.append(ack)
                if rec is not None and rec["acked"] is None:
                    rec["acked"] = ack
            else:
                self.bad_frames.append({"connection": conn.id, "frame": frame, "time": time.time()})
            self._cond.notify_all()

    async def _send_new(self, event, retry_attempt, event_id, to, retry_reason):
        """Envelopes for one event (one per connection for to="all"), sent or queued."""
        with self._cond:
            n = len(self._targets(to)) if to == "all" else 1
            ids = self._make_envelopes(event, retry_attempt, event_id, retry_reason, max(1, n))
        await self._deliver(ids, to)
        return ids

    def _make_envelopes(self, event, retry_attempt, event_id, retry_reason, n):
        event_id = event_id or self._new_event_id()
        ids = []
        for _ in range(n):
            eid = str(uuid.uuid4())
            envelope = {
                "envelope_id": eid,
                "payload": {
                    "token": "x", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
                    "type": "event_callback", "event_id": event_id,
                    "event_time": int(time.time()),
                    "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID,
                                        "user_id": BOT_USER_ID, "is_bot": True,
                                        "is_enterprise_install": False}],
                    "is_ext_shared_channel": False,
                    "event_context": "4-" + uuid.uuid4().hex},
                "type": "events_api", "accepts_response_payload": False,
                "retry_attempt": retry_attempt, "retry_reason": retry_reason}
            with self._cond:
                self._envelopes[eid] = {"envelope_id": eid, "event_id": event_id, "event": event,
                                        "retry_attempt": retry_attempt, "envelope": envelope,
                                        "created": time.time(), "connection": None,
                                        "sent": None, "acked": None}
            ids.append(eid)
        return ids

    def _targets(self, to):
        live = [c for c in self._conns.values() if c.hello_sent and c.closed is None]
        if not live:
            return []
        if to == "all":
            return live
        if to == "oldest":
            return live[:1]
        if to == "random":
            return [random.choice(live)]
        if isinstance(to, int):
            return [c for c in live if c.id == to]
        return live[-1:]

    async def _deliver(self, ids, to):
        with self._cond:
            targets = self._targets(to)
            if not targets:
                self._pending.extend(ids)
                self._log(f"no connection: {len(ids)} envelope(s) queued")
                return
        for eid, conn in zip(ids, targets if to == "all" else targets * len(ids)):
            await self._send_envelope(conn, eid)

    async def _send_envelope(self, conn, eid):
        with self._cond:
            rec = self._envelopes[eid]
            text = self._dumps(rec["envelope"])
        try:
            await conn.ws.send(text)
        except websockets.exceptions.ConnectionClosed:
            with self._cond:
                self._pending.append(eid)
            self._log(f"WS #{conn.id} closed under us; envelope {eid} queued")
            return
        with self._cond:
            rec["connection"], rec["sent"] = conn.id, time.time()
            self._cond.notify_all()
        self._log(f"WS #{conn.id} -> {text}"[:600])

    async def _disconnect(self, reason, close_after):
        sent = []
        for conn in [c for c in list(self._conns.values()) if c.closed is None and c.hello_sent]:
            try:
                await conn.ws.send(self._dumps({"type": "disconnect", "reason": reason,
                                               "debug_info": {"host": "applink-emulator"}}))
            except websockets.exceptions.ConnectionClosed:
                continue
            conn.disconnects.append(reason)
            sent.append(conn.id)
            self._log(f"WS #{conn.id} -> disconnect {reason}")
            if close_after is not None and conn.close_timer is None:
                conn.close_timer = self._loop.call_later(
                    close_after, lambda c=conn: self._loop.create_task(self._server_close(c)))
        return sent

    async def _server_close(self, conn):
        if conn.closed is None:
            conn.closed_by = "server"
            self._log(f"WS #{conn.id}: closing (after disconnect)")
            await conn.ws.close(1000, "")

    async def _drop(self):
        dropped = []
        for conn in list(self._conns.values()):
            if conn.closed is None:
                conn.closed_by = "dropped"
                conn.ws.transport.abort()
                dropped.append(conn.id)
                self._log(f"WS #{conn.id}: dropped (TCP abort)")
        return dropped

    async def _shutdown(self):
        for conn in self._conns.values():
            if conn.close_timer:
                conn.close_timer.cancel()
        self._server.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), 8)
        except asyncio.TimeoutError:
            pass

    # ---------------------------------------------------------------- the tests' API

    def send_event(self, event, retry_attempt=0, event_id=None, to="newest", retry_reason=None):
        """Deliver an Events API event in a Socket Mode envelope. to: "newest" (the most
        recently opened connection), "oldest", "random", "all" (one envelope per connection,
        same event_id), or a connection id. With no connection open, the envelope waits for
        the next one. Returns the envelope id (a list of them for to="all")."""
        if retry_reason is None:
            retry_reason = "" if retry_attempt == 0 else "timeout"
        ids = self._call(self._send_new(event, retry_attempt, event_id, to, retry_reason))
        return ids if to == "all" else ids[0]

    def redeliver(self, envelope_id, to="newest", retry_reason="timeout"):
        """Slack's retry of an event: same event and event_id, retry_attempt + 1, a new
        envelope id. Returns the new envelope id."""
        with self._cond:
            rec = self._envelopes[envelope_id]
            attempts = [r["retry_attempt"] for r in self._envelopes.values()
                        if r["event_id"] == rec["event_id"]]
        return self.send_event(rec["event"], max(attempts) + 1, rec["event_id"], to, retry_reason)

    def _user_message(self, etype, user, channel, text, thread_ts, extra):
        ts = self._next_ts()
        event = {"type": etype, "user": user, "text": text, "ts": ts,
                 "client_msg_id": str(uuid.uuid4()), "team": TEAM_ID, "channel": channel,
                 "event_ts": ts, **extra}
        if thread_ts:
            event["thread_ts"] = thread_ts
        event["blocks"] = [{"type": "rich_text", "block_id": uuid.uuid4().hex[:5], "elements": [
            {"type": "rich_text_section", "elements": self._rich_text(text)}]}]
        return event

    @staticmethod
    def _rich_text(text):
        parts = []
        rest = text
        while rest:
            start = rest.find("<@")
            end = rest.find(">", start) if start >= 0 else -1
            if start < 0 or end < 0:
                parts.append({"type": "text", "text": rest})
                break
            if start:
                parts.append({"type": "text", "text": rest[:start]})
            parts.append({"type": "user", "user_id": rest[start + 2:end]})
            rest = rest[end + 1:]
        return parts

    def mention(self, user, channel, text, retry_attempt=0, event_id=None, thread_ts=None,
                to="newest", extra=None):
        """`user` writes "<@UBOT> text" in `channel`: an app_mention event. extra: more event
        fields (a Slack Connect user: {"user_team": "T0OTHER"}). Returns the envelope id."""
        event = self._user_message("app_mention", user, channel, f"<@{BOT_USER_ID}> {text}",
                                   thread_ts, dict(extra or {}))
        return self.send_event(event, retry_attempt, event_id, to)

    def dm(self, user, text, retry_attempt=0, event_id=None, to="newest"):
        """`user` writes `text` to the bot in their IM channel: a message.im event."""
        with self._cond:
            channel = self.ims.setdefault(user, "D0" + user.lstrip("U"))
        event = self._user_message("message", user, channel, text, None, {"channel_type": "im"})
        return self.send_event(event, retry_attempt, event_id, to)

    def send_frame(self, frame, to="newest"):
        """Any Socket Mode frame as it is (a dict is sent as JSON), malformed ones included."""
        text = frame if isinstance(frame, str) else self._dumps(frame)

        async def go():
            with self._cond:
                targets = self._targets(to)
            for conn in targets:
                await conn.ws.send(text)
                self._log(f"WS #{conn.id} -> {text}"[:600])
        self._call(go())

    def envelope(self, envelope_id):
        """What was sent: {envelope_id, event_id, event, retry_attempt, envelope (the JSON),
        connection, sent, acked}."""
        with self._cond:
            return dict(self._envelopes[envelope_id])

    def wait_ack(self, envelope_id, timeout=10):
        """Until the client acknowledges `envelope_id`; returns the ack record."""
        end = time.time() + timeout
        with self._cond:
            while True:
                rec = self._envelopes.get(envelope_id)
                if rec is None:
                    fail(f"slack: no envelope {envelope_id}")
                if rec["acked"]:
                    return rec["acked"]
                left = end - time.time()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        fail(f"slack: envelope {envelope_id} (event {rec['event_id']}, sent on connection "
             f"{rec['connection']}) not acknowledged within {timeout}s; log: {self.log_file}")

    def unacked(self, include_superseded=True):
        """Envelope ids sent (or queued) and never acknowledged. include_superseded=False
        leaves out those whose event was acknowledged in another envelope (a redelivery)."""
        with self._cond:
            acked_events = {r["event_id"] for r in self._envelopes.values() if r["acked"]}
            return [e for e, r in self._envelopes.items() if not r["acked"] and
                    (include_superseded or r["event_id"] not in acked_events)]

    def wait_all_acked(self, timeout=10):
        wait_for(lambda: not self.unacked(), timeout,
                 f"slack: every envelope acknowledged (left: {self.unacked()})")

    def wait_message(self, predicate, timeout=20, what="a message"):
        """The first message (in post order, with its current text) that satisfies
        `predicate`, waiting for posts and updates."""
        end = time.time() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if predicate(m):
                        return m
                left = end - time.time()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            seen = "\n".join(f"  {m['channel']} {m['ts']}: {m['text']!r}" for m in self.messages[-20:])
        fail(f"slack: timed out after {timeout}s waiting for {what}; messages:\n{seen}")

    def request_disconnect(self, reason="refresh_requested", close_after="default"):
        """Send {"type": "disconnect"} to every open connection. For refresh_requested and
        link_disabled the server closes each of them `close_after` seconds later (default
        refresh_close_delay; None: never); a "warning" closes nothing. Returns the ids."""
        if close_after == "default":
            close_after = self.refresh_close_delay if reason != "warning" else None
        return self._call(self._disconnect(reason, close_after))

    def drop_connections(self):
        """Abort every open connection's TCP (no close frame, no TLS close_notify)."""
        return self._call(self._drop())

    def reject_websocket(self, times=1, status=503):
        """The next `times` WebSocket handshakes fail with HTTP `status` (ticket not used up)."""
        with self._cond:
            self._ws_rejects = [times, status]

    def connections(self):
        """How many Socket Mode connections are open now."""
        with self._cond:
            return sum(1 for c in self._conns.values() if c.closed is None)

    def connection_log(self):
        with self._cond:
            return [c.info() for c in self._conns.values()]

    def wait_connections(self, n, timeout=20, total=False):
        """Until exactly `n` connections are open (total=True: until at least `n` have ever
        been opened)."""
        def done():
            with self._cond:
                return (self.connection_count_total >= n) if total else self.connections() == n
        wait_for(done, timeout, f"slack: {'a total of ' if total else ''}{n} Socket Mode "
                                f"connection(s) (now {self.connections()} open, "
                                f"{self.connection_count_total} ever)")

    def rate_limit(self, method, times=1, retry_after=1):
        """The next `times` calls of `method` get HTTP 429 + Retry-After, and do nothing."""
        with self._cond:
            self._ratelimits[method] = [times, retry_after]

    def fail_next(self, method, error="internal_error", times=1, status=200):
        """The next `times` calls of `method` answer {"ok": false, "error": error} (with
        HTTP `status`) and do nothing."""
        with self._cond:
            self._failures[method] = [times, error, status]

    def slow(self, method, seconds, times=1):
        """The next `times` calls of `method` answer after `seconds`."""
        with self._cond:
            self._delays[method] = [times, seconds]

    def add_method(self, method, handler):
        """A Web API method more: handler(params) -> response dict (bot token required)."""
        self._methods[method] = handler

    def calls_of(self, method):
        with self._cond:
            return [c for c in self.calls if c[0] == method]

    def stop(self):
        if self._stopped:
            return
        try:
            self._call(self._shutdown(), timeout=15)
        except Exception:  # noqa: BLE001
            pass
        self._stopped = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._log("stopped")
        self._logf.close()

    def cleanup(self):
        """At the end of a passing test: stop, and remove the directory if we made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.cleanup()
        else:
            self.stop()
        return False


# ---------------------------------------------------------------------- self-check

def _self_check():
    import urllib.request
    import urllib.error

    slack = SlackEmulator(refresh_close_delay=2.0)
    ctx = ssl.create_default_context(cafile=slack.ca_file)

    def api(method, params=None, token=None, form=False, expect_status=200):
        data = (urllib.parse.urlencode(params or {}).encode() if form
                else json.dumps(params or {}).encode())
        req = urllib.request.Request(slack.api_url + method, data=data, method="POST")
        req.add_header("Content-Type", "application/x-www-form-urlencoded" if form
                       else "application/json; charset=utf-8")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                status, headers, body = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        check(status == expect_status, f"{method}: HTTP {status}, expected {expect_status}: {body!r}")
        return json.loads(body), headers, body

    bot, app = slack.bot_token, slack.app_token

    # Web API: auth.test and the token rules
    r, _, raw = api("auth.test", token=bot)
    check(r == {"ok": True, "url": "https://test.slack.com/", "team": "Test Team", "user": "jarvis",
                "team_id": "T0TEST", "user_id": "UBOT", "bot_id": "BBOT",
                "is_enterprise_install": False}, f"auth.test: {r}")
    check(b"https:\\/\\/test.slack.com\\/" in raw, f"slashes escaped as Slack does: {raw!r}")
    check(api("auth.test", token="xoxb-wrong")[0] == {"ok": False, "error": "invalid_auth"}, "bad token")
    check(api("auth.test")[0]["error"] == "not_authed", "no token")
    check(api("auth.test", token=app)[0]["error"] == "not_allowed_token_type", "app token for auth.test")
    check(api("apps.connections.open", token=bot)[0]["error"] == "not_allowed_token_type",
          "bot token for connections.open")
    check(api("auth.test", {"token": bot}, form=True)[0]["ok"], "token in a form body")
    check(api("no.such.method", token=bot, expect_status=404)[0]["error"] == "unknown_method", "404")

    async def client():
        async def connect():
            r, _, _ = await asyncio.to_thread(api, "apps.connections.open", token=app)
            check(r["ok"] and r["url"].startswith(f"wss://127.0.0.1:{slack.port}/link/?ticket="), r)
            ws = await websockets.connect(r["url"], ssl=ctx)
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
            return ws, hello, r["url"]

        async def recv(ws, timeout=5):
            return json.loads(await asyncio.wait_for(ws.recv(), timeout))

        ws1, hello, url = await connect()
        check(hello == {"type": "hello", "num_connections": 1,
                        "debug_info": {"host": "applink-emulator", "build_number": 1,
                                       "approximate_connection_time": 18060},
                        "connection_info": {"app_id": "A0TEST"}}, f"hello: {hello}")
        check(slack.connections() == 1 and slack.connection_count_total == 1, "one connection")
        try:  # a ticket is single-use
            await websockets.connect(url, ssl=ctx)
            fail("a used ticket was accepted")
        except websockets.exceptions.InvalidStatusCode as e:
            check(e.status_code == 401, f"used ticket: {e.status_code}")

        # a mention, acknowledged
        eid = await asyncio.to_thread(slack.mention, "U123ALICE", "C0OPS", "status loki")
        env = await recv(ws1)
        check(env["envelope_id"] == eid and env["type"] == "events_api"
              and env["retry_attempt"] == 0 and env["retry_reason"] == ""
              and env["accepts_response_payload"] is False, f"envelope: {env}")
        p = env["payload"]
        check(p["type"] == "event_callback" and p["team_id"] == "T0TEST" and p["api_app_id"] == "A0TEST"
              and p["event_id"].startswith("Ev") and isinstance(p["event_time"], int), f"payload: {p}")
        ev = p["event"]
        check(ev["type"] == "app_mention" and ev["user"] == "U123ALICE" and ev["channel"] == "C0OPS"
              and ev["text"] == "<@UBOT> status loki" and ev["ts"] == ev["event_ts"]
              and ev["team"] == "T0TEST", f"event: {ev}")
        await ws1.send(json.dumps({"envelope_id": eid}))
        ack = await asyncio.to_thread(slack.wait_ack, eid, 5)
        check(ack["connection"] == 1 and ack["known"], f"ack: {ack}")

        # a DM, not acknowledged (yet)
        did = await asyncio.to_thread(slack.dm, "U123ALICE", "status loki")
        env = await recv(ws1)
        check(env["payload"]["event"]["channel_type"] == "im" and env["payload"]["event"]["channel"] == "D0ALICE"
              and env["payload"]["event"]["type"] == "message", f"dm: {env}")
        check(slack.unacked() == [did], f"unacked: {slack.unacked()}")

        # chat.postMessage (JSON) + chat.update (form)
        r, _, _ = await asyncio.to_thread(api, "chat.postMessage",
                                          {"channel": "C0OPS", "text": "loki: up", "thread_ts": ev["ts"]},
                                          bot)
        check(r["ok"] and r["channel"] == "C0OPS" and r["message"]["text"] == "loki: up"
              and r["message"]["user"] == "UBOT" and r["message"]["thread_ts"] == ev["ts"]
              and r["message"]["ts"] == r["ts"], f"postMessage: {r}")
        ts = r["ts"]
        m = await asyncio.to_thread(slack.wait_message, lambda m: m["text"] == "loki: up", 5)
        check(m["channel"] == "C0OPS" and m["thread_ts"] == ev["ts"] and m["ts"] == ts, f"message: {m}")
        r, _, _ = await asyncio.to_thread(api, "chat.update",
                                          {"channel": "C0OPS", "ts": ts, "text": "loki: up (v2)"}, bot, True)
        check(r["ok"] and r["ts"] == ts and r["text"] == "loki: up (v2)" and r["channel"] == "C0OPS", f"update: {r}")
        check(m["text"] == "loki: up (v2)" and m["updates"] == ["loki: up (v2)"], f"updated in place: {m}")
        check((await asyncio.to_thread(slack.wait_message, lambda m: "v2" in m["text"], 1)) is m, "wait update")
        r, _, _ = await asyncio.to_thread(api, "chat.update", {"channel": "C0OPS", "ts": "1.000001", "text": "x"}, bot)
        check(r == {"ok": False, "error": "message_not_found"}, f"update unknown ts: {r}")
        r, _, _ = await asyncio.to_thread(api, "chat.postMessage", {"channel": "C0NOPE", "text": "x"}, bot)
        check(r == {"ok": False, "error": "channel_not_found"}, f"unknown channel: {r}")
        r, _, _ = await asyncio.to_thread(api, "chat.postMessage", {"channel": "C0OPS", "text": ""}, bot)
        check(r == {"ok": False, "error": "no_text"}, f"empty text: {r}")
        r, _, _ = await asyncio.to_thread(api, "chat.postMessage", {"channel": "C0OPS", "text": "x"}, app)
        check(r["error"] == "not_allowed_token_type", f"app token posting: {r}")

        # a reply in the IM: the bot's own message comes back as an event (acked, ignored)
        r, _, raw = await asyncio.to_thread(api, "chat.postMessage", {"channel": "U123ALICE", "text": "hi ✓"}, bot)
        check(r["ok"] and r["channel"] == "D0ALICE", f"post to a user id: {r}")
        check(b'"hi \\u2713"' in raw, f"non-ASCII escaped as Slack does: {raw!r}")
        env = await recv(ws1)
        e = env["payload"]["event"]
        check(e["type"] == "message" and e["bot_id"] == "BBOT" and e["user"] == "UBOT"
              and e["channel"] == "D0ALICE" and e["channel_type"] == "im" and e["text"] == "hi ✓"
              and e["ts"] == r["ts"], f"echo: {env}")
        await ws1.send(json.dumps({"envelope_id": env["envelope_id"]}))
        r, _, _ = await asyncio.to_thread(api, "chat.update", {"channel": "D0ALICE", "ts": e["ts"],
                                                               "text": "hi ✓✓"}, bot)
        check(r["ok"], f"update in the IM: {r}")
        env = await recv(ws1)
        e = env["payload"]["event"]
        check(e["type"] == "message" and e["subtype"] == "message_changed" and e["hidden"] is True
              and e["message"]["text"] == "hi ✓✓" and e["message"]["bot_id"] == "BBOT"
              and e["previous_message"]["text"] == "hi ✓" and e["channel"] == "D0ALICE"
              and e["channel_type"] == "im", f"message_changed echo: {env}")
        await ws1.send(json.dumps({"envelope_id": env["envelope_id"]}))
        await ws1.send(json.dumps({"envelope_id": did}))  # the DM, late
        rocket = await asyncio.to_thread(slack.dm, "U123ALICE", "deploy 🚀 https://x/y")
        frame = await asyncio.wait_for(ws1.recv(), 5)
        check('"deploy \\ud83d\\ude80 https:\\/\\/x\\/y"' in frame, f"emoji as a surrogate pair: {frame}")
        check(json.loads(frame)["payload"]["event"]["text"] == "deploy 🚀 https://x/y", "decodes back")
        await ws1.send(json.dumps({"envelope_id": rocket}))
        await asyncio.to_thread(slack.wait_all_acked, 5)

        # rate limiting
        slack.rate_limit("chat.postMessage", times=1, retry_after=3)
        before = len(slack.messages)
        r, headers, _ = await asyncio.to_thread(api, "chat.postMessage", {"channel": "C0OPS", "text": "x"},
                                                bot, False, 429)
        check(r == {"ok": False, "error": "ratelimited"} and headers["Retry-After"] == "3", f"429: {r} {headers}")
        check(len(slack.messages) == before, "a rate-limited post is not recorded")
        r, _, _ = await asyncio.to_thread(api, "chat.postMessage", {"channel": "C0OPS", "text": "again"}, bot)
        check(r["ok"], f"after the 429: {r}")
        check([c[2] for c in slack.calls_of("chat.postMessage")][-2:] == [429, 200], "calls record statuses")

        # refresh: disconnect, the client opens a new connection, the server closes the old one
        t0 = time.time()
        check(await asyncio.to_thread(slack.request_disconnect) == [1], "disconnect sent")
        d = await recv(ws1)
        check(d == {"type": "disconnect", "reason": "refresh_requested",
                    "debug_info": {"host": "applink-emulator"}}, f"disconnect: {d}")
        ws2, hello, _ = await connect()
        check(hello["num_connections"] == 2 and slack.connections() == 2, f"second connection: {hello}")
        eids = await asyncio.to_thread(slack.send_event, ev, 0, None, "all")
        check(len(eids) == 2, f"to=all: {eids}")
        for ws in (ws1, ws2):
            env = await recv(ws)
            check(env["envelope_id"] in eids, f"to=all: {env}")
            await ws.send(json.dumps({"envelope_id": env["envelope_id"]}))
        try:
            await asyncio.wait_for(ws1.recv(), 10)
            fail("old connection got a message instead of being closed")
        except websockets.exceptions.ConnectionClosed:
            pass
        elapsed = time.time() - t0
        check(1.5 <= elapsed <= 5, f"old connection closed after {elapsed:.1f}s")
        check(ws1.close_code == 1000, f"server close code {ws1.close_code}")
        await asyncio.to_thread(slack.wait_connections, 1, 5)
        log = slack.connection_log()
        check(log[0]["closed_by"] == "server" and log[0]["disconnects"] == ["refresh_requested"], f"{log}")

        # a redelivery on the new connection: same event id, retry_attempt 1, new envelope
        rid = await asyncio.to_thread(slack.redeliver, eid)
        env = await recv(ws2)
        check(env["envelope_id"] == rid != eid and env["retry_attempt"] == 1
              and env["retry_reason"] == "timeout"
              and env["payload"]["event_id"] == slack.envelope(eid)["event_id"], f"redelivery: {env}")
        await ws2.send(json.dumps({"envelope_id": rid}))
        await asyncio.to_thread(slack.wait_ack, rid, 5)

        # a dropped connection: no close frame; events sent meanwhile wait for the next one
        check(await asyncio.to_thread(slack.drop_connections) == [2], "drop")
        try:
            await asyncio.wait_for(ws2.recv(), 5)
            fail("dropped connection still delivering")
        except websockets.exceptions.ConnectionClosed:
            pass
        check(ws2.close_code == 1006, f"dropped: close code {ws2.close_code}")
        await asyncio.to_thread(slack.wait_connections, 0, 5)
        qid = await asyncio.to_thread(slack.mention, "U123ALICE", "C0OPS", "queued")
        ws3, hello, _ = await connect()
        check(hello["num_connections"] == 1, f"hello after drop: {hello}")
        env = await recv(ws3)
        check(env["envelope_id"] == qid, f"queued envelope delivered after hello: {env}")
        await ws3.send(json.dumps({"envelope_id": qid, "payload": {}}))
        await asyncio.to_thread(slack.wait_ack, qid, 5)

        # a rejected handshake
        slack.reject_websocket(1, 503)
        r, _, _ = await asyncio.to_thread(api, "apps.connections.open", token=app)
        try:
            await websockets.connect(r["url"], ssl=ctx)
            fail("handshake not rejected")
        except websockets.exceptions.InvalidStatusCode as e:
            check(e.status_code == 503, f"rejected with {e.status_code}")
        ws4 = await websockets.connect(r["url"], ssl=ctx)  # the ticket still works
        check((await recv(ws4))["type"] == "hello", "hello after a rejected attempt")
        await ws4.close()
        await ws3.close()
        await asyncio.to_thread(slack.wait_connections, 0, 5)
        check(slack.connection_log()[-1]["closed_by"] == "client", f"{slack.connection_log()[-1]}")

    asyncio.run(client())
    check(slack.unacked() == [], f"unacked at the end: {slack.unacked()}")
    check(slack.bad_frames == [], f"bad frames: {slack.bad_frames}")
    check(slack.connection_count_total == 4, f"total connections {slack.connection_count_total}")
    slack.cleanup()
    print("slack emulator: OK")


if __name__ == "__main__":
    _self_check()
