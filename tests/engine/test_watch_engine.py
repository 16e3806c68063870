"""Watched connections in the engine, on a virtual clock and the VirtualNetwork: a crash
is published at once instead of at the next probe; a loop without `watch:` has no
watches at all."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.config.model import NginxBreakerConfig, ServiceConfig, WatchConfig
from sentinel.engine.watching import WatchStatistics
from tests.engine.drive import make_engine, run_for
from tests.engine.fakes import FakeProbe, service
from tests.sinks.fakes import TimedSink


def watched(svc: ServiceConfig) -> ServiceConfig:
    """`svc` with `watch: true` on its probe."""
    return replace(svc, probe=replace(svc.probe, watch=WatchConfig()))


async def test_a_crash_is_published_at_once_not_at_the_next_probe(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """interval 10s, fast_interval 100ms, max_fails 2; two backends each killed half a
    second after a probe. Watched b9001 (killed at 0.5): its held connection closes, the
    reconnect is refused, probes at 0.5 and 0.6 fail: down at 0.6. Unwatched b9002 (probed
    at 5, killed at 5.5) waits for its next probe: down at 15.1."""
    probe, rec = FakeProbe(), TimedSink()
    breaker = NginxBreakerConfig(max_fails=2, fail_timeout=10.0)
    engine = make_engine(tmp_path, probe, {"rec": rec},
                         watched(service("w", [9001], interval=10.0, fast=0.1,
                                         breaker=breaker)),
                         service("plain", [9002], interval=10.0, fast=0.1, breaker=breaker))

    seen: list[WatchStatistics | None] = []

    async def crash() -> None:
        await trio.sleep(0.5)
        probe.kill("127.0.0.1", 9001)
        await trio.sleep(5.0)
        probe.kill("127.0.0.1", 9002)
        await trio.sleep(10.0)
        seen.append(engine.statistics().watch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(crash)
        await run_for(engine, 16.0)
    downs = [(t, e.backend) for t, u in rec.applied for e in u.events if e.to_state == "down"]
    assert downs == [(pytest.approx(0.6), "b9001"), (pytest.approx(15.1), "b9002")]
    assert seen == [WatchStatistics(watched=1, held=0, lost=1, hints=1)]


async def test_without_watch_the_loop_keeps_no_watches(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """No `watch:` anywhere: the probe loop has no watches, /v1/state no `engine.watch`."""
    probe = FakeProbe()
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()}, service("s", [9001]))
    await run_for(engine, 1.5)
    assert engine.statistics().watch is None
    assert "watch" not in engine.state_document()["engine"]  # type: ignore[operator]
