"""Admin overrides in the engine (virtual clock): probes go on under them, `ready` publishes the
probed state at once, the panic guard never overrules them."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.breakers.base import Health
from sentinel.config.model import ThresholdBreakerConfig
from sentinel.engine.engine import Engine
from tests.engine.drive import Script, make_engine, run_for, states, toggles
from tests.engine.fakes import FakeProbe, service
from tests.sinks.fakes import TimedSink


def admin_at(engine: Engine, *steps: tuple[float, str, str]) -> Script:
    """A script calling `engine.set_override(service s, backend, action)` at virtual times."""

    async def script(_probe: FakeProbe) -> None:
        start = trio.current_time()
        for at, backend, action in steps:
            await trio.sleep_until(start + at)
            await engine.set_override("s", backend, action)

    return script


async def test_a_backend_dying_in_maint_is_probed_silently_and_ready_publishes_it_down(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """maint at 0.5; dies at 1.5 (still probed every second, breaker down at 2, no event);
    `ready` at 4.5 publishes maint -> down then, with reason `admin: ready`."""
    probe, rec = FakeProbe(), TimedSink()
    svc = service("s", [9001, 9002], breaker=ThresholdBreakerConfig(rise=1, fall=1))
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)
    health: list[Health] = []

    async def script(probe: FakeProbe) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(admin_at(engine, (0.5, "b9001", "maint"), (4.5, "b9001", "ready")),
                               probe)
            nursery.start_soon(toggles((1.5, 9001, False)), probe)
            await trio.sleep(4.0)
            health.append(engine.services["s"].backends[0].breaker.health)

    await run_for(engine, 4.9, script, probe)
    assert probe.times(9001) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert health == [Health.DOWN]
    assert [(t, e.seq, e.from_state, e.to_state, e.reason) for t, u in rec.applied
            for e in u.events] == [(0.5, 1, "up", "maint", "admin: maint"),
                                   (4.5, 2, "maint", "down", "admin: ready")]
    assert states(engine, "s") == {"b9001": ("down", 0), "b9002": ("up", 1)}


@pytest.mark.parametrize("action", ["drain", "maint"])
async def test_the_panic_guard_never_publishes_an_overridden_backend_up(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, action: str) -> None:
    """min_up 1, b9001 under an override, b9002 dies: b9002 is held up (panic), b9001 stays
    as the operator set it."""
    probe = FakeProbe()
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()},
                         service("s", [9001, 9002], min_up=1))

    async def script(probe: FakeProbe) -> None:
        await admin_at(engine, (0.25, "b9001", action))(probe)
        await toggles((0.0, 9001, False), (0.0, 9002, False))(probe)

    await run_for(engine, 2.9, script, probe)
    assert states(engine, "s") == {"b9001": (action, 0), "b9002": ("up", 1)}
    assert engine.state_document()["services"]["s"]["panic"] is True  # type: ignore[index]


async def test_draining_a_healthy_backend_is_not_a_panic(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """SPEC 5: panic is when the breakers say fewer than min_up are healthy; an operator's
    drain of a healthy backend is its own event, not a panic."""
    probe, rec = FakeProbe(), TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, service("s", [9001], min_up=1))
    await run_for(engine, 1.9, admin_at(engine, (0.5, "b9001", "drain")), probe)
    assert [(e.backend, e.to_state, e.reason) for e in rec.events()] == [
        ("b9001", "drain", "admin: drain")]
