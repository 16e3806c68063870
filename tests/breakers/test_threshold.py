"""ThresholdBreaker (HAProxy rise/fall), event by event with explicit times."""

from __future__ import annotations

import pytest

from sentinel.breakers import Change, Health, Transition, make_breaker
from sentinel.breakers.threshold import ThresholdBreaker
from sentinel.config.model import ThresholdBreakerConfig
from sentinel.errors import IllegalTransition


def test_module_timeline() -> None:
    """The theory-of-operation timeline (rise 2, fall 3) holds step by step."""
    b = ThresholdBreaker(ThresholdBreakerConfig(rise=2, fall=3))
    assert b.observe(False, 1) == Transition(Change.PENDING, Health.UP, "1/3 towards down")
    assert b.observe(True, 2) == Transition(Change.UNCHANGED, Health.UP)
    assert b.observe(False, 3) == Transition(Change.PENDING, Health.UP, "1/3 towards down")
    assert b.observe(False, 4) == Transition(Change.PENDING, Health.UP, "2/3 towards down")
    assert b.observe(False, 5) == Transition(Change.CHANGED, Health.DOWN, "3 consecutive failures")
    assert b.observe(True, 6) == Transition(Change.PENDING, Health.DOWN, "1/2 towards up")
    assert b.observe(True, 7) == Transition(Change.CHANGED, Health.UP, "2 consecutive successes")


def test_defaults_are_haproxy_rise_2_fall_3() -> None:
    """With the defaults it takes exactly 3 failures down and 2 successes up."""
    b = ThresholdBreaker(ThresholdBreakerConfig())
    changes = [b.observe(False, t).change for t in (0, 1, 2)]
    assert changes == [Change.PENDING, Change.PENDING, Change.CHANGED]
    changes = [b.observe(True, t).change for t in (3, 4)]
    assert changes == [Change.PENDING, Change.CHANGED]


def test_failure_breaks_a_rising_run() -> None:
    """While down, one failure sends the count towards up back to zero."""
    b = ThresholdBreaker(ThresholdBreakerConfig(rise=3, fall=1), Health.DOWN)
    assert b.observe(True, 0).reason == "1/3 towards up"
    assert b.observe(True, 1).reason == "2/3 towards up"
    assert b.observe(False, 2) == Transition(Change.UNCHANGED, Health.DOWN)
    assert b.progress() == ""
    assert b.observe(True, 3).reason == "1/3 towards up"


def test_success_breaks_a_falling_run() -> None:
    """While up, one success sends the count towards down back to zero."""
    b = ThresholdBreaker(ThresholdBreakerConfig(rise=1, fall=3))
    b.observe(False, 0)
    assert b.progress() == "1/3 towards down"
    b.observe(False, 1)
    assert b.progress() == "2/3 towards down"
    assert b.observe(True, 2) == Transition(Change.UNCHANGED, Health.UP)
    assert b.progress() == ""
    assert b.observe(False, 3).reason == "1/3 towards down"


def test_settled_results_are_unchanged() -> None:
    """Successes while fully up and failures while fully down are UNCHANGED with no reason."""
    up = ThresholdBreaker(ThresholdBreakerConfig())
    down = ThresholdBreaker(ThresholdBreakerConfig(), Health.DOWN)
    assert up.observe(True, 0) == Transition(Change.UNCHANGED, Health.UP)
    assert down.observe(False, 0) == Transition(Change.UNCHANGED, Health.DOWN)
    assert up.progress() == down.progress() == ""


def test_rise_1_fall_1_flips_on_every_change() -> None:
    """rise 1 / fall 1 follows each result, with singular reasons."""
    b = ThresholdBreaker(ThresholdBreakerConfig(rise=1, fall=1))
    assert b.observe(False, 0) == Transition(Change.CHANGED, Health.DOWN, "1 consecutive failure")
    assert b.observe(True, 1) == Transition(Change.CHANGED, Health.UP, "1 consecutive success")


def test_restored_down_starts_at_zero() -> None:
    """initial=DOWN starts at the bottom of the counter: rise successes are needed."""
    b = ThresholdBreaker(ThresholdBreakerConfig(rise=2, fall=3), Health.DOWN)
    assert b.health is Health.DOWN
    assert b.progress() == ""
    assert b.observe(True, 0).change is Change.PENDING
    assert b.observe(True, 1).change is Change.CHANGED


def test_retry_at_is_always_none() -> None:
    """The threshold kind never asks the engine to hold off: retry_at() is None, up or down."""
    b = ThresholdBreaker(ThresholdBreakerConfig(fall=1))
    assert b.retry_at() is None
    b.observe(False, 0)
    assert b.health is Health.DOWN
    assert b.retry_at() is None


def test_latency_is_ignored() -> None:
    """Latency has no effect on the threshold kind."""
    b = ThresholdBreaker(ThresholdBreakerConfig())
    assert b.observe(True, 0, latency=1e6) == Transition(Change.UNCHANGED, Health.UP)


def test_time_going_backwards_raises_and_changes_nothing() -> None:
    """An observation earlier than the previous one raises IllegalTransition and is not counted."""
    b = ThresholdBreaker(ThresholdBreakerConfig(fall=2))
    b.observe(False, 10)
    with pytest.raises(IllegalTransition):
        b.observe(False, 9)
    assert b.health is Health.UP
    assert b.progress() == "1/2 towards down"


@pytest.mark.parametrize("config", [ThresholdBreakerConfig(rise=0), ThresholdBreakerConfig(fall=0)])
def test_invalid_config_is_rejected(config: ThresholdBreakerConfig) -> None:
    """rise or fall below 1 raise ValueError at construction."""
    with pytest.raises(ValueError, match="threshold breaker"):
        ThresholdBreaker(config)


def test_make_breaker_builds_threshold() -> None:
    """The registry maps ThresholdBreakerConfig to ThresholdBreaker."""
    b = make_breaker(ThresholdBreakerConfig(), Health.DOWN)
    assert isinstance(b, ThresholdBreaker)
    assert b.health is Health.DOWN
