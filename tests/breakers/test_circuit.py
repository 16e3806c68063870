"""CircuitBreaker, event by event with explicit times."""

from __future__ import annotations

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
