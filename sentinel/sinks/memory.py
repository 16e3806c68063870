"""`RecordingSink`: an in-memory sink, so the engine can be driven without I/O (httpx's
MockTransport, httpcore's mock backend). Tests, benchmarks and embedders use it; no
config names it.
"""

from __future__ import annotations

from sentinel.model import ServiceView
from sentinel.sinks.base import Update


class RecordingSink:
    """An in-memory sink: records every update it is given."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.updates: list[Update] = []

    async def apply(self, update: Update) -> None:
        """Record the update."""
        self.updates.append(update)

    async def aclose(self) -> None:
        """Nothing to release."""

    def latest(self, service: str) -> ServiceView | None:
        """The last view recorded for `service`."""
        for update in reversed(self.updates):
            if update.view.service == service:
                return update.view
        return None
