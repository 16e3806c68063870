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

Settling is recognised, not waited out: after each probe of the old condition
the breaker's state (its `state_key`, times relative to the probe) and the delay
to the next probe form a key, and once a key repeats, every later probe repeats
the ones since, so the change is tried only at those few probes (usually one).
Waiting ten horizons instead took a minute for `interval: 100ms` with
`fail_timeout: 1h`. A run that never repeats falls back to that: the change is
tried at PHASES probes after ten horizons. Identical settings are computed once.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Hashable
from dataclasses import dataclass

from sentinel.breakers import make_breaker
from sentinel.breakers.base import Change, Health, Transition
from sentinel.config.model import (
    BreakerConfig,
    CircuitBreakerConfig,
    NginxBreakerConfig,
    ProbeConfig,
    ServiceConfig,
    ThresholdBreakerConfig,
    Timing,
)
from sentinel.engine.schedule import next_due

PHASES = 24  # probe starts in the settled old condition tried as the moment of change
MAX_PROBES = 100_000  # after the change; a breaker that needs more is reported as "never"


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


class _Run:
    """One backend probed from t=0 on the virtual clock, its breaker starting opposite
    to `want` (settled in the old condition), failing probes taking `fail_latency`."""

    def __init__(self, svc: ServiceConfig, want: Health, fail_latency: float) -> None:
        self.svc = svc
        self.want = want
        self.breaker = make_breaker(svc.breaker, Health.DOWN if want is Health.UP else Health.UP)
        self.fail_latency = fail_latency
        self.due = 0.0
        self.probes = 0
        self.old = want is Health.DOWN  # alive before a death, dead before a recovery

    def probe(self, alive: bool) -> tuple[float, float, Transition]:
        """The next probe: (started, ended, transition)."""
        timing = self.svc.probe.timing
        started = self.due
        latency = 0.0 if alive else self.fail_latency
        now = started + latency
        transition = self.breaker.observe(alive, now, latency)
        self.due = next_due(timing, transition, self.breaker.retry_at(), started, now,
                            timing.jitter)
        self.probes += 1
        return started, now, transition

    def branch(self, fail_latency: float) -> _Run:
        """An independent copy from here on, its failing probes taking `fail_latency`."""
        twin = copy.copy(self)
        twin.breaker = copy.copy(self.breaker)
        twin.fail_latency = fail_latency
        return twin

    def key(self, started: float) -> Hashable:
        """The state the next probes depend on, relative to the last probe's start."""
        return self.breaker.state_key(started), round(self.due - started, 9)

    def time_to_flip(self, change_at: float) -> float | None:
        """The condition changes now, just after the probe that started at `change_at`:
        seconds until the breaker reaches `want`; None if it never does."""
        limit = change_at + _horizon(self.svc) * (4 + _counts(self.svc))
        for _ in range(MAX_PROBES):
            _, now, transition = self.probe(not self.old)
            if transition.change is Change.CHANGED and transition.health is self.want:
                return now - change_at
            if now > limit:
                return None
        return None


def _settle(svc: ServiceConfig, want: Health, fail_latency: float
            ) -> tuple[_Run, float, range]:
    """Probes the old condition until it settles. Returns that run, the start of its last
    probe, and the indexes of the probes to try the change just after: one period of the
    settled run (the run stands at its end), or, for a run that does not settle, PHASES
    probes once ten horizons have passed (the run stands at their first)."""
    run = _Run(svc, want, fail_latency)
    warm = 10 * _horizon(svc)
    seen: dict[Hashable, int] = {}
    while True:
        index = run.probes
        started, _, _ = run.probe(run.old)
        if started >= warm:
            return run, started, range(index, index + PHASES)
        key = run.key(started)
        before = seen.get(key)
        if before is not None and index - before <= PHASES:
            return run, started, range(before + 1, index + 1)
        seen[key] = index


def _worst(svc: ServiceConfig, want: Health) -> float | None:
    # Before a death the backend is alive and its probes take no time, whatever a failure
    # would take: one settled run serves both failure modes.
    shared = _settle(svc, want, 0.0) if want is Health.DOWN else None
    worst = 0.0
    for latency in {0.0, svc.probe.timing.timeout}:
        settled, settled_at, changes = shared or _settle(svc, want, latency)
        for change in changes:
            if settled.probes == change + 1:  # the settled run stands there: branch off it
                run, change_at = settled.branch(latency), settled_at
            else:
                run = _Run(svc, want, latency)
                for _ in range(change + 1):
                    change_at, _, _ = run.probe(run.old)
            took = run.time_to_flip(change_at)
            if took is None:
                return None
            worst = max(worst, took)
    return worst


def compute_budget(svc: ServiceConfig) -> Budget:
    """The worst case over phases and failure modes, for both directions."""
    return _budget(svc.probe.timing, svc.breaker)


@functools.lru_cache(maxsize=1024)
def _budget(timing: Timing, breaker: BreakerConfig) -> Budget:
    """A budget depends on nothing else: services alike in these are computed once."""
    svc = ServiceConfig(name="", backends=(), probe=ProbeConfig(timing=timing), breaker=breaker)
    return Budget(to_down=_worst(svc, Health.DOWN), to_up=_worst(svc, Health.UP))


def describe(seconds: float | None) -> str:
    """`1.2s`, `350ms` or `never`."""
    if seconds is None:
        return "never"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
