"""The probe interface.

A probe checks one target and returns a `ProbeResult`; it never raises for a
failed check. Foreign exceptions (OSError, trio, ssl, httpx) are translated
once, at the edge, by `classify`. A probe that raises anyway (a bug, or a
setting that cannot be sent, such as a header that is not Latin-1) fails
that check only: `guarded_check` and the probe loop turn the exception into
an ERROR result with `crashed`, logged once per distinct error, so one bad
probe cannot stop the probing of every other service.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Protocol

import trio

from sentinel.config.model import ProbeConfig
from sentinel.errors import ResolveError
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes.rawsock import Address, literal
from sentinel.throttle import Throttle

log = logging.getLogger(__name__)
_crashes = Throttle()  # once per distinct error: the traceback is the news, not the count


@dataclass(frozen=True, slots=True)
class Target:
    """What one probe is aimed at."""

    service: str
    backend: str
    host: str
    port: int


def source_address(config: ProbeConfig) -> Address | None:
    """The probe's `source`: the local address its checks connect from, or None."""
    if config.source is None:
        return None
    address = literal(config.source)
    if address is None:  # the loader accepts IP addresses only
        raise ValueError(f"source must be an IP address, got {config.source!r}")
    return address


class Probe(Protocol):
    """One probe kind configured for one service; shared by its backends."""

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once, within the configured timeout."""
        ...

    async def aclose(self) -> None:
        """Release pooled resources (clients, sessions)."""
        ...


# The checker's own trouble, never the backend's: out of file descriptors (an API
# connection flood did this), socket buffers, memory or local ports. The engine feeds
# no breaker with these; it counts and reports them (FailureKind.LOCAL).
_LOCAL = {
    errno.EMFILE: "too many open files in sentinel (EMFILE)",
    errno.ENFILE: "too many open files on this host (ENFILE)",
    errno.ENOBUFS: "no socket buffer space (ENOBUFS)",
    errno.ENOMEM: "out of memory (ENOMEM)",
    errno.EADDRNOTAVAIL: "no free local address or port (EADDRNOTAVAIL)",
}

_SPAWN_LOCAL = {**_LOCAL, errno.EAGAIN: "cannot fork: process limit reached (EAGAIN)"}

_ERRNO_KINDS: dict[int, tuple[FailureKind, str]] = {
    **{number: (FailureKind.LOCAL, f"local: {text}") for number, text in _LOCAL.items()},
    errno.ECONNREFUSED: (FailureKind.CONNECT, "connection refused"),
    errno.ECONNRESET: (FailureKind.RESET, "connection reset"),
    errno.EPIPE: (FailureKind.RESET, "broken pipe"),
    errno.ECONNABORTED: (FailureKind.RESET, "connection aborted"),
    errno.EHOSTUNREACH: (FailureKind.CONNECT, "host unreachable"),
    errno.ENETUNREACH: (FailureKind.CONNECT, "network unreachable"),
    errno.ETIMEDOUT: (FailureKind.TIMEOUT, "connect timed out"),
}


def classify(exc: BaseException) -> tuple[FailureKind, str]:
    """Map a foreign exception to a failure kind and a short text (the edge table)."""
    if isinstance(exc, ResolveError):
        return FailureKind.DNS, exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return FailureKind.DNS, f"name resolution failed: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        reason = getattr(exc, "reason", None) or str(exc)
        return FailureKind.TLS, f"tls: {reason}"
    if isinstance(exc, OSError):
        # trio.open_tcp_stream wraps per-address failures in an OSError of its own.
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        if cause.errno in _ERRNO_KINDS:
            return _ERRNO_KINDS[cause.errno]
        for inner in _inner_errors(exc):
            if inner.errno in _ERRNO_KINDS:
                return _ERRNO_KINDS[inner.errno]
        return FailureKind.CONNECT, exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
        if isinstance(exc.__cause__, BaseException):
            return classify(exc.__cause__)
        return FailureKind.RESET, "connection closed"
    return FailureKind.ERROR, f"{type(exc).__name__}: {exc}"


def spawn_trouble(exc: OSError) -> str | None:
    """The LOCAL text when a command could not be started for the checker's own reasons
    (out of fds for its pipes, out of processes or memory), else None."""
    text = _SPAWN_LOCAL.get(exc.errno or 0)
    return f"local: {text}" if text else None


def _inner_errors(exc: BaseException) -> list[OSError]:
    """OSErrors grouped inside `exc` (trio reports one per address tried)."""
    found: list[OSError] = []
    for inner in (exc.__cause__, exc.__context__):
        if isinstance(inner, BaseExceptionGroup):
            found.extend(e for e in inner.exceptions if isinstance(e, OSError))
        elif isinstance(inner, OSError):
            found.append(inner)
    return found


def failed(kind: FailureKind, detail: str, latency: float) -> ProbeResult:
    """A failed result."""
    return ProbeResult(ok=False, latency=latency, failure=kind, detail=detail)


def crashed(exc: Exception, latency: float, target: Target) -> ProbeResult:
    """The result of a check that raised `exc` instead of returning: an ERROR naming it.
    The first time an error is seen it is logged with its traceback."""
    text = f"{type(exc).__name__}: {exc}"
    if _crashes.allow(text) is not None:
        log.error("probe of %s/%s (%s:%d) raised %s; each such check fails with this error "
                  "(logged once)", target.service, target.backend, target.host, target.port,
                  text, exc_info=exc)
    return failed(FailureKind.ERROR, f"probe error: {text}", latency)


async def guarded_check(probe: Probe, target: Target) -> ProbeResult:
    """`probe.check(target)`, with an exception raised out of it made that check's
    failure (see `crashed`); cancellation propagates."""
    start = trio.current_time()
    try:
        return await probe.check(target)
    except Exception as exc:  # the probe broke its contract: fail this check, not the run
        return crashed(exc, trio.current_time() - start, target)
