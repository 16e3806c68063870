"""`sentinel run` end to end: real backend processes killed and restarted by PID, the file
sink's document and the API following them, a hanging exec sink delaying nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    Processes,
    SentinelApi,
    free_port,
    signal_and_wait,
    start_backend,
    start_sentinel,
    wait_until,
)
from tests.processes import alive

pytestmark = pytest.mark.e2e

HANG_SCRIPT = """#!/bin/sh
echo $$ >> {pids}
exec sleep 600
"""

CONFIG = """\
version: 1
state_dir: {state}
shutdown_timeout: 2s
api: {{listen: "127.0.0.1:0"}}
sinks:
  doc: {{type: file, path: {doc}}}
  stuck: {{type: exec, command: [{hang}, "{{backend}}", "{{to}}"], timeout: 300s}}
defaults:
  probe: {{interval: 400ms, fast_interval: 100ms, down_interval: 200ms, timeout: 400ms}}
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


def transitions(api: SentinelApi, backend: str) -> list[tuple[str, str]]:
    """(from, to) of the backend's events in GET /v1/events, oldest first."""
    return [(e["from"], e["to"]) for e in api.events() if e["backend"] == backend]


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
    api = SentinelApi(url)
    wait_until(lambda: file_state(doc, "web", "web1") == "up", what="web1 up in the file")

    processes.kill(backends["job1"])  # the exec sink now runs a command that hangs
    hung = wait_until(lambda: pids.exists() and int(pids.read_text().split()[0]),
                      timeout=30, what="the exec sink's hanging command")
    processes.adopt(hung)

    # The file sink publishing while the command still hangs (the exec sink would kill it
    # after its 300 s timeout) shows the hang delays nothing; the bounds are safety nets.
    processes.kill(backends["web1"])
    wait_until(lambda: file_state(doc, "web", "web1") == "down", timeout=60,
               what="web1 down in the file")
    assert alive(hung), "the exec sink should still be hanging"
    assert api.backend("web", "web1")["state"] == "down"
    assert api.backend("web", "web2")["state"] == "up"
    assert transitions(api, "web1") == [("up", "down")]

    backends["web1"] = start_backend(processes, ports["web1"], "web1")
    wait_until(lambda: file_state(doc, "web", "web1") == "up", timeout=60,
               what="web1 up again in the file")
    assert api.backend("web", "web1")["state"] == "up"
    assert transitions(api, "web1") == [("up", "down"), ("down", "up")]

    assert signal_and_wait(sentinel) == 0, processes.log("sentinel").read_text()
    wait_until(lambda: not alive(hung), timeout=15, what="the hanging command to be killed")
