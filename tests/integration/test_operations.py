"""Operating drsink: `setup` (index template), `check`, the TOML configuration file,
`drsink config` and `--log-format json`, through the real binary against moto and
both search flavours."""
from __future__ import annotations

import gzip
import json

import pytest

from faultproxy import FaultProxy
from harness import gz, ndjson
from hec_receiver import HecReceiver

SECRET = "hunter2-S3cr3t-pw"
HEC_TOKEN = "5f3c8e1a-7b2d-4c9e-a1f0-8d6b4e2c9a71"


def index_args(search) -> list[str]:
    return ["--es-url", search.url, "--index", f"{search.prefix}-%Y.%m.%d",
            "--fallback-index", f"{search.prefix}-undated"]


def template_name(search) -> str:
    return f"drsink-{search.prefix}"


def installed_template(search) -> dict | None:
    res = search.request("GET", f"_index_template/{template_name(search)}")
    if res.status_code == 404:
        return None
    res.raise_for_status()
    return res.json()["index_templates"][0]["index_template"]


@pytest.fixture
def cleanup_template(search):
    yield
    search.request("DELETE", f"_index_template/{template_name(search)}")
    search.request("DELETE", f"{search.pattern}")


def test_setup_installs_the_template_once(search, run_drsink, cleanup_template):
    rc, out, err, _ = run_drsink("setup", *index_args(search))
    assert rc == 0, err
    assert "created" in out and "no change" not in out, out
    expected_flavour = "OpenSearch" if search.flavour == "opensearch" else "Elasticsearch"
    assert f"is {expected_flavour}" in out, out

    template = installed_template(search)
    assert template is not None
    assert template["index_patterns"] == [f"{search.prefix}-*"]  # the fallback index matches it
    props = template["template"]["mappings"]["properties"]
    assert props["log_id"] == {"type": "keyword"}
    assert props["@timestamp"] == {"type": "date"}
    assert props["message"] == {"type": "text"}
    assert props["drsink"]["properties"] == {
        "source": {"type": "keyword"}, "line": {"type": "long"}, "entry": {"type": "long"}}
    assert template["template"]["settings"]["index"]["refresh_interval"] == "5s"

    # Second run: nothing to do, and it says so.
    rc, out, err, _ = run_drsink("setup", *index_args(search))
    assert rc == 0, err
    assert "up to date" in out and "no change" in out, out
    assert "created" not in out and "updated" not in out, out
    assert installed_template(search) == template

    # A changed --fallback-index outside the pattern is a change.
    rc, out, err, _ = run_drsink("setup", *index_args(search)[:-1], f"undated-{search.prefix}")
    assert rc == 0, err
    assert "updated" in out, out
    assert installed_template(search)["index_patterns"] == [f"{search.prefix}-*", f"undated-{search.prefix}"]


def test_setup_template_maps_indexed_records(aws, pipeline, search, run_drsink, worker_args, cleanup_template):
    assert run_drsink("setup", *index_args(search)).returncode == 0
    records = [{"log_id": "a1", "@timestamp": "2026-11-21T10:00:00Z", "level": "warn", "host": "web-1",
                "source": "app", "message": "disk almost full"}]
    aws.put(pipeline.buckets[0], "app/2026/11/21/x.ndjson.gz", gz(ndjson(records)))
    rc, _, err, summary = run_drsink(*worker_args(pipeline.queue_url))
    assert rc == 0, err
    assert summary["indexed"] == 1
    index = f"{search.prefix}-2026.11.21"
    mapping = search.request("GET", f"{index}/_mapping").json()[index]["mappings"]["properties"]
    assert mapping["level"]["type"] == "keyword"
    assert mapping["host"]["type"] == "keyword"
    assert mapping["source"]["type"] == "keyword"
    assert mapping["log_id"]["type"] == "keyword"
    assert mapping["@timestamp"]["type"] == "date"
    assert mapping["message"]["type"] == "text"
    assert mapping["drsink"]["properties"]["line"]["type"] == "long"


def test_setup_retention_is_reported_when_unsupported(search, run_drsink, cleanup_template):
    """The test servers have no ILM/ISM API: setup says so and still installs the template."""
    rc, out, err, _ = run_drsink("setup", *index_args(search), "--retention-days", "30")
    assert rc == 0, err
    api = "ISM" if search.flavour == "opensearch" else "ILM"
    if "not supported by this cluster" in out:
        assert f"no {api} policy installed" in out, out
        assert "lifecycle" not in json.dumps(installed_template(search))
    else:  # a real cluster
        assert f"{api} policy" in out, out
    assert installed_template(search) is not None


def test_check_passes_then_fails_with_what_to_fix(aws, pipeline, search, run_drsink, cleanup_template):
    aws.put(pipeline.buckets[0], "app/x.log", b"hello\n")
    depth = aws.queue_depth(pipeline.queue_url)
    base = ["check", "--queue-url", pipeline.queue_url, "--bucket", f"{pipeline.buckets[0]}/app/",
            "--s3-force-path-style", *index_args(search)]

    # Before setup: the template check fails and names the fix.
    rc, out, err, _ = run_drsink(*base)
    assert rc != 0
    assert out.splitlines()[0].startswith("ok    queue"), out
    assert "ok    bucket" in out and "ok    cluster" in out, out
    assert "FAIL  template" in out and "drsink setup" in out, out

    assert run_drsink("setup", *index_args(search)).returncode == 0
    rc, out, err, _ = run_drsink(*base)
    assert rc == 0, out + err
    lines = out.splitlines()
    assert [line.split()[0:2] for line in lines[:5]] == [
        ["ok", "queue"], ["ok", "bucket"], ["ok", "cluster"], ["ok", "template"], ["ok", "write"]], out
    assert lines[-1] == "all checks passed"
    # Nothing consumed, nothing left behind.
    assert aws.queue_depth(pipeline.queue_url) == depth
    assert len(aws.receive(pipeline.queue_url, wait=0)) > 0
    assert search.docs() == []

    # A wrong queue URL: first check fails, non-zero, and says what to fix.
    rc, out, err, _ = run_drsink("check", "--queue-url", pipeline.queue_url + "-missing",
                                 *index_args(search))
    assert rc != 0
    assert out.startswith("FAIL  queue"), out
    assert "--queue-url" in out and "NonExistentQueue" in out, out
    assert "check failed: queue" in err

    # An unreachable cluster.
    rc, out, err, _ = run_drsink("check", "--es-url", "http://127.0.0.1:9",
                                 "--index", f"{search.prefix}-%Y.%m.%d")
    assert rc != 0
    assert "FAIL  cluster" in out and "--es-url" in out, out

    # A bucket that does not exist.
    rc, out, err, _ = run_drsink("check", "--bucket", pipeline.buckets[0] + "-missing",
                                 "--s3-force-path-style", *index_args(search))
    assert rc != 0
    assert "FAIL  bucket" in out and "NoSuchBucket" in out, out


def test_check_reads_an_object_rather_than_heading_it(aws, pipeline, search, moto_url, run_drsink):
    """A role that may list and HEAD but not GET (no s3:GetObject, or no kms:Decrypt for
    SSE-KMS) fails the bucket check: every worker read would fail."""
    aws.put(pipeline.buckets[0], "app/x.log", b"hello\n")
    with FaultProxy(moto_url) as s3:
        s3.configure(s3_deny_get=True)
        rc, out, err, _ = run_drsink("check", "--bucket", f"{pipeline.buckets[0]}/app/", "--s3-force-path-style",
                                     *index_args(search), env={"AWS_ENDPOINT_URL": s3.url})
    assert rc != 0, out + err
    assert "FAIL  bucket" in out and f"cannot read s3://{pipeline.buckets[0]}/app/x.log" in out, out
    assert "s3:GetObject" in out, out


def test_check_uses_the_hec_sinks_check(run_drsink, tmp_path):
    with HecReceiver(token=HEC_TOKEN) as hec:
        args = ["check", "--sink", "splunk-hec", "--hec-url", hec.url,
                "--dedup-ledger-path", str(tmp_path / "ledger")]
        rc, out, err, _ = run_drsink(*args, env={"DRSINK_HEC_TOKEN": HEC_TOKEN})
        assert rc == 0, out + err
        assert "ok    sink" in out, out
        rc, out, err, _ = run_drsink(*args, env={"DRSINK_HEC_TOKEN": "00000000-0000-0000-0000-000000000000"})
        assert rc != 0
        assert "FAIL  sink" in out, out
        assert HEC_TOKEN not in out + err
        # A HEC that answers 503 everywhere is not a usable sink.
        hec.unhealthy = True
        rc, out, err, _ = run_drsink(*args, env={"DRSINK_HEC_TOKEN": HEC_TOKEN})
        assert rc != 0
        assert "FAIL  sink" in out and "reports itself unhealthy (HTTP 503" in out, out


def write_config(tmp_path, text: str):
    path = tmp_path / "drsink.toml"
    path.write_text(text)
    return path


def test_config_file_drives_a_worker_run(aws, pipeline, search, run_drsink, tmp_path, dead_letter_dir):
    config = write_config(tmp_path, f"""
# everything in the file, nothing on the command line
queue_url = "{pipeline.queue_url}"
es_url = "{search.url}"
index = "{search.prefix}-%Y.%m.%d"
fallback_index = "{search.prefix}-undated"
dead_letter = "{dead_letter_dir}"
wait_seconds = 1
exit_when_idle = true
s3_force_path_style = true
id_fields = ["n"]
log_format = "json"
bucket = "ignored-by-the-worker"
""")
    lines = [{"@timestamp": "2026-11-21T10:00:00Z", "n": i, "message": f"m{i}"} for i in range(5)]
    aws.put(pipeline.buckets[0], "cfg/a.ndjson.gz", gzip.compress(ndjson(lines)))
    aws.put(pipeline.buckets[1], "cfg/b.ndjson", ndjson(lines[:2]))  # same ids via id_fields
    rc, out, err, summary = run_drsink("worker", "--config", str(config))
    assert rc == 0, err
    assert summary["records"] == 7 and summary["indexed"] == 5 and summary["duplicates"] == 2
    assert len(search.docs()) == 5
    assert aws.queue_depth(pipeline.queue_url) == 0
    # log_format = "json": every stderr line is a JSON object.
    logged = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert logged and all("level" in entry for entry in logged)

    # DRSINK_CONFIG works the same way.
    rc, out, err, summary = run_drsink("worker", env={"DRSINK_CONFIG": str(config)})
    assert rc == 0, err
    assert summary["messages"] == 0


def test_flags_override_env_override_file(run_drsink, tmp_path):
    config = write_config(tmp_path, """
queue_url = "https://sqs.example/1/from-file"
index = "file-%Y"
fallback_index = "file-undated"
concurrency = 3
""")
    rc, out, err, _ = run_drsink("config", "worker", "--config", str(config), "--concurrency", "7",
                                 env={"DRSINK_INDEX": "env-%Y", "DRSINK_QUEUE_URL": "https://sqs.example/1/from-env"})
    assert rc == 0, err
    settings = {}
    for line in out.splitlines():
        if line.startswith("#"):
            continue
        key, rest = line.split(" = ", 1)
        value, source = rest.rsplit("  # ", 1)
        settings[key] = (value.strip('"'), source)
    assert settings["concurrency"] == ("7", "flag")
    assert settings["index"] == ("env-%Y", "env")
    assert settings["queue_url"] == ("https://sqs.example/1/from-env", "env")
    assert settings["fallback_index"] == ("file-undated", "file")
    assert settings["timestamp_field"] == ("@timestamp", "default")
    assert out.startswith(f"# drsink worker: effective configuration (file {config})")


@pytest.mark.parametrize("text, expected", [
    ('queue_ur = "x"\n', "unknown key `queue_ur`"),
    ('concurrency = 0\n', "key `concurrency`"),
    ('visibility_timeout = 0\n', "key `visibility_timeout`"),
    ('visibility_timeout = 43201\n', "key `visibility_timeout`"),
    ('min_level = "loud"\n', "key `min_level`"),
    ('queue-url = "x"\n', "snake_case"),
    ('[worker]\nqueue_url = "x"\n', "unknown key `worker`"),
    ('es_url = \n', "not valid TOML"),
])
def test_invalid_configuration_is_rejected_at_start(run_drsink, tmp_path, text, expected):
    config = write_config(tmp_path, text)
    rc, out, err, _ = run_drsink("worker", "--queue-url", "https://sqs.example/1/q", "--config", str(config))
    assert rc == 2
    assert str(config) in err and expected in err, err
    assert out == ""


def test_secrets_in_urls_stay_out_of_help_and_errors(run_drsink, tmp_path):
    """A URL carrying user:password (in the environment, in a file, without a scheme, or
    with a password holding `/`) never shows in --help, errors or the configuration."""
    env = {"DRSINK_ES_URL": f"https://elastic:{SECRET}@search.example:9200",
           "DRSINK_DEDUP_LEDGER": f"redis://:{SECRET}@cache:6379",
           "DRSINK_HEC_URL": f"https://u:{SECRET}@hec.example:8088",
           "DRSINK_QUEUE_URL": f"https://u:{SECRET}@sqs.example/1/q"}
    rc, out, err, _ = run_drsink("worker", "--help", env=env)
    assert rc == 0 and "--es-url" in out
    assert SECRET not in out + err
    config = write_config(tmp_path, f'es_url = "https://elastic:{SECRET}@search.example:9200"\n')
    rc, out, err, _ = run_drsink("worker", "--config", str(config), "--help", env={})
    assert rc == 0 and SECRET not in out + err
    for url in (f"elastic:{SECRET}@127.0.0.1:9", f"http://elastic:hun/{SECRET}@127.0.0.1:9",
                f"http://elastic:pa,{SECRET}@127.0.0.1:9"):
        rc, out, err, _ = run_drsink("worker", "--queue-url", "https://sqs.example/1/q", "--es-url", url, env={})
        assert rc != 0 and ("--es-url" in err or "cannot reach" in err) and SECRET not in out + err, err
        rc, out, err, _ = run_drsink("config", "worker", "--queue-url", "https://sqs.example/1/q", "--es-url", url,
                                     env={})
        assert rc == 0 and SECRET not in out + err and "(redacted)@" in out, out


@pytest.mark.parametrize("flag, url", [("--es-url", "localhost:9200"), ("--es-url", "ftp://h:9200"),
                                       ("--hec-url", "hec.example:8088")])
def test_a_sink_url_without_http_is_refused_at_start(run_drsink, tmp_path, flag, url):
    args = ["worker", "--queue-url", "https://sqs.example/1/q", flag, url]
    if flag == "--hec-url":
        args += ["--sink", "splunk-hec", "--dedup-ledger-path", str(tmp_path / "ledger")]
    rc, out, err, _ = run_drsink(*args, env={"DRSINK_HEC_TOKEN": HEC_TOKEN})
    assert rc != 0
    assert f"{flag} `{url}` must be an http:// or https:// URL, not " in err, err


def test_config_output_redacts_secrets(run_drsink, tmp_path):
    config = write_config(tmp_path, f"""
queue_url = "https://sqs.example/1/q"
es_url = "https://elastic:{SECRET}@search.example:9200"
""")
    rc, out, err, _ = run_drsink("config", "worker", "--config", str(config), "--sink", "splunk-hec",
                                 "--dedup-ledger", f"redis://:{SECRET}@cache:6379",
                                 env={"DRSINK_HEC_TOKEN": HEC_TOKEN})
    assert rc == 0, err
    assert SECRET not in out + err and HEC_TOKEN not in out + err
    assert 'es_url = "https://(redacted)@search.example:9200"  # file' in out, out
    assert 'hec_token = "(redacted)"  # env' in out, out
    assert 'dedup_ledger = "redis://(redacted)@cache:6379"  # flag' in out, out
    assert 'sink = "splunk-hec"  # flag' in out, out

    # A Unix socket's password is given in the query.
    ledger = f"redis+unix://{tmp_path}/none.sock?db=0&pass={SECRET}"
    rc, out, err, _ = run_drsink("config", "worker", "--queue-url", "https://sqs.example/1/q",
                                 "--sink", "splunk-hec", "--dedup-ledger", ledger, env={"DRSINK_HEC_TOKEN": HEC_TOKEN})
    assert rc == 0 and SECRET not in out + err and "pass=(redacted)" in out, out
    rc, out, err, _ = run_drsink("worker", "--queue-url", "https://sqs.example/1/q", "--sink", "splunk-hec",
                                 "--hec-url", "http://127.0.0.1:9", "--dedup-ledger", ledger,
                                 env={"DRSINK_HEC_TOKEN": HEC_TOKEN})
    assert rc != 0 and "dedup ledger" in err and SECRET not in out + err, err

    # Nor does a failing run print it.
    config.write_text(f'es_url = "https://elastic:{SECRET}@search.invalid:9200"\n')
    rc, out, err, _ = run_drsink("check", "--config", str(config))
    assert rc != 0
    assert SECRET not in out + err
    assert "FAIL  cluster" in out and "search.invalid" in out, out


def test_log_format_json(run_drsink, aws, pipeline, search, worker_args):
    rc, out, err, summary = run_drsink(*worker_args(pipeline.queue_url), "--log-format", "json",
                                       env={"DRSINK_LOG": "debug"})
    assert rc == 0, err
    logged = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert logged, err
    assert all({"timestamp", "level"} <= set(entry) for entry in logged), logged[:3]
    assert any("message" in entry for entry in logged), logged[:3]
    assert summary is not None
