"""The one exceptions module.

Exceptions are for misconfiguration, broken sinks and bugs; a failed health
check is a ProbeResult, never an exception.

    SentinelError
    ├── ConfigError            one bad value in the config, with file:line:col and key path
    │   └── ConfigErrors       several ConfigErrors found in one pass
    ├── SinkError              a sink could not converge to the desired view
    │   ├── SinkUnavailable    the target is unreachable (socket missing, command not found)
    │   └── SinkRejected       the target refused the change (nginx -t failed, 4xx)
    ├── StateError             the state directory cannot be used
    ├── StartupError           this machine refuses what the config asks at start: the API
    │                          address is taken or not local, state_dir is not writable
    ├── EtcdError              a call to etcd failed: unreachable, timed out, or refused
    │   └── EtcdCompacted      a watch asked for revisions etcd has already compacted away
    └── NotLeader              a write fenced by leadership failed: this member leads no more
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SentinelError(Exception):
    """Base of every error sentinel raises on purpose."""


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
    """A sink failed to apply a view; the runner retries with backoff."""


class SinkUnavailable(SinkError):
    """The sink's target cannot be reached at all."""


class SinkRejected(SinkError):
    """The sink's target answered and refused the change."""


class StateError(SentinelError):
    """The state directory cannot be read or written."""


class StartupError(SentinelError):
    """`sentinel run` cannot start as configured on this machine (one line, exit 2)."""


class EtcdError(SentinelError):
    """A call to etcd failed; `code` is etcd's gRPC status code when it answered.

    `maybe_applied` is true when the request may have reached etcd before the
    failure (a timeout after sending): a transaction then may or may not have
    landed, and the caller must read before it retries."""

    def __init__(self, message: str, *, code: int | None = None,
                 maybe_applied: bool = False) -> None:
        self.code = code
        self.maybe_applied = maybe_applied
        super().__init__(message)


class EtcdCompacted(EtcdError):
    """A watch's start revision was compacted; read the range afresh, then watch on."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"revisions up to {compact_revision} have been compacted")


class NotLeader(SentinelError):
    """A write fenced by the leader key failed: another member leads, or none does."""
