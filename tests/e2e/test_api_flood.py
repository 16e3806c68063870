"""An API connection flood against `sentinel run` (no token is needed to connect) under a
file-descriptor limit of 256: the API takes at most its cap of connections and leaves the
rest in the listen backlog, so probes, the file sink and state.json keep their
descriptors: the healthy backend stays up, a killed one goes down everywhere, and the API
answers again once the flood ends. The soft limit is raised to the hard one at start."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import Processes, require_binary, wait_until
from tests.e2e.site import Site, start_backends

pytestmark = pytest.mark.e2e
FLOOD = 600  # connections, more than twice the descriptor limit


def open_fds(pid: int) -> int:
    """How many file descriptors `pid` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def max_open_files(pid: int) -> tuple[int, int]:
    """`pid`'s soft and hard RLIMIT_NOFILE, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def saved_seq(site: Site) -> int:
    """The seq in state.json (0 before it is written)."""
    path = site.state_dir / "state.json"
    return int(json.loads(path.read_text())["seq"]) if path.exists() else 0


def test_an_api_connection_flood_takes_no_descriptor_probes_and_state_need(
        processes: Processes, site: Site) -> None:
    """600 idle connections to the API of a sentinel limited to 128 (soft) / 256 (hard)
    descriptors: the soft limit was raised to 256; during the flood sentinel stays below
    it, web2 stays up, killing web1 reaches the file sink and state.json, and nothing
    says "Too many open files"; after the flood the API answers with web1's event only."""
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    site.config.write_text(site.config.read_text() + "max_in_flight: 32\n")
    proc, api = site.start(processes, wrapper=[require_binary("prlimit"), "--nofile=128:256"])
    wait_until(lambda: site.doc_backends("web") == {"web1": "up", "web2": "up"},
               what="both backends up in the file sink")
    assert max_open_files(proc.pid) == (256, 256)
    host, port = api.url.removeprefix("http://").rsplit(":", 1)

    flood: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect((host, int(port)))
            flood.append(s)
        peak = open_fds(proc.pid)
        processes.kill(backends["web1"])
        deadline = time.monotonic() + 15
        while site.doc_backends("web") != {"web1": "down", "web2": "up"} or saved_seq(site) < 1:
            assert time.monotonic() < deadline, "web1's down never reached the sink and disk"
            peak = max(peak, open_fds(proc.pid))
            time.sleep(0.05)
        assert peak < 256
    finally:
        for s in flood:
            s.close()
    events = wait_until(api.events, timeout=30, what="the API answering after the flood")
    assert [(e["backend"], e["to"]) for e in events] == [("web1", "down")]
    assert proc.poll() is None
    assert os.strerror(errno.EMFILE) not in processes.log("sentinel").read_text()
