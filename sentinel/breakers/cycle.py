"""The trip / cool down / trial cycle that the nginx and circuit breakers share.

    CLOSED --TRIP--> OPEN --COOLED--> TRIAL
    TRIAL --TRIAL_FAILED--> OPEN      TRIAL --TRIALS_PASSED--> CLOSED

CLOSED reports UP; OPEN (results ignored until `retry_at`) and TRIAL report
DOWN. Each breaker names the phases in its own words (nginx: up, cooling,
trial; circuit: closed, open, half-open). A move the table does not allow
raises IllegalTransition and changes nothing.
"""

from __future__ import annotations

import copy
from array import array
from collections import deque
from enum import Enum
from typing import Final, Self

from sentinel.breakers.base import (
    STEADY_DOWN,
    Health,
    Transition,
    fragile,
    start_state,
)
from sentinel.config.model import InitState
from sentinel.errors import IllegalTransition


class Phase(Enum):
    """Where a breaker is in the cycle."""

    CLOSED = "closed"
    OPEN = "open"
    TRIAL = "trial"


class Move(Enum):
    """What can happen to a breaker."""

    TRIP = "trip"
    COOLED = "cooled"
    TRIAL_FAILED = "trial failed"
    TRIALS_PASSED = "trials passed"


MOVES: Final[dict[Phase, dict[Move, Phase]]] = {
    Phase.CLOSED: {Move.TRIP: Phase.OPEN},
    Phase.OPEN: {Move.COOLED: Phase.TRIAL},
    Phase.TRIAL: {Move.TRIAL_FAILED: Phase.OPEN, Move.TRIALS_PASSED: Phase.CLOSED},
}

HEALTH: Final[dict[Phase, Health]] = {
    Phase.CLOSED: Health.UP,
    Phase.OPEN: Health.DOWN,
    Phase.TRIAL: Health.DOWN,
}


# Enum members read on every probe, bound to module names once: in Python 3.11 reading
# one through its class (`Phase.OPEN`) costs about 60 ns, an unspecialised lookup.
_CLOSED, _OPEN = Phase.CLOSED, Phase.OPEN
# What `__copy__` gives a copy of its own: the containers a breaker's state is kept in.
_CONTAINERS = (deque, array, bytearray, list, dict, set)


def advance(kind: str, names: dict[Phase, str], phase: Phase, move: Move) -> Phase:
    """The phase after `move`; IllegalTransition when the table has no such move."""
    to = MOVES[phase].get(move)
    if to is None:
        raise IllegalTransition(f"{kind} breaker: {move.value!r} while {names[phase]}")
    return to


def secs(seconds: float) -> str:
    """A duration as reasons write it: `10s`, `0.5s`."""
    return f"{seconds:g}s"


class CycleBreaker:
    """What the nginx and circuit breakers share: the phase, the end of the open
    spell, the clock check, the gate that ignores results while open, and the start:
    `fully-up` and `up` start CLOSED, `down` and `fully-down` in TRIAL (the first probe
    is a trial); `up` and `down` are `_fresh` until the first probe."""

    __slots__ = ("_fresh", "_last", "_retry_at", "_state")
    KIND: str = ""
    NAMES: dict[Phase, str] = {}  # noqa: RUF012  (read-only, set per subclass)

    def __init__(self, initial: Health | InitState) -> None:
        start = start_state(initial)
        self._state = Phase.CLOSED if start in (InitState.FULLY_UP, InitState.UP) \
            else Phase.TRIAL
        self._fresh = fragile(start)  # `up` or `down` until the first probe, else None
        self._retry_at: float | None = None
        self._last: float | None = None  # time of the last observation

    @property
    def health(self) -> Health:
        """UP while closed; DOWN while open (cooling down) or in trial."""
        return HEALTH[self._state]

    def retry_at(self) -> float | None:
        """When the open spell ends and the next probe is a trial; None while closed."""
        return None if self._state is _CLOSED else self._retry_at

    def __copy__(self) -> Self:
        """An independent copy: the same state, containers of its own (the detection
        budget branches one settled breaker into several futures)."""
        twin = object.__new__(type(self))
        state: tuple[None, dict[str, object]] = self.__getstate__()  # type: ignore[assignment]
        for name, value in state[1].items():
            setattr(twin, name, copy.copy(value) if isinstance(value, _CONTAINERS) else value)
        return twin

    def _fire(self, move: Move) -> None:
        self._state = advance(self.KIND, self.NAMES, self._state, move)

    def _gate(self, now: float) -> Transition | None:
        """Check the clock; while open before `retry_at`, the answer is UNCHANGED.

        Once the open spell is over the breaker moves to TRIAL and returns None,
        as it does whenever the observation is the subclass's to judge.
        Raises IllegalTransition, changing nothing, if `now` goes backwards.
        """
        if self._last is not None and now < self._last:
            raise IllegalTransition(f"time went backwards: {now} < {self._last}")
        self._last = now
        if self._state is _OPEN:
            assert self._retry_at is not None
            if now < self._retry_at:
                return STEADY_DOWN
            self._fire(Move.COOLED)
        return None
