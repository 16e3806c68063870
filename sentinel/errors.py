"""The one exceptions module: every exception sentinel defines, and its tree.

Exceptions are for misconfiguration, broken sinks, refused requests and bugs; a
failed health check is a ProbeResult, never an exception (a probe turns the
ProtocolErrors and ResolveError below into one at its edge). The two abstract kinds are caught,
never raised: raise one of their subclasses.

    SentinelError              (abstract) every error sentinel raises on purpose
    ├── ConfigError            one bad value in the config, with file:line:col and key path
    │   └── ConfigErrors       several ConfigErrors found in one pass
    ├── SinkError              (abstract) a sink could not converge to the desired view
    │   ├── SinkUnavailable    the target is unreachable (socket missing, command not found,
    │   │                      no answer in time): `sinks.base.unavailable` maps them
    │   └── SinkRejected       the target refused the change (nginx -t failed, 4xx)
    ├── StateError             the state directory cannot be used
    │   └── OutboxLocked       another process (a running sentinel) holds a webhook outbox
    ├── StartupError           this machine refuses what the config asks at start: the API
    │                          address is taken or not local, state_dir is not writable
    ├── BadRequest             the API refuses a request (4xx) and has changed nothing
    ├── SignatureError         a webhook secret cannot be decoded, or a message does not verify
    ├── ProtocolError          a peer's answer cannot be read (HTTP/1 response, gRPC message)
    │   ├── NoResponse         the peer closed the connection before answering at all
    │   └── BadFrame           an HTTP/2 frame or header block is not well-formed
    ├── ResolveError           a backend's host name did not resolve in time (also a
    │                          socket.gaierror, so code that catches those sees it)
    ├── IllegalTransition      a bug: a breaker was asked for a move its table does not
    │                          allow, or time ran backwards; nothing changed
    ├── EtcdError              a call to etcd failed: unreachable, timed out, or refused
    │   └── EtcdCompacted      a watch asked for revisions etcd has already compacted away
    └── NotLeader              a write fenced by leadership failed: this member leads no more
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self


class SentinelError(Exception):
    """Base of every error sentinel raises on purpose (abstract: raise one of its kinds)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """Refuse to make an instance of an abstract kind (one whose body says
        `_abstract = True`): an error must say what went wrong."""
        if cls.__dict__.get("_abstract", False):
            raise TypeError(f"{cls.__name__} is abstract: raise one of its subclasses "
                            f"(see sentinel.errors)")
        return super().__new__(cls, *args, **kwargs)

    _abstract = True


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a config value sits: file, 1-based line and column, key path."""

    file: str
    line: int
    column: int
    path: str


class ConfigError(SentinelError):
    """One invalid config value, rendered as `file:line:col: path: message`."""

    def __init__(self, mark: Mark | None, message: str) -> None:
        self.mark = mark
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.mark is None:
            return self.message
        m = self.mark
        where = f"{m.file}:{m.line}:{m.column}"
        return f"{where}: {m.path}: {self.message}" if m.path else f"{where}: {self.message}"


class ConfigErrors(ConfigError):
    """Every ConfigError found in one validation pass, in file order."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = sorted(
            errors, key=lambda e: (e.mark.line, e.mark.column) if e.mark else (0, 0)
        )
        super().__init__(None, "\n".join(str(e) for e in self.errors))


class SinkError(SentinelError):
    """A sink failed to apply a view; the runner retries with backoff (abstract)."""

    _abstract = True


class SinkUnavailable(SinkError):
    """The sink's target cannot be reached at all."""


class SinkRejected(SinkError):
    """The sink's target answered and refused the change."""


class StateError(SentinelError):
    """The state directory cannot be read or written."""


class OutboxLocked(StateError):
    """Another process (normally a running sentinel) holds the outbox file."""


class StartupError(SentinelError):
    """`sentinel run` cannot start as configured on this machine (one line, exit 2)."""


class BadRequest(SentinelError):
    """A request the API answers with `status` (400 unless said) and the JSON `body`
    (`{"error": message}` plus `extra`), having changed nothing."""

    def __init__(self, message: str, *, status: int = 400,
                 extra: Mapping[str, object] | None = None) -> None:
        self.status = status
        self.body: dict[str, object] = {"error": message, **(extra or {})}
        super().__init__(message)


class SignatureError(SentinelError):
    """A webhook secret cannot be decoded, or a message does not verify."""


class ProtocolError(SentinelError):
    """A peer's answer is not one the probe can read (a PROTOCOL result)."""


class NoResponse(ProtocolError):
    """The peer closed the connection before any answer (a RESET result, as httpx says)."""


class BadFrame(ProtocolError):
    """The answer is not well-formed HTTP/2 (a frame, a header block): the gRPC probe
    adds what the server sent first to its detail."""


class ResolveError(SentinelError, socket.gaierror):
    """A host name did not resolve (in time); `strerror` is the reason, as the DNS
    failure's text (see `sentinel.probes.resolve`): a DNS result."""


class IllegalTransition(SentinelError):
    """A move the breaker's transition table does not allow, or an observation older
    than the last; nothing changed. Always a bug in the caller."""


class EtcdError(SentinelError):
    """A call to etcd failed; `code` is etcd's gRPC status code when it answered, and
    `reason` etcd's own description of the error ("etcdserver: invalid auth token"):
    etcd names its errors by these, and its Go client tells them apart by them.

    `maybe_applied` is true when the request may have reached etcd before the
    failure (a timeout after sending): a transaction then may or may not have
    landed, and the caller must read before it retries."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "",
                 maybe_applied: bool = False) -> None:
        self.code = code
        self.reason = reason
        self.maybe_applied = maybe_applied
        super().__init__(message)


class EtcdCompacted(EtcdError):
    """A watch's start revision was compacted; read the range afresh, then watch on."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"revisions up to {compact_revision} have been compacted")


class NotLeader(SentinelError):
    """A write fenced by the leader key failed: another member leads, or none does."""
