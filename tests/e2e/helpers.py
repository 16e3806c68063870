"""Reusable pieces for end-to-end tests: ports, processes killed by PID, waiting, backends.

Every process is started in its own session (so it leads a process group) and
tracked by a `Processes` set, which kills and reaps each one by PID when the
test ends (the `processes` fixture in conftest.py). Output goes to log files
so a failing wait can show what the process said.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
import pytest

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
BACKEND_SCRIPT = Path(__file__).with_name("backend_server.py")
LOOPBACK = "127.0.0.1"


def require_binary(name: str) -> str:
    """The path of program `name` (PATH, then /usr/sbin and /usr/local/sbin); when missing
    the test is skipped with a reason, except under CI=true, where it fails."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}") if os.access(p, os.X_OK)),
        None)
    if found:
        return found
    skip_or_fail(f"{name} is not installed")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test for a missing prerequisite, except under CI=true (./dev.sh test
    installs everything), where it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released): another
    process may take it before it is used. For a port nothing listens on, use
    `refused_ports`; a server in this process binds port 0 itself."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refused_ports(count: int = 1, host: str = LOOPBACK) -> Iterator[list[int]]:
    """`count` TCP ports bound but not listening until the block ends: connecting to one
    is refused, and no other process can take it meanwhile."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        yield ports


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(check: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll `check` until it returns something truthy (returned) or `timeout` passes
    (AssertionError naming `what` and the last value seen). Errors count as falsy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except (OSError, ValueError, KeyError, httpx.HTTPError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; "
                                 f"last: {last!r}")
        time.sleep(interval)


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return ""


class Processes:
    """The processes one test started; each is killed and reaped by PID at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes]] = []
        self._adopted: list[tuple[int, str]] = []  # (pid, start time): PIDs get reused

    def start(self, argv: Sequence[str], name: str, *, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """Start `argv` in its own session, output to `log_dir/NAME.log`."""
        with open(self.log(name), "ab") as out:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=env, cwd=ROOT)
        self._procs.append(proc)
        return proc

    def adopt(self, pid: int) -> None:
        """Also kill `pid` at the end: a process someone else started (e.g. a sink's command)."""
        self._adopted.append((pid, start_time(pid)))

    def log(self, name: str) -> Path:
        """Where process `name` writes its output."""
        return self.log_dir / f"{name}.log"

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the process group `proc` leads (by its PID) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        return proc.wait(timeout=10)

    def close(self) -> None:
        """Kill and reap everything still running."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.kill(proc)
        for pid, started in self._adopted:
            if start_time(pid) == started:  # still the same process, not a reused PID
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._procs.clear()
        self._adopted.clear()


def start_backend(procs: Processes, port: int, name: str, host: str = LOOPBACK
                  ) -> subprocess.Popen[bytes]:
    """An HTTP backend process on `host`:`port`, once it accepts connections."""
    proc = procs.start([sys.executable, str(BACKEND_SCRIPT), str(port), name, host], name)
    wait_until(lambda: port_open(port, host) or proc.poll() is not None, timeout=10,
               what=f"backend {name} on port {port}")
    if proc.poll() is not None:
        raise AssertionError(f"backend {name} exited: {procs.log(name).read_text()}")
    return proc


@contextlib.contextmanager
def sentinel_running(directory: Path, config: Path) -> Iterator[str]:
    """`sentinel run -c CONFIG` (its state dir DIRECTORY/state, its log in DIRECTORY/logs)
    until the block ends, killed by PID then; yields its API base URL."""
    (directory / "logs").mkdir()
    processes = Processes(directory / "logs")
    try:
        yield start_sentinel(processes, config, directory / "state")[1]
    finally:
        processes.close()


def start_sentinel(procs: Processes, config: Path, state_dir: Path, name: str = "sentinel",
                   *, timeout: float = 15.0, options: Sequence[str] = (),
                   wrapper: Sequence[str] = (), env: dict[str, str] | None = None
                   ) -> tuple[subprocess.Popen[bytes], str]:
    """`[WRAPPER] sentinel [OPTIONS] run -c CONFIG` as a subprocess (a wrapper such as
    `prlimit ...` must exec it), in `env` when given; returns it and its API base URL
    (read from STATE_DIR/api.url, so the config may listen on port 0)."""
    url_file = state_dir / "api.url"
    url_file.unlink(missing_ok=True)
    proc = procs.start([*wrapper, sys.executable, "-m", "sentinel", *options, "run", "-c",
                        str(config)], name, env=env)

    def ready() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"sentinel exited {proc.returncode}: "
                                 f"{procs.log(name).read_text()}")
        return url_file.read_text().strip() if url_file.exists() else None

    return proc, wait_until(ready, timeout=timeout, what="sentinel's api.url")


def signal_and_wait(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                    timeout: float = 15.0) -> int:
    """Send `sig` to `proc` (its PID only, not its group) and return its exit code; the
    test fails when it has not exited within `timeout`."""
    os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pid {proc.pid} still running {timeout:g}s after signal {sig}")


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`sentinel ARGS...` run to completion (killed if it outlives `timeout`), output
    captured as text."""
    return subprocess.run([sys.executable, "-m", "sentinel", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL,
                          check=False)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON document at `path`, or None while it does not exist."""
    return json.loads(path.read_text()) if path.exists() else None


class SentinelApi:
    """A running sentinel's HTTP API, with its bearer token when one is set."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def state(self) -> dict[str, Any]:
        """GET /v1/state."""
        return dict(httpx.get(f"{self.url}/v1/state", timeout=5).json())

    def backend(self, service: str, name: str) -> dict[str, Any]:
        """One backend's entry in GET /v1/state (KeyError when it is not there)."""
        for entry in self.state()["services"][service]["backends"]:
            if entry["name"] == name:
                return dict(entry)
        raise KeyError(f"{service}/{name}")

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        """GET /v1/events?after=AFTER (with the token)."""
        response = httpx.get(f"{self.url}/v1/events", params={"after": after},
                             headers=self.headers, timeout=5)
        response.raise_for_status()
        return list(response.json()["events"])

    def post(self, path: str) -> httpx.Response:
        """POST PATH (with the token)."""
        return httpx.post(f"{self.url}{path}", headers=self.headers, timeout=10)

    def probes(self) -> int:
        """How many probes the engine has started."""
        return int(self.state()["engine"]["probes"])
