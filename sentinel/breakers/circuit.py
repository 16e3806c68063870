"""A circuit breaker: closed / open / half-open over a sliding time window.

Theory of operation
-------------------
CLOSED reports UP. OPEN and HALF_OPEN both report DOWN::

    CLOSED --failure or slow-call rate reached--> OPEN --open_for elapses--> HALF_OPEN
    HALF_OPEN --half_open_trials successes--> CLOSED   (open_for back to its base)
    HALF_OPEN --one failed trial-------------> OPEN     (open_for doubles, capped)

While CLOSED every call is kept as (time, ok, slow) for `window` seconds, in 9
to 13 bytes: a 1h window at 100ms (36,000 calls) takes under 0.5 MB. A
call is slow when `slow_call` is set and its latency is over `slow_call`. Once
the window holds at least `min_calls` calls, the breaker opens when the share
of failed calls is >= `failure_rate`, or the share of slow calls is >=
`slow_rate`. Resilience4j uses the same rules (a call exactly as long as its
slowCallDurationThreshold is not slow). Results during OPEN are ignored.
The first result at or after `retry_at()` is the first half-open trial. A
trial passes only if it is ok and not slow. A backend that answers, but too
slowly, is kept open, and the doubling backoff applies to it too.

Timeline, `window: 10s, min_calls: 3, failure_rate: 0.5, open_for: 5s,
max_open_for: 60s, half_open_trials: 2`::

    t=0   ok    UNCHANGED
    t=1   fail  PENDING   "1/2 failed in 10s window"     (fewer than min_calls)
    t=2   fail  CHANGED   down "2/3 calls failed in 10s (67% >= 50%); open for 5s"
    t=3   ok    UNCHANGED                                 open: ignored
    t=7   fail  UNCHANGED "half-open trial failed; open for 10s"  retry_at() == 17
    t=17  ok    PENDING   "half-open 1/2"
    t=18  ok    CHANGED   up "2/2 half-open trials passed"   open_for back to 5s

`initial=Health.DOWN` (restored from disk) starts HALF_OPEN. Its first
result is a trial, and a failure re-opens with the doubled `open_for`.

Start states
------------
A backend with no saved verdict starts where `init_state` says (HAProxy 3's
`init-state`): `fully-up` (the default) CLOSED with an empty window; `up`
CLOSED, but a first call that fails (or is slow) opens the circuit at once,
whatever `min_calls`; `down` HALF_OPEN with `half_open_trials - 1` trials
already passed, so a good first call closes it; `fully-down` HALF_OPEN
needing every trial, as a verdict restored down from disk does. Same
settings as above::

    up          t=0  fail  CHANGED   down "first probe failed (init_state: up); open for 5s"
    up          t=0  ok    UNCHANGED                  judged by rates from now on
    down        t=0  ok    CHANGED   up "first probe passed (init_state: down)"
    down        t=0  fail  UNCHANGED "half-open trial failed; open for 10s"
    fully-down  t=0  ok    PENDING   "half-open 1/2"
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable
from dataclasses import replace
from typing import Final

from sentinel.breakers.base import (
    STEADY_UP,
    Change,
    Health,
    Transition,
    first_probe_reason,
    relative,
)
from sentinel.breakers.cycle import CycleBreaker, Move, Phase, secs
from sentinel.config.model import CircuitBreakerConfig, InitState

_NAMES: Final[dict[Phase, str]] = {
    Phase.CLOSED: "closed", Phase.OPEN: "open", Phase.TRIAL: "half-open"}
# Calls that have left the window stay in its arrays until there are more than _SPARE
# of them and they are over a quarter of the arrays; then one `del` drops them all.
_SPARE: Final = 32


class CircuitBreaker(CycleBreaker):
    """Closed/open/half-open breaker judging failure and slow-call rates."""

    __slots__ = ("_config", "_failed", "_flags", "_head", "_open_for", "_slow", "_times",
                 "_trials")
    KIND = "circuit"
    NAMES = _NAMES

    def __init__(self, config: CircuitBreakerConfig,
                 initial: Health | InitState = Health.UP) -> None:
        # Only impossible values are refused; the config loader owns sensible ranges.
        if (
            config.window < 0
            or config.min_calls < 1
            or not 0 <= config.failure_rate <= 1
            or not 0 <= config.slow_rate <= 1
            or (config.slow_call is not None and config.slow_call < 0)
            or config.open_for < 0
            or config.max_open_for < config.open_for
            or config.half_open_trials < 1
        ):
            raise ValueError(f"invalid circuit breaker config: {config}")
        super().__init__(initial)
        self._config = config
        # The window, CLOSED only, oldest first: the calls from _head on, each a time
        # and a byte, 1 if it failed + 2 if it was slow (why this layout: _record).
        self._times = array("d")
        self._flags = bytearray()
        self._head = 0
        self._failed = 0  # of the calls, how many failed and how many were slow: kept as
        self._slow = 0  # calls come and go, so a 1h window at 100ms is not summed per call
        self._open_for = config.open_for  # the length of the current or next open spell
        # half-open successes so far; `down` starts one short of `half_open_trials`
        self._trials = config.half_open_trials - 1 if self._fresh is InitState.DOWN else 0

    def progress(self) -> str:
        """Where the breaker stands, as of the last observation.

        Closed: "2/4 failed, 1/4 slow in 10s window" ("" with no bad calls);
        open: "open for 10s"; half-open: "half-open 1/3".
        """
        if self._state is Phase.OPEN:
            return f"open for {secs(self._open_for)}"
        if self._state is Phase.TRIAL:
            return f"half-open {self._trials}/{self._config.half_open_trials}"
        n, failed, slow = len(self._times) - self._head, self._failed, self._slow
        if not failed and not slow:
            return ""
        parts = [f"{failed}/{n} failed"]
        if self._config.slow_call is not None:
            parts.append(f"{slow}/{n} slow")
        return f"{', '.join(parts)} in {secs(self._config.window)} window"

    def observe(self, ok: bool, now: float, latency: float = 0.0) -> Transition:
        """Feed one call's result taken at `now`, with its `latency` in seconds.

        Raises IllegalTransition, changing nothing, if `now` goes backwards.
        """
        slow = self._config.slow_call is not None and latency > self._config.slow_call
        was_open = self._state is Phase.OPEN
        gated = self._gate(now)
        if gated is not None:
            return gated
        if was_open:
            self._trials = 0
        fresh, self._fresh = self._fresh, None
        if self._state is Phase.TRIAL:
            transition = self._trial(ok, slow, latency, now)
            if fresh is not None and transition.change is Change.CHANGED:
                return replace(transition, reason=first_probe_reason(fresh))
            return transition
        if fresh is InitState.UP and (not ok or slow):
            return self._open(now, first_probe_reason(fresh, _bad(ok, latency)))
        return self._record(ok, slow, now)

    def state_key(self, now: float) -> Hashable:
        """Phase, trials, the open spell, and the window as counts and its oldest call's
        age (the budget feeds one result over and over, so the calls are all alike)."""
        n = len(self._times) - self._head
        oldest = self._times[self._head] if n else None
        return (self._state, self._trials, self._open_for, relative(self._retry_at, now),
                n, self._failed, self._slow, relative(oldest, now))

    def _open(self, now: float, why: str) -> Transition:
        self._fire(Move.TRIP)
        del self._times[:], self._flags[:]  # frees the memory while open
        self._head = self._failed = self._slow = 0
        self._retry_at = now + self._open_for
        return Transition(Change.CHANGED, Health.DOWN, f"{why}; open for {secs(self._open_for)}")

    def _record(self, ok: bool, slow: bool, now: float) -> Transition:
        """Add a call to the window, drop the calls it pushes out, and judge the rates.

        The window's layout: a call is a float in an `array('d')` and a byte in a
        bytearray, 9 bytes, where a deque of frozen `(time, ok, slow)` objects took 88
        (and building one cost more CPU than all of this). Calls leave by moving
        `_head` on; the dead space before it is dropped with one `del` (a memmove)
        once it is over a quarter of the arrays, so each call is moved about 3 times
        in its life and the arrays hold at most a third more than the window: 9.7 to
        12.3 bytes a call at 36,000 calls. A true ring buffer was no faster, and with
        doubling capacity held 16 bytes a call and never gave memory back.
        """
        times, flags, window = self._times, self._flags, self._config.window
        times.append(now)
        bad = (not ok) | slow << 1
        flags.append(bad)
        if bad:
            self._failed += not ok
            self._slow += slow
        head = start = self._head
        # `now - time > window`, not `time < now - window`: in floats the two differ at
        # the window's edge, and this is the test the deque of calls made.
        while now - times[head] > window:
            gone = flags[head]
            if gone:
                self._failed -= gone & 1
                self._slow -= gone >> 1
            head += 1
        if head != start:
            if head > _SPARE and head > len(times) >> 2:
                del times[:head], flags[:head]
                head = 0
            self._head = head
        reason = self._trip_reason()
        if reason:
            return self._open(now, reason)
        progress = self.progress()
        if progress:
            return Transition(Change.PENDING, Health.UP, progress)
        return STEADY_UP

    def _trip_reason(self) -> str:
        cfg = self._config
        n = len(self._times) - self._head
        if n < cfg.min_calls:
            return ""
        failed = self._failed
        if failed / n >= cfg.failure_rate:
            rates = f"{failed / n:.0%} >= {cfg.failure_rate:.0%}"
            return f"{failed}/{n} calls failed in {secs(cfg.window)} ({rates})"
        slow = self._slow
        if cfg.slow_call is not None and slow / n >= cfg.slow_rate:
            return (
                f"{slow}/{n} calls took over {secs(cfg.slow_call)} in {secs(cfg.window)}"
                f" ({slow / n:.0%} >= {cfg.slow_rate:.0%})"
            )
        return ""

    def _trial(self, ok: bool, slow: bool, latency: float, now: float) -> Transition:
        cfg = self._config
        if self._retry_at is None:
            self._retry_at = now  # restored DOWN: this first result is the trial
        if not ok or slow:
            self._fire(Move.TRIAL_FAILED)
            self._open_for = min(self._open_for * 2, cfg.max_open_for)
            self._retry_at = now + self._open_for
            reason = f"half-open trial {_bad(ok, latency)}; open for {secs(self._open_for)}"
            return Transition(Change.UNCHANGED, Health.DOWN, reason)
        if self._trials + 1 >= cfg.half_open_trials:
            self._fire(Move.TRIALS_PASSED)
            self._trials = 0
            self._open_for = cfg.open_for
            n = cfg.half_open_trials
            return Transition(Change.CHANGED, Health.UP, f"{n}/{n} half-open trials passed")
        self._trials += 1
        return Transition(Change.PENDING, Health.DOWN, self.progress())


def _bad(ok: bool, latency: float) -> str:
    """What was wrong with a call that failed a trial (or an `init_state: up` start)."""
    return "failed" if not ok else f"too slow ({secs(latency)})"
