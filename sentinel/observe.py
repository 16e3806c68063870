"""Hooks through which telemetry (traces, metrics) watches the engine.

The engine and the sink runners call an `Observer` at three points; the
default `NullObserver` does nothing, so the hot path pays one method call.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from sentinel.model import Event, ProbeResult


class ProbeRecord(NamedTuple):
    """One finished probe, as telemetry sees it. (Frozen, as a NamedTuple: one is made
    per probe, and a frozen dataclass costs three times as much to build.)"""

    service: str
    backend: str
    host: str
    port: int
    probe_type: str
    result: ProbeResult
    start_unix: float  # wall-clock start, seconds
    transition: tuple[str, str, str] | None = None  # (from, to, reason) when it changed


class Observer(Protocol):
    """What telemetry implements."""

    def probe_finished(self, record: ProbeRecord) -> str | None:
        """Called after every probe; returns the trace id of a recorded span, if any."""
        ...

    def event_emitted(self, event: Event) -> None:
        """Called for every event, after it is numbered."""
        ...

    def sink_applied(self, sink: str, service: str, error: str | None, start_unix: float,
                     duration: float) -> None:
        """Called after every sink apply; `error` is None on success."""
        ...


class NullObserver:
    """Observes nothing."""

    def probe_finished(self, record: ProbeRecord) -> str | None:
        """No span, no trace id."""
        return None

    def event_emitted(self, event: Event) -> None:
        """Ignored."""

    def sink_applied(self, sink: str, service: str, error: str | None, start_unix: float,
                     duration: float) -> None:
        """Ignored."""
