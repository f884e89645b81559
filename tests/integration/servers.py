"""Start and stop the wire-protocol test servers (moto, osmem-server, noida-db).

Shared by the pytest harness (conftest.py) and `scripts/services`. Each server
runs in its own session with its state under `.services/`:
`<name>.pid`, `<name>.url`, `<name>.log` (noida-db also keeps `noida-data/`).
A server that is already running there is reused, so `scripts/services start`
followed by pytest costs no start-up time. Run inside the project venv
(`python servers.py start|stop|env`); only the standard library is needed to
import this module.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".services"
BIN = Path(sys.prefix) / "bin"

AWS_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",  # for boto3 and the aws CLI
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
}


def _osmem_binary() -> str:
    import osmem_server

    return osmem_server.resolve_binary()


def _noida_binary() -> str:
    # Run the bundled binary rather than the `noida-db` Python wrapper: the
    # wrapper is a second process that exits before the server does.
    from importlib.resources import files

    path = files("noida_db").joinpath("noida-db")
    os.chmod(str(path), 0o755)
    return str(path)


# name -> (environment variable holding its URL, argv builder(port, state dir))
SERVERS = {
    "moto": ("AWS_ENDPOINT_URL", lambda port, d: [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]),
    "opensearch": (
        "DRSINK_OPENSEARCH_URL",
        lambda port, d: [_osmem_binary(), "-addr", f"127.0.0.1:{port}", "-no-stdin-watch"],
    ),
    "elasticsearch": (
        "DRSINK_ELASTICSEARCH_URL",
        lambda port, d: [_noida_binary(), "start", "--only", "elasticsearch",
                         "--elasticsearch-port", str(port), "--data-dir", str(d / "noida-data")],
    ),
}

# Servers this process started, by name and state directory (so it can reap them; a
# test may run a second server of one kind in a state directory of its own).
_children: dict[tuple[str, Path], subprocess.Popen] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """True once something speaks HTTP at url (any status)."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def port_open(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((parts.hostname, parts.port)) == 0


def alive(pid: int) -> bool:
    """Running and not a zombie (orphans can stay zombies a while: PID 1 here reaps lazily)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def _locked(state: Path):
    state.mkdir(parents=True, exist_ok=True)
    with open(state / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _running(name: str, state: Path) -> tuple[int, str] | None:
    """(pid, url) of a live server recorded in state, else None."""
    try:
        pid = int((state / f"{name}.pid").read_text())
        url = (state / f"{name}.url").read_text().strip()
    except (OSError, ValueError):
        return None
    return (pid, url) if alive(pid) and answers(url) else None


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def ensure(name: str, state: Path = STATE, fresh: bool = True, port: int | None = None,
           timeout: float = 60) -> tuple[str, bool]:
    """Start server `name` unless it runs already. Returns (url, started_here).

    fresh=False keeps noida-db's data directory; port=None picks a free port."""
    with _locked(state):
        if running := _running(name, state):
            return running[1], False
        _stop(name, state)  # clear stale files / half-dead process
        if fresh and name == "elasticsearch":
            shutil.rmtree(state / "noida-data", ignore_errors=True)
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(state / f"{name}.log", "ab")
        proc = subprocess.Popen(SERVERS[name][1](port, state), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=state)
        log.close()
        _children[(name, state)] = proc
        (state / f"{name}.pid").write_text(f"{proc.pid}\n")
        (state / f"{name}.url").write_text(f"{url}\n")

        def ready() -> bool:
            if proc.poll() is not None:
                tail = (state / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode} during start-up:\n{tail}")
            return answers(url)

        try:
            _wait(ready, timeout, f"{name} did not answer at {url} within {timeout}s")
        except BaseException:
            _stop(name, state)
            raise
        return url, True


def _cmdline_has_port(pid: int, url: str) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    port = str(urllib.parse.urlsplit(url).port)
    return any(a == port or a.endswith(":" + port) for a in args)


def _stop(name: str, state: Path, timeout: float = 15) -> None:
    pidfile, urlfile = state / f"{name}.pid", state / f"{name}.url"
    try:
        pid = int(pidfile.read_text())
        url = urlfile.read_text().strip()
    except (OSError, ValueError):
        pid, url = None, None
    # Only signal the process group we started: its leader is the recorded pid, and
    # its command line names the recorded port (guards against a reused pid).
    if pid and alive(pid) and os.getpgid(pid) == pid and _cmdline_has_port(pid, url):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            _wait(lambda: not alive(pid) and not port_open(url), timeout, name)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _wait(lambda: not alive(pid), 5, f"{name} (pid {pid}) survived SIGKILL")
    if proc := _children.pop((name, state), None):
        proc.wait()
    if url:
        _wait(lambda: not port_open(url), timeout, f"{name}: port of {url} still open")
    pidfile.unlink(missing_ok=True)
    urlfile.unlink(missing_ok=True)


def stop(name: str, state: Path = STATE) -> None:
    with _locked(state):
        _stop(name, state)


def restart(name: str, state: Path = STATE) -> str:
    """Stop and start again on the same port. noida-db keeps what it saved on SIGTERM
    (not what a SIGKILL cut short); osmem-server and moto come back empty."""
    url = (state / f"{name}.url").read_text().strip()
    stop(name, state)
    return ensure(name, state, fresh=False, port=urllib.parse.urlsplit(url).port)[0]


def env_lines(urls: dict[str, str]) -> str:
    env = {**{SERVERS[n][0]: u for n, u in urls.items()}, **AWS_ENV}
    return "".join(f"export {k}={v}\n" for k, v in env.items())


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "start":
        urls = {name: ensure(name)[0] for name in SERVERS}
        (STATE / "env").write_text(env_lines(urls))
        sys.stdout.write(env_lines(urls))
    elif cmd == "stop":
        for name in SERVERS:
            stop(name)
        (STATE / "env").unlink(missing_ok=True)
    elif cmd == "status":
        for name in SERVERS:
            running = _running(name, STATE)
            print(f"{name:14} " + (f"pid {running[0]} {running[1]}" if running else "stopped"))
    else:
        print("usage: servers.py start|stop|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
