"""`watch: true` with real processes: a backend SIGKILLed is published down long before
its next probe was due; a real nginx closing idle connections costs no failure and no
event."""

from __future__ import annotations

import re
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import (
    LOOPBACK,
    Processes,
    free_port,
    port_open,
    require_binary,
    start_backend,
    start_sentinel,
    wait_until,
)

pytestmark = pytest.mark.e2e

CONFIG = """\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
services:
  web:
    probe: {{type: http, path: /, interval: {interval}, fast_interval: 100ms,
             timeout: 500ms, watch: true}}
    breaker: {{kind: nginx, max_fails: 2, fail_timeout: 10s}}
    backends: [{backends}]
"""

NGINX_BACKEND = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    # a connection nothing was asked on is closed after client_header_timeout, one that
    # served a request after keepalive_timeout: both 1s, so sentinel's held connection
    # is closed by nginx every second or so
    keepalive_timeout 1s;
    client_header_timeout 1s;
    server {{
        listen {ip}:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def write_config(tmp_path: Path, interval: str, *ports: int) -> tuple[Path, Path]:
    """One http service over `ports`, watched, probed every `interval`."""
    state = tmp_path / "state"
    config = tmp_path / "sentinel.yaml"
    config.write_text(CONFIG.format(state=state, interval=interval, backends=", ".join(
        f'"{LOOPBACK}:{p}"' for p in ports)))
    return config, state


def state(url: str) -> dict[str, Any]:
    """GET /v1/state."""
    doc: dict[str, Any] = httpx.get(f"{url}/v1/state", timeout=5).json()
    return doc


def test_a_killed_backend_is_down_long_before_its_next_probe(
        processes: Processes, tmp_path: Path) -> None:
    """interval 30s: the backend is killed once its connection is watched, and its down
    event is stamped within 10 s of its last probe, well before the next one was due
    (in milliseconds, in fact: the kernel closes the held connection, the reconnect is
    refused or reset, the probe now and the one 100 ms later fail). The log names the
    hint: the reconnect refused, or (when it races the dying listener) accepted and
    reset at once."""
    port = free_port()
    backend = start_backend(processes, port, "web1")
    config, state_dir = write_config(tmp_path, "30s", port)
    _, url = start_sentinel(processes, config, state_dir)
    before = wait_until(lambda: (doc := state(url))["engine"]["watch"]["held"] == 1 and (
        b := doc["services"]["web"]["backends"][0])["last_probe"] and b,
        what="a held connection and a first probe")
    processes.kill(backend, signal.SIGKILL)
    events = wait_until(lambda: httpx.get(f"{url}/v1/events?after=0", timeout=5).json()[
        "events"], timeout=20, what="the down event")
    assert [(e["backend"], e["to"]) for e in events] == [(f"{LOOPBACK}:{port}", "down")]
    assert events[0]["reason"] == "2 failures within 10s; last: connection refused"
    last_probe = datetime.fromisoformat(before["last_probe"]["time"])
    assert datetime.fromisoformat(events[0]["time"]) - last_probe < timedelta(seconds=10)
    log = processes.log("sentinel").read_text()
    assert re.search(r"watched connection (closed|reset) by the backend(, then connection "
                     r"refused| again right after reconnecting); probing now", log), log


def test_an_nginx_closing_idle_connections_costs_no_failure_and_no_event(
        processes: Processes, tmp_path: Path) -> None:
    """A real nginx closes the held connection every second or so (its idle timeouts):
    after three such closes sentinel has reconnected quietly, counted no failure, hinted
    no probe and emitted no event."""
    nginx = require_binary("nginx")
    port, home = free_port(), tmp_path / "nginx"
    (home / "tmp").mkdir(parents=True)
    (home / "nginx.conf").write_text(NGINX_BACKEND.format(dir=home, ip=LOOPBACK, port=port))
    proc = processes.start([nginx, "-p", str(home), "-e", str(home / "error.log"), "-c",
                            str(home / "nginx.conf"), "-g", "daemon off;"], "nginx")
    wait_until(lambda: proc.poll() is not None or port_open(port), what="nginx listening")
    assert proc.poll() is None, processes.log("nginx").read_text()
    config, state_dir = write_config(tmp_path, "1s", port)
    _, url = start_sentinel(processes, config, state_dir)
    watch = wait_until(lambda: (w := state(url)["engine"]["watch"])["lost"] >= 3 and w,
                       timeout=30, what="three idle closes by nginx")
    assert watch["hints"] == 0
    doc = state(url)
    [backend] = doc["services"]["web"]["backends"]
    assert (backend["state"], backend["fails"], backend["last_probe"]["ok"]) == ("up", 0, True)
    assert httpx.get(f"{url}/v1/events?after=0", timeout=5).json()["events"] == []
    closed = (home / "error.log").read_text().count("client timed out")
    assert closed >= 3  # nginx's own word (at info level) that it closed them
