"""init_state (HAProxy 3's init-state): where each breaker kind starts, and what its
first probe can do. Each case is a line of the kind's theory-of-operation timeline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.breakers import Change, Health, Transition, make_breaker
from sentinel.breakers.circuit import CircuitBreaker
from sentinel.breakers.threshold import ThresholdBreaker
from sentinel.config.model import (
    BreakerConfig,
    CircuitBreakerConfig,
    InitState,
    NginxBreakerConfig,
    ThresholdBreakerConfig,
)
from tests.breakers.strategies import (
    Probe,
    circuits,
    nginxes,
    probes,
    run_lengths,
    thresholds,
)

FIRST_FAILED = "first probe failed (init_state: up)"
FIRST_PASSED = "first probe passed (init_state: down)"
THRESHOLD = ThresholdBreakerConfig(rise=2, fall=3)
NGINX = NginxBreakerConfig(max_fails=3, fail_timeout=10.0, passes=2)
CIRCUIT = CircuitBreakerConfig(window=10.0, min_calls=3, failure_rate=0.5, open_for=5.0,
                               max_open_for=60.0, half_open_trials=2)
KINDS = [THRESHOLD, NGINX, CIRCUIT]


@pytest.mark.parametrize("config", KINDS)
@pytest.mark.parametrize(("start", "health"), [
    (InitState.FULLY_UP, Health.UP), (InitState.UP, Health.UP),
    (InitState.DOWN, Health.DOWN), (InitState.FULLY_DOWN, Health.DOWN)])
def test_start_health(config: BreakerConfig, start: InitState, health: Health) -> None:
    """fully-up and up start up, down and fully-down start down, for every kind."""
    assert make_breaker(config, start).health is health


def step(ok: bool, at: float, change: Change, health: Health, reason: str = ""
         ) -> tuple[bool, float, Transition]:
    """One line of a timeline: a result at a time and the breaker's answer."""
    return ok, at, Transition(change, health, reason)


UP, DOWN = Health.UP, Health.DOWN
CHANGED, PENDING, UNCHANGED = Change.CHANGED, Change.PENDING, Change.UNCHANGED
# (kind's settings, start, steps): the "Start states" timeline of each kind's module
TIMELINES = {
    "threshold-up-fails": (THRESHOLD, InitState.UP, [
        step(False, 0, CHANGED, DOWN, FIRST_FAILED)]),
    "threshold-up-passes": (THRESHOLD, InitState.UP, [
        step(True, 0, UNCHANGED, UP), step(False, 1, PENDING, UP, "1/3 towards down")]),
    "threshold-down-passes": (THRESHOLD, InitState.DOWN, [
        step(True, 0, CHANGED, UP, FIRST_PASSED)]),
    "threshold-down-fails": (THRESHOLD, InitState.DOWN, [
        step(False, 0, UNCHANGED, DOWN), step(True, 1, PENDING, DOWN, "1/2 towards up"),
        step(True, 2, CHANGED, UP, "2 consecutive successes")]),
    "threshold-fully-down": (THRESHOLD, InitState.FULLY_DOWN, [
        step(True, 0, PENDING, DOWN, "1/2 towards up")]),
    "threshold-fully-up": (THRESHOLD, InitState.FULLY_UP, [
        step(False, 0, PENDING, UP, "1/3 towards down"),
        step(False, 1, PENDING, UP, "2/3 towards down"),
        step(False, 2, CHANGED, DOWN, "3 consecutive failures")]),
    "nginx-up-fails": (NGINX, InitState.UP, [
        step(False, 0, CHANGED, DOWN, FIRST_FAILED),
        step(True, 9.5, UNCHANGED, DOWN),  # cooling until 10, as after any trip
        step(True, 10, PENDING, DOWN, "1/2 towards up")]),
    "nginx-up-passes": (NGINX, InitState.UP, [
        step(True, 0, UNCHANGED, UP), step(False, 1, PENDING, UP, "1/3 towards down")]),
    "nginx-down-passes": (NGINX, InitState.DOWN, [
        step(True, 0, CHANGED, UP, FIRST_PASSED)]),
    "nginx-down-fails": (NGINX, InitState.DOWN, [
        step(False, 0, UNCHANGED, DOWN, "trial failed; down for another 10s"),
        step(True, 10, PENDING, DOWN, "1/2 towards up")]),
    "nginx-fully-down": (NGINX, InitState.FULLY_DOWN, [
        step(True, 0, PENDING, DOWN, "1/2 towards up")]),
    "nginx-max-fails-0-up": (NginxBreakerConfig(max_fails=0), InitState.UP, [
        step(False, 0, UNCHANGED, UP)]),  # max_fails 0 never marks down
    "circuit-up-fails": (CIRCUIT, InitState.UP, [  # whatever min_calls says
        step(False, 0, CHANGED, DOWN, f"{FIRST_FAILED}; open for 5s"),
        step(True, 5, PENDING, DOWN, "half-open 1/2")]),
    "circuit-up-passes": (CIRCUIT, InitState.UP, [
        step(True, 0, UNCHANGED, UP), step(False, 1, PENDING, UP, "1/2 failed in 10s window")]),
    "circuit-down-passes": (CIRCUIT, InitState.DOWN, [
        step(True, 0, CHANGED, UP, FIRST_PASSED)]),
    "circuit-down-fails": (CIRCUIT, InitState.DOWN, [
        step(False, 0, UNCHANGED, DOWN, "half-open trial failed; open for 10s")]),
    "circuit-fully-down": (CIRCUIT, InitState.FULLY_DOWN, [
        step(True, 0, PENDING, DOWN, "half-open 1/2")]),
}


@pytest.mark.parametrize("name", TIMELINES)
def test_start_state_timeline(name: str) -> None:
    """Each kind's start-state timeline holds step by step: `up` hangs on a failed first
    probe, `down` on a passed one; afterwards (and for the fully- states) the kind
    counts as from a saved verdict."""
    config, start, steps = TIMELINES[name]
    b = make_breaker(config, start)
    for ok, at, expected in steps:
        assert b.observe(ok, at) == expected, (ok, at)


def test_circuit_up_opens_on_a_slow_first_call() -> None:
    """With slow_call set, a slow first call counts as bad for `init_state: up`."""
    b = CircuitBreaker(CircuitBreakerConfig(slow_call=1.0), InitState.UP)
    assert b.observe(True, 0, latency=2.0).reason == (
        "first probe too slow (2s) (init_state: up); open for 5s")


@given(st.one_of(thresholds, nginxes, circuits), st.sampled_from(list(InitState)), probes())
def test_only_the_first_probe_is_special(config: BreakerConfig, start: InitState,
                                         seq: list[Probe]) -> None:
    """Whatever the start, the breaker says CHANGED exactly when it flips, and only the
    first probe can give an init_state reason."""
    b = make_breaker(config, start)
    for i, p in enumerate(seq):
        before = b.health
        t = b.observe(p.ok, p.at, p.latency)
        assert (t.change is Change.CHANGED) == (b.health is not before)
        if i > 0:
            assert "init_state" not in t.reason


@given(thresholds, st.sampled_from(list(InitState)), probes())
def test_threshold_after_the_first_probe_needs_full_runs(
        config: ThresholdBreakerConfig, start: InitState, seq: list[Probe]) -> None:
    """From the second probe on, threshold flips only after a full run, as from a saved
    verdict; the first probe flips only for `up` (a failure) or `down` (a success)."""
    b = ThresholdBreaker(config, start)
    for i, (p, run) in enumerate(zip(seq, run_lengths(seq), strict=True)):
        t = b.observe(p.ok, p.at)
        if t.change is not Change.CHANGED:
            continue
        if i == 0:
            full = config.rise if p.ok else config.fall
            assert run >= full or start is (InitState.DOWN if p.ok else InitState.UP)
        else:
            assert run >= (config.rise if p.ok else config.fall)
