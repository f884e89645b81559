"""Helpers for the integration tests: AWS (moto) pipelines, search clusters, the drsink binary."""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import requests

from servers import AWS_ENV, ROOT, free_port, port_open

FIXTURES = ROOT / "fixtures"
DRSINK_BIN = Path(os.environ.get("DRSINK_BIN", ROOT / "target" / "release" / "drsink"))


def unique(name: str, limit: int = 40) -> str:
    """A lowercase name valid for buckets, queues and indices, unique per call."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower())[: limit - 9].strip("-") or "t"
    return f"{base}-{uuid.uuid4().hex[:8]}"


def wait_for(condition, timeout: float, what: str, every: float = 0.1):
    """condition()'s first true value, polled every `every` seconds for `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@contextmanager
def redis_server(workdir: Path, tls: list[str] | None = None):
    """Debian's redis-server on a free loopback port, without persistence; yields the
    port. With `tls` (redis-server's --tls-* arguments) that port speaks TLS only."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: scripts/test installs it (Debian package redis-server)"
    port = free_port()
    ports = ["--port", "0", "--tls-port", str(port), *tls] if tls else ["--port", str(port)]
    proc = subprocess.Popen(
        [binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(f"redis://127.0.0.1:{port}") or proc.poll() is not None, 10, "redis-server")
        assert proc.poll() is None, "redis-server did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def gz(*members: bytes) -> bytes:
    """One gzip member per argument, concatenated (like `cat a.gz b.gz`)."""
    return b"".join(gzip.compress(m) for m in members)


def ndjson(records: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@dataclass
class Pipeline:
    queue_url: str
    buckets: list[str]


@dataclass
class Aws:
    endpoint: str
    env: dict[str, str] = field(init=False)
    s3: Any = field(init=False)
    sqs: Any = field(init=False)

    def __post_init__(self) -> None:
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, **AWS_ENV}
        kw = dict(endpoint_url=self.endpoint, region_name=AWS_ENV["AWS_REGION"],
                  aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                  aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"])
        self.s3 = boto3.client("s3", **kw)
        self.sqs = boto3.client("sqs", **kw)

    def make_pipeline(self, name: str, buckets: int = 2) -> Pipeline:
        """A fresh queue and `buckets` buckets notifying it of every ObjectCreated event.

        moto needs no queue policy. It puts one `s3:TestEvent` message per bucket on
        the queue when the notification is configured; those are left there on
        purpose, so the worker's test-event handling is exercised."""
        queue = unique(name, 60)
        queue_url = self.sqs.create_queue(QueueName=queue)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        config = {"QueueConfigurations": [{"QueueArn": arn["Attributes"]["QueueArn"],
                                           "Events": ["s3:ObjectCreated:*"]}]}
        names = [f"{queue}-{i}" for i in range(buckets)]
        for bucket in names:
            self.s3.create_bucket(Bucket=bucket)
            self.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
        return Pipeline(queue_url, names)

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=bucket, Key=key, Body=body)

    def queue_depth(self, queue_url: str) -> int:
        """Visible plus in-flight messages."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    def receive(self, queue_url: str, wait: int = 1) -> list[dict]:
        """Receive (without deleting) up to 10 message bodies, decoded."""
        res = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        return [json.loads(m["Body"]) for m in res.get("Messages", [])]


@dataclass
class Search:
    """One OpenSearch/Elasticsearch-compatible server and this test's index prefix."""

    flavour: str
    url: str
    prefix: str

    @property
    def pattern(self) -> str:
        return f"{self.prefix}-*"

    def request(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"{self.url}/{path.lstrip('/')}", timeout=30, **kw)

    def bulk(self, lines: list[dict], **params) -> dict:
        res = self.request("POST", "_bulk", params=params, data=ndjson(lines),
                           headers={"Content-Type": "application/x-ndjson"})
        res.raise_for_status()
        return res.json()

    def refresh(self, pattern: str | None = None) -> None:
        # noida-db (like Elasticsearch) shows new documents to search only after a refresh.
        self.request("POST", f"{pattern or self.pattern}/_refresh").raise_for_status()

    def docs(self, pattern: str | None = None) -> list[dict]:
        """Every document ({_id, _index, _source}) in the indices matching pattern."""
        pattern = pattern or self.pattern
        self.refresh(pattern)
        res = self.request("POST", f"{pattern}/_search", params={"scroll": "1m"}, json={"size": 1000})
        out: list[dict] = []
        while True:
            res.raise_for_status()
            body = res.json()
            hits = body["hits"]["hits"]
            out += [{k: h[k] for k in ("_id", "_index", "_source")} for h in hits]
            if not hits:
                break
            res = self.request("POST", "_search/scroll", json={"scroll": "1m", "scroll_id": body["_scroll_id"]})
        if scroll_id := body.get("_scroll_id"):
            self.request("DELETE", "_search/scroll", json={"scroll_id": scroll_id})
        return out

    def count_by_log_id(self, pattern: str | None = None) -> Counter:
        return Counter(d["_source"].get("log_id") for d in self.docs(pattern))


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    summary: dict | None


def _result(returncode: int, stdout: str, stderr: str) -> Result:
    lines = stdout.strip().splitlines()
    try:
        summary = json.loads(lines[-1]) if lines else None
    except ValueError:
        summary = None
    return Result(returncode, stdout, stderr, summary)


class Drsink:
    """A drsink process running in the background (for signals and kills mid-run).

    Output goes to files in cwd, not pipes, so a chatty process never blocks on
    a full pipe while the test is busy elsewhere."""

    _runs = 0

    def __init__(self, *args: str, env: dict[str, str], cwd: Path | None = None) -> None:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("DRSINK_", "AWS_")) and k != "RUST_BACKTRACE"}
        base["TZ"] = "Pacific/Kiritimati"  # UTC+14: local-time mistakes change the day
        Drsink._runs += 1
        out_dir = Path(cwd or ".")
        self.stdout_path = out_dir / f"drsink-{os.getpid()}-{Drsink._runs}.out"
        self.stderr_path = out_dir / f"drsink-{os.getpid()}-{Drsink._runs}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([str(DRSINK_BIN), *args], env={**base, **env}, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, cwd=cwd)

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 120) -> Result:
        """Waits for the exit (killing the process if it outlives timeout) -> Result."""
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return _result(returncode, self.stdout_path.read_text(errors="replace"),
                       self.stderr_path.read_text(errors="replace"))

    def stop(self) -> None:
        """Kills the process if it still runs (test teardown)."""
        if self.running():
            self.proc.kill()
        self.proc.wait()


def run_drsink(*args: str, env: dict[str, str], timeout: float = 120, cwd: Path | None = None) -> Result:
    """Run the drsink binary with exactly the given DRSINK_*/AWS_* environment.

    Inherited DRSINK_* and AWS_* variables (and RUST_BACKTRACE) are dropped so the
    caller's shell cannot change the flags; env may override TZ."""
    return Drsink(*args, env=env, cwd=cwd).wait(timeout)


def ok(result: Result) -> dict:
    """The summary of a run that must have succeeded."""
    rc, out, err, summary = result
    assert rc == 0, f"drsink exited {rc}\nstderr:\n{err[-4000:]}"
    assert summary is not None, f"no JSON summary as last stdout line:\n{out[-2000:]}"
    return summary


def letters_file(tmp_path: Path, ids: list[str], timestamp: str = "2026-11-21T10:00:00Z") -> Path:
    """A directory holding one dead-letter file: a rejected record per log_id."""
    source = tmp_path / "letters"
    source.mkdir()
    with (source / "dead-letter-old.ndjson").open("w") as f:
        for n, log_id in enumerate(ids):
            f.write(json.dumps({"reason": "rejected by the sink: test", "bucket": "b", "key": "k.ndjson",
                                "line": n + 1, "record": json.dumps({"log_id": log_id, "@timestamp": timestamp})})
                    + "\n")
    return source


def dead_letters(directory: Path) -> list[dict]:
    """Every entry of every *.ndjson file in the dead-letter directory."""
    return [json.loads(line) for f in sorted(directory.rglob("*.ndjson"))
            for line in f.read_text().splitlines() if line.strip()]
