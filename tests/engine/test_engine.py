"""The engine on a virtual clock: schedule, breakers, events, persistence, sinks, panic guard.

Every scenario runs on `MockClock(autojump_threshold=0)`, so probe and apply
times are exact virtual times. Backends are toggled by a script task at
half-second marks, between probes, so each assertion names the probe that
saw the change.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio
import trio.testing

from sentinel.config.model import NginxBreakerConfig, ThresholdBreakerConfig
from sentinel.model import State
from tests.engine.drive import make_engine, run_for, states, toggles
from tests.engine.fakes import FakeProbe, service
from tests.sinks.fakes import TimedSink


async def test_first_probes_spread_evenly_over_the_interval(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Four backends at interval 2s start at 0, 0.5, 1 and 1.5, then keep that phase."""
    probe = FakeProbe()
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()},
                         service("s", [9001, 9002, 9003, 9004], interval=2.0))
    await run_for(engine, 3.9)
    assert [probe.times(p) for p in (9001, 9002, 9003, 9004)] == [
        [0.0, 2.0], [0.5, 2.5], [1.0, 3.0], [1.5, 3.5]]


async def test_interval_fast_interval_and_down_interval_cadence(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """interval while up, fast_interval while counting, down_interval while down (threshold)."""
    probe = FakeProbe()
    svc = service("s", [9001], interval=1.0, fast=0.25, down=2.0,
                  breaker=ThresholdBreakerConfig(rise=2, fall=2))
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()}, svc)
    await run_for(engine, 8.9, toggles((1.5, 9001, False), (5.0, 9001, True)), probe)
    # up: 0 1 | fail 2 (1/2) fast | 2.25 down | down_interval 4.25 | ok 6.25 (1/2) fast
    # | 6.5 up | interval 7.5 8.5
    assert probe.times(9001) == [0.0, 1.0, 2.0, 2.25, 4.25, 6.25, 6.5, 7.5, 8.5]


async def test_nginx_breaker_goes_down_after_max_fails_and_recovers_on_trial(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """max_fails 2: down (weight 0, event seq 1) at the 2nd failure; the trial after
    fail_timeout passes and brings it back (event seq 2)."""
    probe, rec = FakeProbe(), TimedSink()
    svc = service("s", [9001], interval=1.0, fast=0.25,
                  breaker=NginxBreakerConfig(max_fails=2, fail_timeout=3.0))
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)
    await run_for(engine, 6.9, toggles((1.5, 9001, False), (4.0, 9001, True)), probe)
    # fails at 2 and 2.25 -> down; cooling until 5.25, where the trial passes.
    assert probe.times(9001) == [0.0, 1.0, 2.0, 2.25, 5.25, 6.25]
    assert [t for t, _ in rec.applied] == [0.0, 2.25, 5.25]
    down_view = rec.applied[1][1].view
    assert [(b.name, b.state, b.weight) for b in down_view.backends] == [
        ("b9001", State.DOWN, 0)]
    down, up = rec.events()
    assert (down.seq, down.backend, down.address, down.from_state, down.to_state,
            down.weight) == (1, "b9001", "127.0.0.1:9001", "up", "down", 0)
    assert down.reason == "2 failures within 3s; last: connection refused"
    assert down.probe is not None
    assert (down.probe.type, down.probe.ok) == ("tcp", False)
    assert (up.seq, up.from_state, up.to_state, up.weight) == (2, "down", "up", 1)
    assert up.reason == "1/1 trial probes passed"
    assert states(engine, "s") == {"b9001": ("up", 1)}


async def test_a_stop_before_probing_began_is_kept(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """stop() before run() has started probing (a SIGTERM just after the API came up)
    still ends run(): the sinks get the start's view, then it returns instead of
    probing on. The stop had been dropped, and `sentinel run` ignored that SIGTERM."""
    probe, rec = FakeProbe(), TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, service("s", [9001]))
    engine.stop()
    with trio.fail_after(60):
        await engine.run()
    assert len(rec.applied) == 1
    assert probe.times(9001) == []


async def test_seq_is_persisted_and_continued_by_a_new_engine(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """state.json holds seq and the verdict; a new Engine on it starts down, numbers on from 2."""
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    svc = service("s", [9001], interval=1.0)
    await run_for(make_engine(tmp_path, probe, {"rec": TimedSink()}, svc), 0.5)
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["seq"] == 1
    assert saved["backends"]["s"]["b9001"]["state"] == "down"

    probe.alive[("127.0.0.1", 9001)] = True
    rec = TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)
    await run_for(engine, 0.5)
    first_view = rec.applied[0][1]
    assert first_view.events == ()
    assert first_view.view.backends[0].state is State.DOWN
    [event] = rec.events()
    assert (event.seq, event.from_state, event.to_state) == (2, "down", "up")
    assert json.loads((tmp_path / "state.json").read_text())["seq"] == 2


async def test_restart_with_persisted_down_starts_down_without_an_event(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A backend persisted down and still dead is published down from the start, silently."""
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    svc = service("s", [9001, 9002], interval=1.0)
    await run_for(make_engine(tmp_path, probe, {"rec": TimedSink()}, svc), 0.9)
    rec = TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)
    await run_for(engine, 30.0)
    assert len(rec.applied) == 1
    assert rec.events() == []
    assert rec.applied[0][1].view.backends[0].state is State.DOWN
    assert engine.journal.seq == 1
    assert states(engine, "s") == {"b9001": ("down", 0), "b9002": ("up", 1)}


async def test_failing_sink_is_retried_with_backoff_while_another_gets_its_update_at_once(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Sink a fails twice (retried after 0.25-0.5s, then 0.5-1s); sink b applies at the event."""
    probe, a, b = FakeProbe(), TimedSink("a"), TimedSink("b")
    engine = make_engine(tmp_path, probe, {"a": a, "b": b},
                         service("s", [9001], sinks=("a", "b")))

    async def script(probe: FakeProbe) -> None:
        await trio.sleep(1.5)
        a.fail_next = 2
        probe.alive[("127.0.0.1", 9001)] = False

    await run_for(engine, 5.0, script, probe)
    assert b.event_times() == [(2.0, 1)]
    assert a.calls[:2] == [0.0, 2.0]
    first_wait, second_wait = a.calls[2] - a.calls[1], a.calls[3] - a.calls[2]
    assert 0.25 <= first_wait <= 0.5
    assert 0.5 <= second_wait <= 1.0
    assert a.event_times() == [(a.calls[3], 1)]
    stats = engine.runners["a"].statistics()
    assert (stats.ok, stats.failures, stats.applied) == (True, 2, 2)


async def test_hanging_sink_is_cut_off_and_never_delays_probing(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A sink that never returns is timed out after 30s and retried; probes and the other
    sink keep exact times."""
    probe, rec, stuck = FakeProbe(), TimedSink("rec"), TimedSink("stuck")
    stuck.hang = True
    engine = make_engine(tmp_path, probe, {"rec": rec, "stuck": stuck},
                         service("s", [9001], sinks=("rec", "stuck")))
    await run_for(engine, 39.5, toggles((10.5, 9001, False), (15.0, 9001, True)), probe)
    # down at 11 (max_fails 1); cooling 10s; the trial at 21 passes.
    assert probe.times(9001) == [float(t) for t in [*range(12), *range(21, 40)]]
    assert rec.event_times() == [(11.0, 1), (21.0, 2)]
    assert 30.25 <= stuck.calls[1] - stuck.calls[0] <= 30.5
    stats = engine.runners["stuck"].statistics()
    assert stats.last_error == "apply timed out after 30s"
    assert stats.applied == 0


async def test_burst_while_sink_is_busy_arrives_as_one_update(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Three changes during a 10s apply coalesce: one update, latest view, events 1-3 in order."""
    probe, rec = FakeProbe(), TimedSink(delay=10.0)
    engine = make_engine(tmp_path, probe, {"rec": rec},
                         service("s", [9001, 9002, 9003]))
    steps = [(1.5, p, False) for p in (9001, 9002, 9003)]
    await run_for(engine, 25.0, toggles(*steps), probe)
    assert len(rec.applied) == 2
    when, update = rec.applied[1]
    assert when == 20.0  # the initial apply ends at 10, the coalesced one takes 10 more
    # all die at 1.5; their next probes are at 1 2/3 (b9003), 2 (b9001), 2 1/3 (b9002)
    assert [(e.seq, e.backend, e.to_state) for e in update.events] == [
        (1, "b9003", "down"), (2, "b9001", "down"), (3, "b9002", "down")]
    assert [b.state for b in update.view.backends] == [State.DOWN] * 3


async def test_panic_guard_keeps_the_most_recently_passing_backend_up(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """min_up 1, all three fail: the last to pass stays published up (no `down` event for
    it), panic is on and announced; a recovery ends it, the held backend goes down then."""
    probe, rec = FakeProbe(), TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec},
                         service("s", [9001, 9002, 9003], min_up=1))
    # probes at k, k+1/3, k+2/3; b9002 is the last to fail (at 3 1/3), so it last passed.
    await run_for(engine, 13.5, toggles((1.5, 9001, False), (2.5, 9003, False),
                                        (3.0, 9002, False), (5.0, 9001, True)), probe)
    events = rec.events()
    assert [(e.seq, e.backend, e.from_state, e.to_state) for e in events] == [
        (1, "b9001", "up", "down"), (2, "b9003", "up", "down"), (3, "", "normal", "panic"),
        (4, "b9001", "down", "up"), (5, "b9002", "up", "down"), (6, "", "panic", "normal")]
    assert "keeping b9002 published up" in events[2].reason
    assert events[4].reason.startswith("panic over: 1 failure within 10s")
    in_panic = next(u.view for _, u in rec.applied if any(e.seq == 3 for e in u.events))
    assert in_panic.panic
    assert [(b.name, b.state, b.weight) for b in in_panic.backends] == [
        ("b9001", State.DOWN, 0), ("b9002", State.UP, 1), ("b9003", State.DOWN, 0)]
    recovered = rec.applied[-1][1].view
    assert not recovered.panic
    assert [b.state for b in recovered.backends] == [State.UP, State.DOWN, State.DOWN]
    assert engine.state_document()["services"]["s"]["panic"] is False  # type: ignore[index]


async def test_panic_shows_in_the_state_document(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """While in panic, /v1/state says `"panic": true` and counts the held backend as up."""
    probe = FakeProbe()
    for port in (9001, 9002):
        probe.alive[("127.0.0.1", port)] = False
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()},
                         service("s", [9001, 9002], min_up=1))
    await run_for(engine, 0.9)
    doc = engine.state_document()["services"]["s"]  # type: ignore[index]
    assert (doc["panic"], doc["up"], doc["total"]) == (True, 1, 2)


async def test_script_weight_changes_weight_and_emits_an_event(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A probe result carrying weight=3 republishes the backend at weight 3, with an event."""
    probe, rec = FakeProbe(), TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, service("s", [9001], weight=5))

    async def script(probe: FakeProbe) -> None:
        await trio.sleep(1.5)
        probe.weights[("127.0.0.1", 9001)] = 3

    await run_for(engine, 3.5, script, probe)
    [event] = rec.events()
    assert (event.seq, event.from_state, event.to_state, event.weight) == (1, "up", "up", 3)
    assert event.reason == "weight 3 from script"
    assert rec.event_times() == [(2.0, 1)]
    assert states(engine, "s") == {"b9001": ("up", 3)}
