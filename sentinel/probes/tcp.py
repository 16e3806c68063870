"""The `tcp` probe: connect, optionally over TLS, optionally send and expect.

A check is one fresh connection (no pooling, as HAProxy's `tcp-check` does):
connect within the timeout, do the TLS handshake if asked, send `send`, then
read until `expect` matches, the peer closes, or the timeout ends. Host names
are resolved at probe time, within the timeout (`sentinel.probes.resolve`).

Plain TCP checks take the lean path (`sentinel.probes.rawsock`): one raw
non-blocking socket closed with an RST, like HAProxy's, so the checker
leaves no TIME_WAIT. TLS checks go through trio's streams (`lean=False`
forces that path; the tests run both against the same servers). Both feed
one `TcpExchange` (`sentinel.probes.exchange`), as does the probe loop.
"""

from __future__ import annotations

import ssl
from functools import partial

import trio

from sentinel.config.model import ProbeConfig, TcpSpec
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import exchange as lean
from sentinel.probes.base import Target, classify, failed
from sentinel.probes.resolve import Address, Resolver, default_resolver

READ_CAP = 64 * 1024  # give up on `expect` after this many bytes without a match
SHOWN = 64  # how much of what was read a failure detail quotes


def client_context(verify: bool) -> ssl.SSLContext:
    """A client TLS context; `verify=False` checks neither chain nor host name."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def quote(data: bytes) -> str:
    """`data` as a bytes literal, truncated for a failure detail."""
    if len(data) <= SHOWN:
        return repr(data)
    return f"{data[:SHOWN]!r}... ({len(data)} bytes)"


def no_answer(timeout: float, phase: str, received: bytes | bytearray,
              latency: float) -> ProbeResult:
    """The TIMEOUT of a check that ended in `phase`, quoting what it had read."""
    detail = f"no answer within {timeout * 1000:.0f}ms ({phase})"
    if received:
        detail += f": got {quote(bytes(received))}"
    return failed(FailureKind.TIMEOUT, detail, latency)


class TcpProbe:
    """Connect to the target; with `send`/`expect`, a scripted exchange; with `tls`, a handshake.

    `ssl_context` replaces the context built from `verify` (a private CA, tests).
    """

    def __init__(self, config: ProbeConfig, *, ssl_context: ssl.SSLContext | None = None,
                 lean: bool = True, resolver: Resolver | None = None) -> None:
        if not isinstance(config.spec, TcpSpec):
            raise TypeError(f"TcpProbe needs a TcpSpec, got {type(config.spec).__name__}")
        self._spec = config.spec
        self._resolver = resolver or default_resolver()
        self.timeout = config.timing.timeout
        self.lean = lean and not self._spec.tls  # raw sockets unless TLS is needed
        # Built once: loading the trust store on every check would cost more than the check.
        self._ssl: ssl.SSLContext | None = None
        if self._spec.tls:
            self._ssl = ssl_context or client_context(self._spec.verify)

    def exchange(self, target: Target) -> TcpExchange:
        """A fresh exchange for one check (both paths and the probe loop feed one)."""
        return TcpExchange(self._spec, self.timeout)

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        exchange = self.exchange(target)
        drive = (partial(lean.drive, exchange, target.port) if self.lean
                 else partial(self._run_stream, target, exchange))
        return await lean.check(exchange, target.host, self.timeout, self._resolver, drive)

    async def aclose(self) -> None:
        """Nothing is pooled; present for the Probe protocol."""

    async def _run_stream(self, target: Target, exchange: TcpExchange, address: Address
                          ) -> None:
        """Through trio's streams: needed for TLS, kept as the reference path. `address`
        is resolved already; a host name stays the TLS server name."""
        stream: trio.abc.Stream = await trio.open_tcp_stream(address[1], target.port)
        try:
            if self._ssl is not None:
                exchange.phase = "tls handshake"
                stream = trio.SSLStream(
                    stream, self._ssl, server_hostname=self._spec.sni or target.host
                )
                await stream.do_handshake()
            await lean.converse(exchange, stream.send_all,
                                partial(stream.receive_some, READ_CAP))
        finally:
            # No TLS close_notify wait: the peer's manners are not what is being checked.
            await trio.aclose_forcefully(stream)


class TcpExchange:
    """One check's progress (`phase`, what was read) and verdict; see `lean.Exchange`.

    After the `send` bytes, input is read until `expect` matches, the peer
    closes, or READ_CAP bytes came without a match.
    """

    __slots__ = ("_expect", "_timeout", "connect_only", "mismatch", "phase", "received",
                 "request")

    def __init__(self, spec: TcpSpec, timeout: float) -> None:
        self.request = spec.send or b""
        self._expect = spec.expect
        self._timeout = timeout
        self.connect_only = not self.request and self._expect is None
        self.phase = "connect"
        self.received = bytearray()
        self.mismatch = ""

    def connected(self) -> None:
        """Connected: the send phase starts (if there is anything to send)."""
        if self.request:
            self.phase = "send"

    def sent(self) -> bool:
        """True while `expect` has yet to match."""
        if self._expect is None:
            return False
        self.phase = "expect"
        return not self._expect.search(self.received)

    def feed(self, data: bytes) -> bool:
        """Take bytes read; True once `expect` matched or the read cap was reached."""
        assert self._expect is not None
        buf = self.received
        buf += data[: READ_CAP - len(buf)]
        if self._expect.search(buf):
            return True
        if len(buf) >= READ_CAP:
            self.mismatch = f"expect not matched in {READ_CAP} bytes: got {quote(bytes(buf))}"
            return True
        return False

    def eof(self) -> None:
        """The peer closed before `expect` matched."""
        self.mismatch = f"expect not matched: got {quote(bytes(self.received))}"

    def result(self, latency: float) -> ProbeResult:
        """Healthy unless `expect` failed."""
        if self.mismatch:
            return failed(FailureKind.BODY, self.mismatch, latency)
        return ProbeResult(ok=True, latency=latency)

    def timed_out(self, latency: float) -> ProbeResult:
        """A TIMEOUT naming the phase it was in and what it had read."""
        return no_answer(self._timeout, self.phase, self.received, latency)

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """Every foreign error becomes a failure kind (the edge table in `base`)."""
        return failed(*classify(exc), latency)
