"""End-to-end tests of `drsink backfill`: replaying an archive bucket through the
same pipeline as the worker, resumable with a checkpoint, selective by time range,
and fanned out over the worker fleet with --via-queue."""
import gzip
import json
import signal
import time
from urllib.parse import unquote_plus

import requests

from harness import dead_letters, gz, ndjson, ok, unique, wait_for

DAYS = ["2026/11/19", "2026/11/20", "2026/11/21"]


def archive(aws, name, objects_per_day=2, records=5):
    """A bucket without notifications holding gzip'd NDJSON objects under dated keys.
    Each object's first record repeats the previous object's last one, as the other
    region's copy would."""
    bucket = unique(name, 50)
    aws.s3.create_bucket(Bucket=bucket)
    previous_last = None
    for day in DAYS:
        for n in range(objects_per_day):
            lines = [{"log_id": f"{day}-{n}-{r}", "@timestamp": day.replace("/", "-") + "T12:00:00Z", "n": r}
                     for r in range(records)]
            if previous_last:
                lines[0] = previous_last
            previous_last = lines[-1]
            aws.put(bucket, f"archive/{day}/part {n}.ndjson.gz", gz(ndjson(lines)))
    return bucket


def backfill_args(search, bucket, *extra, dead_letter_dir=None):
    return ["backfill", "--bucket", bucket, "--es-url", search.url, "--s3-force-path-style",
            "--index", f"{search.prefix}-%Y.%m.%d", "--fallback-index", f"{search.prefix}-undated",
            *(["--dead-letter", str(dead_letter_dir)] if dead_letter_dir else []), *extra]


def all_log_ids(aws, bucket):
    """Every record's log_id in the bucket, read back with boto3."""
    ids = []
    for obj in aws.s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = aws.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        ids += [json.loads(line)["log_id"] for line in gzip.decompress(body).splitlines()]
    return ids


def test_archived_object_is_replayed_by_a_rerun_once_restored(aws, search, run_drsink,
                                                              dead_letter_dir, tmp_path):
    """A Glacier object is dead-lettered and left out of the checkpoint, so the rerun after
    its restore indexes it, while the objects already done are skipped."""
    bucket = archive(aws, "glacier", objects_per_day=1)
    cold = "archive/2026/11/18/cold.ndjson.gz"
    aws.s3.put_object(Bucket=bucket, Key=cold, StorageClass="GLACIER",
                      Body=gz(ndjson([{"log_id": "cold-1"}, {"log_id": "cold-2"}])))
    checkpoint = tmp_path / "checkpoint.ndjson"
    args = backfill_args(search, bucket, "--checkpoint", str(checkpoint), dead_letter_dir=dead_letter_dir)
    first = ok(run_drsink(*args))
    assert (first["objects"], first["archived_objects"], first["failed"]) == (3, 1, 0)
    letters = dead_letters(dead_letter_dir)
    assert [(d["key"], "is archived (GLACIER) and not restored" in d["reason"]) for d in letters] == [(cold, True)]
    assert "cold-1" not in search.count_by_log_id()

    aws.s3.restore_object(Bucket=bucket, Key=cold, RestoreRequest={"Days": 1})
    rerun = ok(run_drsink(*args))
    assert (rerun["skipped"], rerun["objects"], rerun["archived_objects"]) == (3, 1, 0)
    counts = search.count_by_log_id()
    assert (counts["cold-1"], counts["cold-2"]) == (1, 1)
    assert set(counts.values()) == {1}


def test_replaying_twice_changes_nothing(aws, search, run_drsink, dead_letter_dir):
    bucket = archive(aws, "twice")
    ids = all_log_ids(aws, bucket)
    first = ok(run_drsink(*backfill_args(search, bucket, dead_letter_dir=dead_letter_dir)))
    assert first["objects"] == 6
    assert first["records"] == len(ids) == 30
    assert first["indexed"] == len(set(ids))
    assert first["indexed"] + first["duplicates"] == 30
    assert first["failed"] == 0 and first["dead_lettered"] == 0
    assert first["bytes"] > 0
    assert search.count_by_log_id() == {i: 1 for i in set(ids)}

    second = ok(run_drsink(*backfill_args(search, bucket, dead_letter_dir=dead_letter_dir)))
    assert second["indexed"] == 0
    assert second["duplicates"] == 30
    assert search.count_by_log_id() == {i: 1 for i in set(ids)}


def start_slow_backfill(search, bucket, checkpoint, start_drsink, done: int):
    """A backfill slow enough to be stopped half-way (10 records/s, 5 records per object),
    once its checkpoint holds `done` objects."""
    proc = start_drsink(*backfill_args(search, bucket, "--checkpoint", str(checkpoint),
                                       "--concurrency", "1", "--max-records-per-sec", "10"))
    deadline = time.monotonic() + 60
    while not (checkpoint.exists() and len(checkpoint.read_text().splitlines()) >= done):
        assert proc.running() and time.monotonic() < deadline
        time.sleep(0.1)
    return proc


def test_killed_backfill_resumes_from_its_checkpoint(aws, search, start_drsink, run_drsink, tmp_path):
    bucket = archive(aws, "resume", objects_per_day=4)
    ids = all_log_ids(aws, bucket)
    checkpoint = tmp_path / "checkpoint.ndjson"
    proc = start_slow_backfill(search, bucket, checkpoint, start_drsink, done=3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {json.loads(line)["key"] for line in checkpoint.read_text().splitlines() if line.strip()}
    assert 3 <= len(done) < 12, done

    result = run_drsink(*backfill_args(search, bucket, "--checkpoint", str(checkpoint)))
    rerun = ok(result)
    assert rerun["skipped"] == len(done)
    assert rerun["objects"] == 12 - len(done)
    # The log ends with the progress at 100 %, skipped objects included.
    progress = json.loads(result.stderr.strip().splitlines()[-1])["progress"]
    assert (progress["objects_done"], progress["objects_listed"], progress["listing_complete"]) == (12, 12, True)
    assert progress["bytes_done"] == progress["bytes_listed"] > 0
    assert rerun["records"] == 5 * (12 - len(done))
    assert search.count_by_log_id() == {i: 1 for i in set(ids)}
    finished = {json.loads(line)["key"] for line in checkpoint.read_text().splitlines() if line.strip()}
    assert len(finished) == 12

    # A third run with the finished checkpoint reads nothing.
    third = ok(run_drsink(*backfill_args(search, bucket, "--checkpoint", str(checkpoint))))
    assert (third["skipped"], third["objects"], third["records"]) == (12, 0, 0)


def test_backfill_stopped_by_sigterm_fails_and_resumes(aws, search, start_drsink, run_drsink, tmp_path):
    """A backfill stopped by SIGTERM (a drained node) exits non-zero, so a job runner
    retries it instead of taking it for finished; the rerun with its checkpoint replays
    only the rest."""
    bucket = archive(aws, "stopped", objects_per_day=4)
    ids = all_log_ids(aws, bucket)
    checkpoint = tmp_path / "checkpoint.ndjson"
    proc = start_slow_backfill(search, bucket, checkpoint, start_drsink, done=2)
    proc.send_signal(signal.SIGTERM)
    rc, _, err, summary = proc.wait()
    assert rc == 1, err
    assert "backfill stopped before it was done; run it again with the same --checkpoint" in err, err
    done = len(checkpoint.read_text().splitlines())
    assert 2 <= done < 12 and summary["failed"] == 0
    rerun = ok(run_drsink(*backfill_args(search, bucket, "--checkpoint", str(checkpoint))))
    assert (rerun["skipped"], rerun["objects"]) == (done, 12 - done)
    assert search.count_by_log_id() == {i: 1 for i in set(ids)}


def test_backfill_gives_up_at_its_shutdown_timeout(aws, search, fault_proxy, start_drsink, tmp_path):
    """SIGTERM while every bulk answer is held back: with --shutdown-timeout 3 the
    backfill gives the objects under way up and exits 1 a few seconds later (a Job's
    grace period), checkpointing none of them."""
    bucket = archive(aws, "deadline", objects_per_day=1)
    checkpoint = tmp_path / "checkpoint.ndjson"
    fault_proxy.configure(delay=60)
    args = backfill_args(search, bucket, "--checkpoint", str(checkpoint), "--shutdown-timeout", "3")
    args[args.index("--es-url") + 1] = fault_proxy.url
    proc = start_drsink(*args)
    wait_for(lambda: fault_proxy.stats["bulk_requests"] >= 1, 30, "the first bulk request")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc, _, err, summary = proc.wait(60)
    took = time.monotonic() - signalled
    assert took < 10, f"exit {took:.1f} s after SIGTERM with --shutdown-timeout 3"
    assert rc == 1 and "shutdown timeout reached; the objects under way are given up" in err, err
    assert "backfill stopped before it was done; run it again with the same --checkpoint" in err, err
    assert summary["objects"] == 0 and summary["failed"] == 0
    assert not checkpoint.exists() or checkpoint.read_text().strip() == ""
    fault_proxy.configure(delay=0)


def test_since_until_selects_partitions_and_dry_run_reads_nothing(aws, search, run_drsink, moto_url):
    bucket = unique("range", 50)
    aws.s3.create_bucket(Bucket=bucket)
    keys = {
        "logs/2026/11/19/a.log": False,
        "logs/2026/11/20/b.log": True,
        "logs/dt=2026-11-21/c.log": True,
        "logs/firehose-2026-11-21-12-00-00-x.log": True,
        "logs/2026/11/22/d.log": False,
        "logs/2025/e.log": False,
        # No day of their own: judged by their month's folder, not by LastModified (now).
        "logs/2026/11/g.log": True,
        "logs/2026/11/web-3/h.log": True,
        "logs/2026/10/i.log": False,
        # No date in the key: its LastModified (now) is outside the range.
        "logs/undated/f.log": False,
    }
    for key in keys:
        aws.put(bucket, key, ndjson([{"log_id": key, "@timestamp": "2026-11-20T00:00:00Z"}]))
    selected = {k for k, v in keys.items() if v}
    window = ["--prefix", "logs/", "--since", "2026-11-20", "--until", "2026-11-21"]

    # The moto recorder shows which S3 requests the dry run made.
    requests.post(f"{moto_url}/moto-api/recorder/reset-recording").raise_for_status()
    requests.post(f"{moto_url}/moto-api/recorder/start-recording").raise_for_status()
    try:
        dry = ok(run_drsink(*backfill_args(search, bucket, *window, "--dry-run")))
    finally:
        requests.post(f"{moto_url}/moto-api/recorder/stop-recording").raise_for_status()
    recording = requests.get(f"{moto_url}/moto-api/recorder/download-recording").text
    made = [json.loads(line) for line in recording.splitlines() if line.strip()]
    assert any("list-type=2" in r["url"] for r in made), made
    assert not [r for r in made if r["method"] == "GET" and "list-type" not in r["url"]], made
    assert dry["objects"] == len(selected)
    assert dry["bytes"] == sum(len(ndjson([{"log_id": k, "@timestamp": "2026-11-20T00:00:00Z"}])) for k in selected)
    assert dry["records"] == 0
    search.refresh(f"{search.prefix}-*")
    assert search.docs() == []

    real = ok(run_drsink(*backfill_args(search, bucket, *window)))
    assert real["objects"] == len(selected)
    assert set(search.count_by_log_id()) == selected


def test_via_queue_then_worker_matches_a_local_backfill(aws, search, run_drsink, run_worker):
    bucket = archive(aws, "fleet")
    ids = all_log_ids(aws, bucket)
    queue_url = aws.sqs.create_queue(QueueName=unique("fleet-queue", 60))["QueueUrl"]
    sent = ok(run_drsink(*backfill_args(search, bucket, "--via-queue", queue_url)))
    assert sent["enqueued"] == 6
    assert sent["records"] == 0
    assert aws.queue_depth(queue_url) == 6

    worked = ok(run_worker(queue_url))
    assert worked["objects"] == 6
    assert worked["records"] == 30
    assert aws.queue_depth(queue_url) == 0
    assert search.count_by_log_id() == {i: 1 for i in set(ids)}


def test_via_queue_rerun_with_a_checkpoint_sends_only_new_objects(aws, search, run_drsink, tmp_path):
    """An interrupted --via-queue fan-out over a large archive is resumed with its
    --checkpoint: the rerun sends only the objects not yet handed to the fleet."""
    bucket = archive(aws, "fleet-resume")
    queue_url = aws.sqs.create_queue(QueueName=unique("fleet-resume-queue", 60))["QueueUrl"]
    checkpoint = tmp_path / "via-queue.ckpt"
    args = backfill_args(search, bucket, "--via-queue", queue_url, "--checkpoint", str(checkpoint))
    first = ok(run_drsink(*args))
    assert (first["enqueued"], first["skipped"]) == (6, 0)
    assert checkpoint.read_text().splitlines()[0] == '{"kind":"enqueued"}'
    assert len(checkpoint.read_text().splitlines()) == 1 + 6
    # Sent is not done (a worker may still fail on an object): a replay here refuses it.
    rc, _, err, _ = run_drsink(*backfill_args(search, bucket, "--checkpoint", str(checkpoint)))
    assert rc != 0
    assert "records objects sent to a queue with --via-queue, and this run replays them here" in err, err
    aws.put(bucket, "archive/2026/11/22/late.ndjson.gz", gz(ndjson([{"log_id": "late-1"}])))
    second = ok(run_drsink(*args))
    assert (second["enqueued"], second["skipped"]) == (1, 6)
    assert aws.queue_depth(queue_url) == 7
    bodies = []
    while len(bodies) < 7:
        got = aws.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies += [json.loads(m["Body"]) for m in got.get("Messages", [])]
    # Keys are URL-encoded, as in S3's own notifications.
    keys = sorted(unquote_plus(r["s3"]["object"]["key"]) for b in bodies for r in b["Records"])
    assert len(keys) == 7 and len(set(keys)) == 7
    assert "archive/2026/11/22/late.ndjson.gz" in keys



def test_start_after_resumes_the_listing_with_or_without_a_time_range(aws, search, run_drsink):
    """--start-after KEY replays only the keys after KEY, also when a time range makes the
    listing walk the partitions (where moto, like some S3-compatible stores, drops the
    rolled-up prefix that holds KEY)."""
    bucket = archive(aws, "after")
    after = "archive/2026/11/20/part 0.ndjson.gz"
    for window, expected in [((), 3), (("--since", "2026-11-19"), 3), (("--until", "2026-11-20"), 1),
                             (("--since", "2026-11-21"), 2)]:
        dry = ok(run_drsink(*backfill_args(search, bucket, "--start-after", after, *window, "--dry-run")))
        assert dry["objects"] == expected, (window, dry)
    real = ok(run_drsink(*backfill_args(search, bucket, "--start-after", after, "--since", "2026-11-19")))
    assert real["objects"] == 3
    # Each object repeats the previous one's last record first, so 20/part 0's last shows up.
    assert {i.rsplit("-", 2)[0] + "-" + i.rsplit("-", 2)[1] for i in search.count_by_log_id()} == {
        "2026/11/20-0", "2026/11/20-1", "2026/11/21-0", "2026/11/21-1"}
    assert set(search.count_by_log_id().values()) == {1}


def test_time_range_reads_dates_below_the_prefix_hive_partitions_and_not_host_names(aws, search, run_drsink):
    """The date partition of a key is the first date below --prefix (a copied archive's
    dated folder does not hide the logs' own dates), Hive's year=/month=/day= partitions
    are read, and a host name ending in four digits is no year. Every object here was
    written today, so a key that gave no date would fall back to LastModified and be
    left out."""
    bucket = unique("partitions", 50)
    aws.s3.create_bucket(Bucket=bucket)
    keys = {
        "exports/2027-01-15/AWSLogs/1/app/2026/11/20/a.ndjson": "copy-20",
        "exports/2027-01-15/AWSLogs/1/app/2026/11/22/b.ndjson": "copy-22",
        "hosts/web-2001/2026/11/20/c.ndjson": "host-20",
        "hosts/web-2001/2026/11/22/c.ndjson": "host-22",
        "hosts/hôte-é/2026/11/20/ü.ndjson": "host-20-u",
        "hive/year=2026/month=11/day=20/d.ndjson": "hive-20",
        "hive/year=2026/month=11/day=21/e.ndjson": "hive-21",
        "hive/year=2026/month=10/f.ndjson": "hive-10",
    }
    for key, log_id in keys.items():
        aws.put(bucket, key, ndjson([{"log_id": log_id, "@timestamp": "2026-11-20T12:00:00Z"}]))
    day = ("--since", "2026-11-20", "--until", "2026-11-20")
    copied = ok(run_drsink(*backfill_args(search, bucket, "--prefix", "exports/2027-01-15/", *day)))
    assert copied["objects"] == 1
    assert search.count_by_log_id() == {"copy-20": 1}
    rest = ok(run_drsink(*backfill_args(search, bucket, "--prefix", "hosts/", "--prefix", "hive/", *day)))
    assert rest["objects"] == 3
    assert search.count_by_log_id() == {"copy-20": 1, "host-20": 1, "host-20-u": 1, "hive-20": 1}


def test_an_empty_time_range_is_refused_at_start(search, run_drsink):
    rc, out, err, _ = run_drsink(*backfill_args(search, "any-bucket", "--since", "2026-11-22", "--until", "2026-11-21"))
    assert rc != 0 and json.loads(out)["objects"] == 0
    assert "--since 2026-11-22T00:00:00+00:00 is not before --until 2026-11-22T00:00:00+00:00" in err, err
