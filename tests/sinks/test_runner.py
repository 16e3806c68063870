"""SinkRunner on a virtual clock: hand-off, coalescing, retry with backoff, apply timeout."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from sentinel.model import State
from sentinel.sinks.base import Update
from sentinel.sinks.runner import SinkRunner
from tests.sinks.fakes import TimedSink
from tests.sinks.views import update

SEED = 1234


def seqs(applied: list[tuple[float, Update]]) -> list[tuple[float, str, list[int]]]:
    """(time, service, event seqs) per applied update."""
    return [(t, u.view.service, [e.seq for e in u.events]) for t, u in applied]


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery cancelled at the end of the test (runners run forever)."""
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def start(nursery: trio.Nursery, sink: TimedSink, **kwargs: float) -> SinkRunner:
    """A started runner over `sink` with a seeded jitter source."""
    runner = SinkRunner(sink, rng=random.Random(SEED), **kwargs)  # type: ignore[arg-type]
    await nursery.start(runner.run)
    return runner


async def test_publish_is_applied_at_once(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """An update published to an idle runner is applied without delay."""
    sink = TimedSink()
    runner = await start(nursery, sink)
    runner.publish(update("web", 1))
    await runner.wait_idle()
    assert seqs(sink.applied) == [(0.0, "web", [1])]
    stats = runner.statistics()
    assert (stats.ok, stats.pending, stats.applied, stats.failures) == (True, 0, 1, 0)


async def test_burst_while_busy_coalesces_to_latest_view_with_all_events(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """Three updates published during a 5s apply arrive as one: newest view, events in order."""
    sink = TimedSink(delay=5.0)
    runner = await start(nursery, sink)
    runner.publish(update("web", 1))
    await trio.sleep(1.0)
    runner.publish(update("web", 2, state=State.DOWN))
    runner.publish(update("web", 3, state=State.UP))
    runner.publish(update("web", 4, state=State.DOWN))
    assert runner.statistics().pending == 1
    await runner.wait_idle()
    assert seqs(sink.applied) == [(5.0, "web", [1]), (10.0, "web", [2, 3, 4])]
    assert sink.applied[1][1].view.backends[0].state is State.DOWN


async def test_services_are_not_merged_with_each_other(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """Coalescing is per service: two services published while busy get one apply each."""
    sink = TimedSink(delay=1.0)
    runner = await start(nursery, sink)
    runner.publish(update("web", 1))
    runner.publish(update("api", 2))
    runner.publish(update("web", 3))
    await runner.wait_idle()
    assert seqs(sink.applied) == [(1.0, "web", [1, 3]), (2.0, "api", [2])]


async def test_failures_are_retried_with_exponential_backoff(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """Three failures: each retry waits an equal-jitter draw from the runner's seeded rng,
    in [0.25, 0.5], [0.5, 1], then [1, 2] s (the default Backoff: 0.5 s doubling)."""
    sink = TimedSink()
    sink.fail_next = 3
    runner = await start(nursery, sink)
    runner.publish(update("web", 1))
    await runner.wait_idle()
    expected = [0.0, 0.491613, 1.211980, 2.219471]  # waits 0.491613, 0.720366, 1.007491
    assert sink.calls == pytest.approx(expected, abs=1e-6)
    [(when, applied)] = sink.applied
    assert when == pytest.approx(expected[-1], abs=1e-6)
    assert [e.seq for e in applied.events] == [1]
    stats = runner.statistics()
    assert (stats.ok, stats.failures, stats.applied, stats.last_error) == (True, 3, 1, "")


async def test_update_published_during_backoff_is_merged_into_the_retry(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """A failed update is kept; a newer one joins it: the retry carries both events, newest view."""
    sink = TimedSink()
    sink.fail_next = 1
    runner = await start(nursery, sink)
    runner.publish(update("web", 1, state=State.DOWN))
    await trio.sleep(0.1)  # inside the first backoff (at least 0.25 s)
    runner.publish(update("web", 2, state=State.UP))
    await runner.wait_idle()
    [(when, merged)] = sink.applied
    assert when == sink.calls[1]
    assert [e.seq for e in merged.events] == [1, 2]
    assert merged.view.backends[0].state is State.UP


async def test_a_failing_service_does_not_hold_up_another(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """While `web` keeps failing and backs off, `api` on the same sink is applied at once."""
    sink = TimedSink()
    sink.failing.add("web")
    runner = await start(nursery, sink)
    runner.publish(update("web", 1))
    await trio.sleep(2.0)
    runner.publish(update("api", 2))
    await trio.sleep(0.01)
    assert seqs(sink.applied) == [(2.0, "api", [2])]
    assert runner.statistics().pending == 1
    assert not runner.statistics().ok


async def test_hanging_apply_is_cut_off_by_the_apply_timeout(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """An apply that never returns fails after apply_timeout and is retried after backoff."""
    sink = TimedSink()
    sink.hang = True
    runner = await start(nursery, sink, apply_timeout=2.0)
    runner.publish(update("web", 1))
    await trio.sleep(2.1)
    stats = runner.statistics()
    assert (stats.ok, stats.failures, stats.last_error) == (
        False, 1, "apply timed out after 2s")
    sink.hang = False
    await runner.wait_idle()
    assert 2.25 <= sink.calls[1] <= 2.5
    assert seqs(sink.applied) == [(sink.calls[1], "web", [1])]


async def test_a_crashing_sink_is_reported_and_retried(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """A non-SinkError exception (a sink bug) does not kill the runner: recorded, retried."""
    sink = TimedSink()
    sink.fail_with = RuntimeError
    sink.fail_next = 1
    runner = await start(nursery, sink)
    runner.publish(update("web", 1))
    await trio.sleep(0.1)
    assert runner.statistics().last_error == "RuntimeError: timed: failing on purpose"
    await runner.wait_idle()
    assert len(sink.applied) == 1


async def test_retire_stops_the_runner(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """After retire(), published updates stay pending and are never applied."""
    sink = TimedSink()
    runner = await start(nursery, sink)
    runner.retire()
    await trio.sleep(1.0)
    runner.publish(update("web", 1))
    await trio.sleep(1.0)
    assert sink.calls == []
    assert runner.statistics().to_json()["pending"] == 1


async def test_statistics_document_shape(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """The sink entry of /v1/state has ok, pending, applied, failures, last_error, last_success."""
    runner = await start(nursery, TimedSink())
    runner.publish(update("web", 1))
    await runner.wait_idle()
    doc = runner.statistics().to_json()
    assert set(doc) == {"ok", "pending", "applied", "failures", "last_error", "last_success"}
    assert (doc["ok"], doc["pending"], doc["applied"], doc["failures"], doc["last_error"]) == (
        True, 0, 1, 0, None)
    assert isinstance(doc["last_success"], float)


async def test_owed_seq_is_the_lowest_event_not_yet_applied(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """What a cluster leader records as delivered stops below the first event a sink still
    owes: pending, being applied (a slow apply), or waiting to be retried; none once all
    are applied."""
    sink = TimedSink(delay=1.0)
    sink.failing = {"api"}
    runner = await start(nursery, sink)
    assert runner.owed_seq() is None
    runner.publish(update("web", 3, 4))
    runner.publish(update("api", 5))
    assert runner.owed_seq() == 3  # pending
    await trio.sleep(0.5)
    assert runner.owed_seq() == 3  # web's apply takes a second
    await trio.sleep(1.0)
    assert runner.owed_seq() == 5  # web applied; api failing, waiting to be retried
    sink.failing = set()
    await runner.wait_idle()
    assert runner.owed_seq() is None
