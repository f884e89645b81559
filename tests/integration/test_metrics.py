"""--metrics-addr (/metrics, /healthz, /readyz) and the cluster's authentication,
through the real binary."""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import re
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

import pytest
import requests

from harness import FIXTURES, wait_for

KEY_A = "AWSLogs/region-a/2026/11/21/app.ndjson.gz"
KEY_B = "AWSLogs/region-b/2026/11/21/app.ndjson"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_metrics(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def put_dual_write(aws, pipeline) -> int:
    a = (FIXTURES / "dualwrite-region-a.ndjson").read_bytes()
    b = (FIXTURES / "dualwrite-region-b.ndjson").read_bytes()
    aws.put(pipeline.buckets[0], KEY_A, gzip.compress(a))
    aws.put(pipeline.buckets[1], KEY_B, b)
    return len((a + b).splitlines())


class Recorder:
    """A reverse proxy in front of the search server that records every request. With
    `serverless`, `GET /` is a 404, as OpenSearch Serverless answers it."""

    def __init__(self, upstream: str, serverless: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.serverless = serverless
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with recorder.lock:
                    recorder.requests.append({"method": self.command, "path": self.path,
                                              "headers": {k.lower(): v for k, v in self.headers.items()},
                                              "body": body})
                if recorder.serverless and self.command == "GET" and self.path == "/":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                forward = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type",)}
                res = requests.request(self.command, recorder.upstream + self.path, data=body or None,
                                       headers=forward, timeout=60)
                self.send_response(res.status_code)
                self.send_header("Content-Type", res.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(res.content)))
                self.end_headers()
                self.wfile.write(res.content)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Recorder":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bulk_requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"].startswith("/_bulk")]


def scrape(base: str) -> dict[str, float]:
    res = requests.get(f"{base}/metrics", timeout=10)
    assert res.status_code == 200
    return parse_metrics(res.text)


def test_metrics_match_the_summary(aws, pipeline, search, start_drsink, worker_args):
    records = put_dual_write(aws, pipeline)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_drsink(*worker_args(pipeline.queue_url, "--metrics-addr", f"127.0.0.1:{port}",
                                     exit_when_idle=False))

    def reachable():
        try:
            return requests.get(f"{base}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            assert proc.running(), "drsink exited before serving /healthz"
            return False

    wait_for(reachable, 30, "/healthz")

    def settled():
        m = scrape(base)
        done = m.get("drsink_records_indexed_total", 0) + m.get("drsink_records_duplicate_total", 0)
        # 2 object notifications + moto's 2 s3:TestEvents, all deleted.
        return (done == records and m.get("drsink_sqs_messages_deleted_total") == 4
                and aws.queue_depth(pipeline.queue_url) == 0 and m)

    metrics = wait_for(settled, 60, "all records acknowledged and messages deleted")
    ready = requests.get(f"{base}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert requests.get(f"{base}/nope", timeout=5).status_code == 404

    proc.send_signal(signal.SIGTERM)
    rc, _, err, summary = proc.wait(60)
    assert rc == 0, err[-3000:]
    assert summary is not None
    assert metrics["drsink_records_indexed_total"] == summary["indexed"] == 10
    assert metrics["drsink_records_duplicate_total"] == summary["duplicates"] == 4
    assert metrics["drsink_records_dead_lettered_total"] == summary["dead_lettered"] == 0
    assert metrics["drsink_records_filtered_total"] == summary["filtered"] == 0
    assert metrics["drsink_s3_bytes_read_total"] == summary["bytes"] > 0
    assert metrics["drsink_sqs_messages_received_total"] == summary["messages"] == 4
    retries = sum(v for k, v in metrics.items() if k.startswith("drsink_retries_total"))
    assert retries == summary["retried"]
    assert metrics["drsink_sqs_messages_in_flight"] == 0
    assert metrics["drsink_sink_request_duration_seconds_count"] >= 1
    # One DR lag observation per object, from its S3 event time.
    assert metrics["drsink_dr_lag_seconds_count"] == 2
    assert 0 <= metrics["drsink_dr_lag_seconds_sum"] < 120


def test_readyz_reports_an_unreachable_sink(aws, pipeline, search, start_drsink, worker_args, fault_proxy):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_drsink(*worker_args(pipeline.queue_url, "--metrics-addr", f"127.0.0.1:{port}",
                                     es_url=fault_proxy.url, exit_when_idle=False))

    def ready():
        try:
            return requests.get(f"{base}/readyz", timeout=30).status_code == 200
        except requests.ConnectionError:
            assert proc.running(), "drsink exited before serving /readyz"
            return False

    wait_for(ready, 30, "/readyz 200")
    fault_proxy.configure(down=True)
    # The cached answer expires within a few seconds.
    time.sleep(6)
    res = requests.get(f"{base}/readyz", timeout=30)
    assert res.status_code == 503, res.text
    assert res.text.startswith("not ready: sink: ")
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60).returncode == 0


PASSWORD = "pw-Zq8!never-logged"


@pytest.mark.parametrize("flags, expected", [
    (["--es-username", "drsink-writer", "--es-password", PASSWORD],
     "Basic " + base64.b64encode(f"drsink-writer:{PASSWORD}".encode()).decode()),
    (["--es-api-key", PASSWORD], f"ApiKey {PASSWORD}"),
    (["--es-bearer-token", PASSWORD], f"Bearer {PASSWORD}"),
], ids=["basic", "api-key", "bearer"])
def test_credentials_reach_the_cluster_and_never_the_log(aws, pipeline, search, run_drsink, worker_args,
                                                         flags, expected):
    records = put_dual_write(aws, pipeline)
    with Recorder(search.url) as recorder:
        rc, out, err, summary = run_drsink(*worker_args(pipeline.queue_url, *flags, es_url=recorder.url),
                                           env={"DRSINK_LOG": "debug"})
    assert rc == 0, err[-3000:]
    assert summary["indexed"] + summary["duplicates"] == records
    assert recorder.requests, "no request reached the cluster"
    assert all(r["headers"].get("authorization") == expected for r in recorder.requests)
    assert recorder.bulk_requests()
    assert PASSWORD not in err and PASSWORD not in out
    # A wrong combination is refused without echoing the secret.
    rc, out, err, _ = run_drsink(*worker_args(pipeline.queue_url, "--es-password", PASSWORD,
                                              es_url=recorder.url))
    assert rc != 0 and "--es-password needs --es-username" in err
    assert PASSWORD not in err and PASSWORD not in out


def _sigv4_signature(req: dict, secret: str, region: str, service: str) -> str:
    """The SigV4 signature of a recorded request, computed independently of drsink."""
    headers = req["headers"]
    match = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", headers["authorization"])
    assert match, headers["authorization"]
    _, date, _, _, signed, _ = match.groups()
    path, _, query = req["path"].partition("?")
    # Names and values as AWS canonicalizes them: decoded, then every byte but
    # A-Z a-z 0-9 - _ . ~ percent-encoded (`*` too, which URLs may leave bare).
    pairs = [pair.partition("=") for pair in query.split("&")] if query else []
    canonical_query = "&".join(sorted(
        f"{quote(unquote(name), safe='-_.~')}={quote(unquote(value), safe='-_.~')}" for name, _, value in pairs))
    canonical_headers = "".join(f"{h}:{' '.join(headers[h].split())}\n" for h in signed.split(";"))
    payload = hashlib.sha256(req["body"]).hexdigest()
    canonical = "\n".join([req["method"], path, canonical_query, canonical_headers, signed, payload])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", headers["x-amz-date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("service", ["es", "aoss"])
def test_sigv4_signs_every_request(aws, pipeline, search, run_drsink, worker_args, service):
    records = put_dual_write(aws, pipeline)
    access_key, secret = "AKIDDRSINKTEST", "sigv4-Secret/never+logged"
    # Serverless (aoss) has no `GET /`: the start-up check asks for the index names instead.
    with Recorder(search.url, serverless=service == "aoss") as recorder:
        rc, out, err, summary = run_drsink(*worker_args(
            pipeline.queue_url, "--es-aws-sigv4", "--es-aws-service", service, "--es-aws-region", "eu-west-3",
            es_url=recorder.url), env={"DRSINK_LOG": "debug", "AWS_ACCESS_KEY_ID": access_key,
                                       "AWS_SECRET_ACCESS_KEY": secret})
    assert rc == 0, err[-3000:]
    assert summary["indexed"] + summary["duplicates"] == records
    bulk = recorder.bulk_requests()
    assert bulk
    for req in recorder.requests:
        auth = req["headers"]["authorization"]
        assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={access_key}/"), auth
        assert f"/eu-west-3/{service}/aws4_request, SignedHeaders=" in auth
        assert auth.endswith("Signature=" + _sigv4_signature(req, secret, "eu-west-3", service))
        if service == "aoss":
            assert req["headers"]["x-amz-content-sha256"] == hashlib.sha256(req["body"]).hexdigest()
            assert "x-amz-content-sha256" in auth
    probes = [r["path"] for r in recorder.requests if r["method"] == "GET"]
    assert probes == (["/_cat/indices?h=index"] if service == "aoss" else ["/"]), probes
    assert secret not in err and secret not in out


def test_assumed_role_reads_s3(aws, pipeline, search, run_drsink, worker_args):
    """--assume-role-arn goes through STS (moto's) for the S3 client; the external id is never logged."""
    records = put_dual_write(aws, pipeline)
    external_id = "ext-id-Never-Logged-42"
    rc, out, err, summary = run_drsink(*worker_args(
        pipeline.queue_url, "--assume-role-arn", "arn:aws:iam::123456789012:role/drsink-archive-reader",
        "--external-id", external_id), env={"DRSINK_LOG": "debug"})
    assert rc == 0, err[-3000:]
    assert summary["indexed"] + summary["duplicates"] == records
    assert external_id not in err and external_id not in out
    rc, _, err, _ = run_drsink(*worker_args(pipeline.queue_url, "--assume-role-arn", "drsink-reader"))
    assert rc != 0 and "is not a role ARN" in err
