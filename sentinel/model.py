"""Frozen values that flow one way: config -> probe -> breaker -> event -> sinks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class FailureKind(StrEnum):
    """Why a probe failed; the one vocabulary every probe kind maps its errors to."""

    CONNECT = "connect"  # refused, unreachable
    DNS = "dns"  # host name did not resolve
    TIMEOUT = "timeout"  # no answer within the probe timeout
    RESET = "reset"  # connection reset or closed early
    TLS = "tls"  # handshake or certificate failure
    PROTOCOL = "protocol"  # the peer spoke something unexpected
    STATUS = "status"  # HTTP status not in expect_status
    BODY = "body"  # body or expect regex did not match
    EXIT = "exit"  # script exited non-zero
    ERROR = "error"  # anything else (a bug in a probe, reported not raised)
    LOCAL = "local"  # the checker's own trouble (out of fds, buffers, ports): not the backend's
    PASSIVE = "passive"  # real traffic failed (a balancer's log or counters, a report)


class ProbeResult(NamedTuple):
    """The outcome of one probe. `latency` is in seconds; `weight` comes from a script.
    (Frozen, as a NamedTuple: one is made per probe, and a frozen dataclass costs more
    than twice as much to build.)"""

    ok: bool
    latency: float
    failure: FailureKind | None = None
    detail: str = ""
    weight: int | None = None

    @property
    def error(self) -> str:
        """Human-readable failure text, empty when ok."""
        if self.ok:
            return ""
        return self.detail or (self.failure.value if self.failure else "failed")


class State(StrEnum):
    """A backend's published state (SPEC 4)."""

    UP = "up"
    DOWN = "down"
    DRAIN = "drain"
    MAINT = "maint"


@dataclass(frozen=True, slots=True)
class BackendView:
    """What a sink needs to know about one backend."""

    name: str
    address: str  # as configured: host:port or [v6]:port
    host: str
    port: int
    state: State
    weight: int  # published weight: 0 unless up
    configured_weight: int
    backup: bool = False


@dataclass(frozen=True, slots=True)
class ServiceView:
    """The full desired view of one service; sinks converge to it (level-triggered)."""

    service: str
    backends: tuple[BackendView, ...]
    panic: bool = False

    @property
    def up(self) -> int:
        """How many backends are published up."""
        return sum(1 for b in self.backends if b.state is State.UP)


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    """The probe part of an event document."""

    type: str
    ok: bool
    error: str
    latency_ms: float

    def to_json(self) -> dict[str, Any]:
        """The SPEC 4 `probe` object."""
        return {"type": self.type, "ok": self.ok, "error": self.error,
                "latency_ms": round(self.latency_ms, 3)}


@dataclass(frozen=True, slots=True)
class Event:
    """One change of a backend's published state or weight (SPEC 4)."""

    id: str
    seq: int
    time: str  # RFC 3339, UTC, milliseconds
    service: str
    backend: str
    address: str
    from_state: str
    to_state: str
    weight: int
    reason: str
    probe: ProbeSummary | None = None
    trace_id: str | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Event:
        """An event back from its document (events persisted before sinks took them)."""
        probe = doc.get("probe")
        return cls(id=str(doc["id"]), seq=int(doc["seq"]), time=str(doc["time"]),
                   service=str(doc["service"]), backend=str(doc["backend"]),
                   address=str(doc["address"]), from_state=str(doc["from"]),
                   to_state=str(doc["to"]), weight=int(doc["weight"]),
                   reason=str(doc["reason"]),
                   probe=ProbeSummary(str(probe["type"]), bool(probe["ok"]),
                                      str(probe["error"]), float(probe["latency_ms"]))
                   if probe else None,
                   trace_id=None if doc.get("trace_id") is None else str(doc["trace_id"]))

    def to_json(self) -> dict[str, Any]:
        """The SPEC 4 event document."""
        return {
            "id": self.id, "seq": self.seq, "time": self.time,
            "service": self.service, "backend": self.backend, "address": self.address,
            "from": self.from_state, "to": self.to_state, "weight": self.weight,
            "reason": self.reason,
            "probe": self.probe.to_json() if self.probe else None,
            "trace_id": self.trace_id,
        }
