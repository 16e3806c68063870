"""Hooks through which telemetry (traces, metrics) watches the engine.

The engine and the sink runners call an `Observer` at a few points; the
default `NullObserver` does nothing. Every probe is counted, through the
`ProbeCounter` its check asked for once and keeps; a `ProbeRecord` is built,
and `probe_finished` called, only when the observer may record spans
(`traced`): building one per probe, and finding the probe's series by its
labels, was a sixth of the engine's time per check.
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


class ProbeCounter(Protocol):
    """Where the probes of one check are counted (telemetry's series for its labels)."""

    def observe(self, result: ProbeResult) -> None:
        """Count one probe's result."""
        ...


class Observer(Protocol):
    """What telemetry implements."""

    traced: bool  # it may record spans: `probe_finished` is called for every probe

    def probe_counter(self, service: str, backend: str, probe_type: str) -> ProbeCounter:
        """What counts the `probe_type` probes of `backend` (a check asks once and keeps
        it, asking again if its probe type changes)."""
        ...

    def probe_finished(self, record: ProbeRecord) -> str | None:
        """Called after every probe when `traced`; returns the trace id of a recorded
        span, if any."""
        ...

    def event_emitted(self, event: Event) -> None:
        """Called for every event, after it is numbered."""
        ...

    def sink_applied(self, sink: str, service: str, error: str | None, start_unix: float,
                     duration: float) -> None:
        """Called after every sink apply; `error` is None on success."""
        ...


class NullCounter:
    """Counts nothing."""

    def observe(self, result: ProbeResult) -> None:
        """Ignored."""


NULL_COUNTER = NullCounter()


class NullObserver:
    """Observes nothing."""

    traced = False

    def probe_counter(self, service: str, backend: str, probe_type: str) -> ProbeCounter:
        """A counter that counts nothing."""
        return NULL_COUNTER

    def probe_finished(self, record: ProbeRecord) -> str | None:
        """No span, no trace id."""
        return None

    def event_emitted(self, event: Event) -> None:
        """Ignored."""

    def sink_applied(self, sink: str, service: str, error: str | None, start_unix: float,
                     duration: float) -> None:
        """Ignored."""
