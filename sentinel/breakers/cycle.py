"""The trip / cool down / trial cycle that the nginx and circuit breakers share.

    CLOSED --TRIP--> OPEN --COOLED--> TRIAL
    TRIAL --TRIAL_FAILED--> OPEN      TRIAL --TRIALS_PASSED--> CLOSED

CLOSED reports UP; OPEN (results ignored until `retry_at`) and TRIAL report
DOWN. Each breaker names the phases in its own words (nginx: up, cooling,
trial; circuit: closed, open, half-open). A move the table does not allow
raises IllegalTransition and changes nothing.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from sentinel.breakers.base import Health, IllegalTransition


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


def advance(kind: str, names: dict[Phase, str], phase: Phase, move: Move) -> Phase:
    """The phase after `move`; IllegalTransition when the table has no such move."""
    to = MOVES[phase].get(move)
    if to is None:
        raise IllegalTransition(f"{kind} breaker: {move.value!r} while {names[phase]}")
    return to


def secs(seconds: float) -> str:
    """A duration as reasons write it: `10s`, `0.5s`."""
    return f"{seconds:g}s"
