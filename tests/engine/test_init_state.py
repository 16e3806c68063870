"""init_state in the engine, on a virtual clock: where a backend with no saved verdict
starts, what is published before its first probe, and that a saved verdict wins."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import trio
import trio.testing

from sentinel.config.model import InitState, NginxBreakerConfig, ServiceConfig
from sentinel.model import State
from tests.engine.drive import make_engine, run_for, states
from tests.engine.fakes import FakeProbe, service
from tests.sinks.fakes import TimedSink

BREAKER = NginxBreakerConfig(max_fails=3, fail_timeout=10.0, passes=2)


def web(start: InitState) -> ServiceConfig:
    """Two backends probed every second, fast_interval 0.25s, starting at `start`."""
    return replace(service("s", [9001, 9002], interval=1.0, fast=0.25, breaker=BREAKER),
                   init_state=start)


async def test_fully_up_is_the_default_and_needs_max_fails(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Default (fully-up): a backend dead at start goes down at its 3rd failure (0, 0.25,
    0.5), as before init_state existed."""
    probe, rec = FakeProbe(), TimedSink()
    probe.alive[("127.0.0.1", 9001)] = False
    engine = make_engine(tmp_path, probe, {"rec": rec}, service("s", [9001], breaker=BREAKER,
                                                                fast=0.25))
    assert engine.config.services[0].init_state is InitState.FULLY_UP
    await run_for(engine, 0.9)
    [down] = rec.events()
    assert (down.to_state, down.reason) == ("down", "3 failures within 10s; last: "
                                                    "connection refused")
    assert rec.event_times() == [(0.5, 1)]


async def test_up_falls_at_the_first_failed_probe(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """init_state up: published up at start; the dead backend's first probe (t=0) takes
    it down at once, its live neighbour stays up."""
    probe, rec = FakeProbe(), TimedSink()
    probe.alive[("127.0.0.1", 9001)] = False
    engine = make_engine(tmp_path, probe, {"rec": rec}, web(InitState.UP))
    await run_for(engine, 2.9)
    assert [b.state for b in rec.applied[0][1].view.backends] == [State.UP, State.UP]
    [down] = rec.events()
    assert (down.backend, down.from_state, down.to_state, down.reason) == (
        "b9001", "up", "down", "first probe failed (init_state: up); last: connection refused")
    assert rec.event_times() == [(0.0, 1)]
    assert states(engine, "s") == {"b9001": ("down", 0), "b9002": ("up", 1)}


async def test_down_gives_no_traffic_until_the_first_passed_probe(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """init_state down: the first apply publishes both down, with no event; each comes up
    at its first passed probe (t=0 and t=0.5), the dead one stays down."""
    probe, rec = FakeProbe(), TimedSink()
    probe.alive[("127.0.0.1", 9002)] = False
    engine = make_engine(tmp_path, probe, {"rec": rec}, web(InitState.DOWN))
    await run_for(engine, 2.9)
    first = rec.applied[0][1]
    assert first.events == ()
    assert [(b.state, b.weight) for b in first.view.backends] == [(State.DOWN, 0)] * 2
    [up] = rec.events()
    assert (up.backend, up.from_state, up.to_state, up.reason) == (
        "b9001", "down", "up", "first probe passed (init_state: down)")
    assert rec.event_times() == [(0.0, 1)]
    assert states(engine, "s") == {"b9001": ("up", 1), "b9002": ("down", 0)}


async def test_fully_down_needs_every_pass(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """init_state fully-down: passes 2 trials (t=0, then fast at 0.25) before traffic."""
    probe, rec = FakeProbe(), TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec},
                         replace(web(InitState.FULLY_DOWN), backends=web(
                             InitState.FULLY_DOWN).backends[:1]))
    await run_for(engine, 0.9)
    [up] = rec.events()
    assert up.reason == "2/2 trial probes passed"
    assert rec.event_times() == [(0.25, 1)]


async def test_a_saved_verdict_wins_over_init_state(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A backend saved up starts fully up under init_state down (restart without flapping):
    no event; one with no saved verdict (b9002) starts down."""
    (tmp_path / "state.json").write_text(json.dumps({"seq": 0, "backends": {"s": {
        "b9001": {"state": "up", "since": "2026-01-01T00:00:00Z"}}}}))
    probe, rec = FakeProbe(), TimedSink()
    probe.alive[("127.0.0.1", 9002)] = False
    engine = make_engine(tmp_path, probe, {"rec": rec}, web(InitState.DOWN))
    await run_for(engine, 0.2)
    assert [b.state for b in rec.applied[0][1].view.backends] == [State.UP, State.DOWN]
    assert rec.events() == []
