"""GET /v1/stream from a real `sentinel run`: `sentinel status --watch` over a failover, and a
stream client that stops reading cannot hold a graceful stop."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import Processes, signal_and_wait, wait_until
from tests.e2e.site import Site, start_backends, states

pytestmark = pytest.mark.e2e


def test_status_watch_follows_a_failover_and_ends_quietly_on_ctrl_c(
        processes: Processes, site: Site) -> None:
    """The table is printed, then again with the killed backend down and its row marked as
    just changed; SIGINT (Ctrl-C) ends it with exit 0 and no traceback."""
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    _, api = site.start(processes)
    wait_until(lambda: states(api, "web") == {"web1": "up", "web2": "up"}, what="both up")
    watch = processes.start([sys.executable, "-m", "sentinel", "status", "--watch", "-c",
                             str(site.config)], "watch")
    output = processes.log("watch")
    wait_until(lambda: re.search(r"^web\s+web2\s+\S+\s+up\b", output.read_text(), re.M),
               what="the first table")
    processes.kill(backends["web2"])
    wait_until(lambda: re.search(r"^web\s+web2\s+\S+\s+down\s.*\*$", output.read_text(), re.M),
               what="web2 down, marked as changed")
    assert signal_and_wait(watch, signal.SIGINT) == 0
    text = output.read_text()
    assert "Traceback" not in text
    assert re.search(r"web/web2  up -> down: .*connection refused", text), text


def test_a_stream_client_that_stops_reading_does_not_hold_a_graceful_stop(
        processes: Processes, site: Site) -> None:
    """A client that opened /v1/stream and reads nothing while hundreds of events queue up
    behind it: SIGTERM still stops sentinel (exit 0) once the kernel gives up on the
    connection (TCP_USER_TIMEOUT), not never."""
    start_backends(processes, site, "web1")
    site.write({"web": ["web1"]})
    proc, api = site.start(processes)
    host, port = httpx.URL(api.url).host, httpx.URL(api.url).port
    assert port is not None
    with socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        stuck.connect((host, port))
        stuck.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {site.token}\r\n\r\n".encode())
        client_port = stuck.getsockname()[1]
        # events until sentinel's send queue to it stops growing: its sends now block
        sizes = [0]
        while len(sizes) < 20 or len(set(sizes[-20:])) > 1 or sizes[-1] < 4096:
            assert len(sizes) < 3000, f"the stream's send queue never filled: {sizes[-20:]}"
            action = "drain" if len(sizes) % 2 else "ready"
            assert api.post(f"/v1/backends/web/web1/{action}").status_code == 200
            sizes.append(unsent(port, client_port))
        assert signal_and_wait(proc, signal.SIGTERM, timeout=40) == 0


def unsent(server_port: int, client_port: int) -> int:
    """Bytes the server side of a loopback connection holds unsent or unacknowledged
    (tx_queue in /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if (int(local, 16), int(remote, 16)) == (server_port, client_port):
            return int(fields[4].split(":")[0], 16)
    return 0
