"""Test support: an HTTP reverse proxy in front of a search server that injects faults.

Not part of drsink. The fault-injection tests put it between drsink and a real
server to make the cluster throttle, slow down or vanish, changing the faults
while drsink runs:

    proxy = FaultProxy(search.url).start()
    proxy.configure(request_fail_share=0.2, item_reject_share=0.3)
    ... run drsink with --es-url proxy.url ...
    proxy.stats["rejected_items"]
    proxy.stop()

Faults, each applied to `_bulk` requests only (other requests pass through):
- request_fail_share: that share of whole requests is answered with one of
  request_fail_statuses (429, 503) without reaching the server, with
  request_fail_error as the answer's "error" if set.
- item_reject_share: that share of the items is taken out of the request
  before it is forwarded, and answered with a 429 `es_rejected_execution_exception`
  item at its position in the server's response. (Forwarding everything and
  rewriting the answer afterwards would not do: the server would already have
  written the document, so a retry would be a duplicate, not a retry.)
- item_status_by_log_id: items whose document has one of these log_ids are taken
  out the same way, every time, and answered with its status: 429 (throttled) or
  400 `mapper_parsing_exception` (a document the mapping refuses).
- delay: seconds to hold each response after the server has answered, so a
  worker can be killed while its batch is indexed but not yet acknowledged.
- down: every request, on new and kept-alive connections, has its connection
  cut without an answer, as when the cluster's node has gone.

The server is threaded (one thread per connection), speaks HTTP/1.1 with
keep-alive, and reads Content-Length or chunked request bodies.
"""
from __future__ import annotations

import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
              "upgrade", "content-length", "host", "content-encoding", "accept-encoding"}
BULK_OPS_WITH_SOURCE = {"index", "create", "update"}


def split_bulk(body: bytes) -> list[bytes]:
    """The items of a bulk body, each its action line plus source line, with newlines."""
    lines = body.splitlines(keepends=True)
    items: list[bytes] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        action = json.loads(lines[i])
        takes_source = next(iter(action)) in BULK_OPS_WITH_SOURCE
        item = b"".join(lines[i:i + (2 if takes_source else 1)])
        items.append(item if item.endswith(b"\n") else item + b"\n")
        i += 2 if takes_source else 1
    return items


ITEM_ERRORS = {
    429: {"type": "es_rejected_execution_exception",
          "reason": "rejected execution of coordinating operation (injected by faultproxy)"},
    400: {"type": "mapper_parsing_exception", "reason": "failed to parse (injected by faultproxy)"},
}


def rejected_item(item: bytes, status: int = 429) -> dict:
    """The answer for one bulk item: 429 as a throttled node gives it, or 400 as for a
    document the mapping refuses."""
    action = json.loads(item.splitlines()[0])
    op, meta = next(iter(action.items()))
    return {op: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": status,
                 "error": ITEM_ERRORS[status]}}


def log_id_of(item: bytes) -> str | None:
    lines = item.splitlines()
    return json.loads(lines[1]).get("log_id") if len(lines) > 1 else None


class FaultProxy:
    def __init__(self, upstream: str, seed: int = 7) -> None:
        self.upstream = upstream.rstrip("/")
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.request_fail_share = 0.0
        self.request_fail_statuses: tuple[int, ...] = (429, 503)
        self.request_fail_error: dict | None = None  # the injected answer's "error", if not the default
        self.item_reject_share = 0.0
        # Items whose document has this log_id are always answered with this status (429, 400).
        self.item_status_by_log_id: dict[str, int] = {}
        self.delay = 0.0
        self.down = False
        self.redirect_bulk = False  # answer bulk requests with a 307 to the upstream
        # Answer a bulk request that asks for filter_path with a bare 400, as a proxy
        # or a store that does not know the parameter may.
        self.refuse_filter_path = False
        # In front of moto: answer this many visibility extensions with SQS's
        # MessageNotInflight (what a stale receipt handle gets).
        self.sqs_not_inflight = 0
        # In front of moto: refuse every S3 GetObject (path-style) with AccessDenied,
        # as a bucket policy without s3:GetObject (or kms:Decrypt) does; HEAD passes.
        self.s3_deny_get = False
        self.stats: dict[str, int] = dict.fromkeys(
            ["requests", "bulk_requests", "failed_requests", "forwarded_items", "rejected_items", "cut",
             "largest_bulk_body", "redirected", "not_inflight", "filtered_bulk_requests",
             "refused_filter_path"], 0)
        self._local = threading.local()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control, from the test ---------------------------------------------

    def configure(self, **settings: Any) -> "FaultProxy":
        """Change faults at runtime: request_fail_share, request_fail_statuses,
        request_fail_error, item_reject_share, item_status_by_log_id, delay, down, redirect_bulk,
        refuse_filter_path, sqs_not_inflight, s3_deny_get."""
        with self._lock:
            for name, value in settings.items():
                if not hasattr(self, name) or name.startswith("_") or name in ("upstream", "stats"):
                    raise AttributeError(f"FaultProxy has no setting {name!r}")
                setattr(self, name, value)
        return self

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def chance(self, share: float) -> bool:
        with self._lock:
            return share > 0 and self._random.random() < share

    def choice(self, options):
        with self._lock:
            return self._random.choice(options)

    @property
    def url(self) -> str:
        assert self._server, "proxy not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- forwarding -----------------------------------------------------------

    def session(self) -> requests.Session:
        # One upstream session (and keep-alive connection) per handler thread.
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        try:
            res = self.session().request(method, self.upstream + path, headers=headers, data=body or None,
                                         timeout=120)
        except requests.RequestException as e:
            return 502, {"Content-Type": "application/json"}, json.dumps(
                {"error": {"type": "faultproxy_upstream_error", "reason": str(e)}, "status": 502}).encode()
        out_headers = {k: v for k, v in res.headers.items() if k.lower() not in HOP_BY_HOP}
        return res.status_code, out_headers, res.content

    def bulk(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        self.count("bulk_requests")
        with self._lock:
            self.stats["largest_bulk_body"] = max(self.stats["largest_bulk_body"], len(body))
        if self.chance(self.request_fail_share):
            status = self.choice(self.request_fail_statuses)
            self.count("failed_requests")
            kind = "es_rejected_execution_exception" if status == 429 else "unavailable_shards_exception"
            error = self.request_fail_error or {"type": kind, "reason": "injected by faultproxy"}
            return status, {"Content-Type": "application/json"}, json.dumps(
                {"error": error, "status": status}).encode()
        try:
            items = split_bulk(body)
        except (ValueError, StopIteration):
            return self.forward(method, path, headers, body)  # let the server judge it
        statuses = {i: self.item_status_by_log_id[log_id_of(item)] for i, item in enumerate(items)
                    if log_id_of(item) in self.item_status_by_log_id}
        rejected = {i for i in range(len(items)) if i in statuses or self.chance(self.item_reject_share)}
        kept = [item for i, item in enumerate(items) if i not in rejected]
        if kept:
            status, out_headers, content = self.forward(method, path, headers, b"".join(kept))
            if status != 200:
                return status, out_headers, content
            answer = json.loads(content)
        else:
            status, out_headers, answer = 200, {"Content-Type": "application/json"}, {"took": 0, "errors": False,
                                                                                        "items": []}
        self.count("forwarded_items", len(kept))
        self.count("rejected_items", len(rejected))
        forwarded = iter(answer["items"])
        answer["items"] = [rejected_item(item, statuses.get(i, 429)) if i in rejected else next(forwarded)
                           for i, item in enumerate(items)]
        answer["errors"] = bool(rejected) or answer.get("errors", False)
        return status, out_headers, json.dumps(answer).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    proxy: FaultProxy

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()  # CRLF after the chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def cut(self) -> None:
        """Close the connection without an answer."""
        self.proxy.count("cut")
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def handle_any(self) -> None:
        proxy = self.proxy
        proxy.count("requests")
        body = self.read_body()
        if proxy.down:
            return self.cut()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        path = self.path.split("?", 1)[0]
        if proxy.s3_deny_get and self.command == "GET" and path.strip("/").count("/") >= 1:
            return self.answer(403, {"Content-Type": "application/xml"},
                               b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
        if self.headers.get("X-Amz-Target") == "AmazonSQS.ChangeMessageVisibility" and self.not_inflight(body):
            return self.answer(400, {"Content-Type": "application/x-amz-json-1.0",
                                     "x-amzn-query-error": "AWS.SimpleQueueService.MessageNotInflight;Sender"},
                               json.dumps({"__type": "com.amazonaws.sqs#MessageNotInflight",
                                           "message": "The message is not in flight."}).encode())
        if self.command in ("POST", "PUT") and path.rstrip("/").endswith("/_bulk") and proxy.redirect_bulk:
            proxy.count("redirected")
            status, out_headers, content = 307, {"Location": proxy.upstream + self.path}, b""
        elif self.command in ("POST", "PUT") and path.rstrip("/").endswith("/_bulk"):
            filtered = "filter_path" in parse_qs(urlsplit(self.path).query)
            proxy.count("filtered_bulk_requests", int(filtered))
            if filtered and proxy.refuse_filter_path:
                proxy.count("refused_filter_path")
                return self.answer(400, {"Content-Type": "text/html"},
                                   b"<html><body><h1>400 Bad Request</h1></body></html>")
            status, out_headers, content = proxy.bulk(self.command, self.path, headers, body)
            if proxy.delay:
                time.sleep(proxy.delay)
        else:
            status, out_headers, content = proxy.forward(self.command, self.path, headers, body)
        if proxy.down:  # went down while the request was on its way
            return self.cut()
        self.answer(status, out_headers, content)

    def not_inflight(self, body: bytes) -> bool:
        """Whether this visibility extension is answered with MessageNotInflight."""
        proxy = self.proxy
        with proxy._lock:
            if proxy.sqs_not_inflight <= 0 or json.loads(body).get("VisibilityTimeout", 0) == 0:
                return False
            proxy.sqs_not_inflight -= 1
            proxy.stats["not_inflight"] += 1
            return True

    def answer(self, status: int, out_headers: dict, content: bytes) -> None:
        try:
            self.send_response(status)
            for k, v in out_headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any
