"""`RecordingSink`: an in-memory sink, so the engine can be driven without I/O (httpx's
MockTransport, httpcore's mock backend). Tests, benchmarks and embedders use it; no
config names it.
"""

from __future__ import annotations

import trio

from sentinel.errors import SinkUnavailable
from sentinel.model import ServiceView
from sentinel.sinks.base import Update


class RecordingSink:
    """An in-memory sink for tests: records every update; can fail or hang on demand."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.updates: list[Update] = []
        self.fail_next = 0
        self.hang = False
        self.applied = trio.Event()

    async def apply(self, update: Update) -> None:
        """Record the update, or fail/hang as configured."""
        if self.hang:
            await trio.sleep_forever()
        if self.fail_next > 0:
            self.fail_next -= 1
            raise SinkUnavailable(f"{self.name}: failing on purpose")
        self.updates.append(update)
        self.applied.set()
        self.applied = trio.Event()

    async def aclose(self) -> None:
        """Nothing to release."""

    def latest(self, service: str) -> ServiceView | None:
        """The last view recorded for `service`."""
        for update in reversed(self.updates):
            if update.view.service == service:
                return update.view
        return None
