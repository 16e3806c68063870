"""Worst-case detection budgets for `sentinel check`.

Rather than a formula per breaker, the real breaker and the engine's real
scheduling function are run on a virtual clock: a backend dies (or
recovers) at many phases relative to the probe schedule, failing probes
either fail at once (refused) or hang until the timeout, and the longest
time until the breaker flips is the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.breakers import make_breaker
from sentinel.breakers.base import Change, Health
from sentinel.config import (
    CircuitBreakerConfig,
    NginxBreakerConfig,
    ServiceConfig,
)
from sentinel.schedule import next_due

PHASES = 24
MAX_PROBES = 2000


@dataclass(frozen=True, slots=True)
class Budget:
    """Seconds from death to removal and from recovery to return; None = never."""

    to_down: float | None
    to_up: float | None


def _horizon(svc: ServiceConfig) -> float:
    t = svc.probe.timing
    longest = max(t.interval, t.fast_interval, t.down_interval)
    b = svc.breaker
    if isinstance(b, NginxBreakerConfig):
        longest = max(longest, b.fail_timeout)
    elif isinstance(b, CircuitBreakerConfig):
        longest = max(longest, b.window, b.max_open_for)
    return longest


def _time_to_flip(svc: ServiceConfig, alive_before: float, flip_at: float,
                  fail_latency: float, want: Health) -> float | None:
    """Run probes from t=0 until the breaker reaches `want`; the backend is in its
    old condition until `flip_at` and in the new one after."""
    timing = svc.probe.timing
    dead_first = want is Health.UP
    breaker = make_breaker(svc.breaker, Health.DOWN if dead_first else Health.UP)
    due = 0.0
    for _ in range(MAX_PROBES):
        started = due
        alive = (started >= flip_at) if dead_first else (started < flip_at)
        latency = 0.0 if alive else fail_latency
        now = started + latency
        transition = breaker.observe(alive, now, latency)
        if (started >= flip_at and transition.change is Change.CHANGED
                and transition.health is want):
            return now - flip_at
        due = next_due(timing, transition, breaker.retry_at(), started, now)
        if due > flip_at + alive_before * 4:
            return None
    return None


def compute_budget(svc: ServiceConfig) -> Budget:
    """The worst case over phases and failure modes, for both directions."""
    timing = svc.probe.timing
    horizon = _horizon(svc)
    warm = 10 * horizon
    worst: dict[Health, float | None] = {Health.DOWN: 0.0, Health.UP: 0.0}
    for want in (Health.DOWN, Health.UP):
        span = max(timing.interval, timing.down_interval, horizon) * 2
        for i in range(PHASES):
            flip = warm + span * i / PHASES
            for latency in (0.0, timing.timeout):
                took = _time_to_flip(svc, warm + span, flip, latency, want)
                current = worst[want]
                worst[want] = None if took is None or current is None else max(current, took)
    return Budget(to_down=worst[Health.DOWN], to_up=worst[Health.UP])


def describe(seconds: float | None) -> str:
    """`1.2s`, `350ms` or `never`."""
    if seconds is None:
        return "never"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
