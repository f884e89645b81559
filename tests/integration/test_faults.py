"""Fault injection: drsink's delivery guarantees (nothing lost, nothing doubled) under
throttling, an outage of the search server, a killed worker, SIGTERM, mapping conflicts,
and a visibility timeout shorter than an object's processing.

Each test runs the real binary against both flavours and asserts the exact number of
documents per log_id, an empty queue (visible + in flight) and the summary. Faults come
from the test suite's own FaultProxy (faultproxy.py) in front of the real server, or
from stopping the server itself. Queues get a 2 s visibility timeout where messages
must come back quickly (after a kill, or a receive cut short by SIGTERM)."""
import json
import os
import signal
import time
from pathlib import Path

import pytest

import servers
from faultproxy import FaultProxy
from harness import Search, dead_letters, letters_file, ndjson, ok, wait_for

TIMESTAMP = "2026-11-21T10:00:00Z"


def put_objects(aws, pipeline, tag: str, objects: int, records: int, first: int = 0) -> list[str]:
    """`objects` NDJSON objects of `records` records each; returns their log_ids."""
    ids = []
    for o in range(first, first + objects):
        batch = [{"log_id": f"{tag}-{o}-{r}", "@timestamp": TIMESTAMP, "n": r} for r in range(records)]
        aws.put(pipeline.buckets[o % len(pipeline.buckets)], f"{tag}/object {o}.ndjson", ndjson(batch))
        ids += [r["log_id"] for r in batch]
    return ids


def short_visibility(aws, pipeline, seconds: int = 2) -> None:
    aws.sqs.set_queue_attributes(QueueUrl=pipeline.queue_url, Attributes={"VisibilityTimeout": str(seconds)})


def in_flight(aws, queue_url: str) -> int:
    attrs = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"])


def assert_exactly_once(search: Search, ids: list[str]) -> None:
    counts = search.count_by_log_id()
    assert len(counts) == len(ids) and counts == {i: 1 for i in ids}, (
        f"missing: {sorted(set(ids) - set(counts))[:10]}, "
        f"doubled: {[i for i, n in counts.items() if n > 1][:10]}, extra: {sorted(set(counts) - set(ids))[:10]}")


def test_throttling_retries_only_the_rejected(aws, pipeline, search, fault_proxy, run_worker):
    """1. A share of items and of whole requests answer 429 (or 503): every record is
    indexed exactly once, and only what was refused is sent again."""
    ids = put_objects(aws, pipeline, "thr", objects=4, records=50)
    fault_proxy.configure(request_fail_share=0.25, item_reject_share=0.3)
    result = run_worker(pipeline.queue_url, "--batch-records", "10", "--max-retry-interval", "0.2",
                        es_url=fault_proxy.url)
    summary = ok(result)
    # Each retry's warning names the message whose object it was sending.
    retries = [line for line in result.stderr.splitlines() if "bulk request failed; retrying" in line]
    assert retries and all("message_id=" in line for line in retries), retries[:3]
    assert_exactly_once(search, ids)
    assert aws.queue_depth(pipeline.queue_url) == 0
    assert fault_proxy.stats["rejected_items"] > 0 and fault_proxy.stats["failed_requests"] > 0
    # Refused items never reached the server, so no retry can have been a duplicate.
    assert (summary["records"], summary["indexed"], summary["duplicates"]) == (200, 200, 0)
    assert fault_proxy.stats["forwarded_items"] == 200
    assert summary["retried"] >= fault_proxy.stats["rejected_items"] > 0
    assert (summary["failed"], summary["dead_lettered"], summary["objects"]) == (0, 0, 4)


def test_read_only_index_dead_letters_its_late_records(aws, pipeline, search, run_worker, run_drsink,
                                                      dead_letter_dir):
    """Late records for a day whose index was made read-only (ILM/ISM `readonly`, a shrink,
    `index.blocks.write`): the cluster answers 403 cluster_block_exception for each. They go
    to the dead-letter store with its error and the message is deleted, instead of being
    held for ever; the other records are indexed. Once the block is lifted, a redrive
    indexes them."""
    closed_day = f"{search.prefix}-2026.11.20"
    for request in [("PUT", closed_day, None), ("PUT", f"{closed_day}/_settings", {"index.blocks.write": True})]:
        res = search.request(request[0], request[1], json=request[2])
        assert res.ok, res.text
    late = [{"log_id": f"late-{i}", "@timestamp": f"2026-11-20T23:59:0{i}Z"} for i in range(3)]
    today = [{"log_id": f"today-{i}", "@timestamp": TIMESTAMP} for i in range(3)]
    aws.put(pipeline.buckets[0], "ro/mixed.ndjson", ndjson([late[0], today[0], late[1], today[1], late[2], today[2]]))
    summary = ok(run_worker(pipeline.queue_url))
    assert (summary["indexed"], summary["dead_lettered"], summary["failed"]) == (3, 3, 0), summary
    assert aws.queue_depth(pipeline.queue_url) == 0
    letters = dead_letters(dead_letter_dir)
    assert sorted(json.loads(e["record"])["log_id"] for e in letters) == ["late-0", "late-1", "late-2"]
    for letter in letters:
        assert letter["reason"] == "rejected by the sink: cluster_block_exception", letter
        assert "index write (api)" in letter["error"]["reason"], letter
    assert search.count_by_log_id() == {f"today-{i}": 1 for i in range(3)}
    res = search.request("PUT", f"{closed_day}/_settings", json={"index.blocks.write": False})
    assert res.ok, res.text
    redrive = ok(run_drsink("redrive", "--from", str(dead_letter_dir), "--dead-letter", str(dead_letter_dir),
                            "--es-url", search.url, "--index", f"{search.prefix}-%Y.%m.%d",
                            "--fallback-index", f"{search.prefix}-undated"))
    assert (redrive["indexed"], redrive["dead_lettered"]) == (3, 0), redrive
    assert dead_letters(dead_letter_dir) == []
    assert search.count_by_log_id() == {**{f"today-{i}": 1 for i in range(3)}, **{f"late-{i}": 1 for i in range(3)}}


def test_read_only_cluster_holds_the_messages_until_lifted(aws, pipeline, search, fault_proxy, worker_args,
                                                          start_drsink):
    """A read-only cluster (`cluster.blocks.read_only`) answers the whole `_bulk` with a 403
    cluster_block_exception. That is an operator's pause, not bad credentials: the worker
    keeps the messages and retries, and indexes everything once the block is lifted."""
    fault_proxy.configure(request_fail_share=1.0, request_fail_statuses=(403,), request_fail_error={
        "root_cause": [], "type": "cluster_block_exception",
        "reason": "blocked by: [FORBIDDEN/6/cluster read-only (api)];"})
    worker = start_drsink(*worker_args(pipeline.queue_url, "--max-retry-interval", "0.2",
                                       es_url=fault_proxy.url, exit_when_idle=False))
    ids = put_objects(aws, pipeline, "blocked", objects=2, records=20)
    wait_for(lambda: fault_proxy.stats["failed_requests"] >= 4, 60, "the blocked requests")
    assert worker.running()
    assert search.count_by_log_id() == {}
    fault_proxy.configure(request_fail_share=0.0)
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) == 0, 60, "the messages to be done")
    worker.send_signal(signal.SIGTERM)
    result = worker.wait()
    summary = ok(result)
    assert_exactly_once(search, ids)
    assert (summary["indexed"], summary["failed"], summary["dead_lettered"]) == (40, 0, 0)
    retries = [line for line in result.stderr.splitlines() if "bulk request failed; retrying" in line]
    assert retries and all("cluster read-only (api)" in line for line in retries), retries[:3]


def test_batch_bytes_bounds_every_request(aws, pipeline, search, fault_proxy, run_worker):
    """`--batch-bytes` is a hard bound (set to a proxy's or cluster's request limit): a
    record that would take a body past it starts the next request instead."""
    ids = put_objects(aws, pipeline, "bound", objects=2, records=150)
    summary = ok(run_worker(pipeline.queue_url, "--batch-bytes", "3000", es_url=fault_proxy.url))
    assert_exactly_once(search, ids)
    assert (summary["records"], summary["indexed"], summary["failed"]) == (300, 300, 0)
    assert 2500 < fault_proxy.stats["largest_bulk_body"] <= 3000, fault_proxy.stats
    assert aws.queue_depth(pipeline.queue_url) == 0


@pytest.fixture
def outage(search, fault_proxy, tmp_path):
    """(search server for this test, es_url for drsink, down(), up()).

    elasticsearch: a noida-db of this test's own (so the shared one is not disturbed),
    really stopped (SIGTERM: it saves its data) and started again on the same port.
    opensearch: osmem-server keeps no data across a restart, which would lose what
    drsink had already indexed and acknowledged, so the outage is the fault proxy
    cutting every connection without an answer instead."""
    if search.flavour == "elasticsearch":
        state = tmp_path / "noida-state"
        url, _ = servers.ensure("elasticsearch", state=state)
        port = int(url.rsplit(":", 1)[1])
        private = Search("elasticsearch", url, search.prefix)
        yield (private, url,
               lambda: servers.stop("elasticsearch", state=state),
               lambda: servers.ensure("elasticsearch", state=state, fresh=False, port=port))
        servers.stop("elasticsearch", state=state)
    else:
        yield (search, fault_proxy.url,
               lambda: fault_proxy.configure(down=True),
               lambda: fault_proxy.configure(down=False))


def test_search_server_outage(aws, pipeline, outage, worker_args, start_drsink):
    """2. The search server goes away in the middle of a run and comes back: no message
    is deleted while it is away, the worker keeps running and recovers by itself."""
    search, es_url, down, up = outage
    short_visibility(aws, pipeline)
    worker = start_drsink(*worker_args(pipeline.queue_url, "--batch-records", "10", "--max-retry-interval", "0.5",
                                       es_url=es_url, exit_when_idle=False))
    before = put_objects(aws, pipeline, "out", objects=3, records=20)
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) == 0 and len(search.count_by_log_id()) == 60, 30,
             "the first objects to be indexed")

    down()
    during = put_objects(aws, pipeline, "out", objects=3, records=20, first=3)
    # The messages are received (in flight) and stay there, heartbeat after heartbeat.
    wait_for(lambda: in_flight(aws, pipeline.queue_url) == 3, 15, "the worker to receive the new messages")
    for _ in range(8):
        time.sleep(0.5)
        assert aws.queue_depth(pipeline.queue_url) == 3, "a message was deleted while the server was away"
        assert worker.running(), "the worker gave up while the server was away"

    up()
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) == 0, 60, "the worker to recover")
    worker.send_signal(signal.SIGTERM)
    summary = ok(worker.wait(30))
    assert_exactly_once(search, before + during)
    assert summary["messages"] == 8  # 6 objects + moto's 2 s3:TestEvents, each received once
    assert summary["records"] == summary["indexed"] + summary["duplicates"] == 120
    assert summary["retried"] > 0
    assert (summary["failed"], summary["dead_lettered"]) == (0, 0)


def test_a_longer_visibility_timeout_holds_from_the_receive(aws, pipeline, search, fault_proxy, worker_args,
                                                            start_drsink):
    """--visibility-timeout longer than the queue's own: messages are received with it, so
    none comes back to the fleet mid-object before the first heartbeat (a third of it)."""
    short_visibility(aws, pipeline)
    worker = start_drsink(*worker_args(pipeline.queue_url, "--visibility-timeout", "60",
                                       es_url=fault_proxy.url, exit_when_idle=False))
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) == 0, 15, "the bucket's test events to be taken")
    fault_proxy.configure(delay=6)
    ids = put_objects(aws, pipeline, "vis", objects=1, records=5)
    wait_for(lambda: in_flight(aws, pipeline.queue_url) == 1, 15, "the worker to receive the object's message")
    time.sleep(3)  # past the queue's 2 s; the bulk answer is still held back
    assert (in_flight(aws, pipeline.queue_url), aws.queue_depth(pipeline.queue_url)) == (1, 1), \
        "the message came back to the queue while the worker was still on it"
    fault_proxy.configure(delay=0)
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) == 0, 30, "the object to be done")
    worker.send_signal(signal.SIGTERM)
    summary = ok(worker.wait(30))
    assert_exactly_once(search, ids)
    assert summary["messages"] == 3  # the object and moto's 2 s3:TestEvents, each received once


def test_worker_killed_mid_batch(aws, pipeline, search, fault_proxy, run_worker, worker_args, start_drsink):
    """3. The worker is SIGKILLed while its bulk requests are indexed but not yet answered;
    its messages come back within the queue's visibility timeout and the second run's
    copies merge with the first's by log_id."""
    short_visibility(aws, pipeline)
    ids = put_objects(aws, pipeline, "kill", objects=6, records=30)
    fault_proxy.configure(delay=0.3)
    first = start_drsink(*worker_args(pipeline.queue_url, "--batch-records", "5", "--concurrency", "3",
                                      es_url=fault_proxy.url))
    wait_for(lambda: fault_proxy.stats["forwarded_items"] >= 20, 30, "bulk requests to reach the server")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    indexed_before = len(search.count_by_log_id())
    assert 0 < indexed_before < len(ids), "the kill did not land mid-run"

    fault_proxy.configure(delay=0)
    wait_for(lambda: in_flight(aws, pipeline.queue_url) == 0, 15, "the killed worker's messages to come back")
    summary = ok(run_worker(pipeline.queue_url, "--batch-records", "5", "--visibility-timeout", "2",
                            es_url=fault_proxy.url))
    assert_exactly_once(search, ids)
    assert aws.queue_depth(pipeline.queue_url) == 0
    assert summary["duplicates"] > 0, "no replayed record merged with its first copy"
    assert summary["indexed"] + summary["duplicates"] == summary["records"]
    assert summary["indexed"] == len(ids) - indexed_before
    assert (summary["failed"], summary["dead_lettered"]) == (0, 0)


def test_sigterm_mid_run(aws, pipeline, search, fault_proxy, run_worker, worker_args, start_drsink):
    """4. SIGTERM in the middle of a run: the worker stops receiving, finishes what it
    holds, exits 0 with its summary; the next run processes the rest, nothing twice."""
    short_visibility(aws, pipeline)
    ids = put_objects(aws, pipeline, "term", objects=8, records=20)
    fault_proxy.configure(delay=0.2)
    first = start_drsink(*worker_args(pipeline.queue_url, "--batch-records", "5", "--concurrency", "2",
                                      es_url=fault_proxy.url))
    wait_for(lambda: fault_proxy.stats["bulk_requests"] >= 3, 30, "the first run to be under way")
    first.send_signal(signal.SIGTERM)
    one = ok(first.wait(30))
    assert one["failed"] == 0
    assert 0 < one["objects"] < 8, "SIGTERM did not land mid-run"
    assert one["records"] == one["indexed"] == 20 * one["objects"]  # what it held, it finished

    fault_proxy.configure(delay=0)
    # A receive cut short by the signal may hold messages until their visibility expires.
    wait_for(lambda: in_flight(aws, pipeline.queue_url) == 0, 15, "messages held by the first run to come back")
    two = ok(run_worker(pipeline.queue_url, "--batch-records", "5", es_url=fault_proxy.url))
    assert_exactly_once(search, ids)
    assert aws.queue_depth(pipeline.queue_url) == 0
    assert one["objects"] + two["objects"] == 8
    assert (two["records"], two["indexed"], two["duplicates"]) == (160 - one["records"],) * 2 + (0,)
    assert two["failed"] == 0


@pytest.mark.parametrize("stalled", ["long poll and slow sink", "rate limit"])
def test_shutdown_timeout_counts_from_the_signal(aws, pipeline, search, fault_proxy, worker_args, start_drsink,
                                                 stalled):
    """SIGTERM with --shutdown-timeout 3: the worker is gone a few seconds later, whether
    it was in a 20 s long poll while a bulk answer is held back, or its decoder was
    waiting for --max-records-per-sec; the unfinished message is released at once."""
    ids = put_objects(aws, pipeline, "deadline", objects=1, records=150)
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) >= 1, 15, "the object's message")
    extra = ["--concurrency", "2", "--shutdown-timeout", "3"]
    if stalled == "rate limit":
        extra += ["--max-records-per-sec", "1", "--batch-records", "50"]
    else:
        fault_proxy.configure(delay=60)
    args = worker_args(pipeline.queue_url, *extra, es_url=fault_proxy.url, exit_when_idle=False)
    args[args.index("--wait-seconds") + 1] = "20"
    worker = start_drsink(*args)
    wait_for(lambda: fault_proxy.stats["bulk_requests"] >= 1, 30, "the first bulk request")
    time.sleep(1)  # well into the next long poll, or the rate limit's wait
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    summary = ok(worker.wait(60))
    took = time.monotonic() - signalled
    assert took < 10, f"exit {took:.1f} s after SIGTERM with --shutdown-timeout 3"
    assert summary["objects"] == 0 and summary["failed"] == 0
    # Released, not left invisible for the queue's visibility timeout.
    assert in_flight(aws, pipeline.queue_url) == 0 and aws.queue_depth(pipeline.queue_url) == 1
    fault_proxy.configure(delay=0)


def test_a_redirect_from_the_cluster_is_not_followed(aws, pipeline, search, fault_proxy, worker_args, run_drsink):
    """A bulk request answered with a redirect (a load balancer sending it elsewhere) is
    not followed: the credentials would go along to wherever it points. The worker stops
    with the status, nothing is indexed, and the message stays queued."""
    put_objects(aws, pipeline, "redirect", objects=1, records=3)
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) >= 1, 15, "the object's message")
    fault_proxy.configure(redirect_bulk=True)
    rc, _, err, _ = run_drsink(*worker_args(pipeline.queue_url, es_url=fault_proxy.url))
    assert rc == 1 and "answered HTTP 307 Temporary Redirect to a bulk request" in err, err
    assert fault_proxy.stats["redirected"] == 1 and fault_proxy.stats["forwarded_items"] == 0
    assert search.count_by_log_id() == {}
    assert aws.queue_depth(pipeline.queue_url) == 1


def test_bulk_responses_are_filtered_unless_the_server_refuses(aws, pipeline, search, fault_proxy, worker_args,
                                                               run_drsink):
    """Bulk requests ask for only the fields drsink reads of each item (`filter_path`): a
    cluster's whole answer repeats index, id, version and shards for every record. A
    server that refuses the parameter (here with a proxy's bare 400 that does not name
    it) gets the same request again at once without it, and every later one goes
    without it; nothing is lost or doubled."""
    ids = put_objects(aws, pipeline, "filtered", objects=2, records=15)
    summary = ok(run_drsink(*worker_args(pipeline.queue_url, "--batch-records", "10", es_url=fault_proxy.url)))
    assert summary["indexed"] == 30 and summary["retried"] == 0
    requests = fault_proxy.stats["bulk_requests"]
    assert requests >= 4 and fault_proxy.stats["filtered_bulk_requests"] == requests

    fault_proxy.configure(refuse_filter_path=True)
    ids += put_objects(aws, pipeline, "whole", objects=2, records=15)
    rc, _, err, summary = run_drsink(*worker_args(pipeline.queue_url, "--batch-records", "10",
                                                  es_url=fault_proxy.url))
    assert rc == 0, err
    # The two objects' first requests may both leave before the first refusal is back.
    refused = fault_proxy.stats["refused_filter_path"]
    assert refused in (1, 2)
    assert fault_proxy.stats["filtered_bulk_requests"] == requests + refused
    assert fault_proxy.stats["bulk_requests"] >= requests + 4  # the refused ones are not forwarded
    assert err.count("refused a bulk request with filter_path and took it without") == 1, err
    assert summary["indexed"] == 30 and summary["retried"] == 0
    assert summary["dead_lettered"] == 0 and summary["failed"] == 0
    assert_exactly_once(search, ids)
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_a_message_sqs_no_longer_holds_is_given_up(aws, pipeline, search, fault_proxy, moto_url, worker_args,
                                                   run_drsink):
    """SQS answers a visibility extension with MessageNotInflight (the receipt handle is
    stale: the message expired, or another receive took it): the worker gives the
    message's work up instead of finishing it beside the new holder, and does not delete
    it with the stale handle. The next receive indexes it: every record once."""
    short_visibility(aws, pipeline, 3)  # a heartbeat every second
    ids = put_objects(aws, pipeline, "lost-hold", objects=1, records=5)
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) >= 1, 15, "the object's message")
    fault_proxy.configure(delay=5)  # the bulk answer comes after the first heartbeats
    with FaultProxy(moto_url) as sqs:
        sqs.configure(sqs_not_inflight=1)
        rc, _, err, summary = run_drsink(*worker_args(pipeline.queue_url, es_url=fault_proxy.url),
                                         env={"AWS_ENDPOINT_URL": sqs.url})
    assert sqs.stats["not_inflight"] == 1
    assert rc == 1 and "is no longer held by this worker" in err, err
    assert summary["failed"] == 1 and summary["objects"] == 0, summary
    assert aws.queue_depth(pipeline.queue_url) == 1
    fault_proxy.configure(delay=0)
    wait_for(lambda: in_flight(aws, pipeline.queue_url) == 0, 15, "the message back on the queue")
    ok(run_drsink(*worker_args(pipeline.queue_url)))
    assert search.count_by_log_id() == {i: 1 for i in ids}
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_mapping_conflict_dead_letters_then_redrive(aws, pipeline, search, run_worker, run_drsink, dead_letter_dir):
    """5. An index template maps `when` as a date; records with text there are
    dead-lettered with the server's reason, the rest indexed. A redrive while the
    conflict stands rejects them again (they stay, in a new file); after the template
    and the (empty) index of their day are deleted, a redrive indexes them and removes
    them from the store, keeping only entries that have no record to submit."""
    template = f"{search.prefix}-tpl"
    res = search.request("PUT", f"_index_template/{template}", json={
        "index_patterns": [f"{search.prefix}-*"],
        "template": {"mappings": {"properties": {"when": {"type": "date"}}}}})
    assert res.ok, res.text
    try:
        # Good records are from the 21st, conflicting ones from the 22nd, so the fix can
        # drop the 22nd's index (it holds no document) without losing the good ones.
        good = [{"log_id": f"map-ok-{i}", "@timestamp": TIMESTAMP, "when": "2026-11-21T09:00:00Z"}
                for i in range(6)]
        bad = [{"log_id": f"map-bad-{i}", "@timestamp": "2026-11-22T10:00:00Z", "when": f"not a date {i}"}
               for i in range(3)]
        records = [good[0], bad[0], *good[1:4], bad[1], *good[4:], bad[2]]
        key = "mapping/conflict ü.ndjson"
        aws.put(pipeline.buckets[0], key, ndjson(records))
        summary = ok(run_worker(pipeline.queue_url))
        assert search.count_by_log_id() == {r["log_id"]: 1 for r in good}
        assert aws.queue_depth(pipeline.queue_url) == 0
        assert (summary["records"], summary["indexed"], summary["dead_lettered"]) == (9, 6, 3)
        entries = sorted(dead_letters(dead_letter_dir), key=lambda e: e["line"])
        assert [json.loads(e["record"])["log_id"] for e in entries] == [r["log_id"] for r in bad]
        assert [e["line"] for e in entries] == [2, 6, 9]
        for e in entries:
            assert (e["bucket"], e["key"]) == (pipeline.buckets[0], key)
            assert e["error"]["type"] in ("mapper_parsing_exception", "document_parsing_exception")
            assert e["error"]["type"] in e["reason"] and "when" in e["error"]["reason"]

        # An object-level fault (no record) sits in the same file: redrive keeps it.
        [first_file] = list(dead_letter_dir.glob("*.ndjson"))
        object_fault = {"reason": "Gzip stream is corrupt or truncated near byte 10", "bucket": pipeline.buckets[1],
                        "key": "broken.gz", "offset": 10, "time": "2026-11-21T10:00:00.000Z"}
        with first_file.open("a") as f:
            f.write(json.dumps(object_fault) + "\n")

        redrive = ("redrive", "--from", str(dead_letter_dir), "--es-url", search.url,
                   "--index", f"{search.prefix}-%Y.%m.%d", "--fallback-index", f"{search.prefix}-undated")
        again = ok(run_drsink(*redrive))
        assert (again["records"], again["indexed"], again["dead_lettered"]) == (3, 0, 3)
        assert not first_file.exists()
        kept = dead_letters(dead_letter_dir)
        assert sorted(e.get("record") and json.loads(e["record"])["log_id"] or e["key"] for e in kept) == \
            ["broken.gz", "map-bad-0", "map-bad-1", "map-bad-2"]
        assert {e["line"] for e in kept if "record" in e} == {2, 6, 9}
    finally:
        search.request("DELETE", f"_index_template/{template}")

    search.request("DELETE", f"{search.prefix}-2026.11.22")
    fixed = ok(run_drsink(*redrive))
    assert (fixed["records"], fixed["indexed"], fixed["duplicates"], fixed["dead_lettered"]) == (3, 3, 0, 0)
    assert_exactly_once(search, [r["log_id"] for r in records])
    assert dead_letters(dead_letter_dir) == [object_fault]


def holds_open(pid: int, name: str) -> bool:
    """Whether process pid has a file whose path contains name open."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if name in os.readlink(fd):
                return True
        except OSError:  # closed meanwhile
            pass
    return False


def assert_indexed_or_kept_once(search, store: Path, ids: list[str]):
    """Every log_id is indexed or kept in the store, and none kept twice; -> the counts indexed."""
    kept = [json.loads(e["record"])["log_id"] for e in dead_letters(store)]
    search.refresh()
    indexed = search.count_by_log_id()
    assert len(kept) == len(set(kept))
    assert set(kept) | set(indexed) == set(ids), (len(kept), len(indexed))
    return indexed


def test_redrive_stopped_while_filling_a_batch_keeps_it(search, start_drsink, tmp_path):
    """SIGTERM while a redrive is still reading its file, with a batch filled but not sent:
    every entry is either indexed or kept in the store, none is lost with the old file."""
    ids = [f"stopped-{i:06d}" for i in range(150_000)]
    source = letters_file(tmp_path, ids)
    store = tmp_path / "store"
    proc = start_drsink("redrive", "--from", str(source), "--dead-letter", str(store), "--es-url", search.url,
                        "--index", f"{search.prefix}-%Y.%m.%d", "--fallback-index", f"{search.prefix}-undated",
                        "--batch-records", "1000000", "--batch-bytes", "1000000000")
    # Stop it once it has the file open, while it reads.
    deadline = time.monotonic() + 30
    while not holds_open(proc.proc.pid, "dead-letter-old"):
        assert proc.running() and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    rc, out, err, _ = proc.wait()
    assert rc != 0 and "interrupted" in err, err
    assert not list(source.glob("*.ndjson"))
    indexed = assert_indexed_or_kept_once(search, store, ids)
    assert set(indexed.values()) <= {1}


def test_redrive_interrupted_between_small_batches_keeps_the_rest(search, fault_proxy, start_drsink, tmp_path):
    """SIGTERM while a redrive sends many small batches (each one closed by the entry that
    did not fit, which opens the next): every entry is indexed or kept, once."""
    ids = [f"small-{i:04d}" for i in range(400)]
    source = letters_file(tmp_path, ids)
    store = tmp_path / "store"
    fault_proxy.configure(delay=0.2)
    proc = start_drsink("redrive", "--from", str(source), "--dead-letter", str(store), "--es-url", fault_proxy.url,
                        "--index", f"{search.prefix}-%Y.%m.%d", "--fallback-index", f"{search.prefix}-undated",
                        "--batch-bytes", "2000")
    wait_for(lambda: fault_proxy.stats["bulk_requests"] >= 3, 30, "a few batches")
    proc.send_signal(signal.SIGTERM)
    rc, out, err, _ = proc.wait()
    assert rc != 0 and "interrupted" in err, err
    assert not list(source.glob("*.ndjson"))
    indexed = assert_indexed_or_kept_once(search, store, ids)
    assert 0 < len(indexed) < len(ids), len(indexed)
    assert set(indexed.values()) == {1}
    assert fault_proxy.stats["largest_bulk_body"] <= 2000


def test_redrive_given_up_keeps_only_the_entries_not_yet_settled(search, fault_proxy, start_drsink, tmp_path):
    """A redrive batch in which the cluster takes one record, rejects one (a new dead letter)
    and keeps throttling the third is given up at --shutdown-timeout after a SIGTERM: the
    throttled record is kept, the rejected one is in the store once (its new letter, not
    also its old one), and the accepted one is not kept."""
    ids = ["settle-ok", "settle-rejected", "settle-throttled"]
    source = letters_file(tmp_path, ids)
    store = tmp_path / "store"
    fault_proxy.configure(item_status_by_log_id={"settle-rejected": 400, "settle-throttled": 429})
    proc = start_drsink("redrive", "--from", str(source), "--dead-letter", str(store), "--es-url", fault_proxy.url,
                        "--index", f"{search.prefix}-%Y.%m.%d", "--fallback-index", f"{search.prefix}-undated",
                        "--max-retry-interval", "1", "--shutdown-timeout", "1")
    wait_for(lambda: fault_proxy.stats["bulk_requests"] >= 2, 30, "a retry of the throttled record")
    proc.send_signal(signal.SIGTERM)
    rc, out, err, _ = proc.wait(30)
    assert rc != 0 and "interrupted" in err, err
    assert not list(source.glob("*.ndjson"))
    kept = {json.loads(e["record"])["log_id"]: e for e in dead_letters(store)}
    assert len(dead_letters(store)) == 2 and set(kept) == {"settle-rejected", "settle-throttled"}, kept
    assert "mapper_parsing_exception" in kept["settle-rejected"]["reason"], kept
    assert kept["settle-throttled"]["reason"] == "rejected by the sink: test"  # the old letter, as it was
    search.refresh()
    assert search.count_by_log_id() == {"settle-ok": 1}


def test_redrive_takes_a_running_workers_letters(aws, pipeline, search, worker_args, start_drsink,
                                                 run_drsink, dead_letter_dir):
    """A redrive next to a running worker takes the letters the worker wrote so far and
    removes their file. The worker writes its later letters to a new file (appends to the
    removed one would be lost), so every letter from before and after the redrive is in
    the store, once."""
    worker = start_drsink(*worker_args(pipeline.queue_url, exit_when_idle=False))
    aws.put(pipeline.buckets[0], "live/first.ndjson", b'{"log_id":"ok-1"}\nnot json 1\n')
    deadline = time.monotonic() + 60
    while len(dead_letters(dead_letter_dir)) < 1:
        assert worker.running() and time.monotonic() < deadline
        time.sleep(0.1)
    [workers_file] = dead_letter_dir.rglob("*.ndjson")
    redrive = ok(run_drsink("redrive", "--from", str(dead_letter_dir), "--dead-letter", str(dead_letter_dir),
                            "--es-url", search.url, "--index", f"{search.prefix}-%Y.%m.%d",
                            "--fallback-index", f"{search.prefix}-undated"))
    assert (redrive["records"], redrive["indexed"]) == (1, 0), redrive
    assert not workers_file.exists()
    assert [e["record"] for e in dead_letters(dead_letter_dir)] == ["not json 1"]
    aws.put(pipeline.buckets[0], "live/second.ndjson", b'{"log_id":"ok-2"}\nnot json 2\n')
    while len(dead_letters(dead_letter_dir)) < 2:
        assert worker.running() and time.monotonic() < deadline
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait().returncode == 0
    assert sorted(e["record"] for e in dead_letters(dead_letter_dir)) == ["not json 1", "not json 2"]
    assert len(list(dead_letter_dir.rglob("*.ndjson"))) == 2
    assert search.count_by_log_id() == {"ok-1": 1, "ok-2": 1}


def test_redrive_merges_copies_whose_log_id_is_unusable(aws, pipeline, search, run_worker, run_drsink,
                                                        dead_letter_dir):
    """A record with `"log_id": null`, rejected in both regions' copies: its id is a
    fingerprint of its content, and a redrive gives both letters that same id again (not
    one of where each copy was read), so they merge into one document."""
    template = f"{search.prefix}-tpl"
    res = search.request("PUT", f"_index_template/{template}", json={
        "index_patterns": [f"{search.prefix}-*"], "template": {"mappings": {"properties": {"n": {"type": "long"}}}}})
    assert res.ok, res.text
    try:
        line = {"log_id": None, "@timestamp": TIMESTAMP, "n": "not a number", "msg": "same log"}
        for bucket in pipeline.buckets:
            aws.put(bucket, "copies/same.ndjson", ndjson([line]))
        summary = ok(run_worker(pipeline.queue_url))
        assert (summary["records"], summary["dead_lettered"]) == (2, 2)
    finally:
        search.request("DELETE", f"_index_template/{template}")
    search.request("DELETE", f"{search.prefix}-2026.11.21")
    redrive = ok(run_drsink("redrive", "--from", str(dead_letter_dir), "--dead-letter", str(dead_letter_dir),
                            "--es-url", search.url, "--index", f"{search.prefix}-%Y.%m.%d",
                            "--fallback-index", f"{search.prefix}-undated"))
    assert (redrive["indexed"], redrive["duplicates"], redrive["dead_lettered"]) == (1, 1, 0)
    [doc] = search.docs()
    assert doc["_source"]["msg"] == "same log" and doc["_source"]["log_id"] is None


def test_visibility_shorter_than_processing(aws, pipeline, search, fault_proxy, worker_args, start_drsink):
    """6. One object takes far longer than the queue's visibility timeout (2 s) while two
    workers poll the same queue: the heartbeat keeps the message from the second worker,
    so the object is processed once, not twice in parallel."""
    short_visibility(aws, pipeline)
    fault_proxy.configure(delay=0.25)
    args = worker_args(pipeline.queue_url, "--batch-records", "10", es_url=fault_proxy.url, exit_when_idle=False)
    workers = [start_drsink(*args), start_drsink(*args)]
    time.sleep(1)  # both polling
    started = time.monotonic()
    ids = put_objects(aws, pipeline, "vis", objects=1, records=200)
    wait_for(lambda: aws.queue_depth(pipeline.queue_url) == 0, 60, "the object to be processed")
    took = time.monotonic() - started
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    summaries = [ok(worker.wait(30)) for worker in workers]
    assert took > 4, f"processing took {took:.1f}s, not longer than the visibility timeout"
    assert_exactly_once(search, ids)
    total = {k: sum(s[k] for s in summaries) for k in ("messages", "records", "indexed", "duplicates", "failed")}
    # The object's message plus moto's 2 s3:TestEvents, each received once in all.
    assert total == {"messages": 3, "records": 200, "indexed": 200, "duplicates": 0, "failed": 0}
    assert fault_proxy.stats["forwarded_items"] == 200
