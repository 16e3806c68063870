"""nginx's `max_fails`/`fail_timeout` breaker, plus nginx Plus's `passes`.

Theory of operation
-------------------
Three states; only UP reports `Health.UP`::

    UP --max_fails failures--> COOLING --fail_timeout elapses--> TRIAL
    TRIAL --passes successes--> UP
    TRIAL --one failure-------> COOLING (another fail_timeout)

Timeline, `max_fails: 3, fail_timeout: 10s, passes: 2`, sliding window::

    t=0   fail  PENDING   "1/3 towards down"
    t=4   ok    PENDING   "1/3 towards down"     a success forgets nothing
    t=6   fail  PENDING   "2/3 towards down"
    t=9   fail  CHANGED   down "3 failures within 10s"; retry_at() == 19
    t=12  ok    UNCHANGED                        cooling: results are ignored
    t=19  fail  UNCHANGED "trial failed; down for another 10s"; retry_at() == 29
    t=29  ok    PENDING   "1/2 towards up"
    t=31  ok    CHANGED   up "2/2 trial probes passed"

Counting failures while UP
--------------------------
`window: sliding` (the default) is what nginx documents: a failure counts
while it is at most `fail_timeout` old, and successes do not clear it.

`window: chained` is what nginx's code does (nginx issue 599). In
`ngx_http_upstream_round_robin.c` a failure does `fails++; accessed = checked
= now`, and `get_peer` moves `checked` to `now` only once `now - checked >
fail_timeout`. A success clears `fails` only when `accessed < checked`. Put
together: failures never age out. They are forgiven only by a success more
than `fail_timeout` after the last failure. Failures spaced closer than that
with successes in between keep piling up until the backend goes down.

`max_fails: 0` disables counting: the breaker never marks a backend down.
Once it is down (restored from disk), trials still bring it back.

Start states
------------
A backend with no saved verdict starts where `init_state` says (HAProxy 3's
`init-state`): `fully-up` (the default) UP, counting as usual; `up` UP, but a
failed first probe takes it down at once (then cooling, as after any trip);
`down` in TRIAL with `passes - 1` passes already counted, so a passed first
probe brings it up; `fully-down` in TRIAL needing all `passes`, as a verdict
restored down from disk does. `max_fails: 3, fail_timeout: 10s, passes: 2`::

    up          t=0  fail  CHANGED   down "first probe failed (init_state: up)"
                                     retry_at() == 10
    up          t=0  ok    UNCHANGED                  counting as usual from now on
    down        t=0  ok    CHANGED   up "first probe passed (init_state: down)"
    down        t=0  fail  UNCHANGED "trial failed; down for another 10s"
    fully-down  t=0  ok    PENDING   "1/2 towards up"
"""

from __future__ import annotations

from collections import deque
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
from sentinel.config.model import InitState, NginxBreakerConfig

_CLOSED = Phase.CLOSED  # read on every probe: an Enum member through its class costs ~60 ns
_NAMES: Final[dict[Phase, str]] = {Phase.CLOSED: "up", Phase.OPEN: "cooling", Phase.TRIAL: "trial"}


class NginxBreaker(CycleBreaker):
    """nginx's passive health accounting applied to active probes.

    `initial=Health.DOWN` (a verdict restored from disk) starts in TRIAL, so
    the first probe is a trial: `retry_at()` is None until then and
    afterwards the time of that first probe. `initial` may also be an
    `init_state` (see the module docstring).
    """

    __slots__ = ("_config", "_failures", "_passes")
    KIND = "nginx"
    NAMES = _NAMES

    def __init__(self, config: NginxBreakerConfig,
                 initial: Health | InitState = Health.UP) -> None:
        if config.max_fails < 0 or config.fail_timeout < 0 or config.passes < 1:
            raise ValueError(f"invalid nginx breaker config: {config}")
        if config.window not in ("sliding", "chained"):
            raise ValueError(f"unknown nginx breaker window: {config.window!r}")
        super().__init__(initial)
        self._config = config
        self._failures: deque[float] = deque()  # times of counted failures, oldest first
        # trial successes so far; `down` starts one short of `passes`
        self._passes = config.passes - 1 if self._fresh is InitState.DOWN else 0

    def progress(self) -> str:
        """Progress as of the last observation: "2/3 towards down", "1/2 towards up" or ""."""
        cfg = self._config
        if self._state is Phase.CLOSED and self._failures:
            return f"{len(self._failures)}/{cfg.max_fails} towards down"
        if self._state is Phase.TRIAL and self._passes:
            return f"{self._passes}/{cfg.passes} towards up"
        return ""

    def state_key(self, now: float) -> Hashable:
        """Phase, trial passes, the end of the cooling spell and the counted failures."""
        return (self._state, self._passes, relative(self._retry_at, now),
                tuple(relative(t, now) for t in self._failures))

    def observe(self, ok: bool, now: float, latency: float = 0.0) -> Transition:
        """Feed one probe result taken at `now`; `latency` is not used by this kind.

        Raises IllegalTransition, changing nothing, if `now` goes backwards.
        """
        gated = self._gate(now)
        if gated is not None:
            return gated
        fresh = self._fresh
        if fresh is None and self._state is _CLOSED:  # counting as usual: every probe when up
            if ok and not self._failures:  # nothing counted, nothing to count: `_count`'s
                return STEADY_UP  # answer, found without reading the config (every probe)
            return self._count(ok, now)
        self._fresh = None
        if self._state is Phase.TRIAL:
            transition = self._trial(ok, now)
        elif fresh is InitState.UP and not ok and self._config.max_fails > 0:
            transition = self._trip(now)
        else:
            transition = self._count(ok, now)
        if fresh is not None and transition.change is Change.CHANGED:
            return replace(transition, reason=first_probe_reason(fresh))
        return transition

    def _count(self, ok: bool, now: float) -> Transition:
        cfg = self._config
        if cfg.max_fails == 0:
            return STEADY_UP
        fails = self._failures
        if cfg.window == "sliding":
            while fails and now - fails[0] > cfg.fail_timeout:
                fails.popleft()
        elif ok and fails and now - fails[-1] > cfg.fail_timeout:
            fails.clear()  # nginx: `accessed < checked` -> `peer->fails = 0`
        if not ok:
            if len(fails) + 1 >= cfg.max_fails:
                return self._trip(now)
            fails.append(now)
        if fails:
            return Transition(Change.PENDING, Health.UP, self.progress())
        return STEADY_UP

    def _trip(self, now: float) -> Transition:
        cfg = self._config
        self._fire(Move.TRIP)
        self._failures.clear()
        self._passes = 0
        self._retry_at = now + cfg.fail_timeout
        noun = "failure" if cfg.max_fails == 1 else "failures"
        if cfg.window == "sliding":
            reason = f"{cfg.max_fails} {noun} within {secs(cfg.fail_timeout)}"
        else:
            reason = (
                f"{cfg.max_fails} {noun} with no success {secs(cfg.fail_timeout)} clear of them"
            )
        return Transition(Change.CHANGED, Health.DOWN, reason)

    def _trial(self, ok: bool, now: float) -> Transition:
        cfg = self._config
        if self._retry_at is None:
            self._retry_at = now  # restored DOWN: this first probe is the trial
        if not ok:
            self._fire(Move.TRIAL_FAILED)
            self._passes = 0
            self._retry_at = now + cfg.fail_timeout
            reason = f"trial failed; down for another {secs(cfg.fail_timeout)}"
            return Transition(Change.UNCHANGED, Health.DOWN, reason)
        if self._passes + 1 >= cfg.passes:
            self._fire(Move.TRIALS_PASSED)
            self._passes = 0
            self._failures.clear()
            reason = f"{cfg.passes}/{cfg.passes} trial probes passed"
            return Transition(Change.CHANGED, Health.UP, reason)
        self._passes += 1
        return Transition(Change.PENDING, Health.DOWN, self.progress())
