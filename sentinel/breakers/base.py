"""The breaker interface: a pure state machine fed by probe results.

A breaker never awaits, logs or reads a clock: `observe(ok, now)` takes the
time from its caller and returns a `Transition` saying whether the verdict
changed. The engine does every side effect.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, Protocol

from sentinel.config.model import InitState


class Health(StrEnum):
    """A breaker's verdict."""

    UP = "up"
    DOWN = "down"


class Change(Enum):
    """Whether an observation changed the verdict (Envoy's HealthTransition)."""

    UNCHANGED = "unchanged"  # nothing moved; the breaker is settled
    PENDING = "pending"  # counting towards a change ("2/3 towards down")
    CHANGED = "changed"  # the verdict flipped; sinks hear about it


@dataclass(frozen=True, slots=True)
class Transition:
    """The answer to one observation.

    `reason` explains a CHANGED verdict ("3 failures within 10s") and shows
    progress for PENDING ("2/3 towards down"); it is empty when UNCHANGED.
    """

    change: Change
    health: Health
    reason: str = ""


# The settled answers, built once: most observations give one of them (every probe of a
# healthy backend), and a frozen dataclass is not free to build.
STEADY_UP: Final = Transition(Change.UNCHANGED, Health.UP)
STEADY_DOWN: Final = Transition(Change.UNCHANGED, Health.DOWN)

def start_state(initial: Health | InitState) -> InitState:
    """Where a breaker starts: a verdict restored from disk (a Health) starts fully
    there, so a restart changes nothing; a configured `init_state` is taken as is."""
    if isinstance(initial, InitState):
        return initial
    return InitState.FULLY_UP if initial is Health.UP else InitState.FULLY_DOWN


def fragile(start: InitState) -> InitState | None:
    """`up` and `down` hang on the first probe (its result alone can flip the verdict);
    None for the `fully-` states, which count as usual from the start."""
    return start if start in (InitState.UP, InitState.DOWN) else None


def first_probe_reason(start: InitState, why: str = "") -> str:
    """The reason of a verdict the first probe flipped because of `init_state`."""
    verb = "passed" if start is InitState.DOWN else why or "failed"
    return f"first probe {verb} (init_state: {start})"


class Breaker(Protocol):
    """One backend's breaker. Implementations live one per file in this package."""

    @property
    def health(self) -> Health:
        """The current verdict."""
        ...

    def observe(self, ok: bool, now: float, latency: float = 0.0) -> Transition:
        """Feed one probe result taken at `now` (seconds, any monotonic origin)."""
        ...

    def retry_at(self) -> float | None:
        """While down: the time before which probes cannot change the verdict, else None."""
        ...

    def progress(self) -> str:
        """Where the breaker stands, for /v1/state ("1/3 towards down", "" when settled)."""
        ...

    def state_key(self, now: float) -> Hashable:
        """What of the breaker's state shapes its future, times taken relative to `now`
        (rounded to the nanosecond against float noise). Fed one and the same result over
        and over, a breaker whose key repeats has settled: the detection budget stops
        simulating there instead of running for ten horizons."""
        ...


def relative(time: float | None, now: float) -> float | None:
    """`time - now` for a state key."""
    return None if time is None else round(time - now, 9)
