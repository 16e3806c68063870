"""Failover through a real nginx: `sentinel run` renders upstreams, nginx reloads, traffic
follows; a broken test command and a reload nginx refuses both leave the old config serving."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentinel.errors import SinkRejected
from sentinel.sinks.base import Update
from sentinel.sinks.nginx.options import NginxOptions
from sentinel.sinks.nginx.render import UpstreamOptions
from sentinel.sinks.nginx.sink import NginxSink
from tests.e2e.balancers import (
    Nginx,
    event_to,
    fleet_view,
    sentinel_config,
    sink_status,
    start_nginx,
)
from tests.e2e.helpers import (
    Processes,
    free_port,
    skip_or_fail,
    start_backend,
    start_sentinel,
    wait_until,
)
from tests.e2e.traffic import Traffic, fetch

pytestmark = pytest.mark.e2e
NAMES = ("web1", "web2", "web3")


@dataclass
class Fleet:
    """Three backend processes by name and their ports, and an nginx in front of them."""

    ports: dict[str, int]
    backends: dict[str, subprocess.Popen[bytes]]
    nginx: Nginx


def fleet(processes: Processes, tmp_path: Path) -> Fleet:
    """Start three backends and nginx (its first file: all up)."""
    ports = {name: free_port() for name in NAMES}
    backends = {name: start_backend(processes, port, name) for name, port in ports.items()}
    nginx = start_nginx(processes, tmp_path / "nginx", fleet_view("web", ports))
    return Fleet(ports, backends, nginx)


def nginx_sink(nginx: Nginx, **extra: object) -> dict[str, object]:
    """The `sinks.edge` mapping for this nginx instance."""
    return {"type": "nginx", "file": str(nginx.include("http")),
            "test": nginx.command("-t"), "reload": nginx.command("-s", "reload"),
            "pid_file": str(nginx.pid_file), "min_reload_interval": "200ms", **extra}


def run_sentinel(processes: Processes, tmp_path: Path, nginx: Nginx, ports: dict[str, int],
                 **extra: object) -> str:
    """`sentinel run` with the nginx sink (nginx's own passive checks off: max_fails=0, so
    only sentinel takes a backend out); returns its API URL."""
    state = tmp_path / "state"
    config = tmp_path / "sentinel.yaml"
    config.write_text(sentinel_config(state, {"edge": nginx_sink(nginx, **extra)}, ports,
                                      [{"sink": "edge", "params": "max_fails=0"}]))
    return start_sentinel(processes, config, state)[1]


def test_killed_backend_leaves_nginx_rotation_and_returns_after_restart(
        processes: Processes, tmp_path: Path) -> None:
    """Kill one backend under traffic: sentinel's event says why, nginx reloads and stops
    trying it; restart it: nginx sends it traffic again."""
    f = fleet(processes, tmp_path)
    ports, nginx = f.ports, f.nginx
    url = run_sentinel(processes, tmp_path, nginx, ports)
    wait_until(lambda: sink_status(url, "edge")["applied"] >= 1, what="the first render")
    dead = f"127.0.0.1:{ports['web2']}"
    with Traffic(nginx.http_port) as traffic:
        assert set(traffic.wait_for(30, time.monotonic())) == set(NAMES)
        processes.kill(f.backends["web2"])
        killed_wall = time.time()
        down = wait_until(lambda: event_to(url, "web2", "down"), what="web2 down event")
        assert "refused" in down["reason"]
        wait_until(lambda: (sink_status(url, "edge")["last_success"] or 0) > killed_wall,
                   what="nginx reloaded after the kill")
        assert f"server {dead} weight=1 down max_fails=0;" in nginx.include("http").read_text()
        assert dead in nginx.upstreams_tried(killed_wall)  # nginx kept trying it until then
        mark, mark_wall = time.monotonic() + 0.2, time.time() + 0.2
        answers = traffic.wait_for(30, mark)
        assert None not in answers
        assert "web2" not in answers
        assert dead not in nginx.upstreams_tried(mark_wall)

        start_backend(processes, ports["web2"], "web2")
        up = wait_until(lambda: event_to(url, "web2", "up", down["seq"]), what="web2 up")
        assert up["from"] == "down"
        back = time.monotonic()
        wait_until(lambda: traffic.since(back)["web2"] >= 3, what="traffic to web2 again")
        assert traffic.since(back)[None] == 0


def test_broken_test_command_keeps_old_file_and_config(
        processes: Processes, tmp_path: Path) -> None:
    """With `test` failing, sentinel reports the error in /v1/state, the file stays as it
    was and nginx is never reloaded: the old config goes on serving."""
    f = fleet(processes, tmp_path)
    ports, nginx = f.ports, f.nginx
    before, workers = nginx.include("http").read_bytes(), nginx.workers()
    url = run_sentinel(processes, tmp_path, nginx, ports,
                       test=[nginx.binary, "-t", "-c", str(tmp_path / "missing.conf")])
    processes.kill(f.backends["web2"])
    wait_until(lambda: event_to(url, "web2", "down"), what="web2 down event")
    status = wait_until(lambda: (s := sink_status(url, "edge"))["failures"] >= 2 and s,
                        what="the failed applies reported")
    assert status["ok"] is False
    assert "test command failed" in status["last_error"]
    assert "missing.conf" in status["last_error"]
    assert nginx.include("http").read_bytes() == before
    assert nginx.workers() == workers  # never reloaded
    answers = [fetch(nginx.http_port) for _ in range(9)]
    assert None not in answers
    assert {"web1", "web3"} <= set(answers)


def test_a_failed_test_reports_nginx_s_emerg_line(processes: Processes, tmp_path: Path) -> None:
    """When `nginx -t` refuses the rendered file, the error in /v1/state and in the log
    quotes nginx's `[emerg]` line that says why (not only its closing "test failed"
    line), and the file is restored."""
    f = fleet(processes, tmp_path)
    nginx = f.nginx
    before = nginx.include("http").read_bytes()
    state, config = tmp_path / "state", tmp_path / "sentinel.yaml"
    config.write_text(sentinel_config(state, {"edge": nginx_sink(nginx)}, f.ports,
                                      [{"sink": "edge", "params": "no_such_param=1"}]))
    url = start_sentinel(processes, config, state)[1]
    status = wait_until(lambda: (s := sink_status(url, "edge"))["failures"] >= 1 and s,
                        what="the failed apply reported")
    why = f'[emerg] invalid parameter "no_such_param=1" in {nginx.include("http")}:'
    assert status["ok"] is False
    assert status["last_error"].startswith("test command failed (exit 1: nginx: " + why)
    assert status["last_error"].endswith("; restored the previous upstreams-http.conf")
    assert why in processes.log("sentinel").read_text()
    assert nginx.include("http").read_bytes() == before


async def test_a_reload_nginx_refuses_is_caught_and_rolled_back(
        processes: Processes, tmp_path: Path) -> None:
    """A file that skips the test and fails to load, reloaded by SIGHUP (`kill -HUP`,
    as service managers do): the signal "succeeds" but no new workers come, so the sink
    fails, restores the file, and nginx serves as before."""
    f = fleet(processes, tmp_path)
    ports, nginx = f.ports, f.nginx
    path = nginx.include("http")
    options = NginxOptions(file=str(path), test=("true",),
                           reload=("kill", "-HUP", nginx.pid_file.read_text().strip()),
                           pid_file=str(nginx.pid_file), verify_timeout=1.5,
                           min_reload_interval=0.0)
    sink = NginxSink("edge", options)
    await sink.apply(Update(fleet_view("web", ports)))  # a good one first: verified
    before, workers = path.read_bytes(), nginx.workers()
    bad = Update(fleet_view("web", ports, down=["web1"]),
                 options=UpstreamOptions(params=("no_such_param=1",)))
    with pytest.raises(SinkRejected, match="nginx kept its old configuration"):
        await sink.apply(bad)
    assert path.read_bytes() == before
    assert nginx.workers() <= workers  # none new (one from the first reload may have ended)
    assert "invalid parameter" in (nginx.dir / "error.log").read_text()
    assert {fetch(nginx.http_port) for _ in range(9)} == set(NAMES)


async def test_stream_context_upstreams_steer_tcp_traffic(
        processes: Processes, tmp_path: Path) -> None:
    """`context: stream` renders into the stream include; a backend marked down there gets
    no TCP connections although it is alive."""
    f = fleet(processes, tmp_path)
    ports, nginx = f.ports, f.nginx
    if nginx.stream_port is None:
        skip_or_fail("this nginx has no stream module (Debian: libnginx-mod-stream)")
    options = NginxOptions(file=str(nginx.include("stream")), context="stream",
                           test=tuple(nginx.command("-t")),
                           reload=tuple(nginx.command("-s", "reload")),
                           pid_file=str(nginx.pid_file), min_reload_interval=0.0)
    await NginxSink("tcp", options).apply(Update(fleet_view("web", ports, down=["web2"])))
    assert "Include inside `stream { ... }`" in nginx.include("stream").read_text()
    answers = {fetch(nginx.stream_port) for _ in range(12)}
    assert answers == {"web1", "web3"}

