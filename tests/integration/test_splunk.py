"""End-to-end tests of `drsink worker --sink splunk-hec` against the HEC receiver
(tests/integration/hec_receiver.py) and moto; the Redis ledger against Debian's
redis-server, started here on a free port (scripts/test installs it)."""
from __future__ import annotations

import json
import signal
import time

import pytest

from harness import dead_letters, gz, letters_file, ndjson, ok, redis_server, unique, wait_for
from hec_receiver import HecReceiver

TOKEN = "5f3c8e1a-7b2d-4c9e-a1f0-8d6b4e2c9a71"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def hec():
    with HecReceiver(token=TOKEN) as receiver:
        yield receiver


ENV = {"DRSINK_HEC_TOKEN": TOKEN}


def records(ids, ts="2026-11-21T23:59:59.250Z"):
    return [{"log_id": i, "@timestamp": ts, "host": "web-1", "message": f"event {i}"} for i in ids]


def put_cross_region(aws, pipeline, key="AWSLogs/app/2026/11/21/app.ndjson.gz"):
    """Region A and region B hold the same 40 records (plus 10 and 5 of their own, and
    5 without log_id that get the same fingerprint on both sides)."""
    shared = records([f"shared-{i}" for i in range(40)])
    plain = [{"message": f"no id {i}", "n": i} for i in range(5)]
    a = shared + records([f"a-{i}" for i in range(10)]) + plain
    b = records([f"b-{i}" for i in range(5)]) + list(reversed(shared)) + plain
    aws.put(pipeline.buckets[0], key, gz(ndjson(a)))
    aws.put(pipeline.buckets[1], key, ndjson(b))
    return len(a) + len(b), 40 + 10 + 5 + 5


@pytest.mark.parametrize("ledger", ["embedded", "redis"])
def test_cross_region_duplicates_reach_splunk_once(aws, pipeline, hec, hec_args, run_drsink, start_drsink,
                                                   request, ledger):
    extra = ["--hec-compress", "--hec-index", "dr", "--hec-sourcetype", "drsink:json"]
    if ledger == "redis":
        extra += ["--dedup-ledger", request.getfixturevalue("redis_url")]
    total, unique_count = put_cross_region(aws, pipeline)
    if ledger == "redis":
        # A fleet of two workers on one queue and one Redis ledger.
        workers = [start_drsink(*hec_args(pipeline.queue_url, hec, *extra, "--concurrency", "2"), env=ENV)
                   for _ in range(2)]
        summaries = [ok(w.wait(120)) for w in workers]
        summary = {k: sum(s[k] for s in summaries) for k in summaries[0]}
    else:
        summary = ok(run_drsink(*hec_args(pipeline.queue_url, hec, *extra), env=ENV))
    counts = hec.counts()
    assert len(counts) == unique_count
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    assert summary["records"] == total
    assert summary["indexed"] == unique_count
    assert summary["duplicates"] == total - unique_count
    assert summary["dead_lettered"] == 0 and summary["failed"] == 0
    assert aws.queue_depth(pipeline.queue_url) == 0
    assert hec.gzip_requests > 0
    event = next(e for e in hec.events if e["fields"]["log_id"] == "shared-0")
    assert event["time"] == pytest.approx(1795305599.25)
    assert event["host"] == "web-1" and event["index"] == "dr" and event["sourcetype"] == "drsink:json"
    assert event["source"].startswith("s3://") and event["source"].endswith("/AWSLogs/app/2026/11/21/app.ndjson.gz")
    assert event["event"] == records(["shared-0"])[0]

    # The same objects again (a replay, or the other region catching up later):
    # the ledger (on disk, or in Redis) knows every log_id, across restarts.
    put_cross_region(aws, pipeline, key="AWSLogs/app/2026/11/21/replay.ndjson.gz")
    again = ok(run_drsink(*hec_args(pipeline.queue_url, hec, *extra), env=ENV))
    assert again["indexed"] == 0 and again["duplicates"] == total
    assert hec.counts() == counts
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_ack_mode_deletes_messages_only_after_acks(aws, pipeline, hec_args, start_drsink):
    with HecReceiver(token=TOKEN, ack=True, ack_delay=4.0) as hec:
        hec.sticky_cookie = "AWSALB=node-1"
        aws.put(pipeline.buckets[0], "acked.ndjson", ndjson(records([f"ack-{i}" for i in range(20)])))
        worker = start_drsink(*hec_args(pipeline.queue_url, hec, "--hec-ack"), env=ENV)
        deadline = time.monotonic() + 30
        while len(hec.counts()) < 20:
            assert time.monotonic() < deadline, "events never arrived"
            assert worker.running(), worker.wait(1)
            time.sleep(0.1)
        # Received but not yet acknowledged: the object's message is still held.
        assert hec.pending_acks() > 0
        assert aws.queue_depth(pipeline.queue_url) >= 1
        summary = ok(worker.wait(60))
        assert hec.pending_acks() == 0 and hec.ack_polls > 0
        assert len(hec.channels) == 1
        # Every request after the first goes back to the same node (sticky by cookie).
        assert len(hec.cookies) > 2 and set(hec.cookies[1:]) == {"AWSALB=node-1"}, hec.cookies
        assert summary["indexed"] == 20 and summary["failed"] == 0
        assert aws.queue_depth(pipeline.queue_url) == 0
        assert set(hec.counts().values()) == {1}


def test_acks_awaited_across_a_hec_restart_are_not_taken_from_new_requests(aws, pipeline, hec_args,
                                                                           start_drsink):
    """A restarted HEC has lost the events it had not indexed and counts the channel's ackIds
    from 0 again. The ackIds awaited from before must not be answered by the new requests
    that get the same numbers: their events are sent again at once, and nothing is lost or
    doubled. (Without that, an old ackId is either answered for a new request, and its events
    are lost, or waited for until the ack timeout, which the run here does not outlast.)"""
    with HecReceiver(token=TOKEN, ack=True, ack_delay=3.0) as hec:
        before = [f"before-{i}" for i in range(30)]
        for n in range(3):
            aws.put(pipeline.buckets[0], f"before-{n}.ndjson", ndjson(records(before[n * 10:n * 10 + 10])))
        worker = start_drsink(*hec_args(pipeline.queue_url, hec, "--hec-ack", "--hec-ack-timeout", "90"),
                              env=ENV)
        # Polled: the worker has read the three answers (a restart takes longer than that).
        wait_for(lambda: hec.polled_ack_ids >= {0, 1, 2} or not worker.running(), 30, "three ack polls")
        assert worker.running(), worker.wait(1)
        assert hec.restart() == 30 and not hec.counts()
        after = [f"after-{i}" for i in range(30)]
        aws.put(pipeline.buckets[0], "after.ndjson", ndjson(records(after)))
        result = worker.wait(45)
        summary = ok(result)
        assert hec.counts() == {log_id: 1 for log_id in before + after}
        assert summary["indexed"] == 60 and summary["failed"] == 0
        assert aws.queue_depth(pipeline.queue_url) == 0
        assert "an ackId it had given before" in result.stderr, result.stderr[-4000:]


def test_a_redrive_stopped_while_splunk_acknowledges_finishes_its_request(aws, start_drsink, run_drsink, tmp_path):
    """SIGTERM while a redrive waits for HEC's acknowledgement of a request HEC took: the
    request finishes within --shutdown-timeout, its events are recorded and not kept, so a
    second redrive sends nothing again (Splunk cannot merge the copies)."""
    ids = [f"redriven-{i}" for i in range(20)]
    source = letters_file(tmp_path, ids)
    store = tmp_path / "store"
    with HecReceiver(token=TOKEN, ack=True, ack_delay=3.0) as hec:
        redrive = ["redrive", "--from", str(source), "--dead-letter", str(store), "--sink", "splunk-hec",
                   "--hec-url", hec.url, "--hec-ack", "--dedup-ledger-path", str(tmp_path / "ledger"),
                   "--max-retry-interval", "1"]
        proc = start_drsink(*redrive, env=ENV)
        wait_for(lambda: len(hec.counts()) == 20 or not proc.running(), 30, "the events at HEC")
        assert hec.pending_acks() == 1
        proc.send_signal(signal.SIGTERM)
        rc, out, err, summary = proc.wait(30)
        assert hec.pending_acks() == 0 and summary["indexed"] == 20, err
        assert not list(source.glob("*.ndjson")) and not dead_letters(store)
        again = ok(run_drsink(*redrive, env=ENV))
        assert again["records"] == 0
        assert hec.counts() == {log_id: 1 for log_id in ids}


def test_hec_ack_against_a_token_without_ack(aws, pipeline, hec_args, run_drsink):
    with HecReceiver(token=TOKEN, ack=False) as hec:
        aws.put(pipeline.buckets[0], "x.ndjson", ndjson(records(["x-1"])))
        rc, out, err, summary = run_drsink(*hec_args(pipeline.queue_url, hec, "--hec-ack"), env=ENV)
        # Without ack the HEC answers 200 without ackId: drsink warns and counts it.
        assert rc == 0, err
        assert "no ackId" in err
        assert summary["indexed"] == 1


def test_a_token_with_ack_needs_hec_ack(aws, pipeline, hec_args, run_drsink):
    """Without --hec-ack no channel is sent, so a token with indexer acknowledgement answers
    "Data channel is missing": drsink stops before sending, says to run with --hec-ack, and
    keeps the message (rather than having the events accepted with acks nobody polls)."""
    with HecReceiver(token=TOKEN, ack=True) as hec:
        aws.put(pipeline.buckets[0], "x.ndjson", ndjson(records(["x-1"])))
        rc, out, err, _ = run_drsink(*hec_args(pipeline.queue_url, hec), env=ENV)
        assert rc != 0 and "run with --hec-ack" in err, err
        assert hec.counts() == {} and hec.pending_acks() == 0
        assert any("x.ndjson" in json.dumps(m) for m in aws.receive(pipeline.queue_url))


def test_bad_token_stops_with_a_clear_error(aws, pipeline, hec, hec_args, run_drsink):
    aws.put(pipeline.buckets[0], "x.ndjson", ndjson(records(["t-1", "t-2"])))
    depth = aws.queue_depth(pipeline.queue_url)
    wrong = "0badc0de-dead-beef-0000-123456789abc"
    rc, out, err, summary = run_drsink(*hec_args(pipeline.queue_url, hec), env={"DRSINK_HEC_TOKEN": wrong})
    assert rc != 0
    assert "refused the token" in err
    assert wrong not in err and wrong not in out
    assert hec.counts() == {}
    assert aws.queue_depth(pipeline.queue_url) == depth
    # The token is no more visible in clap's own errors.
    rc, out, err, _ = run_drsink("worker", "--sink", "splunk-hec", "--hec-token", wrong, "--bogus", env={})
    assert rc != 0 and wrong not in err and wrong not in out


def test_an_index_the_token_may_not_write_stops_with_a_clear_error(aws, pipeline, hec, hec_args, run_drsink,
                                                                  dead_letter_dir):
    """Splunk names the event it stopped at (code 7 "Incorrect index"); still a configuration
    error: nothing is dead-lettered or counted as sent, and the message stays queued."""
    aws.put(pipeline.buckets[0], "x.ndjson", ndjson(records(["i-1", "i-2", "i-3"])))
    hec.allowed_indexes = {"dr_logs"}
    rc, out, err, summary = run_drsink(*hec_args(pipeline.queue_url, hec, "--hec-index", "not_allowed"), env=ENV)
    assert rc != 0
    assert "refused the index" in err, err
    assert hec.counts() == {}
    assert dead_letters(dead_letter_dir) == []
    # Only the bucket's test events are gone; the object's message stays for a fixed worker.
    assert aws.queue_depth(pipeline.queue_url) == 1


def test_server_busy_bursts_are_retried(aws, pipeline, hec, hec_args, run_drsink):
    aws.put(pipeline.buckets[0], "busy.ndjson", ndjson(records([f"busy-{i}" for i in range(30)])))
    hec.busy_next = 6
    summary = ok(run_drsink(*hec_args(pipeline.queue_url, hec, "--hec-batch-bytes", "2000"), env=ENV))
    assert hec.busy_answers == 6
    assert hec.counts() == {f"busy-{i}": 1 for i in range(30)}
    assert summary["indexed"] == 30 and summary["retried"] > 0 and summary["failed"] == 0
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_too_large_requests_are_split(aws, pipeline, hec, hec_args, run_drsink):
    aws.put(pipeline.buckets[0], "big.ndjson", ndjson(records([f"big-{i}" for i in range(40)])))
    hec.max_content_length = 3000
    summary = ok(run_drsink(*hec_args(pipeline.queue_url, hec, "--hec-batch-bytes", "20000"), env=ENV))
    assert hec.counts() == {f"big-{i}": 1 for i in range(40)}
    assert summary["indexed"] == 40 and summary["dead_lettered"] == 0
    assert hec.too_large_answers > 0


def test_hec_batch_bytes_bounds_every_request(aws, pipeline, hec, hec_args, run_drsink):
    """--hec-batch-bytes set to HEC's max_content_length: no request is too large."""
    aws.put(pipeline.buckets[0], "bound.ndjson", ndjson(records([f"bound-{i}" for i in range(60)])))
    hec.max_content_length = 3000
    summary = ok(run_drsink(*hec_args(pipeline.queue_url, hec, "--hec-batch-bytes", "3000"), env=ENV))
    assert hec.counts() == {f"bound-{i}": 1 for i in range(60)}
    assert hec.too_large_answers == 0
    assert summary["indexed"] == 60 and summary["failed"] == 0 and summary["dead_lettered"] == 0


def test_malformed_event_is_dead_lettered_and_the_rest_sent_once(aws, pipeline, hec, hec_args, run_drsink,
                                                                  dead_letter_dir):
    ids = [f"m-{i}" for i in range(12)]
    aws.put(pipeline.buckets[0], "bad.ndjson", ndjson(records(ids)))
    hec.invalid_log_ids = {"m-5"}
    summary = ok(run_drsink(*hec_args(pipeline.queue_url, hec), env=ENV))
    # The 5 events before the bad one were kept by HEC and are not sent again;
    # the 6 after it are sent once more, alone.
    assert hec.counts() == {i: 1 for i in ids if i != "m-5"}
    assert hec.requests == 2
    assert summary["indexed"] == 11 and summary["dead_lettered"] == 1 and summary["failed"] == 0
    letters = dead_letters(dead_letter_dir)
    assert len(letters) == 1
    assert "Invalid data format" in letters[0]["reason"]
    assert json.loads(letters[0]["record"])["log_id"] == "m-5"
    assert letters[0]["line"] == 6
    assert aws.queue_depth(pipeline.queue_url) == 0


def test_check_and_a_fan_out_leave_a_running_workers_ledger_alone(aws, pipeline, hec, hec_args, start_drsink,
                                                                   run_drsink, tmp_path):
    """`drsink check` and `backfill --via-queue` beside a running worker (same directory,
    same --dedup-ledger-path) neither take its embedded ledger's lock nor fail on it."""
    worker = start_drsink(*hec_args(pipeline.queue_url, hec, exit_when_idle=False), env=ENV)
    deadline = time.monotonic() + 30
    while not hec.cookies:  # the worker's start check: it holds the ledger by now
        assert worker.running() and time.monotonic() < deadline
        time.sleep(0.05)
    ledger = ["--dedup-ledger-path", str(tmp_path / "ledger")]
    rc, out, err, _ = run_drsink("check", "--queue-url", pipeline.queue_url, "--sink", "splunk-hec",
                                 "--hec-url", hec.url, *ledger, env=ENV)
    assert rc == 0 and "ok    sink" in out, out + err
    archive = unique("fan-out", 50)
    aws.s3.create_bucket(Bucket=archive)
    aws.put(archive, "old/a.ndjson", ndjson(records(["fan-out-0"])))
    summary = ok(run_drsink("backfill", "--bucket", archive, "--via-queue", pipeline.queue_url, "--sink",
                            "splunk-hec", "--hec-url", hec.url, "--s3-force-path-style", *ledger, env=ENV))
    assert summary["enqueued"] == 1
    deadline = time.monotonic() + 30
    while hec.counts() != {"fan-out-0": 1}:  # the worker takes the fanned-out object up
        assert time.monotonic() < deadline, hec.counts()
        time.sleep(0.1)
    assert worker.running()


def test_a_refusal_naming_no_event_is_narrowed_down_to_its_event(aws, pipeline, hec, hec_args, run_drsink,
                                                                  dead_letter_dir):
    """A 400 without `invalid-event-number` (the whole request refused) is the batch's
    fault, not the configuration's: the batch is split until the one event is found and
    dead-lettered; the rest arrive once and the worker carries on."""
    ids = [f"u-{i}" for i in range(12)]
    aws.put(pipeline.buckets[0], "unnamed.ndjson", ndjson(records(ids)))
    hec.unnamed_invalid_log_ids = {"u-5"}
    summary = ok(run_drsink(*hec_args(pipeline.queue_url, hec), env=ENV))
    assert hec.counts() == {i: 1 for i in ids if i != "u-5"}
    assert summary["indexed"] == 11 and summary["dead_lettered"] == 1 and summary["failed"] == 0
    letters = dead_letters(dead_letter_dir)
    assert len(letters) == 1 and "Invalid data format" in letters[0]["reason"], letters
    assert json.loads(letters[0]["record"])["log_id"] == "u-5"
    assert aws.queue_depth(pipeline.queue_url) == 0


def visible(aws, queue_url: str) -> int:
    attributes = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


@pytest.mark.parametrize("foreign", ["redirect", "page"])
def test_a_server_that_is_not_hec_takes_nothing(aws, pipeline, hec, hec_args, run_drsink, start_drsink, foreign):
    """A wrong --hec-url whose server answers 200 (a login page behind a redirect, a
    maintenance page) never counts as accepted. At start the check refuses it; met
    mid-run, the worker stops, its message stays queued and the ledger records nothing,
    so a run against HEC afterwards sends every event once."""
    ids = [f"foreign-{i}" for i in range(5)]
    aws.sqs.set_queue_attributes(QueueUrl=pipeline.queue_url, Attributes={"VisibilityTimeout": "2"})
    hec.foreign = foreign
    rc, _, err, _ = run_drsink(*hec_args(pipeline.queue_url, hec), env=ENV)
    assert rc != 0 and "no HEC reply" in err and "check --hec-url" in err, err
    hec.foreign = None
    worker = start_drsink(*hec_args(pipeline.queue_url, hec, exit_when_idle=False), env=ENV)
    deadline = time.monotonic() + 30
    while not hec.cookies and time.monotonic() < deadline:  # the start check's empty POST
        time.sleep(0.05)
    hec.foreign = foreign
    aws.put(pipeline.buckets[0], "foreign.ndjson", ndjson(records(ids)))
    result = worker.wait(60)
    assert result.returncode != 0 and "no HEC reply" in result.stderr, result.stderr
    assert hec.counts() == {}
    assert aws.queue_depth(pipeline.queue_url) >= 1
    hec.foreign = None
    deadline = time.monotonic() + 30
    while visible(aws, pipeline.queue_url) < 1:  # back once its visibility timeout ran out
        assert time.monotonic() < deadline
        time.sleep(0.2)
    summary = ok(run_drsink(*hec_args(pipeline.queue_url, hec), env=ENV))
    assert hec.counts() == {i: 1 for i in ids}
    assert summary["duplicates"] == 0

