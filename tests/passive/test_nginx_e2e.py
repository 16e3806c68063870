"""A real nginx in front of real backends, one of which accepts every connection and
closes it (nginx logs a reset or an early close): `sentinel run` follows nginx's error
log, reports that backend and probes it at once (its interval is a minute), across a
copytruncate rotation too (rename rotation is covered on plain files in
test_nginx_log.py: here nginx's workers, running as `nobody`, cannot reopen logs in the
test's root-owned directory)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.balancers import fleet_view, start_nginx
from tests.e2e.helpers import (
    LOOPBACK,
    Processes,
    SentinelApi,
    free_port,
    port_open,
    start_backend,
    start_sentinel,
    wait_until,
)
from tests.e2e.traffic import fetch

pytestmark = pytest.mark.e2e
CLOSER = Path(__file__).with_name("closing_server.py")
# the closer's close comes as a reset or an early close, depending on timing
TRIGGERED = re.compile(r"web/bad: passive: nginx error log: (recv\(\) failed \(104: "
                       r"Connection reset by peer\)|upstream prematurely closed connection); "
                       r"probing now")


def last_probe(api: SentinelApi) -> Any:
    """The failing backend's `last_probe` (None before its first probe)."""
    return api.backend("web", "bad")["last_probe"]


def provoke(port: int, log: Path, before: int) -> None:
    """Requests through nginx until sentinel has logged one more passive trigger than
    `before`. Round robin sends every other request to the closing backend; nginx retries
    it on the good one, so clients see no error, and then leaves it out for its own
    fail_timeout (10s), so this waits up to 25s."""
    def triggered() -> bool:
        assert fetch(port) == "good"
        return len(TRIGGERED.findall(log.read_text())) > before
    wait_until(triggered, timeout=25, what="sentinel's passive trigger in its log")


def test_error_log_failures_trigger_probes_across_rotation(
        tmp_path: Path, processes: Processes) -> None:
    """The closing backend passes its TCP probe; the error-log line about it brings its
    probe forward (its first is due 30s in), and again after logrotate's copytruncate."""
    ports = {"good": free_port(), "bad": free_port()}
    start_backend(processes, ports["good"], "good")
    processes.start([sys.executable, str(CLOSER), str(ports["bad"])], "closer")
    wait_until(lambda: port_open(ports["bad"]), what="the closing backend")
    nginx = start_nginx(processes, tmp_path / "nginx", fleet_view("web", ports))
    error_log = nginx.dir / "error.log"
    state = tmp_path / "state"
    config = tmp_path / "sentinel.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1, "state_dir": str(state), "api": {"listen": "127.0.0.1:0"},
        "services": {"web": {
            "backends": [{"name": n, "address": f"{LOOPBACK}:{p}"} for n, p in ports.items()],
            "probe": {"type": "tcp", "interval": "60s"},
            "passive": {"nginx_error_log": str(error_log)}}}}))
    _, url = start_sentinel(processes, config, state)
    api = SentinelApi(url)
    log = processes.log("sentinel")
    assert last_probe(api) is None  # b/1 of 2 over 60s: its first probe is 30s away

    provoke(nginx.http_port, log, 0)
    first = wait_until(lambda: last_probe(api), what="the triggered probe")
    assert first["ok"]  # the probe confirms nothing: a TCP connect works

    shutil.copyfile(error_log, nginx.dir / "error.log.1")
    os.truncate(error_log, 0)
    provoke(nginx.http_port, log, 1)
    wait_until(lambda: last_probe(api)["time"] != first["time"], what="the second probe")
