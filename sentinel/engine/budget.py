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
`fail_timeout: 1h`. A run that never repeats (within PHASES probes) falls back to
that: the change is tried at PHASES probes after ten horizons, or after MAX_WARM
probes if that comes first. The changes are tried by walking on from where
the run stands, one probe start at a time, each branching off a copy.
Identical settings are computed once.

Composite checks (`checks:`) run the same way with every check on its own
schedule, all starting together: a death fails all of them at once, each new
result is combined (`sentinel.engine.combine`) and a decided combination fed
to the breaker, in the order the results come in. The settled state then also
holds every check's next start and its result not yet used. An agent's
`down` takes a backend out at once, so its budget is one agent interval plus
its timeout (`Budget.agent`).
"""

from __future__ import annotations

import copy
import functools
import heapq
import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from sentinel.breakers import make_breaker
from sentinel.breakers.base import Change, Health, Transition
from sentinel.config.model import (
    BreakerConfig,
    CircuitBreakerConfig,
    NginxBreakerConfig,
    ServiceConfig,
    ThresholdBreakerConfig,
    Timing,
)
from sentinel.engine.combine import Combiner, require_text, unjudged
from sentinel.engine.schedule import next_due
from sentinel.model import ProbeResult

PHASES = 24  # probe starts in the settled old condition tried as the moment of change
MAX_PROBES = 100_000  # after the change; a breaker that needs more is reported as "never"
# Probe starts in the old condition before the change is tried, when the run neither
# settles nor reaches ten horizons first (several checks whose intervals never line up,
# with a `fail_timeout` of years: ten horizons were billions of probes, and `check` ran
# until the memory ran out). A single check at 100 ms settles within 360,000 starts when
# its breaker's period is an hour (`fail_timeout: 1h`).
MAX_WARM = 400_000


@dataclass(frozen=True, slots=True)
class Budget:
    """Seconds from death to removal and from recovery to return; None = never. `agent`:
    from an agent's `down` to removal (and from its `up` to return), when there is one."""

    to_down: float | None
    to_up: float | None
    agent: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What a budget depends on: each check's timing, how many must pass, the breaker."""

    timings: tuple[Timing, ...]
    require: int
    breaker: BreakerConfig

    @classmethod
    def of(cls, svc: ServiceConfig) -> Plan:
        """The plan of a service's probing."""
        return cls(tuple(e.probe.timing for e in svc.entries), svc.require, svc.breaker)


def _horizon(plan: Plan) -> float:
    """The longest period in the plan's schedules and breaker."""
    b = plan.breaker
    breaker = 0.0
    if isinstance(b, NginxBreakerConfig):
        breaker = b.fail_timeout
    elif isinstance(b, CircuitBreakerConfig):
        breaker = max(b.window, b.max_open_for)
    return max(max(t.interval, t.fast_interval, t.down_interval, breaker) * (1.0 + t.jitter)
               + t.timeout for t in plan.timings)


def _counts(plan: Plan) -> int:
    """How many probes the breaker needs to flip both ways."""
    b = plan.breaker
    if isinstance(b, NginxBreakerConfig):
        return b.max_fails + b.passes
    if isinstance(b, ThresholdBreakerConfig):
        return b.fall + b.rise
    return b.min_calls + b.half_open_trials


_START, _END = 0, 1


class _Run:
    """One backend probed from t=0 on the virtual clock, its breaker starting opposite
    to `want` (settled in the old condition), failing probes of check i taking
    `fail_latency[i]`. Events (a check starting, a check's result coming in) are taken in
    time order; the condition changes from old to new just after `change_at`."""

    def __init__(self, plan: Plan, want: Health, fail_latency: tuple[float, ...]) -> None:
        self.plan = plan
        self.want = want
        self.breaker = make_breaker(plan.breaker,
                                    Health.DOWN if want is Health.UP else Health.UP)
        self.fail_latency = fail_latency
        self.old = want is Health.DOWN  # alive before a death, dead before a recovery
        self.change_at = math.inf
        self.checks = Combiner([str(i) for i in range(len(plan.timings))], plan.require)
        self.single = len(plan.timings) == 1
        # (time, tie-break, kind, check, started, alive): every check has one pending
        self.events = [(0.0, i, _START, i, 0.0, True) for i in range(len(plan.timings))]
        self.order = len(plan.timings)
        self.starts = 0

    def step(self) -> tuple[float, float, Transition | None]:
        """Take the next event: (its time, the start of the probe, the transition) for
        a result, (time, time, None) for a start."""
        now, _, kind, i, started, alive = heapq.heappop(self.events)
        if kind == _START:
            alive = self.old if now <= self.change_at else not self.old
            self._push(now + (0.0 if alive else self.fail_latency[i]), _END, i, now, alive)
            self.starts += 1
            return now, now, None
        if self.single:  # one check is its own combination: no result object needed
            transition = self.breaker.observe(alive, now, now - started)
        else:
            combined = self.checks.take(i, ProbeResult(ok=alive, latency=now - started))
            transition = (unjudged(self.breaker) if combined is None
                          else self.breaker.observe(combined.ok, now, combined.latency))
        timing = self.plan.timings[i]
        self._push(next_due(timing, transition, self.breaker.retry_at(), started, now,
                            timing.jitter), _START, i, 0.0, True)
        return now, started, transition

    def _push(self, time: float, kind: int, i: int, started: float, alive: bool) -> None:
        self.order += 1
        heapq.heappush(self.events, (time, self.order, kind, i, started, alive))

    def start(self) -> float:
        """Run to the next probe start (in the current condition); its time."""
        while True:
            now, _, transition = self.step()
            if transition is None:
                return now

    def branch(self, fail_latency: tuple[float, ...]) -> _Run:
        """An independent copy from here on, its failing probes taking `fail_latency`."""
        twin = copy.copy(self)
        twin.breaker = copy.copy(self.breaker)
        twin.events = list(self.events)
        twin.checks = copy.copy(self.checks)
        twin.checks.latest = list(self.checks.latest)
        twin.fail_latency = fail_latency
        return twin

    def key(self, now: float) -> Hashable:
        """The state the next events depend on, relative to `now`."""
        pending = tuple(sorted((e[3], e[2], round(e[0] - now, 9),
                                round(e[4] - now, 9) if e[2] == _END else 0.0)
                               for e in self.events))
        if self.single:
            return self.breaker.state_key(now), pending
        latest = tuple(None if r is None else r.ok for r in self.checks.latest)
        return self.breaker.state_key(now), pending, latest

    def time_to_flip(self, change_at: float) -> float | None:
        """The condition changes now, just after the probe that started at `change_at`:
        seconds until the breaker reaches `want`; None if it never does."""
        self.change_at = change_at
        limit = change_at + _horizon(self.plan) * (4 + _counts(self.plan))
        for _ in range(MAX_PROBES):
            now, _, transition = self.step()
            if transition is None:
                continue
            if transition.change is Change.CHANGED and transition.health is self.want:
                return now - change_at
            if now > limit:
                return None
        return None


def _settle(plan: Plan, want: Health, fail_latency: tuple[float, ...]
            ) -> tuple[_Run, float, int]:
    """Probes the old condition until it settles. Returns that run, standing just after
    a probe start, that start's time, and how many starts from there on to try the
    change just after: one period of the settled run (its key repeats there, so the
    starts after it repeat the period's), or, for a run that does not settle, PHASES
    once ten horizons have passed or MAX_WARM starts were made, whichever comes first.
    Only the last PHASES starts' keys are kept (a longer period is not looked for), so
    a long warm-up holds no more memory than a short one."""
    run = _Run(plan, want, fail_latency)
    warm = 10 * _horizon(plan)
    seen: dict[Hashable, int] = {}
    recent: deque[tuple[Hashable, int]] = deque()
    while True:
        index = run.starts
        started = run.start()
        if started >= warm or index >= MAX_WARM:
            return run, started, PHASES
        key = run.key(started)
        before = seen.get(key)
        if before is not None:
            return run, started, index - before
        seen[key] = index
        recent.append((key, index))
        if len(recent) > PHASES:
            old, at = recent.popleft()
            if seen.get(old) == at:
                del seen[old]


def _worst(plan: Plan, want: Health) -> float | None:
    # Before a death the backend is alive and its probes take no time, whatever a failure
    # would take: one settled run serves both failure modes.
    none = tuple(0.0 for _ in plan.timings)
    shared = _settle(plan, want, none) if want is Health.DOWN else None
    worst = 0.0
    for latency in {none, tuple(t.timeout for t in plan.timings)}:
        settled, change_at, phases = shared or _settle(plan, want, latency)
        walker = settled.branch(latency)  # on through the starts to try, in the old condition
        for phase in range(phases):
            if phase:
                change_at = walker.start()
            took = walker.branch(latency).time_to_flip(change_at)
            if took is None:
                return None
            worst = max(worst, took)
    return worst


def compute_budget(svc: ServiceConfig) -> Budget:
    """The worst case over phases and failure modes, for both directions; and the
    agent's, which acts at its first answer after the change."""
    budget = _budget(Plan.of(svc))
    if svc.agent is None:
        return budget
    agent = svc.agent.timing
    return Budget(budget.to_down, budget.to_up, agent.interval + agent.timeout)


@functools.lru_cache(maxsize=1024)
def _budget(plan: Plan) -> Budget:
    """A budget depends on nothing else: services alike in these are computed once."""
    return Budget(to_down=_worst(plan, Health.DOWN), to_up=_worst(plan, Health.UP))


def probing(svc: ServiceConfig) -> str:
    """How a service is probed, for `check`: `http probe`, `checks http, grpc (require
    all)`."""
    if not svc.checks:
        return f"{svc.probe.type} probe"
    names = ", ".join(c.name for c in svc.checks)
    return f"checks {names} (require {require_text(svc.require, len(svc.checks))})"

