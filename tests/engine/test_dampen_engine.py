"""Flap damping in the engine: a flapping backend is held down until it has been stable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio
import trio.testing

from sentinel.config.model import DampenConfig, ThresholdBreakerConfig
from sentinel.model import State
from tests.engine.drive import make_engine, run_for, toggles
from tests.engine.fakes import FakeProbe, service
from tests.sinks.fakes import TimedSink

DAMPEN = DampenConfig(half_life=60.0, suppress=2000.0, reuse=750.0, max_suppress=240.0)


async def test_flapping_backend_is_held_down_then_released(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Three flaps in a few seconds cross `suppress`: the third recovery is not published;
    once the penalty decays below `reuse` the backend comes back with its own event."""
    probe, rec = FakeProbe(), TimedSink()
    svc = dataclasses.replace(
        service("s", [9001], breaker=ThresholdBreakerConfig(rise=1, fall=1)), dampen=DAMPEN)
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)
    flaps = toggles((0.5, 9001, False), (2.5, 9001, True), (4.5, 9001, False),
                    (6.5, 9001, True), (8.5, 9001, False), (10.5, 9001, True))
    await run_for(engine, 200.0, flaps, probe)
    events = [(e.to_state, e.reason) for e in rec.events()]
    assert [to for to, _ in events] == ["down", "up", "down", "up", "down", "up"]
    # Down at 1, 5, 9 (three flaps, penalty about 2870 after the third): the recovery at
    # 11 is held back; it is published only when the penalty has decayed below 750.
    released = rec.events()[-1]
    assert released.reason.startswith("flap damping released")
    release_time = next(t for t, u in rec.applied if released in u.events)
    assert 120.0 < release_time < 130.0
    doc = engine.state_document()["services"]["s"]["backends"][0]  # type: ignore[index]
    assert doc["state"] == State.UP.value
    assert "not suppressed" in doc["damping"]
