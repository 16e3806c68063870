"""The detection budgets `sentinel check` prints (sentinel.engine.budget): pinned for ordinary
settings of every breaker kind, so a faster simulation cannot change a number."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.breakers import Change, Health, Transition, make_breaker
from sentinel.config.model import (
    BackendConfig,
    BreakerConfig,
    CheckConfig,
    CircuitBreakerConfig,
    NginxBreakerConfig,
    ProbeConfig,
    ServiceConfig,
    ThresholdBreakerConfig,
    Timing,
)
from sentinel.engine.budget import PHASES, Plan, _counts, _horizon, compute_budget
from sentinel.engine.schedule import next_due


def service(timing: Timing, breaker: BreakerConfig) -> ServiceConfig:
    """One service with one backend, probed with `timing`, judged by `breaker`."""
    return ServiceConfig(name="s", backends=(BackendConfig("b", "h:1", "h", 1),),
                         probe=ProbeConfig(timing=timing), breaker=breaker)


# (id, timing, breaker, death -> removal, recovery -> return), as the simulation that ran
# every phase from t=0 computed them.
PINNED = [
    ("threshold-defaults", Timing(),
     ThresholdBreakerConfig(),
     7.0, 4.0),
    ("threshold-fast-down", Timing(fast_interval=0.2, down_interval=5),
     ThresholdBreakerConfig(),
     5.0, 5.2),
    ("threshold-jitter",
     Timing(interval=1, fast_interval=0.5, down_interval=3, timeout=0.5, jitter=0.2),
     ThresholdBreakerConfig(rise=3, fall=2),
     2.3, 4.8),
    ("nginx-defaults", Timing(),
     NginxBreakerConfig(),
     3.0, 11.0),
    ("nginx-sliding", Timing(interval=1, fast_interval=0.2, timeout=0.5),
     NginxBreakerConfig(max_fails=3, passes=2),
     2.5, 10.7),
    ("nginx-chained", Timing(interval=1, fast_interval=0.2, timeout=0.5),
     NginxBreakerConfig(max_fails=3, passes=2, window='chained'),
     2.5, 10.7),
    ("nginx-short-window", Timing(fast_interval=1),
     NginxBreakerConfig(max_fails=2, fail_timeout=1.5),
     4.0, 2.5),
    ("nginx-chained-short", Timing(fast_interval=1),
     NginxBreakerConfig(max_fails=2, fail_timeout=1.5, window='chained'),
     4.0, 2.5),
    ("nginx-down-interval", Timing(interval=1, down_interval=4, timeout=0.3, jitter=0.1),
     NginxBreakerConfig(max_fails=2, fail_timeout=3, passes=3),
     3.6, 8.8),
    ("nginx-max-fails-0", Timing(),
     NginxBreakerConfig(max_fails=0),
     None, 11.0),
    ("circuit-defaults", Timing(),
     CircuitBreakerConfig(),
     7.0, 65.0),
    ("circuit-fast", Timing(interval=0.5, fast_interval=0.1, timeout=0.1),
     CircuitBreakerConfig(window=5, min_calls=3, open_for=2, max_open_for=30, half_open_trials=2),
     1.3, 30.2),
    ("circuit-slow-call", Timing(interval=1, timeout=0.8),
     CircuitBreakerConfig(failure_rate=0.6, slow_call=0.5, slow_rate=0.5),
     9.0, 64.8),
    ("circuit-low-rate", Timing(interval=1, fast_interval=0.25, timeout=0.5, jitter=0.05),
     CircuitBreakerConfig(window=20, min_calls=10, failure_rate=0.1, open_for=3, max_open_for=3),
     2.05, 4.025),
    ("circuit-window-short", Timing(),
     CircuitBreakerConfig(window=1, min_calls=2),
     None, 65.0),
]


@pytest.mark.parametrize(("timing", "breaker", "to_down", "to_up"),
                         [case[1:] for case in PINNED], ids=[case[0] for case in PINNED])
def test_pinned_budgets(timing: Timing, breaker: BreakerConfig, to_down: float | None,
                        to_up: float | None) -> None:
    """Each ordinary config keeps the budget it had (to float noise)."""
    budget = compute_budget(service(timing, breaker))
    assert (budget.to_down, budget.to_up) == (
        pytest.approx(to_down, abs=1e-6) if to_down is not None else None,
        pytest.approx(to_up, abs=1e-6) if to_up is not None else None)


# The simulation before settling was recognised: every phase run from t=0, the change
# tried at PHASES probes after ten horizons. Slow, but plainly right: the reference.
def _reference(svc: ServiceConfig, want: Health) -> float | None:
    def probes(change_at: float, latency: float) -> Iterator[tuple[float, float, Transition]]:
        timing = svc.probe.timing
        breaker = make_breaker(svc.breaker, Health.DOWN if want is Health.UP else Health.UP)
        due = 0.0
        while True:
            started = due
            alive = (started > change_at) if want is Health.UP else (started <= change_at)
            now = started + (0.0 if alive else latency)
            transition = breaker.observe(alive, now, now - started)
            yield started, now, transition
            due = next_due(timing, transition, breaker.retry_at(), started, now, timing.jitter)

    worst = 0.0
    for latency in {0.0, svc.probe.timing.timeout}:
        points = [s for s, _, _ in itertools.islice(
            (p for p in probes(math.inf, latency) if p[0] >= 10 * _horizon(Plan.of(svc))), PHASES)]
        for change_at in points:
            limit = change_at + _horizon(Plan.of(svc)) * (4 + _counts(Plan.of(svc)))
            for started, now, transition in probes(change_at, latency):
                if started <= change_at:
                    continue
                if transition.change is Change.CHANGED and transition.health is want:
                    worst = max(worst, now - change_at)
                    break
                if now > limit:
                    return None
    return worst


# Binary fractions only: sums of these are exact in floats, so a failure exactly
# fail_timeout old is exactly that old at any time (with 0.1s steps float noise decides
# such ties, differently at t=2 than at t=2000).
durations = st.sampled_from([0.125, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
timings = st.builds(Timing, interval=durations, fast_interval=durations,
                    down_interval=durations, timeout=st.sampled_from([0.0625, 0.125]),
                    jitter=st.sampled_from([0.0, 0.125]))
breakers = st.one_of(
    st.builds(ThresholdBreakerConfig, rise=st.integers(1, 4), fall=st.integers(1, 4)),
    st.builds(NginxBreakerConfig, max_fails=st.integers(0, 4), fail_timeout=durations,
              passes=st.integers(1, 3), window=st.sampled_from(["sliding", "chained"])),
    st.builds(CircuitBreakerConfig, window=durations, min_calls=st.integers(1, 5),
              failure_rate=st.sampled_from([0.25, 0.5, 1.0]),
              slow_call=st.sampled_from([None, 0.0625, 0.09375]),
              slow_rate=st.sampled_from([0.5, 1.0]),
              open_for=durations, max_open_for=st.sampled_from([3.0, 4.0]),
              half_open_trials=st.integers(1, 3)))


@settings(max_examples=200, deadline=None)
@given(timings, breakers)
def test_recognising_settled_runs_changes_no_budget(timing: Timing,
                                                    breaker: BreakerConfig) -> None:
    """Trying the change only within the first repeat of a settled run gives what trying
    it at every phase ten horizons on gives."""
    svc = service(timing, breaker)
    budget = compute_budget(svc)
    for want, got in ((Health.DOWN, budget.to_down), (Health.UP, budget.to_up)):
        expected = _reference(svc, want)
        assert (got is None) == (expected is None), (want, got, expected)
        if got is not None:
            assert got == pytest.approx(expected, abs=1e-6), want


@pytest.mark.parametrize(("timing", "breaker", "to_down", "to_up"), [
    (Timing(interval=0.1, fast_interval=0.1, down_interval=0.1, timeout=0.05),
     NginxBreakerConfig(max_fails=3, fail_timeout=3600.0), 0.35, 3600.05),
    (Timing(interval=1.0, fast_interval=12000.0, down_interval=1.0, timeout=1.0),
     NginxBreakerConfig(), 2.0, 11.0),
    (Timing(interval=0.1, fast_interval=0.1, down_interval=0.1, timeout=0.05),
     CircuitBreakerConfig(window=3600.0), 1800.05, 60.25),
], ids=["fail-timeout-1h-at-100ms", "fast-interval-200m", "circuit-window-1h-at-100ms"])
def test_the_slow_cases(timing: Timing, breaker: BreakerConfig, to_down: float,
                        to_up: float) -> None:
    """The settings that took `check` a minute or more (issue 12): right answers (a 1h
    circuit window at 100ms needs 18,000 failures among 36,000 calls: half an hour, not
    `never`); bench/check_bench.py measures how fast."""
    budget = compute_budget(service(timing, breaker))
    assert (budget.to_down, budget.to_up) == (pytest.approx(to_down, abs=1e-6),
                                              pytest.approx(to_up, abs=1e-6))


def test_services_alike_are_computed_once() -> None:
    """Two services with the same timing and breaker share one computation."""
    a = service(Timing(interval=0.5), ThresholdBreakerConfig(fall=5))
    b = dataclasses.replace(a, name="other", backends=())
    assert compute_budget(a) is compute_budget(b)


def composite(breaker: BreakerConfig, *timings: Timing, require: int = 0) -> ServiceConfig:
    """One backend probed by one check per timing (tcp), `require` of them (all if 0)."""
    checks = tuple(CheckConfig(f"c{i}", ProbeConfig(timing=t)) for i, t in enumerate(timings))
    return dataclasses.replace(service(timings[0], breaker), checks=checks,
                               require=require or len(checks))


SECOND = Timing(interval=1, fast_interval=1, down_interval=1, timeout=0.5)


@pytest.mark.parametrize(("svc", "to_down", "to_up"), [
    # Both fail at 1.5 after a death just past t=0 (two failures), again at 2.5: fall 3.
    (composite(ThresholdBreakerConfig(), SECOND, SECOND), 2.5, 2.0),
    # `any`: a failure needs both checks failing anew, so the 3s check sets the pace.
    (composite(ThresholdBreakerConfig(), SECOND,
               Timing(interval=3, fast_interval=3, down_interval=3, timeout=0.5), require=1),
     9.5, 2.0),
    # The first trial after fail_timeout waits for two fresh passes, not stale failures.
    (composite(NginxBreakerConfig(), SECOND, Timing(interval=2, timeout=0.5), SECOND,
               require=2), 1.5, 10.5),
], ids=["all-alike", "any-slow-second", "nginx-two-of-three"])
def test_composite_budgets(svc: ServiceConfig, to_down: float, to_up: float) -> None:
    """Composite checks run each on its own schedule, combined into the breaker."""
    budget = compute_budget(svc)
    assert (budget.to_down, budget.to_up) == (pytest.approx(to_down, abs=1e-6),
                                              pytest.approx(to_up, abs=1e-6))


def every(seconds: float) -> Timing:
    """Probed every `seconds`, timeout 500ms."""
    return Timing(interval=seconds, fast_interval=seconds, down_interval=seconds,
                  timeout=0.5)


TEN_YEARS = 87600 * 3600.0


@pytest.mark.timeout(120)  # before: no answer in hours, the memory running out
@pytest.mark.parametrize(("svc", "to_down", "to_up"), [
    # Intervals that never line up and a window of ten years: ten horizons of warm-up
    # were a billion probes. Recovery waits for the trial, ten years on.
    (composite(NginxBreakerConfig(max_fails=3, fail_timeout=TEN_YEARS),
               every(1), every(1.3), every(1.7)), 2.2, TEN_YEARS + 0.5),
    # Five such checks, an hour's window: 113,000 warm-up probes, then each of the
    # PHASES changes was tried on a run made again from t=0 (74 s; the answers are
    # those it gave).
    (composite(NginxBreakerConfig(max_fails=3, fail_timeout=3600),
               every(1), every(1.3), every(1.7), every(2.3), every(2.9)), 2.1, 3600.5),
], ids=["ten-years", "five-checks-1h"])
def test_composites_that_never_settle_have_budgets(svc: ServiceConfig, to_down: float,
                                                   to_up: float) -> None:
    """Checks whose intervals never line up, with a long breaker window: the old condition
    is probed for at most MAX_WARM starts before the change is tried (not ten horizons,
    which were years of simulated probes), and the changes are tried walking on from
    there, not each on a run made again from t=0."""
    budget = compute_budget(svc)
    assert (budget.to_down, budget.to_up) == (pytest.approx(to_down, abs=1e-6),
                                              pytest.approx(to_up, abs=1e-6))


@pytest.mark.parametrize(("timing", "breaker"), [case[1:3] for case in PINNED[:6]],
                         ids=[case[0] for case in PINNED[:6]])
def test_one_check_is_the_probe(timing: Timing, breaker: BreakerConfig) -> None:
    """`checks:` with one entry has the budget of that entry as `probe:`."""
    alone = compute_budget(service(timing, breaker))
    assert compute_budget(composite(breaker, timing)) == alone


def test_agent_budget() -> None:
    """An agent's down (or up) acts within one agent interval plus its timeout; the
    probe's budgets are unchanged by it."""
    agent = ProbeConfig(type="agent", timing=Timing(interval=0.5, timeout=0.2))
    plain = service(Timing(), ThresholdBreakerConfig())
    budget = compute_budget(dataclasses.replace(plain, agent=agent))
    assert budget.agent == pytest.approx(0.7)
    assert (budget.to_down, budget.to_up) == (compute_budget(plain).to_down,
                                              compute_budget(plain).to_up)
