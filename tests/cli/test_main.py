"""The command line as an operator runs it: `check` budgets, `probe`, `status`, and
`--log-format json`, each as a real `sentinel` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sentinel.config.model import ProbeConfig, ServiceConfig, ThresholdBreakerConfig, Timing
from sentinel.engine.budget import compute_budget
from sentinel.sinks.registry import load_config
from tests.cli import BUDGET_CONFIG
from tests.config import COMMAND_TIMEOUT, run_sentinel, service_named, write_config
from tests.e2e.helpers import sentinel_running


def test_check_prints_ok_and_budgets(tmp_path: Path) -> None:
    """`sentinel check` prints `FILE: ok` and each service's hand-derived worst cases (and
    warns that slowdown's down_interval is longer than its interval)."""
    write_config(tmp_path, textwrap.dedent(BUDGET_CONFIG))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, (
        "warning: sentinel.yaml:13:64: services.slowdown.probe.down_interval: down_interval "
        "(5s) is longer than interval (2s): a recovery is seen that much later\n"))
    assert done.stdout.splitlines() == [
        "sentinel.yaml: ok",
        "  tcp3: 1 backend, tcp probe; worst case death -> removal 3.5s, "
        "recovery -> return 2.0s",
        "  slowdown: 2 backends, tcp probe; worst case death -> removal 5.0s, "
        "recovery -> return 5.2s",
        "  ngx: 1 backend, tcp probe; worst case death -> removal 2.5s, "
        "recovery -> return 10.7s",
        "  never: 1 backend, tcp probe; worst case death -> removal never, "
        "recovery -> return 11.0s",
        "  jittery: 1 backend, tcp probe; worst case death -> removal 3.8s, "
        "recovery -> return 2.2s",
        "  quick: 1 backend, tcp probe; worst case death -> removal 300ms, "
        "recovery -> return 200ms",
    ]


def test_check_names_checks_and_agent(tmp_path: Path) -> None:
    """A composite service is described by its checks and `require`; an agent adds its
    budget (interval + timeout), in text and in JSON."""
    write_config(tmp_path, textwrap.dedent("""\
        services:
          # Both checks fail at 1.5 after a death just past t=0, and again at 2.5: fall 3.
          web:
            backends: [127.0.0.1:1]
            checks:
              - {type: tcp, interval: 1s, timeout: 500ms}
              - {type: http, interval: 1s, timeout: 500ms}
            breaker: {kind: threshold, fall: 3, rise: 2}
            agent: {port: 9777, interval: 500ms, timeout: 200ms}
        """))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert done.stdout.splitlines()[1] == (
        "  web: 1 backend, checks tcp, http (require all); worst case death -> removal 2.5s, "
        "recovery -> return 2.0s; agent down/up -> out/in 700ms")
    done = run_sentinel("check", "-c", "sentinel.yaml", "--format", "json", cwd=tmp_path)
    service = json.loads(done.stdout)["services"][0]
    assert {k: service[k] for k in ("checks", "to_down_seconds", "agent_seconds")} == {
        "checks": ["tcp", "http"], "to_down_seconds": 2.5, "agent_seconds": 0.7}


def test_nginx_window_too_short_is_never(tmp_path: Path) -> None:
    """max_fails 3 within 1s cannot happen with failures 2s apart: removal is `never`."""
    path = write_config(tmp_path, textwrap.dedent("""\
        services:
          web:
            backends: [127.0.0.1:1]
            probe: {interval: 2s, timeout: 1s}
            breaker: {kind: nginx, max_fails: 3, fail_timeout: 1s}
        """))
    assert compute_budget(service_named(load_config(path), "web")).to_down is None


@pytest.mark.parametrize(("interval", "fast", "down", "timeout", "fall", "rise"), [
    (1.0, 1.0, 1.0, 0.5, 3, 2),
    (2.0, 0.25, 4.0, 0.5, 2, 3),
    (2.0, 0.25, 0.5, 1.5, 4, 1),
    (10.0, 1.0, 30.0, 10.0, 1, 5),
])
def test_threshold_budget_formula(interval: float, fast: float, down: float, timeout: float,
                                  fall: int, rise: int) -> None:
    """The simulation agrees with the threshold breaker's closed form:
    down = interval + (fall - 1) * max(fast, timeout) + timeout,
    up = max(down_interval, timeout) + (rise - 1) * fast_interval."""
    svc = ServiceConfig("s", (), ProbeConfig(timing=Timing(interval, fast, down, timeout)),
                        ThresholdBreakerConfig(rise=rise, fall=fall))
    budget = compute_budget(svc)
    assert budget.to_down == pytest.approx(interval + (fall - 1) * max(fast, timeout) + timeout)
    assert budget.to_up == pytest.approx(max(down, timeout) + (rise - 1) * fast)


# -- sentinel probe ------------------------------------------------------------------


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port with a listening socket (the kernel completes handshakes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _Health(BaseHTTPRequestHandler):
    """`/healthz` answers 200 ok; anything else 503."""

    def do_GET(self) -> None:
        ok = self.path == "/healthz"
        body = b"ok\n" if ok else b"unavailable\n"
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def http_port() -> Iterator[int]:
    """A real HTTP server on loopback, in a thread stopped after the test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_probe_tcp_listening(listening_port: int, tmp_path: Path) -> None:
    """`sentinel probe tcp://...` against a listening socket exits 0 and says healthy."""
    url = f"tcp://127.0.0.1:{listening_port}"
    done = run_sentinel("probe", url, cwd=tmp_path)
    assert done.returncode == 0, done
    assert done.stdout.startswith(f"{url}: healthy in ")


def test_probe_tcp_closed(closed_port: int, tmp_path: Path) -> None:
    """A refused connection exits 1 and names the failure."""
    url = f"tcp://127.0.0.1:{closed_port}"
    done = run_sentinel("probe", url, "--timeout", "500ms", cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stdout.startswith(f"{url}: unhealthy (connect): connection refused in ")


def test_probe_http(http_port: int, tmp_path: Path) -> None:
    """`sentinel probe http://...`: 200 exits 0, 503 exits 1 with the status."""
    base = f"http://127.0.0.1:{http_port}"
    healthy = run_sentinel("probe", f"{base}/healthz", cwd=tmp_path)
    assert healthy.returncode == 0, healthy
    assert healthy.stdout.startswith(f"{base}/healthz: healthy in ")
    broken = run_sentinel("probe", f"{base}/other", cwd=tmp_path)
    assert broken.returncode == 1, broken
    assert broken.stdout.startswith(f"{base}/other: unhealthy (status): ")
    assert "503" in broken.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["ftp://127.0.0.1:21"], "expected tcp://host:port, http(s)://host:port/path, "
                             "grpc(s)://host:port/service, dns://server[:port]/name?qtype=A, "
                             "agent://host:port or script:/path/to/cmd, "
                             "got 'ftp://127.0.0.1:21'"),
    (["tcp://127.0.0.1"], "a tcp URL needs a port: 'tcp://127.0.0.1'"),
    (["tcp://127.0.0.1:80", "--timeout", "soon"],
     "expected a duration such as 250ms, 2s, 1m, 1h or a number of seconds, got 'soon'"),
    (["script:/nonexistent/check --quick"], "command not found: /nonexistent/check"),
    (["tcp://[zz]:80"], "bad URL 'tcp://[zz]:80': 'zz' does not appear to be an IPv4 or "
                        "IPv6 address"),
    (["http://[::1"], "bad URL 'http://[::1': Invalid IPv6 URL"),
], ids=["scheme", "no-port", "timeout", "script-missing", "bad-ipv6", "unclosed-bracket"])
def test_probe_bad_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    """Bad URLs and options exit 2 with one line on stderr and no traceback."""
    done = run_sentinel("probe", *args, cwd=tmp_path)
    assert done.returncode == 2, done
    assert done.stderr.splitlines() == [f"sentinel probe: {message}"]


# -- sentinel status and logging -------------------------------------------------------


def test_status_unreachable(closed_port: int, tmp_path: Path) -> None:
    """`sentinel status --api URL` with nothing listening exits 1 with one error line."""
    api = f"http://127.0.0.1:{closed_port}"
    done = run_sentinel("status", "--api", api, cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stderr.startswith(f"sentinel status: cannot reach {api}: ")
    assert "Traceback" not in done.stderr


@pytest.fixture
def running(tmp_path: Path, closed_port: int) -> Iterator[str]:
    """`sentinel run` in tmp_path (one service, its backend refusing); its API URL. The
    process is killed by PID at the end."""
    config = write_config(tmp_path, textwrap.dedent(f"""\
        state_dir: ./state
        api: {{listen: 127.0.0.1:0}}
        services:
          web:
            backends: [127.0.0.1:{closed_port}]
        """))
    with sentinel_running(tmp_path, config) as url:
        yield url


def _into_closed_pipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`sentinel ARGS` writing into a pipe whose reader is gone, as after `| head -1`."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-m", "sentinel", *args], stdout=writer,
                              stderr=subprocess.PIPE, text=True, cwd=cwd,
                              timeout=COMMAND_TIMEOUT, check=False)
    finally:
        os.close(writer)


def test_status_into_a_closed_pipe_exits_quietly(running: str, tmp_path: Path) -> None:
    """`sentinel status | head -1`: a reader that went away ends the command with exit 1
    and nothing on stderr (no BrokenPipeError traceback)."""
    done = _into_closed_pipe("status", "--api", running, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (1, "")


@pytest.mark.parametrize("args", [["maglev", "build", "--backends", "a,b", "--size", "7"],
                                  ["demo"]])
def test_other_commands_into_a_closed_pipe_exit_quietly(tmp_path: Path, args: list[str]
                                                         ) -> None:
    """`sentinel maglev build ... | head -1` and `sentinel demo | head -1` end quietly too:
    no "Broken pipe" error line, no traceback (the demo's comes out of Trio as a group)."""
    done = _into_closed_pipe(*args, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (1, "")


def _wait_for(path: Path, proc: subprocess.Popen[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, "sentinel run exited early"
        assert time.monotonic() < deadline, f"{path} not written within {limit}s"
        time.sleep(0.05)


def test_log_format_json(closed_port: int, tmp_path: Path) -> None:
    """`sentinel --log-format json run` (option before the subcommand) writes one JSON
    object per stderr line, and stops cleanly on SIGTERM."""
    write_config(tmp_path, textwrap.dedent(f"""\
        state_dir: ./state
        api: {{listen: 127.0.0.1:0}}
        services:
          web:
            backends: [127.0.0.1:{closed_port}]
            probe: {{interval: 200ms, timeout: 100ms}}
        """))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel", "--log-format", "json", "run", "-c", "sentinel.yaml"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "state" / "api.url", proc, COMMAND_TIMEOUT)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr
    records = [json.loads(line) for line in stderr.splitlines()]
    assert records
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records]
    assert "sentinel running: 1 services, 1 backends" in messages
    assert "SIGTERM: stopping gracefully" in messages
