"""End-to-end tests of every notification shape, compression and object format
the DR region receives (issue 3), through the real `drsink worker` against moto
and both search flavours.

Most tests put objects in a bucket with no notification configured and send the
SQS bodies themselves, so they control exactly which shape each message has.
Expected ids, timestamps and counts are computed from the fixtures' content."""
from __future__ import annotations

import copy
import gzip
import json
import random
import re
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote_plus

import pytest
import requests
import zstandard

from harness import FIXTURES, dead_letters, gz, ndjson, ok, unique

NOTIFICATIONS = FIXTURES / "notifications"


# --- AWS set-up and notification bodies --------------------------------------------------

def make_queue(aws, name: str, **attributes: str) -> str:
    return aws.sqs.create_queue(QueueName=unique(name, 60), Attributes=attributes)["QueueUrl"]


def make_bucket(aws, name: str, region: str | None = None, versioned: bool = False) -> str:
    """A bucket with no notification: only the messages a test sends reach its queue."""
    bucket = unique(name, 50)
    kw = {"CreateBucketConfiguration": {"LocationConstraint": region}} if region else {}
    aws.s3.create_bucket(Bucket=bucket, **kw)
    if versioned:
        aws.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def send(aws, queue_url: str, body) -> str:
    """Sends one message (a dict is sent as JSON) and returns its message id."""
    text = body if isinstance(body, str) else json.dumps(body)
    return aws.sqs.send_message(QueueUrl=queue_url, MessageBody=text)["MessageId"]


def _fixture_json(name: str) -> dict:
    return json.loads((NOTIFICATIONS / name).read_text())


def s3_record(bucket: str, key: str, region: str = "us-east-1", version_id: str | None = None,
              event: str = "ObjectCreated:Put") -> dict:
    """One `Records[]` entry shaped like the documented sample, the key URL-encoded as S3
    encodes it (space as `+`, a literal `+` as `%2B`, UTF-8 percent-encoded)."""
    record = copy.deepcopy(_fixture_json("s3-direct-two-records.json")["Records"][0])
    record["awsRegion"] = region
    record["eventName"] = event
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["s3"]["object"]["key"] = quote_plus(key, safe="/")
    if version_id:
        record["s3"]["object"]["versionId"] = version_id
    return record


def s3_event(*records: dict) -> dict:
    return {"Records": list(records)}


def sns_wrapped(event: dict) -> dict:
    """S3 → SNS → SQS without raw delivery: the event as a JSON string in `Message`."""
    envelope = _fixture_json("sns-wrapped-s3.json")
    envelope["Message"] = json.dumps(event)
    return envelope


def eventbridge_object_created(bucket: str, key: str, region: str = "us-east-1") -> dict:
    event = _fixture_json("eventbridge-object-created.json")
    event["region"] = region
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"]["key"] = key  # EventBridge does not URL-encode keys
    return event


def s3_test_event(bucket: str) -> dict:
    return {**_fixture_json("s3-test-event.json"), "Bucket": bucket}


# --- assertions ---------------------------------------------------------------------------

def origin(bucket: str, key: str, line: int, entry: int | None = None) -> dict:
    """The `drsink` field every indexed document carries."""
    out = {"source": f"s3://{bucket}/{key}", "line": line}
    if entry is not None:
        out["entry"] = entry
    return out


def docs_by_id(search) -> dict[str, dict]:
    """{_id: document}; fails on a document whose `_id` is not its `log_id`."""
    docs = search.docs()
    for d in docs:
        assert d["_id"] == d["_source"].get("log_id"), d
    by_id = {d["_id"]: d for d in docs}
    assert len(by_id) == len(docs)
    return by_id


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except (ValueError, TypeError, AttributeError):
        return False


def put_ndjson(aws, bucket: str, key: str, ids: list[str], compress=lambda b: b, **fields) -> dict:
    """Puts records {log_id, n} and returns {log_id: 1-based line}."""
    aws.put(bucket, key, compress(ndjson([{"log_id": i, "n": n, **fields} for n, i in enumerate(ids)])))
    return {i: n + 1 for n, i in enumerate(ids)}


def assert_no_dead_letters(summary, dead_letter_dir):
    assert summary["dead_lettered"] == 0, summary
    assert dead_letters(dead_letter_dir) == []


# --- notifications ------------------------------------------------------------------------

def test_notification_shapes(aws, search, run_worker, dead_letter_dir):
    """Direct S3 events (several Records), SNS-wrapped and raw-delivery SNS, EventBridge
    Object Created, MinIO's `s3:ObjectCreated:Put`, s3:TestEvent bare and SNS-wrapped, and
    an ObjectRemoved event."""
    queue = make_queue(aws, "shapes")
    bucket = make_bucket(aws, "shapes")
    objects = {  # key -> {log_id: line}
        "direct/a b+c ü.ndjson": None,  # '+' for the space, %2B for the '+', UTF-8
        "direct/second.ndjson.gz": None,
        "direct/third one.ndjson": None,
        "sns/wrapped é.ndjson": None,
        "sns/raw delivery.ndjson": None,
        "eventbridge/dr-stream 12 00 abc+def.gz": None,  # key verbatim: a space and a literal '+'
        "minio/bucket notification.ndjson": None,
    }
    for n, key in enumerate(objects):
        objects[key] = put_ndjson(aws, bucket, key, [f"ev{n}-a", f"ev{n}-b"],
                                  compress=gzip.compress if key.endswith("gz") else (lambda b: b))
    keys = list(objects)
    send(aws, queue, s3_event(*(s3_record(bucket, k) for k in keys[:3])))
    send(aws, queue, sns_wrapped(s3_event(s3_record(bucket, keys[3]))))
    send(aws, queue, s3_event(s3_record(bucket, keys[4])))  # raw-delivery SNS: the S3 event itself
    send(aws, queue, eventbridge_object_created(bucket, keys[5]))
    send(aws, queue, s3_test_event(bucket))
    send(aws, queue, sns_wrapped(s3_test_event(bucket)))
    send(aws, queue, s3_event(s3_record(bucket, keys[2], event="ObjectRemoved:Delete")))
    send(aws, queue, s3_event(s3_record(bucket, keys[6], event="s3:ObjectCreated:Put")))

    summary = ok(run_worker(queue))
    by_id = docs_by_id(search)
    expected = {log_id: (key, line) for key, ids in objects.items() for log_id, line in ids.items()}
    assert sorted(by_id) == sorted(expected)
    for log_id, (key, line) in expected.items():
        assert by_id[log_id]["_source"]["drsink"] == origin(bucket, key, line)
    assert summary["messages"] == 8
    assert summary["objects"] == 7
    assert summary["missing_objects"] == 0
    assert (summary["records"], summary["indexed"], summary["duplicates"]) == (14, 14, 0)
    assert summary["failed"] == 0
    assert_no_dead_letters(summary, dead_letter_dir)
    assert aws.queue_depth(queue) == 0


POISON = ["this is not JSON", json.dumps({"hello": "world", "Records": "not a list"})]


def test_poison_message_stays_on_queue(aws, search, run_worker, dead_letter_dir):
    queue = make_queue(aws, "poison")
    ids = [send(aws, queue, body) for body in POISON]
    rc, out, err, summary = run_worker(queue)
    assert rc == 1, f"exit {rc}\n{err[-3000:]}"
    assert summary is not None, out
    assert summary["failed"] == len(POISON)
    assert summary["dead_lettered_messages"] == 0
    for message_id in ids:
        assert message_id in err, f"stderr does not name message {message_id}:\n{err[-3000:]}"
    assert aws.queue_depth(queue) == len(POISON)  # in flight until their visibility timeout
    assert dead_letters(dead_letter_dir) == []


def test_poison_message_dead_lettered_after_max_receives(aws, search, run_worker, dead_letter_dir):
    queue = make_queue(aws, "poison-max", VisibilityTimeout="1")
    ids = {send(aws, queue, body): body for body in POISON}
    runs = []
    for _ in range(5):  # each receive within 1 s counts once; two receives are needed
        runs.append(run_worker(queue, "--max-receives", "2", "--visibility-timeout", "1"))
        if aws.queue_depth(queue) == 0:
            break
        time.sleep(1.5)
    summaries = [r.summary for r in runs]
    assert all(s is not None for s in summaries), runs
    assert aws.queue_depth(queue) == 0, summaries
    assert sum(s["dead_lettered_messages"] for s in summaries) == len(POISON), summaries
    # The first receive (ApproximateReceiveCount 1) must leave them on the queue.
    assert runs[0].summary["failed"] >= 1, runs[0]
    assert sum(s["messages"] for s in summaries) == 2 * len(POISON), summaries
    entries = dead_letters(dead_letter_dir)
    assert sorted(e["message_id"] for e in entries) == sorted(ids)
    for e in entries:
        assert e["message"] == ids[e["message_id"]]
        assert isinstance(e["reason"], str) and e["reason"]
        assert "record" not in e, e
    assert search.docs() == []


class RecordingProxy:
    """Forwards every request to moto and records (method, path, signing region, service),
    so a test can see which region the worker signed each S3 request for (moto itself
    serves a bucket whatever region a request names)."""

    def __init__(self, target: str):
        self.requests: list[tuple[str, str, str | None, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                scope = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/", self.headers.get("Authorization", ""))
                proxy.requests.append((self.command, self.path, *(scope.groups() if scope else (None, None))))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                res = requests.request(self.command, target + self.path, headers=headers, data=body,
                                       allow_redirects=False, stream=True, timeout=60)
                content = res.raw.read(decode_content=False)
                self.send_response(res.status_code)
                for k, v in res.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recording_proxy(moto_url):
    proxy = RecordingProxy(moto_url)
    yield proxy
    proxy.close()


def test_region_and_version_named_by_notification(aws, search, run_worker, dead_letter_dir, recording_proxy):
    queue = make_queue(aws, "region-version")
    west = make_bucket(aws, "west", region="us-west-2")
    west_ids = put_ndjson(aws, west, "west/app.ndjson", ["west-1", "west-2"])
    versioned = make_bucket(aws, "versioned", versioned=True)
    key = "versioned/app.ndjson"
    v1_ids = put_ndjson(aws, versioned, key, ["v1-a", "v1-b", "v1-c"])
    v1 = aws.s3.head_object(Bucket=versioned, Key=key)["VersionId"]
    put_ndjson(aws, versioned, key, ["v2-a"])
    assert aws.s3.head_object(Bucket=versioned, Key=key)["VersionId"] != v1
    send(aws, queue, s3_event(s3_record(west, "west/app.ndjson", region="us-west-2")))
    send(aws, queue, s3_event(s3_record(versioned, key, version_id=v1)))

    summary = ok(run_worker(queue, env={"AWS_ENDPOINT_URL": recording_proxy.url}))
    by_id = docs_by_id(search)
    assert sorted(by_id) == sorted([*west_ids, *v1_ids])  # v1's records, not v2's
    for log_id, line in v1_ids.items():
        assert by_id[log_id]["_source"]["drsink"] == origin(versioned, key, line)
    assert (summary["objects"], summary["indexed"], summary["missing_objects"]) == (2, 5, 0)
    assert aws.queue_depth(queue) == 0

    gets = [(path, region) for method, path, region, service in recording_proxy.requests
            if method == "GET" and service == "s3"]
    west_gets = [region for path, region in gets if path.startswith(f"/{west}/")]
    assert west_gets and set(west_gets) == {"us-west-2"}, gets
    version_gets = [path for path, region in gets if path.startswith(f"/{versioned}/")]
    assert version_gets and all(f"versionId={v1}" in p for p in version_gets), version_gets


def test_missing_object(aws, search, run_worker, dead_letter_dir):
    """An object, or the notified version of one, deleted before it was read: counted as
    missing, and the message deleted (nothing is left to index, and a retry cannot help)."""
    queue = make_queue(aws, "missing")
    bucket = make_bucket(aws, "missing")
    send(aws, queue, s3_event(s3_record(bucket, "gone/deleted before read.ndjson")))
    versioned = make_bucket(aws, "missing-version", versioned=True)
    key = "expired/noncurrent.ndjson"
    put_ndjson(aws, versioned, key, ["old-1"])
    old = aws.s3.head_object(Bucket=versioned, Key=key)["VersionId"]
    current = put_ndjson(aws, versioned, key, ["new-1"])
    aws.s3.delete_object(Bucket=versioned, Key=key, VersionId=old)
    send(aws, queue, s3_event(s3_record(versioned, key, version_id=old)))
    send(aws, queue, s3_event(s3_record(versioned, key)))
    summary = ok(run_worker(queue))
    assert summary["missing_objects"] == 2
    assert search.count_by_log_id() == {log_id: 1 for log_id in current}
    assert (summary["messages"], summary["records"], summary["failed"]) == (3, 1, 0)
    assert aws.queue_depth(queue) == 0
    assert_no_dead_letters(summary, dead_letter_dir)


def test_archived_object_is_dead_lettered_not_retried(aws, search, run_worker, dead_letter_dir):
    """An object in Glacier or Deep Archive cannot be read until it is restored: each is
    one dead letter naming its storage class and how to replay it, and its message is
    deleted instead of coming back until the queue gives up on it."""
    queue = make_queue(aws, "archived")
    bucket = make_bucket(aws, "archived")
    readable = put_ndjson(aws, bucket, "live/readable.ndjson", ["live-1", "live-2"])
    archived = {"cold/glacier part.ndjson": "GLACIER", "cold/deep.ndjson": "DEEP_ARCHIVE"}
    for key, storage_class in archived.items():
        aws.s3.put_object(Bucket=bucket, Key=key, Body=ndjson([{"log_id": key}]),
                          StorageClass=storage_class)
    send(aws, queue, s3_event(*(s3_record(bucket, key) for key in [*archived, "live/readable.ndjson"])))
    summary = ok(run_worker(queue))
    assert (summary["archived_objects"], summary["objects"], summary["failed"]) == (2, 1, 0)
    assert search.count_by_log_id() == {log_id: 1 for log_id in readable}
    assert aws.queue_depth(queue) == 0
    letters = {letter["key"]: letter for letter in dead_letters(dead_letter_dir)}
    assert set(letters) == set(archived)
    for key, storage_class in archived.items():
        reason = letters[key]["reason"]
        assert letters[key]["bucket"] == bucket and "record" not in letters[key]
        assert f"is archived ({storage_class}) and not restored" in reason, reason
        assert f"drsink backfill --bucket {bucket}" in reason, reason


# --- compression ---------------------------------------------------------------------------

def zst(*frames: bytes) -> bytes:
    """One zstd frame per argument, concatenated."""
    return b"".join(zstandard.ZstdCompressor().compress(f) for f in frames)


def test_compression_detected_by_magic_bytes(aws, pipeline, search, run_worker, dead_letter_dir):
    bucket = pipeline.buckets[0]
    recs = lambda tag, n: [{"log_id": f"{tag}-{i}", "n": i} for i in range(n)]
    objects = {  # key -> (body, records)
        "comp/multi-member.ndjson.gz": (gz(ndjson(recs("gzm", 6)[:2]), ndjson(recs("gzm", 6)[2:3]),
                                           ndjson(recs("gzm", 6)[3:])), recs("gzm", 6)),
        "comp/multi-frame.ndjson.zst": (zst(ndjson(recs("zsf", 5)[:2]), ndjson(recs("zsf", 5)[2:])),
                                        recs("zsf", 5)),
        "comp/plain.ndjson": (ndjson(recs("plain", 3)), recs("plain", 3)),
        "comp/plain named.ndjson.gz": (ndjson(recs("fakegz", 3)), recs("fakegz", 3)),
        "comp/gzip-no-suffix": (gzip.compress(ndjson(recs("nosuffix", 4))), recs("nosuffix", 4)),
        "comp/zstd named.log.gz": (zst(ndjson(recs("zstgz", 2))), recs("zstgz", 2)),
    }
    for key, (body, _) in objects.items():
        aws.put(bucket, key, body)
    summary = ok(run_worker(pipeline.queue_url))
    by_id = docs_by_id(search)
    expected = {r["log_id"]: (key, n + 1) for key, (_, rs) in objects.items() for n, r in enumerate(rs)}
    assert sorted(by_id) == sorted(expected)
    for log_id, (key, line) in expected.items():
        assert by_id[log_id]["_source"]["drsink"] == origin(bucket, key, line)
    assert summary["messages"] == len(objects) + 2  # + moto's two s3:TestEvents
    assert summary["objects"] == len(objects)
    assert (summary["records"], summary["indexed"]) == (len(expected), len(expected))
    assert summary["corrupt_objects"] == 0
    assert_no_dead_letters(summary, dead_letter_dir)
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_truncated_gzip_keeps_records_before_the_fault(aws, pipeline, search, run_worker, dead_letter_dir):
    rng = random.Random(3)
    total = 3000
    records = [{"log_id": f"t-{i:05d}", "@timestamp": "2026-11-21T12:00:00Z",
                "message": "%032x" % rng.getrandbits(128)} for i in range(total)]
    whole = gzip.compress(ndjson(records))
    cut = whole[: len(whole) // 2]
    readable = zlib.decompressobj(31).decompress(cut)  # everything before the fault
    complete = readable.count(b"\n")
    assert 0 < complete < total
    bucket, key = pipeline.buckets[1], "cut/truncated.ndjson.gz"
    aws.put(bucket, key, cut)

    result = run_worker(pipeline.queue_url)
    summary = ok(result)
    # The warning names the message as well as the object.
    warnings = [line for line in result.stderr.splitlines() if "corrupt or truncated" in line]
    assert warnings and all("message_id=" in line and key in line for line in warnings), result.stderr
    ids = sorted(search.count_by_log_id().elements())
    assert ids == [r["log_id"] for r in records[:complete]]
    assert summary["indexed"] == complete
    assert summary["corrupt_objects"] == 1
    entries = dead_letters(dead_letter_dir)
    assert len(entries) == 1, entries
    (entry,) = entries
    assert (entry["bucket"], entry["key"]) == (bucket, key)
    assert "corrupt or truncated" in entry["reason"], entry
    assert isinstance(entry["offset"], int) and not isinstance(entry["offset"], bool), entry
    assert 0 <= entry["offset"] <= len(readable), entry
    assert summary["failed"] == 0
    assert aws.queue_depth(pipeline.queue_url) == 0


@pytest.mark.parametrize("cut_at", [10, 12, 20])
def test_gzip_cut_within_its_first_bytes_is_a_corrupt_object(aws, pipeline, search, run_worker,
                                                             dead_letter_dir, cut_at):
    """Broken before a single byte decompresses: dead-lettered as a corrupt object, never
    retried as a failed read."""
    line = ndjson([{"log_id": "never-readable", "@timestamp": "2026-11-21T12:00:00Z"}])
    whole = gzip.compress(line)
    bucket, key = pipeline.buckets[0], f"cut/header-{cut_at}.ndjson.gz"
    aws.put(bucket, key, whole[:cut_at])

    summary = ok(run_worker(pipeline.queue_url))
    assert (summary["indexed"], summary["failed"], summary["corrupt_objects"]) == (0, 0, 1)
    entries = dead_letters(dead_letter_dir)
    faults = [e for e in entries if "record" not in e]
    assert len(faults) == 1, entries
    (fault,) = faults
    assert (fault["bucket"], fault["key"]) == (bucket, key)
    assert fault["reason"].startswith("Gzip stream is corrupt or truncated near byte "), fault
    assert 0 <= fault["offset"] <= cut_at, fault
    # What little inflated before the fault is the start of the line, kept as it was.
    partial = [e for e in entries if "record" in e]
    assert summary["records"] == len(partial) <= 1
    assert all(e["line"] == 1 and line.startswith(e["record"].encode()) for e in partial), partial
    assert search.count_by_log_id() == {}
    assert aws.queue_depth(pipeline.queue_url) == 0


# --- formats ------------------------------------------------------------------------------

def test_ndjson_line_endings_bom_blank_lines(aws, pipeline, search, run_worker, dead_letter_dir):
    bucket, key = pipeline.buckets[0], "ndjson/crlf bom.ndjson"
    lines = ['{"log_id":"crlf-1","@timestamp":"2026-11-21T01:00:00Z"}', "",
             '{"log_id":"crlf-2","message":"two"}', "   ", "",
             '{"log_id":"crlf-3","message":"last, no newline"}']
    aws.put(bucket, key, "\ufeff".encode() + "\r\n".join(lines).encode())
    bucket2, key2 = pipeline.buckets[1], "ndjson/blank lines.ndjson.gz"
    aws.put(bucket2, key2, gzip.compress(b'\n\n{"log_id":"lf-1"}\n\n{"log_id":"lf-2"}\n\n'))
    # `cat a.gz b.gz` of two files written with a BOM: b's BOM starts a later line.
    key3 = "ndjson/two boms.ndjson.gz"
    aws.put(bucket2, key3, gzip.compress('\ufeff{"log_id":"bom-1"}\n'.encode())
            + gzip.compress('\ufeff{"log_id":"bom-2"}\n'.encode()))

    summary = ok(run_worker(pipeline.queue_url))
    by_id = docs_by_id(search)
    assert {i: d["_source"]["drsink"] for i, d in by_id.items()} == {
        "crlf-1": origin(bucket, key, 1), "crlf-2": origin(bucket, key, 3),
        "crlf-3": origin(bucket, key, 6), "lf-1": origin(bucket2, key2, 3),
        "lf-2": origin(bucket2, key2, 5), "bom-1": origin(bucket2, key3, 1), "bom-2": origin(bucket2, key3, 2),
    }
    assert by_id["crlf-3"]["_source"]["message"] == "last, no newline"
    assert by_id["crlf-1"]["_index"] == f"{search.prefix}-2026.11.21"
    assert (summary["records"], summary["indexed"]) == (7, 7)
    assert_no_dead_letters(summary, dead_letter_dir)
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_plain_text_lines(aws, pipeline, search, run_worker, dead_letter_dir):
    """Each text line is one {"message": LINE} document with a content fingerprint as
    log_id: the ALB lines of the gzip and zstd samples are the same, so they merge."""
    bucket = pipeline.buckets[0]
    alb = (FIXTURES / "vector-multipart-zst.log").read_text().splitlines()
    beats = (FIXTURES / "beats-no-eol-twolines.txt").read_text().splitlines()
    gzipped = gzip.decompress((FIXTURES / "vector-gzipped.log").read_bytes()).decode().splitlines()
    # Text that starts with `[` is no JSON array (PHP, Apache error logs).
    bracketed = ["[2026-11-21 12:00:00] ERROR payment failed for order 7", "[INFO] retry ok",
                 "[2026-11-21 12:00:02] [notice] done"]
    objects = {
        "text/bracketed.log": ("\n".join(bracketed).encode() + b"\n", bracketed),
        "alb/vector-multipart-gzip.log.gz": ((FIXTURES / "vector-multipart-gzip.log.gz").read_bytes(), alb),
        "alb/vector-multipart-zst.log.zst": ((FIXTURES / "vector-multipart-zst.log.zst").read_bytes(), alb),
        "text/vector-gzipped.log": ((FIXTURES / "vector-gzipped.log").read_bytes(), gzipped),
        "text/beats-no-eol-twolines.txt": ((FIXTURES / "beats-no-eol-twolines.txt").read_bytes(), beats),
        "text/beats copy.txt.gz": (gzip.compress((FIXTURES / "beats-no-eol-twolines.txt").read_bytes()), beats),
    }
    assert len(alb) == 12 and len(beats) == 2 and len(gzipped) == 5
    for key, (body, _) in objects.items():
        aws.put(bucket, key, body)

    summary = ok(run_worker(pipeline.queue_url))
    by_id = docs_by_id(search)
    # Where each line may have come from (the first copy indexed wins).
    where: dict[str, set] = {}
    for key, (_, lines) in objects.items():
        for n, line in enumerate(lines):
            where.setdefault(line, set()).add((f"s3://{bucket}/{key}", n + 1))
    by_message = {d["_source"]["message"]: d for d in by_id.values()}
    assert len(by_message) == len(by_id)
    assert sorted(by_message) == sorted(where)
    for line, d in by_message.items():
        assert is_uuid(d["_id"]), d["_id"]
        assert (d["_source"]["drsink"]["source"], d["_source"]["drsink"]["line"]) in where[line]
    total = sum(len(lines) for _, lines in objects.values())
    assert (summary["records"], summary["indexed"], summary["duplicates"]) == (total, len(where), total - len(where))
    assert_no_dead_letters(summary, dead_letter_dir)
    assert aws.queue_depth(pipeline.queue_url) == 0


def concatenated_json(text: str) -> list[dict]:
    """The objects of a text of JSON values one after another, and their 1-based start lines."""
    decoder, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return out
        value, end = decoder.raw_decode(text, pos)
        out.append((value, text.count("\n", 0, pos) + 1))
        pos = end


CLOUDTRAIL = {"Records": [
    {"eventVersion": "1.08", "eventID": f"3f1c9b2e-0000-4000-8000-00000000000{i}",
     "eventTime": f"2026-11-20T23:5{i}:0{i}Z", "eventSource": "s3.amazonaws.com",
     "eventName": name, "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.10",
     "userIdentity": {"type": "AssumedRole", "accountId": "123456789012"}}
    for i, name in enumerate(["GetObject", "PutObject", "DeleteObject"])
]}

JSON_ARRAY = [{"log_id": f"arr-{i}", "@timestamp": f"2026-11-19T0{i}:00:00Z", "n": i} for i in range(3)]


def test_json_documents(aws, pipeline, search, run_worker, dead_letter_dir):
    """Concatenated EventBridge envelopes (Firehose), pretty-printed objects, a CloudTrail
    file and a JSON array: one document per object / entry / element."""
    bucket = pipeline.buckets[0]
    genesys_text = (FIXTURES / "eventbridge-genesys-firehose-concatenated.json").read_text()
    multiline_text = (FIXTURES / "beats-multiline.json").read_text()
    # With a byte-order mark, as Windows tools write it.
    array_text = "\ufeff[\n" + ",\n".join(json.dumps(r) for r in JSON_ARRAY) + "\n]\n"
    keys = {"genesys": "firehose/genesys-dr-events-1-2026-11-21-12-00-00-abc",
            "multiline": "beats/multiline.json", "cloudtrail": "cloudtrail/123456789012_CloudTrail.json.gz",
            "array": "array/objects.json"}
    aws.put(bucket, keys["genesys"], genesys_text.encode())
    aws.put(bucket, keys["multiline"], multiline_text.encode())
    aws.put(bucket, keys["cloudtrail"], gzip.compress(json.dumps(CLOUDTRAIL).encode()))
    aws.put(bucket, keys["array"], array_text.encode())

    summary = ok(run_worker(pipeline.queue_url))
    by_id = docs_by_id(search)
    p = search.prefix

    genesys = concatenated_json(genesys_text)
    assert len(genesys) == 2
    for event, line in genesys:
        d = by_id.pop(event["id"])
        assert d["_source"]["@timestamp"] == event["time"]
        assert d["_index"] == f"{p}-{event['time'][:10].replace('-', '.')}"
        assert d["_source"]["detail"] == event["detail"]
        assert d["_source"]["drsink"] == origin(bucket, keys["genesys"], line)

    for i, entry in enumerate(CLOUDTRAIL["Records"]):
        d = by_id.pop(entry["eventID"])
        assert d["_source"]["@timestamp"] == entry["eventTime"]
        assert d["_index"] == f"{p}-2026.11.20"
        assert d["_source"]["eventName"] == entry["eventName"]
        assert d["_source"]["drsink"] == origin(bucket, keys["cloudtrail"], 1, entry=i)

    for i, element in enumerate(JSON_ARRAY):
        d = by_id.pop(element["log_id"])
        assert d["_source"]["n"] == i
        assert d["_index"] == f"{p}-2026.11.19"
        assert d["_source"]["drsink"]["source"] == f"s3://{bucket}/{keys['array']}"
        assert d["_source"]["drsink"]["line"] == i + 2  # '[' is on line 1

    multiline = concatenated_json(multiline_text)
    assert [line for _, line in multiline] == [1, 6]
    assert len(by_id) == len(multiline)  # what is left: the two pretty-printed objects
    by_message = {d["_source"]["message"]: d for d in by_id.values()}
    for obj, line in multiline:
        d = by_message[obj["message"]]
        assert is_uuid(d["_id"]), d["_id"]
        assert d["_source"]["@timestamp"] == obj["@timestamp"]
        assert d["_index"] == f"{p}-2021.05.25"
        assert d["_source"]["drsink"] == origin(bucket, keys["multiline"], line)

    n = len(genesys) + len(CLOUDTRAIL["Records"]) + len(JSON_ARRAY) + len(multiline)
    assert (summary["records"], summary["indexed"], summary["duplicates"]) == (n, n, 0)
    assert_no_dead_letters(summary, dead_letter_dir)
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_an_indented_array_and_a_long_first_ndjson_line(aws, pipeline, search, run_worker, dead_letter_dir):
    """An array after blank lines and indentation is still an array (one record per
    element); NDJSON whose first record is longer than what format detection reads
    (64 KiB) is still read line by line, so a cut-off line later on is one dead letter,
    not the end of the object."""
    bucket = pipeline.buckets[0]
    elements = [{"log_id": f"arr-{i}", "@timestamp": "2026-11-19T08:00:00Z"} for i in range(3)]
    aws.put(bucket, "shapes/indented.json", ("\n\n  [" + ", ".join(json.dumps(e) for e in elements) + "]\n").encode())
    big = {"log_id": "big-0", "@timestamp": "2026-11-21T10:00:00Z", "message": "x" * 70_000}
    lines = [json.dumps(big), json.dumps({"log_id": "big-1"}), '{"log_id":"cut', json.dumps({"log_id": "big-2"}),
             json.dumps({"log_id": "big-3"})]
    aws.put(bucket, "shapes/long-first.ndjson.gz", gzip.compress(("\n".join(lines) + "\n").encode()))
    summary = ok(run_worker(pipeline.queue_url))
    by_id = docs_by_id(search)
    assert sorted(by_id) == ["arr-0", "arr-1", "arr-2", "big-0", "big-1", "big-2", "big-3"]
    assert by_id["big-0"]["_source"]["message"] == big["message"]
    assert by_id["big-3"]["_source"]["drsink"] == origin(bucket, "shapes/long-first.ndjson.gz", 5)
    [letter] = dead_letters(dead_letter_dir)
    assert (letter["key"], letter["line"], letter["record"]) == ("shapes/long-first.ndjson.gz", 3, '{"log_id":"cut')
    assert (summary["records"], summary["indexed"], summary["dead_lettered"]) == (8, 7, 1)
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_a_record_reads_the_same_whatever_line_its_object_starts_with(aws, pipeline, search, run_worker,
                                                                       dead_letter_dir):
    """Each region cuts its objects at other places, so a record may open an object in one
    region and sit further down in the other's copy: it must become the same document."""
    b0, b1 = pipeline.buckets
    rec = json.dumps({"log_id": "x1", "@timestamp": "2026-11-21T23:59:59Z"})
    aws.put(b0, "a/text-first.log", f"starting up\n{rec}\n".encode())
    aws.put(b1, "b/json-first.log", f"{rec}\nstarting up\n".encode())
    # Firehose mixing delimiters: records back to back on a line, before or after whole lines.
    m = [json.dumps({"log_id": f"m{i}", "@timestamp": "2026-11-20T10:00:00Z"}) for i in range(7)]
    aws.put(b0, "fh/delimited-first", f"{m[1]}\n{m[2]}{m[3]}\n".encode())
    aws.put(b1, "fh/undelimited-first", f"{m[2]}{m[3]}\n{m[4]}\n".encode())
    aws.put(b0, "fh/text-first", f"starting up\n{m[5]}{m[6]}\n".encode())
    aws.put(b1, "fh/objects-first", f"{m[5]}{m[6]}\nstarting up\n".encode())
    # A container with one entry per line stays one container, however many lines are whole.
    trail = [{"eventID": f"ct-{i}", "eventTime": "2026-11-20T23:00:00Z", "eventName": "GetObject"}
             for i in range(8)]
    aws.put(b0, "cloudtrail/pretty.json", ('{"Records":[\n' + ",\n".join(map(json.dumps, trail)) + "\n]}\n").encode())
    # A broken first line is dead-lettered alone; the lines after it are read as lines.
    aws.put(b0, "cut/first-line.ndjson", b'{"log_id":"c0","m":"cut\n{"log_id":"c1"}\n{"log_id":"c2"}\n')

    summary = ok(run_worker(pipeline.queue_url))
    by_id = docs_by_id(search)
    counts = search.count_by_log_id()
    text_docs = [d for d in by_id.values() if d["_source"].get("message") == "starting up"]
    assert len(text_docs) == 1  # indexed from the object it is text in
    assert counts == {"x1": 1, "c1": 1, "c2": 1, text_docs[0]["_source"]["log_id"]: 1} | \
        {f"m{i}": 1 for i in range(1, 7)} | {e["eventID"]: 1 for e in trail}
    assert by_id["x1"]["_index"] == f"{search.prefix}-2026.11.21"
    assert {by_id[f"m{i}"]["_index"] for i in range(1, 7)} == {f"{search.prefix}-2026.11.20"}
    split = by_id["m3"]["_source"]["drsink"]
    assert split["line"] in (1, 2) and split["entry"] == 1, split
    entries = sorted((e["key"], e["line"]) for e in dead_letters(dead_letter_dir))
    assert entries == [("b/json-first.log", 2), ("cut/first-line.ndjson", 1), ("fh/objects-first", 2)]
    assert (summary["records"], summary["indexed"], summary["duplicates"], summary["dead_lettered"]) == \
        (27, 18, 6, 3)
    assert aws.queue_depth(pipeline.queue_url) == 0


def gzip_members(data: bytes) -> list[bytes]:
    out = []
    while data:
        d = zlib.decompressobj(31)
        out.append(d.decompress(data))
        data = d.unused_data
    return out


def cloudwatch_payloads(data: bytes) -> list[dict]:
    """The subscription payloads of a Firehose object (gzip'd payloads, maybe gzip'd again)."""
    text = b"".join(gzip_members(data))
    if text[:2] == b"\x1f\x8b":
        text = b"".join(gzip_members(text))
    return [value for value, _ in concatenated_json(text.decode())]


def test_cloudwatch_logs_subscription_via_firehose(aws, pipeline, search, run_worker, dead_letter_dir):
    bucket = pipeline.buckets[1]
    keys = {"cwl/dr-ship-1-2025-11-21-12-00-00-abc.gz": "cloudwatch-subscription-via-firehose.gz",
            "cwl/dr-ship-1-2025-11-21-12-00-00-double": "cloudwatch-subscription-via-firehose-double-gzip.gz"}
    expected, records = {}, 0
    for key, name in keys.items():
        data = (FIXTURES / name).read_bytes()
        aws.put(bucket, key, data)
        for payload in cloudwatch_payloads(data):
            if payload["messageType"] != "DATA_MESSAGE":
                continue
            for i, event in enumerate(payload["logEvents"]):
                records += 1
                expected.setdefault(event["id"], (payload, event, set()))[2].add((key, i))
    assert records == 8 and len(expected) == 4  # the double-gzip file repeats the same events

    summary = ok(run_worker(pipeline.queue_url))
    by_id = docs_by_id(search)
    assert sorted(by_id) == sorted(expected)
    json_messages = 0
    for event_id, (payload, event, places) in expected.items():
        d = by_id[event_id]["_source"]
        ms = event["timestamp"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
        assert d["@timestamp"] == stamp, d
        assert by_id[event_id]["_index"] == f"{search.prefix}-{stamp[:10].replace('-', '.')}"
        assert {k: d[k] for k in ("logGroup", "logStream", "owner", "message")} == {
            k: payload[k] for k in ("logGroup", "logStream", "owner")} | {"message": event["message"]}
        if event["message"].startswith("{"):
            json_messages += 1
            assert d["json"] == json.loads(event["message"])
        else:
            assert "json" not in d
        origin_ = d["drsink"]
        assert origin_["source"] in {f"s3://{bucket}/{k}" for k in keys}
        assert (origin_["source"].split("/", 3)[3], origin_["entry"]) in places
        if origin_["source"].endswith(".gz"):  # payloads concatenated without newlines
            assert origin_["line"] == 1, origin_
    assert json_messages == 1
    assert (summary["records"], summary["indexed"], summary["duplicates"]) == (8, 4, 4)
    assert_no_dead_letters(summary, dead_letter_dir)
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_a_bad_entry_of_a_container_is_a_dead_letter_of_its_own(aws, pipeline, search, run_worker,
                                                                  dead_letter_dir):
    """One unreadable CloudTrail entry or CloudWatch Logs event is dead-lettered with its
    own text and place; the container's other entries are indexed as usual."""
    bucket = pipeline.buckets[0]
    trail = {"Records": [CLOUDTRAIL["Records"][0], "not an entry", CLOUDTRAIL["Records"][1]]}
    aws.put(bucket, "cloudtrail/one-bad.json.gz", gzip.compress(json.dumps(trail).encode()))
    events = [{"id": "cw-0", "timestamp": 1795305599000, "message": "fine"},
              {"id": "cw-1", "timestamp": 1795305599000.5, "message": "a fractional time"},
              {"id": "cw-2", "timestamp": 1795305599250, "message": "fine too"}]
    payload = {"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/app",
               "logStream": "s-1", "subscriptionFilters": ["dr"], "logEvents": events}
    aws.put(bucket, "cwl/one-bad.gz", gzip.compress(gzip.compress(json.dumps(payload).encode())))

    summary = ok(run_worker(pipeline.queue_url))
    good = [CLOUDTRAIL["Records"][0]["eventID"], CLOUDTRAIL["Records"][1]["eventID"], "cw-0", "cw-2"]
    assert search.count_by_log_id() == {i: 1 for i in good}
    assert docs_by_id(search)["cw-2"]["_source"]["drsink"]["entry"] == 2
    entries = sorted(dead_letters(dead_letter_dir), key=lambda e: e["key"])
    assert [(e["key"], e["line"], e["entry"]) for e in entries] == [
        ("cloudtrail/one-bad.json.gz", 1, 1), ("cwl/one-bad.gz", 1, 1)]
    assert entries[0]["record"] == '"not an entry"'
    assert entries[0]["reason"].startswith("not a JSON object"), entries[0]
    assert json.loads(entries[1]["record"]) == events[1]
    assert entries[1]["reason"].startswith("a CloudWatch Logs event is unreadable"), entries[1]
    assert (summary["records"], summary["indexed"], summary["dead_lettered"]) == (6, 4, 2)
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_oversized_line_and_invalid_utf8(aws, pipeline, search, run_worker, dead_letter_dir):
    bucket = pipeline.buckets[0]
    long_key, utf8_key = "bad/long line.ndjson", "bad/invalid utf8.ndjson"
    long_lines = [b'{"log_id":"long-1"}', b'{"log_id":"long-2","pad":"' + b"x" * 2000 + b'"}', b'{"log_id":"long-3"}']
    bad = b'{"log_id":"utf8-2","message":"bad \xff\xfe byte"}'
    utf8_lines = [b'{"log_id":"utf8-1"}', bad, b'{"log_id":"utf8-3","message":"\xc3\xbc ok"}']
    aws.put(bucket, long_key, b"\n".join(long_lines) + b"\n")
    aws.put(bucket, utf8_key, b"\n".join(utf8_lines) + b"\n")

    summary = ok(run_worker(pipeline.queue_url, "--max-record-bytes", "1000"))
    by_id = docs_by_id(search)
    assert sorted(by_id) == ["long-1", "long-3", "utf8-1", "utf8-3"]
    assert by_id["utf8-3"]["_source"]["message"] == "ü ok"
    assert by_id["long-3"]["_source"]["drsink"] == origin(bucket, long_key, 3)
    entries = dead_letters(dead_letter_dir)
    assert sorted(e["key"] for e in entries) == sorted([long_key, utf8_key]), entries
    entries = {e["key"]: e for e in entries}
    assert "--max-record-bytes" in entries[long_key]["reason"], entries[long_key]
    assert entries[long_key]["line"] == 2
    e = entries[utf8_key]
    assert isinstance(e["offset"], int) and not isinstance(e["offset"], bool), e
    assert e["line"] == 2
    assert e["offset"] == len(utf8_lines[0]) + 1 + bad.index(b"\xff"), e  # the invalid byte in the object
    assert (summary["indexed"], summary["dead_lettered"]) == (4, 2)
    assert aws.queue_depth(pipeline.queue_url) == 0


@pytest.mark.parametrize("fmt", ["text", "ndjson", "json"])
def test_format_flag_forces_one(fmt, aws, pipeline, search, run_worker, dead_letter_dir):
    bucket = pipeline.buckets[0]
    if fmt == "json":  # pretty-printed objects followed by concatenated ones, in one object
        key = "forced/mixed.json"
        text = (FIXTURES / "beats-multiline.json").read_text() + \
            (FIXTURES / "eventbridge-genesys-firehose-concatenated.json").read_text()
        aws.put(bucket, key, text.encode())
        summary = ok(run_worker(pipeline.queue_url, "--format", "json"))
        objects = concatenated_json(text)
        assert [line for _, line in objects] == [1, 6, 11, 11]
        by_line = sorted((d["_source"]["drsink"]["line"], d["_source"].get("message"), d["_source"].get("id"))
                         for d in docs_by_id(search).values())
        assert by_line == [(line, o.get("message"), o.get("id")) for o, line in objects]
        assert (summary["indexed"], summary["dead_lettered"]) == (4, 0)
    elif fmt == "text":  # NDJSON read as text: each line becomes a message, its own log_id ignored
        key, lines = "forced/records.ndjson", ['{"log_id":"f-1","n":1}', '{"log_id":"f-2","n":2}']
        aws.put(bucket, key, ("\n".join(lines) + "\n").encode())
        summary = ok(run_worker(pipeline.queue_url, "--format", "text"))
        by_id = docs_by_id(search)
        assert sorted(d["_source"]["message"] for d in by_id.values()) == lines
        assert all(is_uuid(i) for i in by_id), sorted(by_id)
        assert (summary["indexed"], summary["dead_lettered"]) == (2, 0)
    else:  # text read as NDJSON: every line is a dead letter
        key = "forced/two lines.txt"
        text = (FIXTURES / "beats-no-eol-twolines.txt").read_text()
        aws.put(bucket, key, text.encode())
        summary = ok(run_worker(pipeline.queue_url, "--format", "ndjson"))
        assert search.docs() == []
        entries = sorted(dead_letters(dead_letter_dir), key=lambda e: e["line"])
        assert [(e["key"], e["line"], e["record"]) for e in entries] == [
            (key, n + 1, line) for n, line in enumerate(text.splitlines())]
        assert (summary["indexed"], summary["dead_lettered"]) == (0, 2)
    assert aws.queue_depth(pipeline.queue_url) == 0


# --- filtering ----------------------------------------------------------------------------

LEVEL_RECORDS = [  # (record, kept with --min-level warn, kept with --level-field severity --min-level error)
    ({"level": "TRACE"}, False, True),
    ({"level": "debug"}, False, True),
    ({"level": "Info"}, False, True),
    ({"level": "WARN"}, True, True),
    ({"level": "warning"}, True, True),
    ({"level": "err"}, True, True),
    ({"level": "ERROR"}, True, True),
    ({"level": "crit"}, True, True),
    ({"level": "CRITICAL"}, True, True),
    ({"level": "fatal"}, True, True),
    ({"log": {"level": "error"}}, True, True),  # ECS, nested
    ({"log": {"level": "info"}}, False, False),
    ({"log.level": "Warning"}, True, False),  # ECS, dotted key
    ({"log.level": "debug"}, False, False),
    ({"level": "debug", "log": {"level": "error"}}, False, True),  # level wins over log.level
    ({"message": "no level at all"}, True, True),
    ({"severity": "ERROR"}, True, True),
    ({"severity": "warn", "level": "error"}, True, False),
    ({"severity": "Critical", "log": {"level": "trace"}}, False, True),
]


@pytest.mark.parametrize("args,column", [(("--min-level", "warn"), 1),
                                         (("--level-field", "severity", "--min-level", "ERROR"), 2)],
                         ids=["min-level-warn", "severity-error"])
def test_min_level_filter(args, column, aws, pipeline, search, run_worker, dead_letter_dir):
    bucket = pipeline.buckets[0]
    records = [{"log_id": f"lvl-{i:02d}", **row[0]} for i, row in enumerate(LEVEL_RECORDS)]
    kept = {r["log_id"] for r, row in zip(records, LEVEL_RECORDS) if row[column]}
    aws.put(bucket, "levels/app.ndjson.gz", gzip.compress(ndjson(records)))
    summary = ok(run_worker(pipeline.queue_url, *args))
    assert sorted(docs_by_id(search)) == sorted(kept)
    assert summary["records"] == len(records)
    assert summary["indexed"] == len(kept)
    assert summary["filtered"] == len(records) - len(kept)
    assert_no_dead_letters(summary, dead_letter_dir)
    assert aws.queue_depth(pipeline.queue_url) == 0
