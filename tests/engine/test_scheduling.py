"""Probe scheduling at scale: shared probes, the in-flight cap, jitter, slow start."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.engine.engine import Engine
from sentinel.engine.schedule import on_phase
from sentinel.model import State
from sentinel.sinks.memory import RecordingSink
from tests.engine.drive import WALL_BASE, make_engine, run_for
from tests.engine.fakes import FakeProbe, config, run_inline, service


@pytest.mark.trio
async def test_identical_probes_from_two_services_run_once(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Two services probing the same address with the same settings share one probe per tick."""
    probe = FakeProbe()
    cfg = config(tmp_path, service("a", [9001]), service("b", [9001]))
    engine = Engine(cfg, sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                    poller=probe.poller,
                    run_blocking=run_inline)
    await run_for(engine, 3.5)
    assert len(probe.times(9001)) == 4  # t = 0, 1, 2, 3: once per interval, not twice
    assert set(engine.services) == {"a", "b"}


@pytest.mark.trio
async def test_probes_from_different_sources_are_not_shared(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Two services probing one address with the same settings but another `source` address
    each run their own probe (the source is part of what makes two probes the same)."""
    probe = FakeProbe()
    a = service("a", [9001])
    b = replace(a, name="b", probe=replace(a.probe, source="127.0.0.2"))
    engine = Engine(config(tmp_path, a, b), sinks={"rec": RecordingSink()},
                    probe_factory=probe.factory(), poller=probe.poller, run_blocking=run_inline)
    await run_for(engine, 3.25)
    assert len(engine.groups) == 2
    # a's at 0, 1, 2, 3 and b's half an interval later (first probes are spread)
    assert probe.times(9001) == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])


@pytest.mark.trio
async def test_shared_failure_reaches_every_service(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A shared probe's failure marks the backend down in both services."""
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    rec = RecordingSink()
    cfg = config(tmp_path, service("a", [9001]), service("b", [9001]))
    engine = Engine(cfg, sinks={"rec": rec}, probe_factory=probe.factory(), poller=probe.poller,
                    run_blocking=run_inline)
    await run_for(engine, 0.5)
    for name in ("a", "b"):
        view = rec.latest(name)
        assert view is not None
        assert view.backends[0].state is State.DOWN


@pytest.mark.trio
async def test_in_flight_cap_delays_probes_instead_of_failing_them(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """With a cap of 1 and hanging probes, others wait for a slot; none is failed for it."""
    probe = FakeProbe(fail_latency=0.5)
    probe.alive[("127.0.0.1", 9001)] = False  # hangs 0.5 s each time
    rec = RecordingSink()
    cfg = config(tmp_path, service("s", [9001, 9002, 9003], interval=1.0), max_in_flight=1)
    engine = Engine(cfg, sinks={"rec": rec}, probe_factory=probe.factory(), poller=probe.poller,
                    run_blocking=run_inline)
    await run_for(engine, 3.0)
    view = rec.latest("s")
    assert view is not None
    states = {b.name: b.state for b in view.backends}
    assert states == {"b9001": State.DOWN, "b9002": State.UP, "b9003": State.UP}
    # b9002 was due at 1/3 s but had to wait until the hanging probe released the slot at 0.5 s.
    assert probe.times(9002)[0] == pytest.approx(0.5)
    assert engine.statistics().lateness_max_ms >= 166.0


@pytest.mark.trio
@pytest.mark.parametrize(("fast", "passes", "early"), [(None, 25, 0.095), (0.2, 45, 0.045)])
async def test_the_probe_loop_starts_a_thousand_checks_a_second_in_few_passes(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, fast: float | None,
        passes: int, early: float) -> None:
    """1,000 backends every second: start passes come ~100 ms apart (about ten a second,
    each starting ~100 checks), yet every backend is still checked once a second, never
    more than 5 ms late, at most 95 ms early. With a fast_interval of 200 ms somewhere,
    passes come at most 50 ms apart (a check starts at most 45 ms early)."""
    probe = FakeProbe()
    ports = list(range(10000, 11000))
    services = [service("s", ports, interval=1.0)]
    if fast is not None:
        services.append(service("f", [9001], interval=1.0, fast=fast))
    engine = Engine(config(tmp_path, *services), sinks={"rec": RecordingSink()},
                    probe_factory=probe.factory(), poller=probe.poller, run_blocking=run_inline)
    await run_for(engine, 4.0)
    starts = [t for t, target in probe.calls if target.port in set(ports)]
    assert len({round(t, 6) for t in starts if 1.0 <= t < 3.0}) <= passes
    for port in ports:
        times = probe.times(port)
        assert len(times) in (3, 4, 5)
        # due times a second apart, each started up to `early` early or 5 ms late
        assert all(0.995 - early - 1e-9 <= b - a <= 1.005 + early + 1e-9
                   for a, b in itertools.pairwise(times))
    assert engine.statistics().lateness_max_ms <= 5.0 + 1e-6


def test_a_due_time_moves_back_to_its_phase_never_later() -> None:
    """`on_phase`: the latest time at or before `due` whose wall-clock time lies `phase`
    into an interval: a check comes back to its turn sooner, never later."""
    assert on_phase(10.0, 1000.0, 0.3, 1.0) == pytest.approx(9.3)  # wall 1010.0 -> .3 back
    assert on_phase(10.55, 1000.0, 0.3, 1.0) == pytest.approx(10.3)
    assert on_phase(10.29, 1000.0, 0.3, 1.0) == pytest.approx(9.3)  # not on to 10.3
    assert on_phase(10.3, 1000.0, 0.3, 1.0) == pytest.approx(10.3)  # on its turn already
    assert on_phase(10.3 - 1e-9, 1000.0, 0.3, 1.0) == pytest.approx(10.3)  # float noise
    assert on_phase(10.297, 1000.0, 0.3, 1.0) == pytest.approx(10.297)  # 3 ms before: on it
    assert on_phase(10.29, 1000.0, 0.3, 1.0) == pytest.approx(9.3)  # 10 ms before: not
    assert on_phase(10.0, 1000.25, 0.5, 2.0) == pytest.approx(8.25)  # wall 1008.5: 0.5 into 2


@pytest.mark.trio
async def test_a_check_with_a_phase_keeps_its_turn_after_a_hurry(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A cluster member checks a backend at its turn of each interval (`phase`, in wall
    time: 0.3 s into each second here); a hurried check (another prober saw it die)
    is an extra one: the next goes back to the turn instead of an interval after it.
    The turn comes sooner than an interval on, never later: the first check (at 0)
    is followed by one at 0.3."""
    probe = FakeProbe()
    engine = make_engine(tmp_path, probe, {"rec": RecordingSink()}, service("s", [9001]))
    backend = engine.services["s"].backends[0]
    backend.checks[0].phase = 0.3

    async def hurry(_: FakeProbe) -> None:
        await trio.sleep(2.55)
        assert engine.probe_now(backend)

    await run_for(engine, 4.5, hurry, probe)
    assert probe.times(9001) == pytest.approx([0.0, 0.3, 1.3, 2.3, 2.55, 3.3, 4.3])


@pytest.mark.trio
async def test_a_check_with_a_phase_is_made_once_an_interval_whatever_the_clocks_read(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """The wall clock read a few milliseconds after the loop's clock (a busy pass), by a
    different amount each time: the check still comes once a second, on its turn (it
    came twice in some seconds when a due time just before its turn was taken for one
    just after the last turn)."""
    probe = FakeProbe()
    rng = random.Random(7)
    cfg = config(tmp_path, service("s", [9001]))
    engine = Engine(cfg, sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                    poller=probe.poller, run_blocking=run_inline,
                    wall=lambda: WALL_BASE + trio.current_time() + rng.uniform(0, 0.004))
    engine.services["s"].backends[0].checks[0].phase = 0.3
    await run_for(engine, 30.5)
    times = probe.times(9001)
    assert len(times) == 32  # at 0, then at 0.3, 1.3, ... 30.3
    assert all(abs(t % 1.0 - 0.3) < 0.01 for t in times[1:])


@pytest.mark.trio
async def test_jitter_spreads_delays_within_bounds(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """With jitter 20%, each gap between probes lies within interval * (1 +- 0.2), not all equal."""
    probe = FakeProbe()
    cfg = config(tmp_path, service("s", [9001], interval=1.0, jitter=0.2))
    engine = Engine(cfg, sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                    poller=probe.poller,
                    run_blocking=run_inline)
    await run_for(engine, 30.0)
    times = probe.times(9001)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.8 - 1e-9 <= g <= 1.2 + 1e-9 for g in gaps)
    assert max(gaps) - min(gaps) > 0.05


@pytest.mark.trio
async def test_slow_start_ramps_weight_after_recovery(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A recovered backend comes back at weight 1 and climbs to 10 over slow_start in steps."""
    probe = FakeProbe()
    rec = RecordingSink()
    svc = service("s", [9001], interval=1.0, slow_start=10.0, weight=10)
    engine = Engine(config(tmp_path, svc), sinks={"rec": rec}, probe_factory=probe.factory(),
                    poller=probe.poller,
                    run_blocking=run_inline)

    async def script() -> None:
        probe.alive[("127.0.0.1", 9001)] = False
        await trio.sleep(2.0)  # down after the first failure; nginx fail_timeout 10 s
        probe.alive[("127.0.0.1", 9001)] = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(script)
        await nursery.start(engine.run)
        await trio.sleep(25.0)
        engine.stop()
    weights = [e.weight for u in rec.updates for e in u.events]
    assert weights[0] == 0  # up -> down
    assert weights[1:] == [1, 2, 4, 6, 8, 10]  # down -> up at 1, then the ramp
    reasons = [e.reason for u in rec.updates for e in u.events]
    assert reasons[-1] == "slow start: weight 10 of 10"
