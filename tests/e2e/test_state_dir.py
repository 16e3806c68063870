"""`sentinel run` on a state dir that fills up or turns read-only (a real 1 MiB tmpfs
mounted for the test): probing and the file sink go on, /v1/state, /metrics and the log
say the state is not persisted, and once the space returns state.json catches up; a state
dir that cannot be written at start is one line and exit 2."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import Processes, require_binary, run_cli, skip_or_fail, wait_until
from tests.e2e.site import Site, start_backends

pytestmark = pytest.mark.e2e


def mount(*args: str) -> None:
    """Run `mount ARGS` (the test is root)."""
    subprocess.run([require_binary("mount"), *args], check=True, capture_output=True)


@pytest.fixture
def tmpfs(site: Site) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test as the site's state_dir, unmounted at the end."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a tmpfs needs root")
    site.state_dir.mkdir()
    mount("-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(site.state_dir))
    try:
        yield site.state_dir
    finally:
        subprocess.run([require_binary("umount"), "-l", str(site.state_dir)], check=False)


def fill(directory: Path) -> Path:
    """Write a file of zeros into `directory` until its file system is full."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out, contextlib.suppress(OSError):  # ENOSPC
        while out.write(b"\0" * 4096):
            pass
    return filler


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_state_dir_that_refuses_writes_stops_nothing_and_is_caught_up(
        processes: Processes, site: Site, tmpfs: Path, fault: str) -> None:
    """The state dir fills up (or is remounted read-only) and a backend dies: the file sink
    still shows it down, sentinel keeps running, /v1/state says persistence failed with
    the error, sentinel_state_persisted is 0, one ERROR line names it, and the event is
    not served yet. Once writes succeed again, state.json holds the event and the
    verdict, the event is served, and a SIGTERM stops it cleanly."""
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    proc, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up", "web2": "up"},
               what="both backends up in the file sink")

    filler = fill(tmpfs) if fault == "full" else None
    if fault == "read-only":
        mount("-o", "remount,ro", str(tmpfs))
    processes.kill(backends["web1"])
    wait_until(lambda: site.doc_backends("web") == {"web1": "down", "web2": "up"},
               what="web1 down in the file sink")
    persistence = wait_until(lambda: (p := api.state()["persistence"]) and not p["ok"] and p,
                             what="persistence reported failing")
    assert persistence["last_error"] == (
        "No space left on device" if fault == "full" else "Read-only file system")
    assert persistence["saved_seq"] == 0
    metrics = httpx.get(f"{api.url}/metrics", timeout=5).text
    assert "sentinel_state_persisted 0.0" in metrics
    assert api.events() == []
    assert proc.poll() is None
    assert processes.log("sentinel").read_text().count("probing and publishing go on") == 1

    if filler is not None:
        filler.unlink()
    else:
        mount("-o", "remount,rw", str(tmpfs))
    wait_until(lambda: api.state()["persistence"]["ok"], timeout=20,
               what="persistence back")
    saved = json.loads((tmpfs / "state.json").read_text())
    assert saved["seq"] == 1
    assert saved["backends"]["web"]["web1"]["state"] == "down"
    assert [(e["seq"], e["backend"], e["to"]) for e in api.events()] == [(1, "web1", "down")]
    assert "state written to" in processes.log("sentinel").read_text()
    assert processes.kill(proc, signal.SIGTERM) == 0


def test_a_read_only_state_dir_at_start_is_one_line_and_exit_2(site: Site,
                                                               tmpfs: Path) -> None:
    """`sentinel run` on a state dir mounted read-only exits 2 with one line naming the
    directory and the error, no traceback."""
    mount("-o", "remount,ro", str(tmpfs))
    site.write({"web": ["web1"]})
    done = run_cli("run", "-c", str(site.config))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"sentinel: state_dir {tmpfs}: cannot write: Read-only file system"]
