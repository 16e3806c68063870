"""CircuitBreaker, event by event with explicit times."""

from __future__ import annotations

import copy
import gc
import random
import tracemalloc
from collections import deque
from typing import Any

import pytest

from sentinel.breakers import Change, Health, Transition, make_breaker
from sentinel.breakers.circuit import CircuitBreaker
from sentinel.config.model import CircuitBreakerConfig
from sentinel.errors import IllegalTransition

UNCHANGED_UP = Transition(Change.UNCHANGED, Health.UP)
UNCHANGED_DOWN = Transition(Change.UNCHANGED, Health.DOWN)


def breaker(**kwargs: Any) -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerConfig(**kwargs))


def test_module_timeline() -> None:
    """The theory-of-operation timeline holds step by step."""
    b = breaker(window=10.0, min_calls=3, failure_rate=0.5, open_for=5.0, half_open_trials=2)
    assert b.observe(True, 0) == UNCHANGED_UP
    assert b.observe(False, 1) == Transition(Change.PENDING, Health.UP, "1/2 failed in 10s window")
    assert b.observe(False, 2) == Transition(
        Change.CHANGED, Health.DOWN, "2/3 calls failed in 10s (67% >= 50%); open for 5s"
    )
    assert b.retry_at() == 7
    assert b.observe(True, 3) == UNCHANGED_DOWN
    assert b.observe(False, 7) == Transition(
        Change.UNCHANGED, Health.DOWN, "half-open trial failed; open for 10s"
    )
    assert b.retry_at() == 17
    assert b.observe(True, 17) == Transition(Change.PENDING, Health.DOWN, "half-open 1/2")
    assert b.observe(True, 18) == Transition(
        Change.CHANGED, Health.UP, "2/2 half-open trials passed"
    )
    assert b.retry_at() is None


def test_min_calls_holds_the_circuit_closed() -> None:
    """Below min_calls even a 100% failure rate does not open the circuit."""
    b = breaker(min_calls=5)
    for t in range(4):
        assert b.observe(False, t) == Transition(
            Change.PENDING, Health.UP, f"{t + 1}/{t + 1} failed in 10s window"
        )
    assert b.observe(False, 4) == Transition(
        Change.CHANGED, Health.DOWN, "5/5 calls failed in 10s (100% >= 50%); open for 5s"
    )


def test_failure_rate_threshold_is_inclusive() -> None:
    """With min_calls met, the circuit opens once the failure rate reaches failure_rate."""
    b = breaker(min_calls=4, failure_rate=0.5)
    for t in range(3):
        b.observe(True, t)
    assert b.observe(False, 3).change is Change.PENDING  # 1/4
    assert b.observe(False, 4).change is Change.PENDING  # 2/5
    assert b.observe(False, 5) == Transition(
        Change.CHANGED, Health.DOWN, "3/6 calls failed in 10s (50% >= 50%); open for 5s"
    )


def test_calls_age_out_of_the_window() -> None:
    """Calls older than window seconds no longer count towards the rates or min_calls."""
    b = breaker(window=10.0, min_calls=3, failure_rate=0.5)
    b.observe(False, 0)
    b.observe(False, 1)
    assert b.observe(True, 10.5) == Transition(
        Change.PENDING, Health.UP, "1/2 failed in 10s window"
    )  # the call at 0 is gone
    assert b.observe(True, 11.5) == UNCHANGED_UP
    assert b.progress() == ""


def test_slow_call_rate_opens_the_circuit() -> None:
    """Successful but slow calls (latency > slow_call) open the circuit at slow_rate."""
    b = breaker(min_calls=2, slow_call=1.0, slow_rate=0.5)
    assert b.observe(True, 0, latency=1.5) == Transition(
        Change.PENDING, Health.UP, "0/1 failed, 1/1 slow in 10s window"
    )
    assert b.observe(True, 1, latency=0.2) == Transition(
        Change.CHANGED, Health.DOWN, "1/2 calls took over 1s in 10s (50% >= 50%); open for 5s"
    )


def test_fast_calls_are_not_slow() -> None:
    """Calls faster than slow_call count as neither slow nor bad."""
    b = breaker(min_calls=1, slow_call=1.0, slow_rate=0.5)
    assert b.observe(True, 0, latency=0.999) == UNCHANGED_UP


def test_a_call_exactly_as_long_as_slow_call_is_not_slow() -> None:
    """Slow means slower than slow_call, as the README says and resilience4j counts
    (`durationInMillis > slowCallDurationThreshold`): a call of exactly 1s is not slow,
    in a closed circuit or as a half-open trial."""
    b = breaker(min_calls=1, slow_call=1.0, slow_rate=0.5, open_for=5.0, half_open_trials=1)
    assert b.observe(True, 0, latency=1.0) == UNCHANGED_UP
    assert b.observe(False, 1).health is Health.DOWN
    assert b.observe(True, 6, latency=1.0) == Transition(
        Change.CHANGED, Health.UP, "1/1 half-open trials passed")


def test_latency_ignored_without_slow_call() -> None:
    """Without slow_call, latency never counts."""
    b = breaker(min_calls=1)
    assert b.observe(True, 0, latency=100.0) == UNCHANGED_UP


def test_open_ignores_results_until_retry_at() -> None:
    """While open, every result is UNCHANGED and retry_at stays put; progress shows open time."""
    b = breaker(min_calls=1, open_for=5.0)
    b.observe(False, 0)
    assert b.progress() == "open for 5s"
    assert b.observe(True, 1) == UNCHANGED_DOWN
    assert b.observe(False, 4.9) == UNCHANGED_DOWN
    assert b.retry_at() == 5


def test_open_for_doubles_and_is_capped() -> None:
    """Each re-open from half-open doubles open_for, never beyond max_open_for."""
    b = breaker(min_calls=1, open_for=5.0, max_open_for=18.0)
    b.observe(False, 0)
    assert b.retry_at() == 5
    assert b.observe(False, 5).reason == "half-open trial failed; open for 10s"
    assert b.retry_at() == 15
    assert b.observe(False, 15).reason == "half-open trial failed; open for 18s"
    assert b.retry_at() == 33
    assert b.observe(False, 33).reason == "half-open trial failed; open for 18s"
    assert b.retry_at() == 51


def test_close_resets_open_for() -> None:
    """After the circuit closes, the next trip opens for the base open_for again."""
    b = breaker(min_calls=1, open_for=5.0, half_open_trials=1)
    b.observe(False, 0)
    b.observe(False, 5)  # re-open for 10s
    assert b.observe(True, 15).change is Change.CHANGED
    assert b.observe(False, 16).reason.endswith("open for 5s")
    assert b.retry_at() == 21


def test_half_open_trials_count_up() -> None:
    """half_open_trials consecutive successes close the circuit, PENDING in between."""
    b = breaker(min_calls=1, half_open_trials=3)
    b.observe(False, 0)
    assert b.observe(True, 5) == Transition(Change.PENDING, Health.DOWN, "half-open 1/3")
    assert b.progress() == "half-open 1/3"
    assert b.observe(True, 6) == Transition(Change.PENDING, Health.DOWN, "half-open 2/3")
    assert b.observe(True, 7) == Transition(
        Change.CHANGED, Health.UP, "3/3 half-open trials passed"
    )


def test_half_open_failure_resets_trials() -> None:
    """A failure in half-open re-opens, and the next half-open starts its trials from zero."""
    b = breaker(min_calls=1, half_open_trials=2)
    b.observe(False, 0)
    b.observe(True, 5)
    assert b.observe(False, 6).change is Change.UNCHANGED
    assert b.health is Health.DOWN
    assert b.retry_at() == 16
    assert b.observe(True, 16).reason == "half-open 1/2"


def test_slow_trial_fails() -> None:
    """In half-open, an ok but slow call is a failed trial."""
    b = breaker(min_calls=1, slow_call=1.0)
    b.observe(False, 0)
    assert b.observe(True, 5, latency=2.5) == Transition(
        Change.UNCHANGED, Health.DOWN, "half-open trial too slow (2.5s); open for 10s"
    )


def test_closing_starts_a_fresh_window() -> None:
    """Calls from before the circuit opened do not count after it closes."""
    b = breaker(min_calls=3, half_open_trials=1)
    for t in range(3):
        b.observe(False, t)
    assert b.observe(True, 7).change is Change.CHANGED
    # the failures at 0, 1 and 2 are inside the 10s window but belong to the old one
    assert b.observe(False, 8) == Transition(Change.PENDING, Health.UP, "1/1 failed in 10s window")


def test_restored_down_is_half_open() -> None:
    """initial=DOWN starts half-open: retry_at None, and the first result is a trial."""
    b = CircuitBreaker(CircuitBreakerConfig(half_open_trials=2), Health.DOWN)
    assert b.health is Health.DOWN
    assert b.retry_at() is None
    assert b.progress() == "half-open 0/2"
    assert b.observe(True, 50) == Transition(Change.PENDING, Health.DOWN, "half-open 1/2")
    assert b.retry_at() == 50


def test_restored_down_failure_reopens_doubled() -> None:
    """initial=DOWN: a failed first trial re-opens with the doubled open_for."""
    b = CircuitBreaker(CircuitBreakerConfig(open_for=5.0), Health.DOWN)
    assert b.observe(False, 50).reason == "half-open trial failed; open for 10s"
    assert b.retry_at() == 60


def test_time_going_backwards_raises_and_changes_nothing() -> None:
    """An observation earlier than the previous one raises IllegalTransition and is not counted."""
    b = breaker(min_calls=2)
    b.observe(False, 3)
    with pytest.raises(IllegalTransition):
        b.observe(False, 2)
    assert b.progress() == "1/1 failed in 10s window"
    assert b.health is Health.UP


@pytest.mark.parametrize(
    "config",
    [
        CircuitBreakerConfig(window=-1.0),
        CircuitBreakerConfig(min_calls=0),
        CircuitBreakerConfig(failure_rate=-0.1),
        CircuitBreakerConfig(failure_rate=1.5),
        CircuitBreakerConfig(slow_rate=1.1),
        CircuitBreakerConfig(slow_call=-1.0),
        CircuitBreakerConfig(open_for=-1.0),
        CircuitBreakerConfig(open_for=10.0, max_open_for=5.0),
        CircuitBreakerConfig(half_open_trials=0),
    ],
)
def test_invalid_config_is_rejected(config: CircuitBreakerConfig) -> None:
    """Impossible settings raise ValueError at construction."""
    with pytest.raises(ValueError, match="circuit breaker"):
        CircuitBreaker(config)


def test_zero_open_for_makes_the_next_result_a_trial() -> None:
    """open_for: 0 (the loader allows it) opens and lets the very next result be a trial."""
    b = breaker(min_calls=1, open_for=0.0, max_open_for=0.0, half_open_trials=1)
    b.observe(False, 0)
    assert b.retry_at() == 0
    assert b.observe(True, 0).change is Change.CHANGED


def test_make_breaker_builds_circuit() -> None:
    """The registry maps CircuitBreakerConfig to CircuitBreaker."""
    b = make_breaker(CircuitBreakerConfig())
    assert isinstance(b, CircuitBreaker)
    assert b.health is Health.UP


def test_window_counts_match_a_recount_of_the_calls() -> None:
    """After every call, the window's counts and its oldest call's age are those of a
    recount of the calls within `window`, through bursts, gaps and thousands of calls
    leaving (the window drops departed calls in bulk)."""
    rng = random.Random(7)
    b = breaker(window=10.0, min_calls=1000, slow_call=1.0, slow_rate=1.0)
    kept: deque[tuple[float, bool, bool]] = deque()
    now = 0.0
    for _ in range(20_000):
        now += rng.choice([0.0, 0.05, 0.1, 0.1, 0.1, 0.25, 3.0, 15.0])
        ok, latency = rng.random() > 0.3, rng.choice([0.5, 0.5, 2.0])
        b.observe(ok, now, latency)
        kept.append((now, ok, latency > 1.0))
        while now - kept[0][0] > 10.0:
            kept.popleft()
        n = len(kept)
        failed, slow = sum(not k[1] for k in kept), sum(k[2] for k in kept)
        expected = f"{failed}/{n} failed, {slow}/{n} slow in 10s window"
        assert b.progress() == ("" if not failed and not slow else expected)
        assert b.state_key(now)[4:] == (n, failed, slow, round(kept[0][0] - now, 9))
    assert b.health is Health.UP


def test_copy_is_independent() -> None:
    """copy.copy (the detection budget branches breakers so) gives a breaker with the same
    state whose window moves on without touching the original's, and the other way round."""
    b = breaker(window=10.0, min_calls=100, slow_call=1.0)
    for t in range(200):
        b.observe(t % 4 != 0, t / 10, 2.0 if t % 5 == 0 else 0.0)
    twin = copy.copy(b)
    assert twin.state_key(20.0) == b.state_key(20.0)
    assert twin.progress() == b.progress() == "25/101 failed, 20/101 slow in 10s window"
    for t in range(200, 400):  # every call of the original's window leaves the twin's
        twin.observe(True, t / 10)
    assert twin.progress() == ""
    assert b.progress() == "25/101 failed, 20/101 slow in 10s window"
    assert b.observe(False, 20.0).reason == "26/101 failed, 20/101 slow in 10s window"
    assert twin.progress() == ""
    assert twin.observe(False, 40.0).reason == "1/101 failed, 0/101 slow in 10s window"


def _fed_and_traced(window: float, calls: int) -> tuple[CircuitBreaker, int]:
    """A breaker with `window`, fed `calls` ok calls 100ms apart from t=0, and the bytes
    it holds (tracemalloc; the times are made before tracing starts)."""
    times = [i / 10 for i in range(calls)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        b = breaker(window=window)
        for now in times:
            b.observe(True, now)
        gc.collect()
        return b, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_1h_window_at_100ms_takes_under_1mb() -> None:
    """A backend probed every 100ms with `window: 1h` keeps 36,000 calls in under 1 MB
    (about 9 to 13 bytes a call; a deque of call objects took 88, 3.2 MB)."""
    b, used = _fed_and_traced(3600.0, 60_000)  # the window full, and its first calls gone
    assert used < 1_000_000
    b.observe(False, 6000.0)
    assert b.progress() == "1/36001 failed in 3600s window"


def test_a_windows_memory_does_not_grow_with_time() -> None:
    """Calls that left the window give their memory back: a 6s window at 100ms, probed
    for an hour, holds under 10 KB."""
    b, used = _fed_and_traced(6.0, 36_000)
    assert used < 10_000
    b.observe(False, 3600.0)
    assert b.progress() == "1/61 failed in 6s window"
