"""Test support: a Splunk HTTP Event Collector (HEC) receiver, for the Splunk sink's tests.

No Splunk can be installed here, so this small server answers like HEC does, as
Splunk's documentation describes it ("Format events for HTTP Event Collector",
"About HTTP Event Collector Indexer Acknowledgment", "Troubleshoot HTTP Event
Collector" status codes):

- `POST /services/collector/event` (also `/services/collector`, `/event/1.0`):
  `Authorization: Splunk <token>`; a body of concatenated JSON event objects
  (optionally `Content-Encoding: gzip`). Events are processed in order; the first
  one that is malformed JSON (code 6 "Invalid data format"), lacks `event`
  (code 12 "Event field is required"), has a blank `event` (code 13) or non-flat
  `fields` (code 15) ends the request with HTTP 400 and `invalid-event-number`
  (0-based); the events before it are kept, as Splunk keeps them.
- Token errors: no header 401 code 2, a header not `Splunk <token>` 401 code 3,
  an unknown token 403 code 4. An empty body: 400 code 5 "No data". A body above
  `max_content_length`: 413.
- Indexer acknowledgement (`ack=True`): every event request needs a channel
  (`X-Splunk-Request-Channel` header or `channel` query parameter; missing: 400
  code 10, not a GUID: 400 code 11) and is answered with an `ackId` (counting
  from 0 per channel). `POST /services/collector/ack` with `{"acks":[ids]}` answers
  `{"acks":{"<id>":bool}}`; an id turns true `ack_delay` seconds after its request
  and, as in Splunk, is forgotten once reported true. Without ack, the ack
  endpoint answers 400 code 14 "ACK is disabled". `restart()` does what a HEC
  restart does to a channel: the events not yet acknowledged are lost, and
  ackIds count from 0 again.
- `GET /services/collector/health`: 200 code 17 "HEC is healthy".

Faults, set by the test at run time: `busy_next` (answer that many event requests
503 code 9 "Server is busy", keeping nothing), `invalid_log_ids` (events whose
`fields.log_id` is listed are answered as malformed, code 6), `unnamed_invalid_log_ids`
(the same without an `invalid-event-number`, the whole request refused), `allowed_indexes`
(when set, an event naming another index ends the request with 400 code 7
"Incorrect index" and its `invalid-event-number`, as Splunk answers a token that
may not write there), `unhealthy` (the health endpoint answers 503 code 18 "HEC is
unhealthy, queues are full" and every event request 503 code 9 "Server is busy"),
`max_content_length`, and `foreign`: not HEC at all, as a wrong `--hec-url` answers:
"redirect" answers every request 302 to `/login`, which is a 200 HTML page (a
Splunk Web or single sign-on URL), and "page" answers every request with a 200
HTML page (a load balancer's maintenance page).
"""
from __future__ import annotations

import gzip
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
EVENT_PATHS = {"/services/collector", "/services/collector/event", "/services/collector/event/1.0"}


class HecReceiver:
    def __init__(self, token: str = "00000000-1111-2222-3333-444444444444", ack: bool = False,
                 ack_delay: float = 0.0, max_content_length: int = 1_000_000,
                 tls: ssl.SSLContext | None = None) -> None:
        """With `tls` (a server context), HEC is served over HTTPS."""
        self.token = token
        self.ack = ack
        self.ack_delay = ack_delay
        self.max_content_length = max_content_length
        self.busy_next = 0
        self.invalid_log_ids: set[str] = set()
        self.unnamed_invalid_log_ids: set[str] = set()
        self.allowed_indexes: set[str] | None = None
        self.unhealthy = False
        self.foreign: str | None = None
        # Like a sticky load balancer: every answer sets this cookie; the Cookie
        # header of each POST is recorded.
        self.sticky_cookie: str | None = None
        self.cookies: list[str | None] = []
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.requests = 0          # event requests, of any outcome
        self.busy_answers = 0
        self.too_large_answers = 0
        self.ack_polls = 0
        self.polled_ack_ids: set[int] = set()
        self.channels: set[str] = set()
        self.gzip_requests = 0
        self._acks: dict[str, dict[int, float]] = {}   # channel -> ackId -> ready time
        self._next_ack: dict[str, int] = {}
        self._unindexed: dict[tuple[str, int], list[dict]] = {}  # (channel, ackId) -> its events
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "HecReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def counts(self) -> Counter:
        """Events received per fields.log_id."""
        with self.lock:
            return Counter(e.get("fields", {}).get("log_id") for e in self.events)

    def pending_acks(self) -> int:
        with self.lock:
            return sum(len(a) for a in self._acks.values())

    def restart(self) -> int:
        """As if HEC restarted: the events whose ack is not ready yet are lost, and every
        channel's ackIds start again from 0. Returns the number of events lost."""
        now = time.monotonic()
        with self.lock:
            lost = {id(e) for (channel, ack_id), events in self._unindexed.items()
                    if self._acks.get(channel, {}).get(ack_id, 0) > now for e in events}
            self.events = [e for e in self.events if id(e) not in lost]
            self._acks.clear()
            self._next_ack.clear()
            self._unindexed.clear()
            return len(lost)

    # ------------------------------------------------------------------ protocol

    def _auth(self, header: str | None) -> tuple[int, dict] | None:
        if not header:
            return 401, {"text": "Token is required", "code": 2}
        scheme, _, token = header.partition(" ")
        if scheme != "Splunk" or not token:
            return 401, {"text": "Invalid authorization", "code": 3}
        if token.strip() != self.token:
            return 403, {"text": "Invalid token", "code": 4}
        return None

    def _channel(self, headers, query: dict) -> tuple[str | None, tuple[int, dict] | None]:
        channel = headers.get("X-Splunk-Request-Channel") or (query.get("channel") or [None])[0]
        if not channel:
            return None, (400, {"text": "Data channel is missing", "code": 10})
        if not GUID.match(channel):
            return None, (400, {"text": "Invalid data channel", "code": 11})
        return channel, None

    def _events(self, body: bytes, channel: str | None) -> tuple[int, dict]:
        if not body.strip():
            return 400, {"text": "No data", "code": 5}
        text = body.decode("utf-8", errors="replace")
        decoder = json.JSONDecoder()
        pos, number, kept = 0, 0, []

        def fail(code: int, message: str) -> tuple[int, dict]:
            with self.lock:
                self.events.extend(kept)
            return 400, {"text": message, "code": code, "invalid-event-number": number}

        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                break
            try:
                event, pos = decoder.raw_decode(text, pos)
            except ValueError:
                return fail(6, "Invalid data format")
            if not isinstance(event, dict):
                return fail(6, "Invalid data format")
            if "event" not in event:
                return fail(12, "Event field is required")
            if event["event"] in ("", None):
                return fail(13, "Event field cannot be blank")
            fields = event.get("fields", {})
            if not isinstance(fields, dict) or any(isinstance(v, dict) for v in fields.values()):
                return fail(15, "Error in handling indexed fields")
            if fields.get("log_id") in self.invalid_log_ids:
                return fail(6, "Invalid data format")
            if fields.get("log_id") in self.unnamed_invalid_log_ids:
                return 400, {"text": "Invalid data format", "code": 6}  # no event named, nothing kept
            if self.allowed_indexes is not None and event.get("index") not in self.allowed_indexes:
                return fail(7, "Incorrect index")
            kept.append(event)
            number += 1
        with self.lock:
            self.events.extend(kept)
            reply = {"text": "Success", "code": 0}
            if self.ack and channel:
                ack_id = self._next_ack.get(channel, 0)
                self._next_ack[channel] = ack_id + 1
                self._acks.setdefault(channel, {})[ack_id] = time.monotonic() + self.ack_delay
                self._unindexed[(channel, ack_id)] = kept
                reply["ackId"] = ack_id
        return 200, reply

    def _ack_query(self, body: bytes, channel: str) -> tuple[int, dict]:
        try:
            ids = json.loads(body)["acks"]
            assert isinstance(ids, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return 400, {"text": "Invalid data format", "code": 6}
        now = time.monotonic()
        out = {}
        with self.lock:
            self.ack_polls += 1
            pending = self._acks.setdefault(channel, {})
            for ack_id in ids:
                self.polled_ack_ids.add(ack_id)
                ready = pending.get(ack_id)
                done = ready is not None and ready <= now
                if done:
                    del pending[ack_id]
                out[str(ack_id)] = done
        return 200, {"acks": out}

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                if receiver.sticky_cookie:
                    self.send_header("Set-Cookie", f"{receiver.sticky_cookie}; Path=/")
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _foreign(self) -> bool:
                """Answers as the server that is not HEC, if it is one."""
                if receiver.foreign == "redirect" and not self.path.startswith("/login"):
                    self.send_response(302)
                    self.send_header("Location", "/login")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return True
                if receiver.foreign:
                    page = b"<html><body>Sign in</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return True
                return False

            def do_GET(self) -> None:
                if self._foreign():
                    return
                path = urllib.parse.urlsplit(self.path).path.rstrip("/")
                if path in ("/services/collector/health", "/services/collector/health/1.0"):
                    if receiver.unhealthy:
                        self._reply(503, {"text": "HEC is unhealthy, queues are full", "code": 18})
                    else:
                        self._reply(200, {"text": "HEC is healthy", "code": 17})
                else:
                    self._reply(404, {"text": "The requested URL was not found on this server.", "code": 404})

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                path, query = url.path.rstrip("/"), urllib.parse.parse_qs(url.query)
                raw = self._body()
                if self._foreign():
                    return
                with receiver.lock:
                    receiver.cookies.append(self.headers.get("Cookie"))
                if path not in EVENT_PATHS and path != "/services/collector/ack":
                    self._reply(404, {"text": "The requested URL was not found on this server.", "code": 404})
                    return
                if error := receiver._auth(self.headers.get("Authorization")):
                    self._reply(*error)
                    return
                if len(raw) > receiver.max_content_length:
                    with receiver.lock:
                        receiver.too_large_answers += 1
                    self._reply(413, {"text": "Content too large", "code": 413})
                    return
                body = raw
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    try:
                        body = gzip.decompress(raw)
                    except (OSError, EOFError):
                        self._reply(400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 0})
                        return
                channel = None
                if receiver.ack:
                    channel, error = receiver._channel(self.headers, query)
                    if error:
                        self._reply(*error)
                        return
                    receiver.channels.add(channel)
                if path == "/services/collector/ack":
                    if not receiver.ack:
                        self._reply(400, {"text": "ACK is disabled", "code": 14})
                    else:
                        self._reply(*receiver._ack_query(body, channel))
                    return
                with receiver.lock:
                    if body.strip():
                        receiver.requests += 1  # not counting empty probes
                    if body is not raw:
                        receiver.gzip_requests += 1
                    busy = receiver.unhealthy or (body.strip() and receiver.busy_next > 0)
                    if busy:
                        receiver.busy_next -= 1
                        receiver.busy_answers += 1
                if busy:
                    self._reply(503, {"text": "Server is busy", "code": 9})
                    return
                self._reply(*receiver._events(body, channel))

        return Handler
