"""`sentinel run` as a real subprocess when a reload meets a file that blocks: a FIFO put
where the config or its token_file was. The reload is refused at once or given up, it never
holds up SIGTERM, and the old config runs on and reloads again later."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.helpers import Processes, signal_and_wait, wait_until
from tests.e2e.site import Site, start_backends, states

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def fifo_in_place_of(path: Path) -> None:
    """`mv PATH PATH.old; mkfifo PATH`."""
    path.rename(path.with_name(path.name + ".old"))
    os.mkfifo(path)


def open_writer(fifo: Path) -> int | None:
    """The write end of `fifo` once a reader has it open (None before: ENXIO). A reader
    blocked in open() goes on to block in read(), as nothing is written."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None


def test_sigterm_right_after_sighup_with_a_fifo_for_config_stops_gracefully(
        processes: Processes, site: Site) -> None:
    """The tester's case: mv live.yaml x; mkfifo live.yaml; kill -HUP; kill -TERM: exit 0
    (a normal graceful stop), within a bound a loaded machine cannot miss."""
    start_backends(processes, site, "web1")
    site.write({"web": ["web1"]})
    proc, api = site.start(processes)
    wait_until(lambda: states(api, "web") == {"web1": "up"}, what="web1 up")
    fifo_in_place_of(site.config)
    proc.send_signal(signal.SIGHUP)  # and at once, as the tester did
    assert signal_and_wait(proc, signal.SIGTERM, timeout=30) == 0, \
        processes.log("sentinel").read_text()
    assert "SIGTERM: stopping gracefully" in processes.log("sentinel").read_text()


def test_sigterm_while_a_reload_is_stuck_reading_a_fifo_token_file_stops_gracefully(
        processes: Processes, site: Site) -> None:
    """The new file's token_file is a FIFO nobody writes to: the reload's worker is stuck in
    it (the test holds the write end open, so it is seen inside); SIGTERM still stops at
    once with exit 0. (Should the loader refuse a FIFO token_file at once, the stop is
    tested after that refusal instead.)"""
    start_backends(processes, site, "web1")
    site.write({"web": ["web1"]})
    proc, api = site.start(processes)
    wait_until(lambda: states(api, "web") == {"web1": "up"}, what="web1 up")
    token = site.root / "token"
    fifo_in_place_of(token)
    log = processes.log("sentinel")
    writer: int | None = None
    try:
        proc.send_signal(signal.SIGHUP)

        def stuck_or_refused() -> bool:
            nonlocal writer
            writer = writer or open_writer(token)
            return writer is not None or "reload refused" in log.read_text()

        wait_until(stuck_or_refused, timeout=30, what="the reload to read the FIFO")
        assert signal_and_wait(proc, signal.SIGTERM, timeout=30) == 0, log.read_text()
        assert "SIGTERM: stopping gracefully" in log.read_text()
    finally:
        if writer is not None:
            os.close(writer)


def test_a_fifo_for_config_is_refused_at_once_and_the_old_config_runs_and_reloads_later(
        processes: Processes, site: Site) -> None:
    """With a FIFO where the config was: POST /v1/reload answers 400 at once with why, SIGHUP
    logs the same; the old config still acts on a death. Then, the FIFO removed and a file
    written, the next reload (POST, then SIGHUP) works as ever."""
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    proc, api = site.start(processes)
    wait_until(lambda: states(api, "web") == {"web1": "up", "web2": "up"}, what="both up")
    fifo_in_place_of(site.config)
    error = f"{site.config}: not a regular file (a FIFO); a reload reads only regular files"

    answer = api.post("/v1/reload")
    assert (answer.status_code, answer.json()) == (400, {"ok": False, "errors": [error]})
    proc.send_signal(signal.SIGHUP)
    log = processes.log("sentinel")
    wait_until(lambda: log.read_text().count(error) >= 2, what="the SIGHUP reload refused")
    assert f"reload refused, keeping the running config: {error}" in log.read_text()
    processes.kill(backends["web2"])
    wait_until(lambda: states(api, "web") == {"web1": "up", "web2": "down"},
               what="the old config to act on a death")

    site.config.unlink()
    site.write({"web": ["web1"]})
    assert api.post("/v1/reload").status_code == 200
    assert states(api, "web") == {"web1": "up"}
    site.write({"web": ["web1", "web3"]})
    start_backends(processes, site, "web3")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: states(api, "web") == {"web1": "up", "web3": "up"},
               what="a good SIGHUP reload")
    assert "Traceback" not in log.read_text()
    assert signal_and_wait(proc, signal.SIGTERM, timeout=30) == 0
