"""Worst-case detection budgets for `sentinel check`.

Rather than a formula per breaker, the real breaker and the engine's real
scheduling function are run on a virtual clock. The backend first runs long
enough in its old condition (alive, or dead) for the breaker to settle; then
it changes an instant after one of its probes started, which is the worst
phase: that probe still sees the old condition and the next one is a whole
delay away. Failing probes either fail at once (refused) or hang until the
timeout, every delay is stretched by the full `jitter`, and the longest time
from the change until the breaker flips is the budget.

Example, `tcp` every 1s, timeout 500ms, threshold `fall: 3`: a death just
after the probe at t=0 is first seen by the probe at t=1 (failing at 1.5),
then by t=2 and t=3 (fast_interval defaults to interval), so the backend is
removed at t=3.5: interval + 2 * fast_interval + timeout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from sentinel.breakers import make_breaker
from sentinel.breakers.base import Change, Health, Transition
from sentinel.config import (
    CircuitBreakerConfig,
    NginxBreakerConfig,
    ServiceConfig,
    ThresholdBreakerConfig,
)
from sentinel.schedule import next_due

PHASES = 24  # probe starts in the settled old condition tried as the moment of change
MAX_PROBES = 2000  # per simulated run; a breaker that needs more is reported as "never"


@dataclass(frozen=True, slots=True)
class Budget:
    """Seconds from death to removal and from recovery to return; None = never."""

    to_down: float | None
    to_up: float | None


def _horizon(svc: ServiceConfig) -> float:
    """The longest period in the service's schedule and breaker."""
    t = svc.probe.timing
    longest = max(t.interval, t.fast_interval, t.down_interval)
    b = svc.breaker
    if isinstance(b, NginxBreakerConfig):
        longest = max(longest, b.fail_timeout)
    elif isinstance(b, CircuitBreakerConfig):
        longest = max(longest, b.window, b.max_open_for)
    return longest * (1.0 + t.jitter) + t.timeout


def _counts(svc: ServiceConfig) -> int:
    """How many probes the breaker needs to flip both ways."""
    b = svc.breaker
    if isinstance(b, NginxBreakerConfig):
        return b.max_fails + b.passes
    if isinstance(b, ThresholdBreakerConfig):
        return b.fall + b.rise
    return b.min_calls + b.half_open_trials


def _probes(svc: ServiceConfig, want: Health, change_at: float,
            fail_latency: float) -> Iterator[tuple[float, float, Transition]]:
    """(started, ended, transition) of each probe from t=0, the breaker starting in
    the state opposite to `want`; the backend changes condition just after
    `change_at`, so a probe starting at exactly `change_at` sees the old one."""
    timing = svc.probe.timing
    breaker = make_breaker(svc.breaker, Health.DOWN if want is Health.UP else Health.UP)
    due = 0.0
    while True:
        started = due
        alive = (started > change_at) if want is Health.UP else (started <= change_at)
        latency = 0.0 if alive else fail_latency
        now = started + latency
        transition = breaker.observe(alive, now, latency)
        yield started, now, transition
        due = next_due(timing, transition, breaker.retry_at(), started, now, timing.jitter)


def _change_points(svc: ServiceConfig, want: Health, fail_latency: float) -> list[float]:
    """Probe starts once the breaker has settled in the old condition."""
    warm = 10 * _horizon(svc)
    points: list[float] = []
    for started, _, _ in _probes(svc, want, math.inf, fail_latency):
        if started >= warm:
            points.append(started)
            if len(points) == PHASES:
                break
    return points


def _time_to_flip(svc: ServiceConfig, want: Health, change_at: float,
                  fail_latency: float) -> float | None:
    """Seconds from the change to the breaker reaching `want`; None if it never does."""
    limit = change_at + _horizon(svc) * (4 + _counts(svc))
    after = 0
    for started, now, transition in _probes(svc, want, change_at, fail_latency):
        if started <= change_at:
            continue
        if transition.change is Change.CHANGED and transition.health is want:
            return now - change_at
        after += 1
        if after >= MAX_PROBES or now > limit:
            return None
    return None


def _worst(svc: ServiceConfig, want: Health) -> float | None:
    worst = 0.0
    for latency in {0.0, svc.probe.timing.timeout}:
        for change_at in _change_points(svc, want, latency):
            took = _time_to_flip(svc, want, change_at, latency)
            if took is None:
                return None
            worst = max(worst, took)
    return worst


def compute_budget(svc: ServiceConfig) -> Budget:
    """The worst case over phases and failure modes, for both directions."""
    return Budget(to_down=_worst(svc, Health.DOWN), to_up=_worst(svc, Health.UP))


def describe(seconds: float | None) -> str:
    """`1.2s`, `350ms` or `never`."""
    if seconds is None:
        return "never"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
