"""When the next probe of a backend is due: a pure function, shared by the
engine and by `sentinel check`'s detection-budget simulation."""

from __future__ import annotations

from sentinel.breakers.base import Change, Health, Transition
from sentinel.config.model import Timing

# Enum members read on every probe, bound to module names once: in Python 3.11 reading
# one through its class (`Change.CHANGED`) costs about 60 ns, an unspecialised lookup.
_PENDING, _DOWN = Change.PENDING, Health.DOWN


def next_due(timing: Timing, transition: Transition, retry_at: float | None,
             started: float, now: float, spread: float = 0.0, phase: float | None = None,
             wall_offset: float = 0.0) -> float:
    """The time the next probe should start.

    `interval` while settled and up, `fast_interval` while the breaker counts
    towards a change, `down_interval` while down; never before the breaker
    can use the result (`retry_at`, e.g. nginx's fail_timeout), never before
    the previous probe ended. Measured from the previous probe's start so
    the cadence does not drift by the probe's latency. With a `phase` (a
    cluster member's turn, `wall_offset` the wall clock's lead over the
    clock of `started` and `now`), a settled, up backend's next probe comes
    at the latest turn at or before that (`on_phase`), and after `now`.
    """
    if transition.change is _PENDING:
        delay = timing.fast_interval
    elif transition.health is _DOWN:
        delay = timing.down_interval
    else:
        delay = timing.interval
        if phase is not None:
            due = on_phase(started + delay * (1.0 + spread), wall_offset, phase, delay)
            return due if due >= now else due + delay
    due = started + delay * (1.0 + spread)
    if due < now:  # a comparison, not max(): this runs after every probe
        due = now
    if retry_at is not None and transition.health is _DOWN and retry_at > due:
        due = retry_at
    return due


PHASE_SLACK = 0.005  # a due time this close before its turn is on it (`on_phase`)


def on_phase(due: float, wall_offset: float, phase: float, interval: float) -> float:
    """The latest time at or before `due` whose wall-clock time (`t + wall_offset`) lies
    `phase` seconds into an interval (counted from the Unix epoch): how a cluster member
    keeps its turn at a backend. After a hurried check, a recovery or a takeover the
    next check comes back to the turn, sooner than an interval on, never later. A due
    time up to PHASE_SLACK before its turn counts as on it: the two clocks are read a
    little apart, and taking such a time for one just past the previous turn would
    check again at once."""
    behind = (due + wall_offset - phase) % interval
    if behind > interval - PHASE_SLACK:
        return due
    return due - behind


def retry_due(timing: Timing, health: Health, retry_at: float | None, now: float) -> float:
    """When to try again after a check the checker itself could not make (out of file
    descriptors, say): `fast_interval` from now, and no sooner than the breaker of a
    down backend can use a result."""
    due = now + min(timing.fast_interval, timing.interval)
    if retry_at is not None and health is Health.DOWN:
        due = max(due, retry_at)
    return due


def start_offset(index: int, total: int, interval: float) -> float:
    """Spread first probes evenly over one interval: no thundering herd at start."""
    return interval * index / total if total else 0.0
