"""The checker's own trouble is not the backends': with sentinel out of file descriptors
(for real: its soft limit lowered and the rest filled), checks are counted and reported as
local errors and no backend goes down."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import resource
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from sentinel.config.model import ProbeConfig, ScriptSpec, ServiceConfig, TcpSpec, Timing
from sentinel.engine.engine import Engine
from sentinel.model import FailureKind, State
from sentinel.probes.base import Target, classify, spawn_trouble
from sentinel.probes.registry import make_probe
from sentinel.probes.script import ScriptProbe
from sentinel.sinks.memory import RecordingSink
from sentinel.telemetry.metrics import Metrics
from tests.engine.fakes import PerTask, config, service
from tests.telemetry.helpers import parse_metrics, sample

from .conftest import Serve, pong, silent, until


@contextlib.contextmanager
def out_of_fds() -> Iterator[int]:
    """Lower the soft RLIMIT_NOFILE to a little above the highest open fd and open
    /dev/null until EMFILE (bounded by that limit); yields how many were taken. Every fd
    is closed and the limit restored on exit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    held: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 32, hard))
    try:
        with pytest.raises(OSError, match="Too many open files"):  # noqa: PT012
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        yield len(held)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_local_errors_are_classified_local() -> None:
    """EMFILE, ENFILE, ENOBUFS, ENOMEM and EADDRNOTAVAIL are LOCAL (the checker's), a
    refused connection is not; a fork that hit the process limit is LOCAL too."""
    for number in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                   errno.EADDRNOTAVAIL):
        kind, text = classify(OSError(number, os.strerror(number)))
        assert kind is FailureKind.LOCAL
        assert text.startswith("local: ")
    assert classify(OSError(errno.ECONNREFUSED, "refused"))[0] is FailureKind.CONNECT
    assert spawn_trouble(BlockingIOError(errno.EAGAIN, "fork")) is not None
    assert spawn_trouble(FileNotFoundError(errno.ENOENT, "no such file")) is None


def ping_service(ports: list[int]) -> ServiceConfig:
    """Three backends checked every 50 ms by `PING` and `+PONG` (max_fails 1): each check
    needs a socket of its own (one that waited for an answer is not used again)."""
    svc = service("db", ports, interval=0.05, timeout=0.5)
    spec = TcpSpec(send=b"PING\r\n", expect=re.compile(rb"\+PONG"))
    return replace(svc, probe=replace(svc.probe, spec=spec))


@pytest.mark.parametrize("loop", [True, False])
async def test_out_of_fds_no_backend_goes_down(serve: Serve, tmp_path: Path, loop: bool,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Out of fds, every check of three healthy backends (nginx breaker, max_fails 1) fails
    locally: counted in /v1/state's engine section and the metric, logged once, none fed
    to a breaker: all stay up. With fds back, they are probed and pass again."""
    ports = [await serve(pong) for _ in range(3)]
    engine = Engine(config(tmp_path, ping_service(ports)), sinks={"rec": RecordingSink()},
                    probe_factory=lambda c: make_probe(c) if loop else PerTask(make_probe(c)))
    metrics = Metrics()
    metrics.watch(engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        backends = engine.services["db"].backends
        await until(lambda: all(b.last_probe and b.last_probe.ok for b in backends))
        with out_of_fds() as taken:
            assert taken > 0
            before = engine.statistics().local_errors
            await until(lambda: engine.statistics().local_errors >= before + 3 * len(backends))
            document = engine.state_document()["engine"]
            assert [(b.published[0], b.fails) for b in backends] == [(State.UP, 0)] * 3
        last = max(b.last_probe.time for b in backends if b.last_probe)
        await until(lambda: all(b.last_probe and b.last_probe.time > last and b.last_probe.ok
                                for b in backends))
        engine.stop()
    assert [b.published[0] for b in backends] == [State.UP] * 3
    assert isinstance(document, dict)
    assert document["local_errors"] >= 9
    assert document["last_local_error"] == "local: too many open files in sentinel (EMFILE)"
    body, _ = await metrics.render()
    assert (sample(parse_metrics(body.decode()), "sentinel_probe_local_errors_total") or 0) >= 9
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and "not made" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one line per kind every 10 s


async def test_connect_only_checks_in_the_loop_go_on_out_of_fds(serve: Serve,
                                                                tmp_path: Path) -> None:
    """A plain TCP check of a backend on this host needs no new descriptor: the probe
    loop hands its socket to the next check. Out of fds, such checks go on passing."""
    ports = [await serve(silent) for _ in range(3)]
    engine = Engine(config(tmp_path, service("db", ports, interval=0.05, timeout=0.5)),
                    sinks={"rec": RecordingSink()})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        backends = engine.services["db"].backends
        await until(lambda: all(b.last_probe and b.last_probe.ok for b in backends))
        with out_of_fds():
            last = max(b.last_probe.time for b in backends if b.last_probe)
            await until(lambda: all(b.last_probe and b.last_probe.time > last
                                    and b.last_probe.ok for b in backends))
            assert engine.statistics().local_errors == 0
        engine.stop()


async def test_a_script_that_cannot_start_for_want_of_fds_fails_locally() -> None:
    """A script probe whose pipes cannot be made (out of fds) is a LOCAL failure, not the
    backend's ERROR."""
    probe = ScriptProbe(ProbeConfig("script", Timing(timeout=2.0), ScriptSpec(("true",))))
    with out_of_fds():
        result = await probe.check(Target("svc", "b", "127.0.0.1", 1))
    assert result.failure is FailureKind.LOCAL
    assert result.detail == "local: too many open files in sentinel (EMFILE)"
