"""Backoff timing on Trio's MockClock: exact virtual times of every attempt.

Real sockets cannot run under an autojumping clock (the clock would jump while a
reply is on its way), so these tests answer through httpx's in-package
MockTransport; the loopback tests in test_delivery.py cover the real wire.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tests.sinks.webhook.conftest import MakeSink, event, until, update

EPOCH = 1_700_000_000.0


def wall() -> float:
    """Unix time that moves with Trio's (mock) clock."""
    return EPOCH + trio.current_time()


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    """Run an outbox call on the loop itself: virtual time stands still meanwhile."""
    return fn(*args)


def answering(statuses: list[int], times: list[float],
              extra: Callable[[int], dict[str, str]] = lambda _: {}) -> httpx.MockTransport:
    """A transport answering with `statuses` in turn (then 200), noting each attempt's time."""

    def handle(request: httpx.Request) -> httpx.Response:
        n = len(times)
        times.append(trio.current_time())
        status = statuses[n] if n < len(statuses) else 200
        return httpx.Response(status, headers=extra(n))

    return httpx.MockTransport(handle)


@pytest.mark.trio
@pytest.mark.parametrize("clock", [trio.testing.MockClock(autojump_threshold=0)])
async def test_retries_follow_full_jitter_exponential_backoff(
        make_sink: MakeSink, clock: trio.testing.MockClock) -> None:
    """Each retry waits a full-jitter draw below its ceiling (1, 2, 4, then max_delay 8 s):
    with the generator seeded, every attempt's virtual time is pinned."""
    times: list[float] = []
    sink = await make_sink("http://receiver.invalid/hook", initial_delay=1.0, max_delay=8.0,
                           sink_kwargs={"wall": wall, "offload": inline, "rng": random.Random(5),
                                        "transport": answering([500] * 6, times)})
    start = trio.current_time()
    await sink.apply(update(event()))
    await until(sink, lambda s: s.delivered >= 1, 1, within=1000)
    # waits 0.622902, 1.483574, 3.180774, 7.539602, 5.919189, 7.378600: Random(5)'s
    # uniform draws in [0, 1], [0, 2], [0, 4], then [0, 8]
    expected = [0.0, 0.622902, 2.106476, 5.287250, 12.826852, 18.746041, 26.124641]
    assert times == pytest.approx([start + t for t in expected], abs=1e-6)
    assert max(b - a for a, b in itertools.pairwise(times)) <= 8.0


@pytest.mark.trio
@pytest.mark.parametrize("clock", [trio.testing.MockClock(autojump_threshold=0)])
@pytest.mark.parametrize("status", [503, 429])
async def test_retry_after_sets_the_next_attempt(make_sink: MakeSink,
                                                 clock: trio.testing.MockClock,
                                                 status: int) -> None:
    """503 or 429 with Retry-After: 42 is retried exactly 42 s later, whatever the backoff
    says."""
    times: list[float] = []
    transport = answering([status], times, lambda n: {"retry-after": "42"} if n == 0 else {})
    sink = await make_sink("http://receiver.invalid/hook", initial_delay=0.5,
                           sink_kwargs={"wall": wall, "offload": inline, "transport": transport})
    await sink.apply(update(event()))
    await until(sink, lambda s: s.delivered >= 1, 1, within=1000)
    assert times[1] - times[0] == pytest.approx(42.0, abs=1e-6)


@pytest.mark.trio
@pytest.mark.parametrize("clock", [trio.testing.MockClock(autojump_threshold=0)])
async def test_a_slow_answer_is_abandoned_at_the_timeout(make_sink: MakeSink,
                                                       clock: trio.testing.MockClock) -> None:
    """An answer that would take 1 s is given up exactly `timeout` (0.2 s) after its
    attempt began, and the retry follows the backoff drawn from then."""
    times: list[float] = []

    async def slow_first(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) == 1:
            await trio.sleep(1.0)
        return httpx.Response(200)

    sink = await make_sink("http://receiver.invalid/hook", timeout=0.2, initial_delay=1.0,
                           max_delay=8.0,
                           sink_kwargs={"wall": wall, "offload": inline, "rng": random.Random(5),
                                        "transport": httpx.MockTransport(slow_first)})
    start = trio.current_time()
    await sink.apply(update(event()))
    await until(sink, lambda s: s.delivered >= 1, 1, within=1000)
    # the first full-jitter wait Random(5) draws in [0, 1] s: 0.622902
    assert times == pytest.approx([start, start + 0.2 + 0.622902], abs=1e-6)
    assert sink.statistics().last_error == "timed out after 0.2s"


@pytest.mark.trio
@pytest.mark.parametrize("clock", [trio.testing.MockClock(autojump_threshold=0)])
async def test_last_attempt_at_the_give_up_age_then_dead_letter(
        make_sink: MakeSink, clock: trio.testing.MockClock) -> None:
    """A receiver failing for ever: attempts back off until `give_up_after`, the last one
    lands exactly at the give-up age, and the event becomes a dead letter."""
    times: list[float] = []
    sink = await make_sink("http://receiver.invalid/hook", initial_delay=10.0,
                           max_delay=60.0, give_up_after=300.0,
                           sink_kwargs={"wall": wall, "offload": inline,
                                        "transport": answering([502] * 99, times)})
    start = trio.current_time()
    await sink.apply(update(event()))
    await until(sink, lambda s: s.outbox.dead >= 1, 5, within=10_000)
    assert times[-1] - start == pytest.approx(300.0, abs=1e-6)
    assert all(b - a <= 60.0 + 1e-6 for a, b in itertools.pairwise(times))
    [dead] = await sink.entries(dead=True, limit=1)
    assert dead.attempts == len(times)
    assert dead.last_error.startswith(f"gave up after {len(times)} attempts in 300s")
