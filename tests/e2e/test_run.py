"""`sentinel run` end to end: real backend processes killed and restarted by PID, the file
sink's document and the API following them, a hanging exec sink delaying nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import (
    Processes,
    free_port,
    start_backend,
    start_sentinel,
    wait_until,
)
from tests.processes import alive

pytestmark = pytest.mark.e2e

HANG_SCRIPT = """#!/bin/sh
echo $$ >> {pids}
exec sleep 60
"""

CONFIG = """\
version: 1
state_dir: {state}
shutdown_timeout: 2s
api: {{listen: "127.0.0.1:0"}}
sinks:
  doc: {{type: file, path: {doc}}}
  stuck: {{type: exec, command: [{hang}, "{{backend}}", "{{to}}"], timeout: 30s}}
defaults:
  probe: {{interval: 200ms, fast_interval: 100ms, down_interval: 200ms, timeout: 150ms}}
  breaker: {{kind: nginx, max_fails: 2, fail_timeout: 1s}}
services:
  web:
    probe: {{type: http, path: /healthz, expect_body: '"status":\\s*"ok"'}}
    backends:
      - {{name: web1, address: "127.0.0.1:{web1}"}}
      - {{name: web2, address: "127.0.0.1:{web2}"}}
    sinks: [doc]
  jobs:
    probe: {{type: tcp}}
    backends:
      - {{name: job1, address: "127.0.0.1:{job1}"}}
    sinks: [doc, stuck]
"""


def file_state(doc: Path, service: str, backend: str) -> str | None:
    """A backend's state in the file sink's document (None before it is written)."""
    if not doc.exists():
        return None
    backends = json.loads(doc.read_text())["services"][service]["backends"]
    return str(next(b["state"] for b in backends if b["name"] == backend))


def api_state(url: str, service: str, backend: str) -> str:
    """A backend's state in GET /v1/state."""
    backends = httpx.get(f"{url}/v1/state", timeout=2).json()["services"][service]["backends"]
    return str(next(b["state"] for b in backends if b["name"] == backend))


def transitions(url: str, backend: str) -> list[tuple[str, str]]:
    """(from, to) of the backend's events in GET /v1/events, oldest first."""
    events = httpx.get(f"{url}/v1/events", params={"after": 0}, timeout=2).json()["events"]
    return [(e["from"], e["to"]) for e in events if e["backend"] == backend]


def test_failover_and_recovery_through_file_sink_and_api(
        processes: Processes, tmp_path: Path) -> None:
    """Killing web1 flips it down in the file and the API with an event, while an exec sink
    hangs; restarting it brings it back; SIGTERM exits 0 and kills the hanging command."""
    ports = {name: free_port() for name in ("web1", "web2", "job1")}
    backends = {name: start_backend(processes, port, name) for name, port in ports.items()}
    doc, pids, hang = tmp_path / "out" / "state.json", tmp_path / "hang.pids", tmp_path / "hang"
    hang.write_text(HANG_SCRIPT.format(pids=pids))
    hang.chmod(0o755)
    config = tmp_path / "sentinel.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state", doc=doc, hang=hang, **ports))
    sentinel, url = start_sentinel(processes, config, tmp_path / "state")
    wait_until(lambda: file_state(doc, "web", "web1") == "up", what="web1 up in the file")

    processes.kill(backends["job1"])  # the exec sink now runs a command that hangs
    hung = wait_until(lambda: pids.exists() and int(pids.read_text().split()[0]),
                      what="the exec sink's hanging command")
    processes.adopt(hung)

    killed_at = time.monotonic()
    processes.kill(backends["web1"])
    wait_until(lambda: file_state(doc, "web", "web1") == "down", timeout=5,
               what="web1 down in the file")
    detected = time.monotonic() - killed_at
    assert alive(hung), "the exec sink should still be hanging"
    assert detected < 3.0, f"file sink took {detected:.1f}s while the exec sink hung"
    assert api_state(url, "web", "web1") == "down"
    assert api_state(url, "web", "web2") == "up"
    assert transitions(url, "web1") == [("up", "down")]

    backends["web1"] = start_backend(processes, ports["web1"], "web1")
    wait_until(lambda: file_state(doc, "web", "web1") == "up", timeout=5,
               what="web1 up again in the file")
    assert api_state(url, "web", "web1") == "up"
    assert transitions(url, "web1") == [("up", "down"), ("down", "up")]

    os.kill(sentinel.pid, signal.SIGTERM)
    try:
        code = sentinel.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("sentinel did not stop within 10s of SIGTERM")
    assert code == 0, processes.log("sentinel").read_text()
    wait_until(lambda: not alive(hung), timeout=5, what="the hanging command to be killed")
