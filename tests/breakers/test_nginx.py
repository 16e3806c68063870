"""NginxBreaker, event by event with explicit times."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.breakers import Change, Health, Transition, make_breaker
from sentinel.breakers.nginx import NginxBreaker
from sentinel.config.model import NginxBreakerConfig
from sentinel.errors import IllegalTransition

UNCHANGED_UP = Transition(Change.UNCHANGED, Health.UP)
UNCHANGED_DOWN = Transition(Change.UNCHANGED, Health.DOWN)


def pending_down(n: int, of: int) -> Transition:
    return Transition(Change.PENDING, Health.UP, f"{n}/{of} towards down")


def breaker(**kwargs: Any) -> NginxBreaker:
    return NginxBreaker(NginxBreakerConfig(**kwargs))


def test_module_timeline() -> None:
    """The theory-of-operation timeline holds step by step."""
    b = breaker(max_fails=3, fail_timeout=10.0, passes=2)
    assert b.observe(False, 0) == pending_down(1, 3)
    assert b.observe(True, 4) == pending_down(1, 3)
    assert b.observe(False, 6) == pending_down(2, 3)
    assert b.observe(False, 9) == Transition(Change.CHANGED, Health.DOWN, "3 failures within 10s")
    assert b.retry_at() == 19
    assert b.observe(True, 12) == UNCHANGED_DOWN
    assert b.observe(False, 19) == Transition(
        Change.UNCHANGED, Health.DOWN, "trial failed; down for another 10s"
    )
    assert b.retry_at() == 29
    assert b.observe(True, 29) == Transition(Change.PENDING, Health.DOWN, "1/2 towards up")
    assert b.observe(True, 31) == Transition(Change.CHANGED, Health.UP, "2/2 trial probes passed")
    assert b.health is Health.UP
    assert b.retry_at() is None


def test_defaults_one_failure_marks_down() -> None:
    """With nginx's defaults (max_fails 1, fail_timeout 10s) one failure marks down for 10s."""
    b = breaker()
    assert b.observe(True, 0) == UNCHANGED_UP
    assert b.observe(False, 1.5) == Transition(Change.CHANGED, Health.DOWN, "1 failure within 10s")
    assert b.health is Health.DOWN
    assert b.retry_at() == 11.5


def test_results_before_retry_at_are_ignored() -> None:
    """While cooling, successes and failures alike are UNCHANGED and leave retry_at alone."""
    b = breaker()
    b.observe(False, 0)
    assert b.observe(True, 3) == UNCHANGED_DOWN
    assert b.observe(False, 6) == UNCHANGED_DOWN
    assert b.observe(True, 9.999) == UNCHANGED_DOWN
    assert b.retry_at() == 10
    assert b.progress() == ""


def test_trial_at_exactly_retry_at() -> None:
    """The first result at retry_at itself is the trial; with passes 1 it brings the backend up."""
    b = breaker(fail_timeout=5.0)
    b.observe(False, 0)
    assert b.observe(True, 5) == Transition(Change.CHANGED, Health.UP, "1/1 trial probes passed")


def test_failed_trial_starts_another_fail_timeout() -> None:
    """A failed trial keeps the backend down for another fail_timeout from the trial's time."""
    b = breaker(fail_timeout=10.0)
    b.observe(False, 0)
    b.observe(False, 12)
    assert b.retry_at() == 22
    assert b.observe(True, 21) == UNCHANGED_DOWN
    assert b.observe(True, 22).change is Change.CHANGED


def test_passes_two_needs_two_trial_successes() -> None:
    """passes: 2 reports "1/2 towards up" after one trial success and goes up on the second."""
    b = breaker(passes=2)
    b.observe(False, 0)
    assert b.observe(True, 10) == Transition(Change.PENDING, Health.DOWN, "1/2 towards up")
    assert b.progress() == "1/2 towards up"
    assert b.health is Health.DOWN
    assert b.observe(True, 11) == Transition(Change.CHANGED, Health.UP, "2/2 trial probes passed")


def test_failure_during_passes_restarts_the_count() -> None:
    """A failure between trial successes sends the backend cooling and the passes start over."""
    b = breaker(passes=2)
    b.observe(False, 0)
    b.observe(True, 10)
    assert b.observe(False, 11).reason == "trial failed; down for another 10s"
    assert b.progress() == ""
    assert b.retry_at() == 21
    assert b.observe(True, 21).change is Change.PENDING
    assert b.observe(True, 22).change is Change.CHANGED


def test_max_fails_zero_never_marks_down() -> None:
    """max_fails: 0 disables accounting: any number of failures leaves the backend UP, settled."""
    b = breaker(max_fails=0)
    for t in range(100):
        assert b.observe(False, float(t)) == UNCHANGED_UP
    assert b.progress() == ""


def test_max_fails_zero_restored_down_still_recovers() -> None:
    """max_fails: 0 restored DOWN comes back up on its trial probe."""
    b = NginxBreaker(NginxBreakerConfig(max_fails=0), Health.DOWN)
    assert b.observe(True, 3).change is Change.CHANGED
    assert b.health is Health.UP


def test_sliding_failures_age_out() -> None:
    """Sliding window: a failure older than fail_timeout no longer counts towards max_fails."""
    b = breaker(max_fails=3, fail_timeout=10.0)
    assert b.observe(False, 0) == pending_down(1, 3)
    assert b.observe(False, 5) == pending_down(2, 3)
    assert b.observe(False, 11) == pending_down(2, 3)  # the failure at 0 is 11s old
    assert b.observe(False, 14).change is Change.CHANGED  # 5, 11, 14


def test_sliding_failure_exactly_fail_timeout_old_still_counts() -> None:
    """Sliding window is inclusive: a failure exactly fail_timeout old is still within it."""
    b = breaker(max_fails=2, fail_timeout=10.0)
    b.observe(False, 0)
    assert b.observe(False, 10) == Transition(Change.CHANGED, Health.DOWN, "2 failures within 10s")


def test_sliding_window_empties_to_unchanged() -> None:
    """Once every failure has aged out, a success is UNCHANGED and progress is empty."""
    b = breaker(max_fails=3, fail_timeout=10.0)
    b.observe(False, 0)
    assert b.observe(True, 8) == pending_down(1, 3)
    assert b.observe(True, 10.5) == UNCHANGED_UP
    assert b.progress() == ""


def test_sliding_success_does_not_clear_failures() -> None:
    """Sliding window: successes between failures do not reset the count."""
    b = breaker(max_fails=3, fail_timeout=10.0)
    b.observe(False, 0)
    b.observe(True, 1)
    b.observe(False, 2)
    b.observe(True, 3)
    assert b.observe(False, 4).change is Change.CHANGED


# The issue 599 sequence: failures 8s apart with successes every 2s in between.
ISSUE_599 = [(False, 0), (True, 2), (True, 4), (True, 6), (False, 8), (True, 10), (True, 12)]
ISSUE_599 += [(True, 14), (False, 16)]


def test_sliding_vs_chained_issue_599() -> None:
    """The same sequence stays up in a sliding window but goes down chained, as nginx does."""
    sliding = breaker(max_fails=3, fail_timeout=10.0)
    chained = breaker(max_fails=3, fail_timeout=10.0, window="chained")
    for ok, t in ISSUE_599:
        s, c = sliding.observe(ok, t), chained.observe(ok, t)
    assert s == pending_down(2, 3)
    assert c == Transition(
        Change.CHANGED, Health.DOWN, "3 failures with no success 10s clear of them"
    )


def test_chained_success_within_fail_timeout_forgives_nothing() -> None:
    """Chained: a success no more than fail_timeout after the last failure leaves the count."""
    b = breaker(max_fails=3, fail_timeout=10.0, window="chained")
    b.observe(False, 0)
    assert b.observe(True, 10) == pending_down(1, 3)  # nginx: now - checked > fail_timeout is false


def test_chained_success_after_fail_timeout_forgives_all() -> None:
    """Chained: a success more than fail_timeout after the last failure resets the count to 0."""
    b = breaker(max_fails=3, fail_timeout=10.0, window="chained")
    b.observe(False, 0)
    b.observe(False, 5)
    assert b.observe(True, 15.5) == UNCHANGED_UP
    assert b.progress() == ""
    assert b.observe(False, 16) == pending_down(1, 3)


def test_chained_failures_never_age_out() -> None:
    """Chained: failures far apart with no success in between keep counting (nginx's fails++)."""
    chained = breaker(max_fails=3, fail_timeout=10.0, window="chained")
    sliding = breaker(max_fails=3, fail_timeout=10.0)
    for t in (0, 20, 40):
        c, s = chained.observe(False, t), sliding.observe(False, t)
    assert c.change is Change.CHANGED
    assert s == pending_down(1, 3)


def test_recovery_clears_old_failures() -> None:
    """After coming back up the failure count starts from zero."""
    b = breaker(max_fails=2, fail_timeout=10.0)
    b.observe(False, 0)
    b.observe(False, 1)
    b.observe(True, 11)
    assert b.observe(False, 11.5) == pending_down(1, 2)


def test_restored_down_first_probe_is_a_trial() -> None:
    """initial=DOWN: retry_at is None until the first probe, which is a trial at its own time."""
    b = NginxBreaker(NginxBreakerConfig(passes=2), Health.DOWN)
    assert b.health is Health.DOWN
    assert b.retry_at() is None
    assert b.observe(True, 100) == Transition(Change.PENDING, Health.DOWN, "1/2 towards up")
    assert b.retry_at() == 100


def test_restored_down_failed_trial_cools() -> None:
    """initial=DOWN: a failed first probe starts a fail_timeout from its time."""
    b = NginxBreaker(NginxBreakerConfig(fail_timeout=3.0), Health.DOWN)
    assert b.observe(False, 100).change is Change.UNCHANGED
    assert b.retry_at() == 103
    assert b.observe(True, 102) == UNCHANGED_DOWN


def test_time_going_backwards_raises_and_changes_nothing() -> None:
    """An observation earlier than the previous one raises IllegalTransition and is not counted."""
    b = breaker(max_fails=2)
    b.observe(False, 5)
    with pytest.raises(IllegalTransition):
        b.observe(False, 4)
    assert b.health is Health.UP
    assert b.progress() == "1/2 towards down"
    assert b.observe(False, 5).change is Change.CHANGED


@pytest.mark.parametrize(
    "config",
    [
        NginxBreakerConfig(max_fails=-1),
        NginxBreakerConfig(fail_timeout=-1.0),
        NginxBreakerConfig(passes=0),
        NginxBreakerConfig(window="tumbling"),  # type: ignore[arg-type]
    ],
)
def test_invalid_config_is_rejected(config: NginxBreakerConfig) -> None:
    """Nonsense settings raise ValueError at construction."""
    with pytest.raises(ValueError, match="nginx breaker"):
        NginxBreaker(config)


def test_make_breaker_builds_nginx() -> None:
    """The registry maps NginxBreakerConfig to NginxBreaker and passes the initial verdict."""
    b = make_breaker(NginxBreakerConfig(), Health.DOWN)
    assert isinstance(b, NginxBreaker)
    assert b.health is Health.DOWN
