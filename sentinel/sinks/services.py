"""Which services the running config has, for sinks that keep views across services.

The nginx and haproxy sinks remember the latest view of every service they
were given (to render one file, or to repair drift); a service that a reload
removed must leave that memory, or it would be rendered or re-asserted forever.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from sentinel.sinks.base import SinkContext


def configured_services(ctx: SinkContext) -> Callable[[], set[str]]:
    """A function returning the names of the configured services (empty when unknown)."""

    def services() -> set[str]:
        document = ctx.state_document().get("services")
        return set(document) if isinstance(document, dict) else set()

    return services


def forget_removed(memory: MutableMapping[str, Any], configured: set[str]) -> None:
    """Drop remembered services the config no longer has (nothing when it is unknown)."""
    if configured:
        for service in [s for s in memory if s not in configured]:
            del memory[service]
