"""Probe lateness and event-loop lag: the late-probe warning without sorting per tick."""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing

from sentinel.engine.pacing import LATENESS_SAMPLES, Pacing
from sentinel.engine.slots import Slots


def test_running_late_agrees_with_the_p99_of_the_window() -> None:
    """`running_late` (a count of late samples kept as they come and go) says whether the
    p99 lateness `statistics` sorts out is past 100 ms, batch after batch, also once the
    window has let the first samples go and when all of it is late or none."""
    pacing, slots, rng = Pacing(), Slots(10), random.Random(7)
    answers = set()
    for share in (0.0, 0.005, 0.02, 0.0, 1.0, 0.0):
        for _ in range(2 * LATENESS_SAMPLES // 500):
            pacing.probes_started([rng.uniform(0.1001, 0.5) if rng.random() < share
                                   else rng.uniform(0.0, 0.05) for _ in range(500)])
            p99 = pacing.statistics(slots).lateness_p99_ms
            assert pacing.running_late() == (p99 > 100.0), (share, p99)
            answers.add(pacing.running_late())
    assert answers == {True, False}


def test_an_early_start_adds_nothing_to_the_lateness_sum() -> None:
    """The lateness sum counts only how late starts were: a negative lateness (an early
    start reported as is) adds nothing; every start is counted."""
    pacing = Pacing()
    pacing.probes_started([0.0, 0.25, 0.5])
    pacing.probes_started([-0.003, 0.125])
    pacing.probes_started([])
    stats = pacing.statistics(Slots(1))
    assert (stats.probes, stats.lateness_sum) == (5, 0.875)


async def test_late_probes_are_warned_about_once_in_30_seconds(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """With every probe 200 ms late, the lag watcher warns (p99 200 ms) at its next tick
    and not again within 30 s; on time again, it stays quiet."""
    pacing = Pacing()
    with caplog.at_level(logging.WARNING, logger="sentinel.engine.pacing"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pacing.watch_lag, Slots(5))
            pacing.probes_started([0.2] * 100)
            await trio.sleep(1)
            warned = [r.getMessage() for r in caplog.records]
            assert len(warned) == 1
            assert warned[0].startswith("probes are running late: p99 200ms")
            await trio.sleep(20)
            assert len(caplog.records) == 1
            pacing.probes_started([0.0] * LATENESS_SAMPLES)
            await trio.sleep(60)
            assert len(caplog.records) == 1
            nursery.cancel_scope.cancel()
