"""End-to-end tests of `drsink worker` against moto and both search flavours.

Every test gets a fresh queue with two buckets ("region A", "region B") whose
notifications still hold moto's two `s3:TestEvent` messages, and its own index
prefix on the search server."""
import gzip
import json
import socket
import time
import uuid

import pytest
import xxhash

from harness import FIXTURES, dead_letters, gz, letters_file, ndjson, ok, unique

# Spaces, non-ASCII and a literal '+' make the notification's URL-encoding matter.
KEY_A = "AWSLogs/région A/2026/11/21/app log ü+1.ndjson.gz"
KEY_B = "AWSLogs/région B/2026/11/21/app log ü+1.ndjson"


def dual_write(aws, pipeline, search, run_worker, dead_letter_dir, *extra):
    a = (FIXTURES / "dualwrite-region-a.ndjson").read_bytes()
    b = (FIXTURES / "dualwrite-region-b.ndjson").read_bytes()
    aws.put(pipeline.buckets[0], KEY_A, gzip.compress(a))
    aws.put(pipeline.buckets[1], KEY_B, b)
    summary = ok(run_worker(pipeline.queue_url, *extra))
    expected = {json.loads(line)["log_id"] for line in (a + b).splitlines()}
    assert len(expected) == 10
    docs = search.docs()
    assert search.count_by_log_id() == {log_id: 1 for log_id in expected}
    assert all(d["_id"] == d["_source"]["log_id"] for d in docs)
    assert aws.queue_depth(pipeline.queue_url) == 0
    assert summary["messages"] == 4  # 2 object notifications + the 2 s3:TestEvents
    assert summary["objects"] == 2
    assert summary["records"] == len((a + b).splitlines()) == 14
    assert summary["indexed"] + summary["duplicates"] == summary["records"]
    assert summary["dead_lettered"] == 0
    assert dead_letters(dead_letter_dir) == []
    return summary


def test_dual_write_copies_merge(aws, pipeline, search, run_worker, dead_letter_dir):
    summary = dual_write(aws, pipeline, search, run_worker, dead_letter_dir)
    assert summary["indexed"] == 10
    assert summary["duplicates"] == 4


def test_es_action_index(aws, pipeline, search, run_worker, dead_letter_dir):
    dual_write(aws, pipeline, search, run_worker, dead_letter_dir, "--es-action", "index")


def test_records_without_log_id_get_content_fingerprint(aws, pipeline, search, run_worker):
    lines = [{"@timestamp": f"2026-11-21T10:00:0{i}Z", "message": f"no id {i} ✓", "n": i} for i in range(6)]
    plain = ndjson(lines[:4])
    multi = gz(ndjson(lines[2:4]), ndjson(lines[4:]))  # two gzip members; lines 2-3 repeat the plain object
    aws.put(pipeline.buckets[0], "fp/plain.ndjson", plain)
    aws.put(pipeline.buckets[1], "fp/multi member.gz", multi)
    summary = ok(run_worker(pipeline.queue_url))
    assert summary["records"] == 8
    assert (summary["indexed"], summary["duplicates"]) == (6, 2)

    docs = search.docs()
    assert sorted(d["_source"]["n"] for d in docs) == list(range(6))
    for d in docs:
        assert d["_source"]["log_id"] == d["_id"]
        uuid.UUID(d["_id"])
    assert aws.queue_depth(pipeline.queue_url) == 0

    # The same content again, under other keys in the other bucket: nothing new.
    aws.put(pipeline.buckets[1], "fp/again/plain copy.ndjson", plain)
    aws.put(pipeline.buckets[0], "fp/again/multi.gz", multi)
    summary = ok(run_worker(pipeline.queue_url))
    assert summary["records"] == 8
    assert (summary["indexed"], summary["duplicates"]) == (0, 8)
    assert sorted(d["_id"] for d in search.docs()) == sorted(d["_id"] for d in docs)
    assert aws.queue_depth(pipeline.queue_url) == 0


def fingerprint(scheme: str, text: bytes) -> str:
    """The documented fingerprint of `text`, computed independently of drsink."""
    namespace = uuid.UUID(int=0x6D2F1C4E8A4B5D7E9F102B3C4D5E6F70)
    if scheme == "sha1":
        return str(uuid.uuid5(namespace, text.decode()))
    digest = bytearray(xxhash.xxh3_128_digest(text, seed=namespace.int & (2**64 - 1)))
    digest[6] = digest[6] & 0x0F | 0x80  # version 8
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(digest)))


@pytest.mark.parametrize("scheme", ["xxh3", "sha1"])
def test_fingerprints_are_the_documented_ids(scheme, aws, pipeline, search, run_worker):
    """The id of a record without log_id is a pure function of its trimmed line and the
    scheme: what the other region's copy, or a later drsink, must reproduce."""
    lines = [b'{"message":"one","n":1}', b'  {"message":"two \\u00e9","n":2}\t', '{"message":"drei ü","n":3}'.encode()]
    aws.put(pipeline.buckets[0], "fp/schemes.ndjson", b"\n".join(lines) + b"\n")
    flags = () if scheme == "xxh3" else ("--fingerprint", scheme)
    summary = ok(run_worker(pipeline.queue_url, *flags))
    assert (summary["records"], summary["indexed"]) == (3, 3)
    ids = {d["_source"]["n"]: d["_id"] for d in search.docs()}
    assert ids == {i + 1: fingerprint(scheme, line.strip()) for i, line in enumerate(lines)}


def test_index_routed_by_event_time(aws, pipeline, search, run_worker):
    records = [
        {"log_id": "late", "@timestamp": "2026-11-21T23:59:59Z"},
        {"log_id": "early", "@timestamp": "2026-11-22T00:00:01Z"},
        {"log_id": "millis-late", "@timestamp": 1795305599500},  # 2026-11-21T23:59:59.500Z
        {"log_id": "millis-early", "@timestamp": 1795305600500},  # 2026-11-22T00:00:00.500Z
        {"log_id": "undated", "message": "no timestamp"},
    ]
    aws.put(pipeline.buckets[0], "routing.ndjson", ndjson(records))
    ok(run_worker(pipeline.queue_url))
    p = search.prefix
    assert {d["_source"]["log_id"]: d["_index"] for d in search.docs()} == {
        "late": f"{p}-2026.11.21",
        "early": f"{p}-2026.11.22",
        "millis-late": f"{p}-2026.11.21",
        "millis-early": f"{p}-2026.11.22",
        "undated": f"{p}-undated",
    }


def test_invalid_lines_go_to_dead_letter(aws, pipeline, search, run_worker, dead_letter_dir):
    key = "bad lines/objekt ä+ö.ndjson"
    lines = [
        '{"log_id": "d-1", "message": "good"}',
        '{"log_id": "d-2", "message": "good"}',
        "this is not json",
        '{"log_id": "d-4", "message": "good"}',
        '{"log_id": "d-5", "message": "trunc',
    ]
    aws.put(pipeline.buckets[0], key, "\n".join(lines).encode())  # truncated last line, no final newline
    summary = ok(run_worker(pipeline.queue_url))
    assert search.count_by_log_id() == {"d-1": 1, "d-2": 1, "d-4": 1}
    assert summary["dead_lettered"] == 2
    entries = sorted(dead_letters(dead_letter_dir), key=lambda e: e["line"])
    assert [(e["line"], e["record"]) for e in entries] == [(3, lines[2]), (5, lines[4])]
    for e in entries:
        assert (e["bucket"], e["key"]) == (pipeline.buckets[0], key)
        assert isinstance(e["reason"], str) and e["reason"]
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_malformed_values_are_judged_by_the_cluster(aws, pipeline, search, run_worker, dead_letter_dir):
    """drsink only skims a record's structure for the Elasticsearch sink: a line that is one
    object but has a bad token inside goes to the cluster, which rejects it alone; it is
    dead-lettered with the cluster's error, its line, and the document as sent."""
    key = "bad values/app.ndjson"
    lines = [
        '{"log_id": "v-1", "message": "good"}',
        '{"log_id": "v-2", "n": tru}',
        '{"log_id": "v-3" "n": 1}',
        '{"log_id": "v-4", "message": "raw\ttab"}',
        '{"message": "no id", "n": [1,]}',
        '{"log_id": "v-6", "message": "good"}',
    ]
    aws.put(pipeline.buckets[0], key, "\n".join(lines).encode() + b"\n")
    summary = ok(run_worker(pipeline.queue_url))
    assert search.count_by_log_id() == {"v-1": 1, "v-6": 1}
    assert (summary["records"], summary["indexed"], summary["dead_lettered"]) == (6, 2, 4)
    entries = sorted(dead_letters(dead_letter_dir), key=lambda e: e["line"])
    assert [e["line"] for e in entries] == [2, 3, 4, 5]
    for e, line in zip(entries, [lines[i] for i in (1, 2, 3, 4)]):
        assert (e["bucket"], e["key"]) == (pipeline.buckets[0], key)
        assert e["reason"].startswith("rejected by the sink"), e
        assert e["error"], e
        # The document as sent: drsink's fields spliced in front of the record's own bytes.
        assert e["record"].startswith('{"drsink":') and e["record"].endswith(line[1:]), e
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_dead_letters_in_the_notified_bucket_do_not_loop(aws, pipeline, search, worker_args, run_drsink):
    """Dead letters written to s3://<the notified bucket>/drsink-dead-letter/ raise a
    notification of their own; the worker skips it instead of reading it back."""
    bucket = pipeline.buckets[0]
    lines = ['{"log_id": "s-1"}', "not json", '{"log_id": "s-3"}']
    aws.put(bucket, "app/s3-dead-letter.ndjson", "\n".join(lines).encode())
    args = worker_args(pipeline.queue_url)
    args[args.index("--dead-letter") + 1] = f"s3://{bucket}/drsink-dead-letter/"
    summary = ok(run_drsink(*args))
    assert search.count_by_log_id() == {"s-1": 1, "s-3": 1}
    assert summary["dead_lettered"] == 1
    # 2 test events, the object, and the dead-letter object's own notification.
    assert (summary["messages"], summary["objects"], summary["records"]) == (4, 1, 3)
    stored = aws.s3.list_objects_v2(Bucket=bucket, Prefix="drsink-dead-letter/")["Contents"]
    assert len(stored) == 1
    body = aws.s3.get_object(Bucket=bucket, Key=stored[0]["Key"])["Body"].read()
    entries = [json.loads(line) for line in body.splitlines()]
    assert [(e["key"], e["line"], e["record"]) for e in entries] == [("app/s3-dead-letter.ndjson", 2, "not json")]
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_an_s3_dead_letter_store_needs_a_prefix(aws, pipeline, search, worker_args, run_drsink):
    """Without a folder of its own, the store would take every object of the bucket for one
    of its own dead letters (and redrive would re-submit and remove them): refused at start,
    before a message is touched."""
    bucket = pipeline.buckets[0]
    aws.put(bucket, "app/kept.ndjson", b'{"log_id": "p-1"}\n')
    for store in (f"s3://{bucket}", f"s3://{bucket}/"):
        args = worker_args(pipeline.queue_url)
        args[args.index("--dead-letter") + 1] = store
        rc, _, err, _ = run_drsink(*args)
        assert rc != 0
        assert f"--dead-letter `{store}` names no prefix" in err, err
        rc, _, err, _ = run_drsink("redrive", "--from", store, "--es-url", search.url, "--s3-force-path-style")
        # The flag given is the one named (the store it reads is also where it keeps
        # what it cannot send, the default --dead-letter).
        assert rc != 0 and f"--from `{store}` names no prefix" in err, err
    assert search.count_by_log_id() == {}
    assert aws.s3.get_object(Bucket=bucket, Key="app/kept.ndjson")["Body"].read() == b'{"log_id": "p-1"}\n'
    # `dl` alone would also take in `dlogs/…`: refused, with the folder to give instead.
    args = worker_args(pipeline.queue_url)
    args[args.index("--dead-letter") + 1] = f"s3://{bucket}/dl"
    rc, _, err, _ = run_drsink(*args)
    assert rc != 0 and f"must end with `/` (s3://{bucket}/dl/)" in err, err
    rc, _, err, _ = run_drsink("redrive", "--from", f"s3://{bucket}/dl", "--es-url", search.url,
                               "--s3-force-path-style")
    assert rc != 0 and f"--from `s3://{bucket}/dl` must end with `/`" in err, err
    aws.put(bucket, "dlogs/x.ndjson", b'{"log_id": "p-2"}\n')
    args[args.index("--dead-letter") + 1] = f"s3://{bucket}/dl/"
    summary = ok(run_drsink(*args))
    assert search.count_by_log_id() == {"p-1": 1, "p-2": 1}
    assert summary["indexed"] == 2
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_redrive_keeps_to_max_records_per_sec(search, run_drsink, tmp_path):
    """A redrive after a mapping fix goes to a cluster that also serves live traffic: it
    sends no faster than --max-records-per-sec, as the worker does."""
    ids = [f"paced-{i}" for i in range(200)]
    source = letters_file(tmp_path, ids)
    started = time.monotonic()
    summary = ok(run_drsink("redrive", "--from", str(source), "--dead-letter", str(tmp_path / "store"),
                            "--es-url", search.url, "--index", f"{search.prefix}-%Y.%m.%d",
                            "--batch-records", "50", "--max-records-per-sec", "100"))
    # Four batches of 50 at 100 records/s: the last one goes 1.5 s after the first.
    assert time.monotonic() - started >= 1.5
    assert summary["indexed"] == 200
    search.refresh()
    assert search.count_by_log_id() == {log_id: 1 for log_id in ids}


def test_redrive_from_an_s3_dead_letter_store(aws, pipeline, search, run_drsink):
    """Entries the sink accepts leave the store; what cannot be sent stays, in a new object."""
    bucket = pipeline.buckets[1]
    accepted = {"reason": "rejected by the sink: mapper_parsing_exception", "bucket": bucket, "key": "app/x.log",
                "line": 4, "record": json.dumps({"log_id": "r-1", "@timestamp": "2026-11-21T10:00:00Z"})}
    kept = {"reason": "not a JSON object: expected '{' at byte 0", "bucket": bucket, "key": "app/x.log",
            "line": 5, "record": "not json"}
    aws.put(bucket, "dl/dead-letter-1.ndjson", ndjson([accepted, kept]))
    summary = ok(run_drsink("redrive", "--from", f"s3://{bucket}/dl/", "--es-url", search.url,
                            "--index", f"{search.prefix}-%Y.%m.%d", "--s3-force-path-style"))
    assert search.count_by_log_id() == {"r-1": 1}
    assert summary["indexed"] == 1
    stored = aws.s3.list_objects_v2(Bucket=bucket, Prefix="dl/")["Contents"]
    assert [o["Key"] for o in stored] != ["dl/dead-letter-1.ndjson"], "the redriven object is removed"
    remaining = [json.loads(line) for o in stored
                 for line in aws.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().splitlines()]
    assert [(e["line"], e["record"]) for e in remaining] == [(5, "not json")]


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("case", ["unreachable-es", "missing-queue"])
def test_bad_configuration_fails_cleanly(case, aws, pipeline, search, run_drsink):
    queue_url, es_url = pipeline.queue_url, search.url
    if case == "unreachable-es":
        es_url = _closed_port_url()
    else:
        queue_url = pipeline.queue_url.rsplit("/", 1)[0] + "/" + unique("missing")
    rc, out, err, _ = run_drsink(
        "worker", "--queue-url", queue_url, "--es-url", es_url,
        "--wait-seconds", "1", "--s3-force-path-style", "--exit-when-idle", timeout=60,
    )
    assert rc != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no error message on stderr"
    assert "panicked" not in err and "backtrace" not in err.lower(), err
    assert len(lines[-1]) < 500, lines[-1]
