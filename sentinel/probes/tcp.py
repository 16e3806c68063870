"""The `tcp` probe: connect, optionally over TLS, optionally send and expect.

A check is one fresh connection (no pooling, as HAProxy's `tcp-check` does):
connect within the timeout, do the TLS handshake if asked, send `send`, then
read until `expect` matches, the peer closes, or the timeout ends. Host names
are resolved at probe time, within the timeout (`sentinel.probes.resolve`).

A check is a `TcpExchange` (`sentinel.probes.exchange`). Plain TCP checks
run it on a raw non-blocking socket closed with an RST, like HAProxy's, so
the checker leaves no TIME_WAIT (`sentinel.probes.rawsock`; in a running
engine the probe loop drives them); TLS checks follow the same exchange over
a trio stream (`check_streams`).
"""

from __future__ import annotations

import ssl

import trio

from sentinel.config.model import ProbeConfig, TcpSpec
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import exchange as lean
from sentinel.probes.base import Target, classify, failed, source_address
from sentinel.probes.rawsock import Address
from sentinel.probes.resolve import Resolver, default_resolver

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
                 resolver: Resolver | None = None) -> None:
        if not isinstance(config.spec, TcpSpec):
            raise TypeError(f"TcpProbe needs a TcpSpec, got {type(config.spec).__name__}")
        self._spec = config.spec
        self.resolver = resolver or default_resolver()
        self.timeout = config.timing.timeout
        self.lean = not self._spec.tls  # raw sockets unless TLS is needed
        self._source = source_address(config)
        self._send = self._spec.send or None
        self._quiet = self._send is None and self._spec.expect is None  # connect-only
        self._connects: dict[int, lean.Connect] = {}
        # Built once: loading the trust store on every check would cost more than the check.
        self._ssl: ssl.SSLContext | None = None
        if self._spec.tls:
            self._ssl = ssl_context or client_context(self._spec.verify)

    def exchange(self, target: Target) -> TcpExchange:
        """A fresh exchange for one check (both paths and the probe loop follow one); its
        connect carries the `send` bytes, if any (`Connect.then`)."""
        connect = self._connects.get(target.port)
        if connect is None:
            connect = self._connects[target.port] = lean.Connect(
                target.port, delay_ack=self._quiet, source=self._source, then=self._send)
        return TcpExchange(self._spec, self.timeout, connect)

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        if self.lean:
            return await lean.check_raw(self, target)
        return await self.check_streams(target)

    async def check_streams(self, target: Target) -> ProbeResult:
        """One check following the exchange over trio's streams: the TLS path (and, for
        a plain probe, the reference the raw-socket path is tested against)."""
        exchange = self.exchange(target)

        async def drive(address: Address) -> None:
            async def connect(step: lean.Connect) -> lean.Channel:
                return await self.open_stream(target, exchange, address, step)

            await lean.follow(exchange, connect)

        return await lean.check(exchange, target.host, self.timeout, self.resolver, drive)

    async def aclose(self) -> None:
        """Nothing is pooled; present for the Probe protocol."""

    async def open_stream(self, target: Target, exchange: TcpExchange, address: Address,
                          step: lean.Connect) -> trio.abc.Stream:
        """The Connect step through trio's streams, with the TLS handshake when `tls`.
        `address` is resolved already; a host name stays the TLS server name."""
        source = step.source[1] if step.source else None
        stream: trio.abc.Stream = await trio.open_tcp_stream(address[1], step.port,
                                                             local_address=source)
        if self._ssl is None:
            return stream
        exchange.phase = "tls handshake"
        tls = trio.SSLStream(stream, self._ssl, server_hostname=self._spec.sni or target.host)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return tls


class TcpExchange(lean.Conversation):
    """One check's progress (`phase`, what was read) and verdict; see `lean.Conversation`.

    After the `send` bytes, input is read until `expect` matches, the peer
    closes, or READ_CAP bytes came without a match.
    """

    __slots__ = ("_expect", "_timeout", "mismatch", "phase", "received")

    def __init__(self, spec: TcpSpec, timeout: float, connect: lean.Connect) -> None:
        """`connect` carries the `send` bytes, if any (`Connect.then`)."""
        # One is built per check: the conversation's fields are set here rather than by
        # a super().__init__ call, and `received` is bytes until something is read.
        self.connect, self._at = connect, lean.START
        self._expect = spec.expect
        self._timeout = timeout
        self.phase = "connect"
        self.received: bytes | bytearray = b""
        self.mismatch = ""

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
        if not isinstance(buf, bytearray):
            buf = self.received = bytearray()
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
        return ProbeResult(True, latency)  # positional: a third cheaper, on every check

    def timed_out(self, latency: float) -> ProbeResult:
        """A TIMEOUT naming the phase it was in and what it had read."""
        return no_answer(self._timeout, self.phase, self.received, latency)

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """Every foreign error becomes a failure kind (the edge table in `base`)."""
        return failed(*classify(exc), latency)
