"""Forgetting services, for sinks that keep views across services (`BoundSink`).

The nginx and haproxy sinks remember the latest view of every service they
were given (to render one file, or to repair drift); a service that a reload
removed or unbound from the sink must leave that memory, or it would be
rendered or re-asserted forever. The engine tells them their services when
it binds them (`BoundSink.bind`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any


def forget_removed(memory: MutableMapping[str, Any], bound: frozenset[str] | None) -> None:
    """Drop remembered services not `bound` to the sink (nothing before it is told)."""
    if bound is not None:
        for service in [s for s in memory if s not in bound]:
            del memory[service]
