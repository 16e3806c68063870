"""HAProxy's `rise`/`fall` breaker: consecutive results flip the verdict.

Theory of operation
-------------------
HAProxy keeps one counter per check (`check->health` in `src/check.c`,
`set_server_check_status`) and so do we. It runs from 0 to `rise + fall - 1`,
and the verdict is UP exactly when it is at least `rise`:

- a success adds one; on reaching `rise` it jumps to the top
  (`rise + fall - 1`, "OK now");
- a failure takes one away; on falling below `rise` it drops to 0.

So from the top it takes `fall` failures in a row to drop below `rise`, and
from 0 it takes `rise` successes in a row to reach it. One opposite result
while counting resets the run, because it sends the counter back to the top
or to 0. Counter values, `rise: 2, fall: 3` (top 4, UP when >= 2)::

    t=0  up    health=4
    t=1  fail  health=3  PENDING  "1/3 towards down"
    t=2  ok    health=4  UNCHANGED                       the run is broken
    t=3  fail  health=3  PENDING  "1/3 towards down"
    t=4  fail  health=2  PENDING  "2/3 towards down"
    t=5  fail  health=0  CHANGED  down "3 consecutive failures"
    t=6  ok    health=1  PENDING  "1/2 towards up"
    t=7  ok    health=4  CHANGED  up "2 consecutive successes"

Times are only checked for order; this kind has no clock of its own, so
`retry_at()` is always None.

Start states
------------
A backend with no saved verdict starts where `init_state` puts the counter,
as HAProxy 3's `init-state` defines it (`enum srv_init_state`, server-t.h):
`fully-up` at the top (`fall` failures take it down; the default), `up` at
`rise` (one failure drops it below `rise`: down at the first failed probe),
`down` at `rise - 1` (one success reaches `rise`: up at the first passed
probe), `fully-down` at 0 (`rise` successes). A verdict restored from disk
starts fully up or fully down. `rise: 2, fall: 3` (top 4)::

    init_state: up     health=2  t=0 fail  health=0  CHANGED down
                                                     "first probe failed (init_state: up)"
    init_state: up     health=2  t=0 ok    health=4  UNCHANGED   fully up from now on
    init_state: down   health=1  t=0 ok    health=4  CHANGED up
                                                     "first probe passed (init_state: down)"
    init_state: down   health=1  t=0 fail  health=0  UNCHANGED   now `rise` successes
"""

from __future__ import annotations

from collections.abc import Hashable

from sentinel.breakers.base import (
    STEADY_DOWN,
    STEADY_UP,
    Change,
    Health,
    Transition,
    first_probe_reason,
    fragile,
    start_state,
)
from sentinel.config.model import InitState, ThresholdBreakerConfig
from sentinel.errors import IllegalTransition


class ThresholdBreaker:
    """HAProxy's `fall` consecutive failures down, `rise` consecutive successes up."""

    __slots__ = ("_config", "_counter", "_fresh", "_last", "_top")

    def __init__(self, config: ThresholdBreakerConfig,
                 initial: Health | InitState = Health.UP) -> None:
        if config.rise < 1 or config.fall < 1:
            raise ValueError(f"invalid threshold breaker config: {config}")
        self._config = config
        self._top = config.rise + config.fall - 1
        start = start_state(initial)
        self._counter = {InitState.FULLY_UP: self._top, InitState.UP: config.rise,
                         InitState.DOWN: config.rise - 1, InitState.FULLY_DOWN: 0}[start]
        self._fresh = fragile(start)  # until the first probe
        self._last: float | None = None

    @property
    def health(self) -> Health:
        """UP when the counter is at least `rise`."""
        return Health.UP if self._counter >= self._config.rise else Health.DOWN

    def retry_at(self) -> float | None:
        """Always None: every probe counts."""
        return None

    def state_key(self, now: float) -> Hashable:
        """The counter: this kind has no clock."""
        return self._counter

    def progress(self) -> str:
        """Progress: "1/3 towards down", "1/2 towards up", or "" when settled."""
        cfg = self._config
        if self.health is Health.UP:
            failures = self._top - self._counter
            return f"{failures}/{cfg.fall} towards down" if failures else ""
        return f"{self._counter}/{cfg.rise} towards up" if self._counter else ""

    def observe(self, ok: bool, now: float, latency: float = 0.0) -> Transition:
        """Feed one probe result taken at `now`; `latency` is not used by this kind.

        Raises IllegalTransition, changing nothing, if `now` goes backwards.
        """
        if self._last is not None and now < self._last:
            raise IllegalTransition(f"time went backwards: {now} < {self._last}")
        self._last = now
        fresh, self._fresh = self._fresh, None
        # Settled (up at the top of the counter, or down at 0) and told the same again:
        # nothing moves. The common case, every probe: answered without a Transition built.
        if ok and self._counter == self._top:
            return STEADY_UP
        if not ok and self._counter == 0:
            return STEADY_DOWN
        cfg = self._config
        before = self.health
        if ok:
            if self._counter < self._top:
                self._counter += 1
                if self._counter >= cfg.rise:
                    self._counter = self._top
        elif self._counter > 0:
            self._counter -= 1
            if self._counter < cfg.rise:
                self._counter = 0
        after = self.health
        if after is not before:
            if fresh is not None:
                reason = first_probe_reason(fresh)
            elif after is Health.UP:
                reason = f"{cfg.rise} consecutive success" + ("es" if cfg.rise > 1 else "")
            else:
                reason = f"{cfg.fall} consecutive failure" + ("s" if cfg.fall > 1 else "")
            return Transition(Change.CHANGED, after, reason)
        progress = self.progress()
        if progress:
            return Transition(Change.PENDING, after, progress)
        return Transition(Change.UNCHANGED, after)
