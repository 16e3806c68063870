"""The commit path on a virtual clock: each event carries the transition that caused it
even when commits lag behind the probes, /v1/events serves only events on disk, and state
saves do not wait for Trio's shared worker threads."""

from __future__ import annotations

import errno
import itertools
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.config.model import NginxBreakerConfig, ThresholdBreakerConfig
from sentinel.engine.commit import Commit
from sentinel.engine.engine import Engine
from sentinel.engine.statefile import SavedState
from sentinel.model import Event, FailureKind, ProbeResult
from sentinel.observe import NullObserver, ProbeRecord
from tests.engine.drive import WALL_BASE
from tests.engine.fakes import FakeProbe, config, run_inline, service
from tests.sinks.fakes import TimedSink

OK = ProbeResult(ok=True, latency=0.001)
REFUSED = ProbeResult(ok=False, latency=0.001, failure=FailureKind.CONNECT,
                      detail="connection refused")


class Tracing(NullObserver):
    """An observer that names each probe's trace after its backend and virtual start."""

    traced = True

    def probe_finished(self, record: ProbeRecord) -> str | None:
        """`BACKEND@SECONDS`."""
        return f"{record.backend}@{round(record.start_unix - WALL_BASE, 3):g}"


def slow_disk(seconds: float) -> Callable[..., object]:
    """A run_blocking whose writes each take `seconds` of virtual time (commits lag)."""

    async def write(fn: Callable[[Path, SavedState], None], state_dir: Path,
                    state: SavedState) -> None:
        await trio.sleep(seconds)
        fn(state_dir, state)

    return write


def described(events: list[Event]) -> list[tuple[object, ...]]:
    """What each event says: seq, backend, move, reason, probe outcome and trace."""
    return [(e.seq, e.backend, f"{e.from_state}->{e.to_state}", e.reason,
             e.probe.ok if e.probe else None, e.trace_id) for e in events]


async def test_each_event_carries_its_own_transition_while_commits_lag(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Results reach the engine through the probe loop's hand-in while every state write
    takes 2 s, so commits queue up behind each other: b2 down, b1 down, b2 back, b1 back,
    b1 down again. Each event names its own transition, probe and trace, in order: no
    `panic over` without a panic, no down that says `1/1 trial probes passed`."""
    rec = TimedSink("rec")
    svc = service("s", [9001, 9002], interval=1000.0,
                  breaker=NginxBreakerConfig(max_fails=1, fail_timeout=0.5))
    probe = FakeProbe()
    engine = Engine(config(tmp_path, svc), sinks={"rec": rec},
                    probe_factory=probe.factory(), poller=probe.poller, run_blocking=slow_disk(2.0),
                    observer=Tracing(), wall=lambda: WALL_BASE + trio.current_time())

    async def feed(at: float, port: int, result: ProbeResult) -> None:
        await trio.sleep_until(at)
        group = next(g for g in engine.groups.values() if g.key[2] == port)
        now = trio.current_time()
        engine.probe_done(group, result, now, now, WALL_BASE + now)

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await feed(0.1, 9002, REFUSED)
        await feed(1.0, 9001, REFUSED)
        await feed(1.2, 9002, OK)  # trials: fail_timeout has passed
        await feed(1.6, 9001, OK)
        await feed(3.0, 9001, REFUSED)
        await trio.sleep(20)
        engine.stop()
    down, back = "1 failure within 0.5s; last: connection refused", "1/1 trial probes passed"
    assert described(rec.events()) == [
        (1, "b9002", "up->down", down, False, "b9002@0.1"),
        (2, "b9001", "up->down", down, False, "b9001@1"),
        (3, "b9002", "down->up", back, True, "b9002@1.2"),
        (4, "b9001", "down->up", back, True, "b9001@1.6"),
        (5, "b9001", "up->down", down, False, "b9001@3"),
    ]


async def test_events_are_served_only_once_they_are_on_disk(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """While the write holding a new event has not finished, events_after (GET
    /v1/events) does not show it: a kill -9 then would hand its seq out again with
    another id. Once the write is done, it does."""
    gate = trio.Event()

    async def gated(fn: Callable[[Path, SavedState], None], state_dir: Path,
                    state: SavedState) -> None:
        await gate.wait()
        fn(state_dir, state)

    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    engine = Engine(config(tmp_path, service("s", [9001])), sinks={"rec": TimedSink("rec")},
                    probe_factory=probe.factory(), poller=probe.poller, run_blocking=gated)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await trio.sleep(0.5)
        try:
            assert engine.journal.seq == 1
            assert engine.events_after(0) == []
        finally:  # pass or fail: a shielded commit is waiting for the write
            gate.set()
        await trio.sleep(0.1)
        assert [(e.seq, e.to_state) for e in engine.events_after(0)] == [(1, "down")]
        engine.stop()


async def test_state_saves_do_not_wait_for_trio_shared_worker_threads(tmp_path: Path) -> None:
    """Every token of Trio's default thread limiter is held by a stuck thread (as by hung
    host-name lookups): a down event still reaches state.json, in real time."""
    limiter = trio.to_thread.current_default_thread_limiter()
    release = threading.Event()
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    engine = Engine(config(tmp_path, service("s", [9001])), sinks={"rec": TimedSink("rec")},
                    probe_factory=probe.factory(), poller=probe.poller)

    def saved_seq() -> int:
        path = tmp_path / "state.json"
        return int(json.loads(path.read_text())["seq"]) if path.exists() else 0

    async with trio.open_nursery() as nursery:
        try:  # released on the way out, pass or fail: a shielded save may be waiting
            for _ in range(int(limiter.total_tokens)):
                nursery.start_soon(lambda: trio.to_thread.run_sync(
                    release.wait, abandon_on_cancel=True))
            while limiter.borrowed_tokens < limiter.total_tokens:  # noqa: ASYNC110
                await trio.sleep(0.01)
            await nursery.start(engine.run)
            with trio.fail_after(10):
                while await trio.to_thread.run_sync(  # noqa: ASYNC110
                        saved_seq, limiter=trio.CapacityLimiter(1)) < 1:
                    await trio.sleep(0.02)
        finally:
            release.set()
            engine.stop()


async def test_a_full_state_dir_delays_nothing_and_is_caught_up_when_space_returns(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
        ) -> None:
    """While every write fails with ENOSPC, a down and an up still reach the sink at once,
    the state says it is not persisted (one error logged) and no event is served; the
    write is retried with backoff, and once space returns state.json holds both events,
    the state says so (one line logged) and both are served."""
    full = True
    attempts: list[float] = []

    async def disk(fn: Callable[[Path, SavedState], None], state_dir: Path,
                   state: SavedState) -> None:
        attempts.append(trio.current_time())
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        fn(state_dir, state)

    rec, probe = TimedSink("rec"), FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    svc = service("s", [9001], breaker=NginxBreakerConfig(max_fails=1, fail_timeout=2.0))
    engine = Engine(config(tmp_path, svc), sinks={"rec": rec}, probe_factory=probe.factory(),
                    poller=probe.poller,
                    run_blocking=disk)
    with caplog.at_level(logging.INFO, logger="sentinel.engine.journal"):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await trio.sleep(1.0)
            probe.alive[("127.0.0.1", 9001)] = True
            await trio.sleep(1.5)
            assert rec.event_times() == [(0.0, 1), (2.0, 2)]  # down at once, the trial at 2
            stats = engine.journal.statistics()
            assert (stats.ok, stats.saved_seq, stats.last_error) == (
                False, 0, "No space left on device")
            assert engine.events_after(0) == []
            assert engine.state_document()["persistence"] == stats.to_json()
            retries = [t for t in attempts if t > 0.0]
            assert len(retries) >= 3  # backed off: 0.125-0.25 s, then doubling up to 5 s
            assert all(b - a >= 0.1 for a, b in itertools.pairwise(retries))
            full = False
            await trio.sleep(5.1)
            assert engine.journal.statistics().ok
            assert [e.seq for e in engine.events_after(0)] == [1, 2]
            engine.stop()
    assert json.loads((tmp_path / "state.json").read_text())["seq"] == 2
    [refused, written] = [r for r in caplog.records if r.name == "sentinel.engine.journal"]
    assert refused.levelno == logging.ERROR
    assert "No space left on device" in refused.getMessage()
    assert "not persisted" in refused.getMessage()
    assert "again" in written.getMessage()


async def test_a_backend_the_panic_guard_stops_holding_up_says_why(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Three backends down with min_up 1: b9001, the last to pass, is held up. b9002 then
    passes a probe (1/2 towards up) and the next commit (an admin maint of b9003) holds
    b9002 up instead: b9001's event says the guard keeps another backend up, not that
    the panic is over."""
    rec, probe = TimedSink("rec"), FakeProbe()
    svc = service("s", [9001, 9002, 9003], interval=1.0, min_up=1,
                  breaker=ThresholdBreakerConfig(fall=1, rise=2))
    engine = Engine(config(tmp_path, svc), sinks={"rec": rec}, probe_factory=probe.factory(),
                    poller=probe.poller,
                    run_blocking=run_inline, wall=lambda: WALL_BASE + trio.current_time())
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)  # probes at offsets 0, 1/3 and 2/3 of a second
        await trio.sleep(0.9)
        probe.alive[("127.0.0.1", 9002)] = probe.alive[("127.0.0.1", 9003)] = False
        await trio.sleep(0.6)  # b9002 down at 1.33, b9003 at 1.67...
        probe.alive[("127.0.0.1", 9001)] = False
        await trio.sleep(0.6)  # ...and b9001 at 2.0: panic, b9001 held up
        probe.alive[("127.0.0.1", 9002)] = True
        await trio.sleep(0.3)  # b9002 passes at 2.33: 1/2 towards up
        await engine.set_override("s", "b9003", "maint")
        engine.stop()
    down = "1 consecutive failure; last: connection refused"
    assert [(e.backend, e.from_state, e.to_state, e.reason) for e in rec.events()][-3:] == [
        ("b9001", "up", "down", f"panic guard: another backend kept up instead; {down}"),
        ("b9002", "down", "up", "panic guard: kept published up (min_up)"),
        ("b9003", "down", "maint", "admin: maint"),
    ]


def no_op_commits(tmp_path: Path, count: int) -> tuple[Engine, list[Commit]]:
    """An engine (not running) whose every state write takes 1 s, and `count` commits
    staged that publish nothing new: each still writes the state (a verdict may have
    changed), so each takes 1 s to carry out."""
    engine = Engine(config(tmp_path, service("s", [9001])), sinks={"rec": TimedSink("rec")},
                    probe_factory=FakeProbe().factory(), run_blocking=slow_disk(1.0))
    svc = engine.services["s"]
    return engine, [engine.committer.stage(svc, None, "reload") for _ in range(count)]


async def test_commits_are_carried_out_in_order_one_at_a_time(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Submitting never waits for the disk; the committer's task carries commits out in
    the order submitted, each once the one before it is done."""
    engine, commits = no_op_commits(tmp_path, 3)
    done: dict[int, float] = {}

    async def watch(index: int, commit: Commit) -> None:
        await commit.done.wait()
        done[index] = trio.current_time()

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.committer.run)
        for index, commit in enumerate(commits):
            engine.committer.submit(commit)
            nursery.start_soon(watch, index, commit)
        assert trio.current_time() == 0.0
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert done == {0: 1.0, 1: 2.0, 2: 3.0}


async def test_the_committer_finishes_queued_commits_when_stopped(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Stopping the committer still carries out what was queued (a stop cuts no commit)."""
    engine, commits = no_op_commits(tmp_path, 3)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.committer.run)
        for commit in commits:
            engine.committer.submit(commit)
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert all(c.done.is_set() for c in commits)
    assert trio.current_time() == 3.0
