"""A scriptable sink for runner and engine tests: records when each update landed."""

from __future__ import annotations

import trio

from sentinel.errors import SinkUnavailable
from sentinel.model import Event
from sentinel.sinks.base import Update


class TimedSink:
    """Records `(trio time, update)` per successful apply and the time of every call.

    `delay` makes each apply take that long; `fail_next` fails that many calls
    (raising `fail_with`); `failing` fails every call for those services; `hang`
    makes calls never return (until the runner's timeout cuts them off).
    """

    def __init__(self, name: str = "timed", *, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.fail_next = 0
        self.fail_with: type[Exception] = SinkUnavailable
        self.failing: set[str] = set()
        self.hang = False
        self.calls: list[float] = []
        self.applied: list[tuple[float, Update]] = []

    async def apply(self, update: Update) -> None:
        """Record the call; then hang, fail, or take `delay` and record the update."""
        self.calls.append(trio.current_time())
        if self.hang:
            await trio.sleep_forever()
        if update.view.service in self.failing:
            raise self.fail_with(f"{self.name}: failing {update.view.service} on purpose")
        if self.fail_next > 0:
            self.fail_next -= 1
            raise self.fail_with(f"{self.name}: failing on purpose")
        await trio.sleep(self.delay)
        self.applied.append((trio.current_time(), update))

    async def aclose(self) -> None:
        """Nothing to release."""

    def events(self) -> list[Event]:
        """Every event delivered, in delivery order."""
        return [e for _, u in self.applied for e in u.events]

    def event_times(self) -> list[tuple[float, int]]:
        """(time applied, seq) per delivered event."""
        return [(t, e.seq) for t, u in self.applied for e in u.events]
