"""Fixtures: real servers per session (reused if `scripts/services start` runs them), drsink runs."""
from __future__ import annotations

import pytest

import servers
from faultproxy import FaultProxy
from harness import DRSINK_BIN, Aws, Drsink, Search, run_drsink as _run_drsink, unique
from hec_receiver import HecReceiver

FLAVOURS = ["opensearch", "elasticsearch"]


def _server(name: str):
    url, started = servers.ensure(name)
    yield url
    if started:
        servers.stop(name)


@pytest.fixture(scope="session")
def moto_url():
    yield from _server("moto")


@pytest.fixture(scope="session")
def opensearch_url():
    yield from _server("opensearch")


@pytest.fixture(scope="session")
def elasticsearch_url():
    yield from _server("elasticsearch")


@pytest.fixture(scope="session")
def aws(moto_url) -> Aws:
    return Aws(moto_url)


@pytest.fixture(params=FLAVOURS)
def search(request) -> Search:
    """Each flavour's session server, with an index prefix unique to this test."""
    url = request.getfixturevalue(f"{request.param}_url")
    return Search(request.param, url, unique(request.node.originalname, 30))


@pytest.fixture
def pipeline(aws, request):
    """A queue with two buckets ("region A", "region B") notifying it."""
    return aws.make_pipeline(request.node.originalname)


@pytest.fixture
def dead_letter_dir(tmp_path):
    path = tmp_path / "dead-letter"
    path.mkdir()
    return path


@pytest.fixture
def hec_args(dead_letter_dir, tmp_path):
    """hec_args(queue_url, receiver, *extra, exit_when_idle=True) -> the `drsink worker`
    arguments into a HecReceiver, with an embedded ledger in tmp_path, dead letters into
    dead_letter_dir, fast settings."""
    def args(queue_url: str, receiver: HecReceiver, *extra: str, exit_when_idle: bool = True) -> list[str]:
        return [
            "worker", "--queue-url", queue_url, "--sink", "splunk-hec", "--hec-url", receiver.url,
            "--dead-letter", str(dead_letter_dir), "--dedup-ledger-path", str(tmp_path / "ledger"),
            "--wait-seconds", "1", "--s3-force-path-style", "--max-retry-interval", "1",
            *(["--exit-when-idle"] if exit_when_idle else []), *extra,
        ]

    return args


def _require_binary() -> None:
    if not DRSINK_BIN.is_file():
        pytest.fail(f"drsink binary not found at {DRSINK_BIN} (cargo build --release, or set DRSINK_BIN)")


@pytest.fixture
def run_drsink(aws, tmp_path):
    """run_drsink(*args, env={}, timeout=120) -> (returncode, stdout, stderr, summary),
    with the AWS settings pointing at moto, run in tmp_path."""
    _require_binary()

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
        return _run_drsink(*args, env={**aws.env, **(env or {})}, timeout=timeout, cwd=tmp_path)

    return run


@pytest.fixture
def start_drsink(aws, tmp_path):
    """start_drsink(*args, env={}) -> Drsink running in the background (like run_drsink);
    whatever still runs at teardown is killed."""
    _require_binary()
    started: list[Drsink] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Drsink:
        started.append(Drsink(*args, env={**aws.env, **(env or {})}, cwd=tmp_path))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def worker_args(search, dead_letter_dir):
    """worker_args(queue_url, *extra, es_url=None, exit_when_idle=True) -> the `drsink worker`
    arguments into this test's search server (or es_url, e.g. a fault proxy in front of it)
    and index prefix (`<prefix>-%Y.%m.%d`, `<prefix>-undated`), dead letters into
    dead_letter_dir, fast settings, --exit-when-idle unless told otherwise."""

    def args(queue_url: str, *extra: str, es_url: str | None = None, exit_when_idle: bool = True) -> list[str]:
        return [
            "worker", "--queue-url", queue_url, "--es-url", es_url or search.url,
            "--index", f"{search.prefix}-%Y.%m.%d", "--fallback-index", f"{search.prefix}-undated",
            "--dead-letter", str(dead_letter_dir), "--wait-seconds", "1", "--s3-force-path-style",
            *(["--exit-when-idle"] if exit_when_idle else []), *extra,
        ]

    return args


@pytest.fixture
def run_worker(run_drsink, worker_args):
    """run_worker(queue_url, *extra_args, es_url=None, **run_drsink_kw): `drsink worker`
    with worker_args, run to its exit."""

    def run(queue_url: str, *extra: str, es_url: str | None = None, **kw):
        return run_drsink(*worker_args(queue_url, *extra, es_url=es_url), **kw)

    return run


@pytest.fixture
def fault_proxy(search):
    """A FaultProxy in front of this test's search server (no faults until configured)."""
    with FaultProxy(search.url) as proxy:
        yield proxy
