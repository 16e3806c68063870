"""`sentinel run` under a stand-in for systemd: a real unix datagram socket in
$NOTIFY_SOCKET receiving what a real process sends (READY, RELOADING, STOPPING,
WATCHDOG), against real backends."""

from __future__ import annotations

import itertools
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import ROOT, Processes, require_binary, signal_and_wait
from tests.notify import NotifyListener

pytestmark = pytest.mark.e2e
SLOW_ANSWER = 1.0  # the slow backend's delay: READY must wait for it

CONFIG = """\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
services:
  web:
    probe: {{type: http, path: /healthz, interval: 3s, timeout: 2s}}
    backends:
      - {{name: quick, address: "127.0.0.1:{quick}"}}
      - {{name: slow, address: "127.0.0.1:{slow}"}}
  jobs:
    probe: {{type: script, command: [/bin/sh, -c, "echo probed >> {marker}"], interval: 2s}}
    backends: ["127.0.0.1:1"]
"""


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[NotifyListener, str]]:
    """A listener on a path and the $NOTIFY_SOCKET value naming it."""
    path = str(tmp_path / "notify")
    with NotifyListener.bound(path) as sock:
        yield sock, path


@pytest.fixture
def abstract_listener() -> Iterator[tuple[NotifyListener, str]]:
    """A listener in the abstract namespace and the `@name` naming it."""
    name = f"sentinel-test-{uuid.uuid4().hex}"
    with NotifyListener.bound("\0" + name) as sock:
        yield sock, "@" + name


class Backend:
    """An HTTP backend in a thread; `answered` is set just before it sends its answer
    to a probe, after `delay` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.answered = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay)
                owner.answered.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    """A backend answering at once and one answering after SLOW_ANSWER."""
    quick, slow = Backend(), Backend(delay=SLOW_ANSWER)
    yield quick, slow
    quick.close()
    slow.close()


def start(processes: Processes, tmp_path: Path, notify: str, backends: tuple[Backend, Backend],
          **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`sentinel run` with NOTIFY_SOCKET (and `env`); returns it and its state dir. Run
    through `sh -c 'exec ...'` so WATCHDOG_PID=$$ names sentinel's own PID, as systemd
    sets it."""
    state = tmp_path / "state"
    config = tmp_path / "sentinel.yaml"
    config.write_text(CONFIG.format(state=state, quick=backends[0].port,
                                    slow=backends[1].port, marker=tmp_path / "marker"))
    environ = {**os.environ, "NOTIFY_SOCKET": notify, **env}
    command = f'exec "{sys.executable}" -m sentinel run -c "{config}"'
    if "WATCHDOG_USEC" in env:
        command = "WATCHDOG_PID=$$ " + command
    proc = processes.start(["/bin/sh", "-c", command], "sentinel", env=environ)
    return proc, state


def test_ready_after_api_and_first_probe_of_every_backend(
        processes: Processes, tmp_path: Path, listener: tuple[NotifyListener, str],
        backends: tuple[Backend, Backend]) -> None:
    """READY=1 comes once /healthz answers and every backend (a slow HTTP one, a script
    one) has a first probe result, not when probing merely started."""
    sock, path = listener
    _, state = start(processes, tmp_path, path, backends)
    messages = sock.until("READY=1")
    quick, slow = backends
    assert quick.answered.is_set()
    assert slow.answered.is_set()
    assert (tmp_path / "marker").exists()
    url = (state / "api.url").read_text().strip()
    assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    statuses = [a for m in messages for a in m if a.startswith("STATUS=")]
    assert statuses[0] == f"STATUS=starting: API {url}, first probe round"
    assert statuses[-1] == f"STATUS=running: services 2, backends 3; API {url}"
    assert "EXTEND_TIMEOUT_USEC=35000000" in messages[0]  # interval 3 + timeout 2 + 30 s


def test_reload_and_stop(processes: Processes, tmp_path: Path,
                         abstract_listener: tuple[NotifyListener, str],
                         backends: tuple[Backend, Backend]) -> None:
    """Over an abstract socket: SIGHUP gives RELOADING=1 (with MONOTONIC_USEC) then
    READY=1; SIGTERM gives STOPPING=1 and a clean exit; no WATCHDOG=1 without
    WATCHDOG_USEC."""
    sock, name = abstract_listener
    proc, _ = start(processes, tmp_path, name, backends)
    seen = sock.until("READY=1")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    os.kill(proc.pid, signal.SIGHUP)
    _, reloading = sock.next()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert "RELOADING=1" in reloading
    usec = next(a for a in reloading if a.startswith("MONOTONIC_USEC="))
    assert before <= int(usec.removeprefix("MONOTONIC_USEC=")) <= after
    _, reloaded = sock.next()
    assert "READY=1" in reloaded
    assert signal_and_wait(proc, signal.SIGTERM) == 0
    seen += [reloading, reloaded, *sock.until("STOPPING=1")]
    assert not any("WATCHDOG=1" in m for m in seen)


def test_watchdog_pings_at_half_the_period(
        processes: Processes, tmp_path: Path, listener: tuple[NotifyListener, str],
        backends: tuple[Backend, Backend]) -> None:
    """WATCHDOG_USEC=1s (WATCHDOG_PID: sentinel's own): a ping every 0.5 s, never
    faster; under load the gaps may stretch, but the median stays within the period."""
    sock, path = listener
    start(processes, tmp_path, path, backends, WATCHDOG_USEC="1000000")
    pings: list[float] = []
    while len(pings) < 8:
        arrived, message = sock.next(timeout=5)
        if "WATCHDOG=1" in message:
            pings.append(arrived)
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert min(gaps) > 0.4, gaps  # 0.5 s asked; a little slack for delivery jitter
    assert statistics.median(gaps) < 1.0, gaps


# -- the unit file -------------------------------------------------------------------

UNIT = ROOT / "examples" / "systemd" / "sentinel.service"
INSTALLED_AT = "/opt/sentinel/bin/sentinel"
EXPOSURE_AT_MOST = 2.0  # `systemd-analyze security`: 1.5 today, "OK" up to 3.9


def unit_copy(tmp_path: Path, *, with_options: bool) -> Path:
    """The example unit with ExecStart pointing at this environment's `sentinel` (verify
    checks that the program exists); `with_options` also turns on every commented-out
    directive (the per-sink blocks)."""
    text = UNIT.read_text().replace(INSTALLED_AT, str(Path(sys.executable).parent / "sentinel"))
    if with_options:
        text = re.sub(r"^#([A-Z][A-Za-z]+=)", r"\1", text, flags=re.MULTILINE)
    path = tmp_path / "sentinel.service"
    path.write_text(text)
    return path


@pytest.mark.parametrize("with_options", [False, True], ids=["as-shipped", "all-options"])
def test_unit_file_verifies(tmp_path: Path, with_options: bool) -> None:
    """`systemd-analyze verify` accepts the unit, with or without the per-sink blocks,
    without a single warning (it warns about unknown keys but still exits 0)."""
    analyze = require_binary("systemd-analyze")
    unit = unit_copy(tmp_path, with_options=with_options)
    assert INSTALLED_AT in UNIT.read_text()
    done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_unit_file_is_hardened(tmp_path: Path) -> None:
    """The shipped unit's exposure score stays at EXPOSURE_AT_MOST or below."""
    analyze = require_binary("systemd-analyze")
    unit = unit_copy(tmp_path, with_options=False)
    done = subprocess.run([analyze, "security", "--offline=yes", "--no-pager",
                           f"--threshold={EXPOSURE_AT_MOST * 10:g}", str(unit)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
