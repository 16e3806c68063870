"""The lean `http` probe: one raw socket, one hand-written request, a minimal reader.

httpx with a shared client costs about 610 us of CPU per check and falls
behind at 5,000 backends on this 2-core machine; this path does the same
check (method, path, Host, headers, expect_status, expect_body; redirects
not followed) with a `send` and a few `recv`s on a non-blocking socket,
closed with an RST like HAProxy's checks. HTTPS keeps going through httpx
(`sentinel.probes.https`); both paths share the verdict functions, so the
same answer gives the same result and text. A check is an `HttpExchange`
(`sentinel.probes.exchange`), followed by a Trio task or by the probe loop.
"""

from __future__ import annotations

from sentinel.addresses import bracketed
from sentinel.config.model import HttpSpec, ProbeConfig
from sentinel.errors import NoResponse, ProtocolError
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import exchange as lean
from sentinel.probes.base import Target, classify, failed, source_address
from sentinel.probes.http1 import ResponseReader
from sentinel.probes.https import USER_AGENT, body_verdict, status_verdict
from sentinel.probes.resolve import Resolver, default_resolver


class LeanHttpProbe:
    """HTTP/1.1 health checks over raw non-blocking sockets."""

    def __init__(self, config: ProbeConfig, *, resolver: Resolver | None = None) -> None:
        if not isinstance(config.spec, HttpSpec):
            raise TypeError(f"LeanHttpProbe needs an HttpSpec, got {type(config.spec).__name__}")
        self._spec = config.spec
        self.resolver = resolver or default_resolver()
        self.timeout = config.timing.timeout
        self.lean = True
        self._source = source_address(config)
        self._connects: dict[tuple[str, int], lean.Connect] = {}
        # The usual statuses that pass, found once: matching `expect_status` range by range
        # on every check costs more than the rest of judging it.
        self._passing = frozenset(code for code in range(100, 600)
                                  if status_verdict(self._spec, code) is None)

    def request(self, target: Target) -> bytes:
        """The request bytes for `target`."""
        spec = self._spec
        host = spec.host or bracketed(target.host)
        headers = {"host": ("Host", host if spec.host else f"{host}:{target.port}"),
                   "user-agent": ("User-Agent", USER_AGENT),
                   "accept-encoding": ("Accept-Encoding", "identity"),
                   "connection": ("Connection", "close")}
        for name, value in spec.headers:  # configured names replace the defaults
            headers[name.lower()] = (name, value)
        lines = [f"{spec.method} {spec.path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.values()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def exchange(self, target: Target) -> HttpExchange:
        """A fresh exchange for one check (the probe loop follows these too); its
        connect, which carries the request (`Connect.then`), is built once per target."""
        key = (target.host, target.port)
        connect = self._connects.get(key)
        if connect is None:
            connect = self._connects[key] = lean.Connect(
                target.port, source=self._source, then=self.request(target))
        return HttpExchange(self._spec, self.timeout, connect, self._passing)

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        return await lean.check_raw(self, target)

    async def aclose(self) -> None:
        """Nothing is pooled; present for the Probe protocol."""


class HttpExchange(lean.Conversation):
    """One request and its response, judged by status and body; see `lean.Conversation`."""

    __slots__ = ("_passing", "_reader", "_spec", "_timeout")

    def __init__(self, spec: HttpSpec, timeout: float, connect: lean.Connect,
                 passing: frozenset[int]) -> None:
        """`connect` carries the request (`Connect.then`); `passing`: statuses known to
        pass `spec.expect_status` (others are judged)."""
        # One is built per check: the conversation's fields are set here rather than by
        # a super().__init__ call.
        self.connect, self._at = connect, lean.START
        self._passing = passing
        self._spec = spec
        self._timeout = timeout
        self._reader = ResponseReader(want_body=spec.expect_body is not None)

    def sent(self) -> bool:
        """A response is always read."""
        return True

    def feed(self, data: bytes) -> bool:
        """Parse the next bytes; True once the status (and the body, if judged) is in."""
        self._reader.feed(data)
        return self._reader.done

    def eof(self) -> None:
        """The peer closed: fine after a close-delimited body, a ProtocolError otherwise."""
        self._reader.eof()

    def result(self, latency: float) -> ProbeResult:
        """Judge the status, then the body (the verdict functions httpx's path uses)."""
        spec, reader = self._spec, self._reader
        status = reader.status
        verdict = None if status in self._passing else status_verdict(spec, status)
        if verdict is None and spec.expect_body is not None:
            verdict = body_verdict(spec, reader.body.decode("utf-8", errors="replace"))
        if verdict is None:
            return ProbeResult(True, latency)  # positional: a third cheaper, on every check
        return failed(*verdict, latency)

    def timed_out(self, latency: float) -> ProbeResult:
        """No complete answer within the timeout."""
        return failed(FailureKind.TIMEOUT, f"no answer within {self._timeout * 1000:.0f}ms",
                      latency)

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """A close before any answer is a RESET (as httpx reports it), other unreadable
        answers PROTOCOL; foreign errors go through the edge table in `base`."""
        if isinstance(exc, ProtocolError):
            kind = FailureKind.RESET if isinstance(exc, NoResponse) else FailureKind.PROTOCOL
            return failed(kind, str(exc), latency)
        return failed(*classify(exc), latency)
