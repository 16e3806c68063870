"""The `tcp` probe: connect, optionally over TLS, optionally send and expect.

A check is one fresh connection (no pooling, as HAProxy's `tcp-check` does):
connect within the timeout, do the TLS handshake if asked, send `send`, then
read until `expect` matches, the peer closes, or the timeout ends. Host names
are resolved at probe time.

Plain TCP checks take the lean path (`sentinel.probes.rawsock`): one raw
non-blocking socket closed with an RST, like HAProxy's, so the checker
leaves no TIME_WAIT. TLS checks go through trio's streams (`lean=False`
forces that path; the tests run both against the same servers).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable

import trio

from sentinel.config import ProbeConfig, TcpSpec
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import rawsock
from sentinel.probes.base import Target, classify, failed

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


class TcpProbe:
    """Connect to the target; with `send`/`expect`, a scripted exchange; with `tls`, a handshake.

    `ssl_context` replaces the context built from `verify` (a private CA, tests).
    """

    def __init__(self, config: ProbeConfig, *, ssl_context: ssl.SSLContext | None = None,
                 lean: bool = True) -> None:
        if not isinstance(config.spec, TcpSpec):
            raise TypeError(f"TcpProbe needs a TcpSpec, got {type(config.spec).__name__}")
        self._spec = config.spec
        self._timeout = config.timing.timeout
        self._lean = lean and not self._spec.tls  # raw sockets unless TLS is needed
        # Built once: loading the trust store on every check would cost more than the check.
        self._ssl: ssl.SSLContext | None = None
        if self._spec.tls:
            self._ssl = ssl_context or client_context(self._spec.verify)

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        start = trio.current_time()
        exchange = _Exchange()
        try:
            with trio.move_on_after(self._timeout) as scope:
                await self._run(target, exchange)
        except Exception as exc:  # the edge: every foreign error becomes a failure kind
            kind, text = classify(exc)
            return failed(kind, text, trio.current_time() - start)
        latency = trio.current_time() - start
        if scope.cancelled_caught:
            detail = f"no answer within {self._timeout * 1000:.0f}ms ({exchange.phase})"
            if exchange.received:
                detail += f": got {quote(bytes(exchange.received))}"
            return failed(FailureKind.TIMEOUT, detail, latency)
        if exchange.mismatch:
            return failed(FailureKind.BODY, exchange.mismatch, latency)
        return ProbeResult(ok=True, latency=latency)

    async def aclose(self) -> None:
        """Nothing is pooled; present for the Probe protocol."""

    async def _run(self, target: Target, exchange: _Exchange) -> None:
        """Connect, handshake, send and read, recording progress in `exchange`."""
        if self._lean:
            await self._run_lean(target, exchange)
        else:
            await self._run_stream(target, exchange)

    async def _run_lean(self, target: Target, exchange: _Exchange) -> None:
        """The same exchange on one raw socket, closed with an RST (see rawsock)."""
        spec = self._spec
        exchange.phase = "connect"
        sock = await rawsock.connect(target.host, target.port)
        try:
            if spec.send:
                exchange.phase = "send"
                await rawsock.send_all(sock, spec.send)
            if spec.expect is not None:
                exchange.phase = "expect"
                await _read_until(lambda _n: rawsock.recv_some(sock), spec.expect, exchange)
        finally:
            rawsock.close_rst(sock)

    async def _run_stream(self, target: Target, exchange: _Exchange) -> None:
        """Through trio's streams: needed for TLS, kept as the reference path."""
        spec = self._spec
        exchange.phase = "connect"
        stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
        try:
            if self._ssl is not None:
                exchange.phase = "tls handshake"
                stream = trio.SSLStream(
                    stream, self._ssl, server_hostname=spec.sni or target.host
                )
                await stream.do_handshake()
            if spec.send:
                exchange.phase = "send"
                await stream.send_all(spec.send)
            if spec.expect is not None:
                exchange.phase = "expect"
                await _read_until(stream.receive_some, spec.expect, exchange)
        finally:
            # No TLS close_notify wait: the peer's manners are not what is being checked.
            await trio.aclose_forcefully(stream)


class _Exchange:
    """What one check got through, for its failure detail."""

    def __init__(self) -> None:
        self.phase = "connect"
        self.received = bytearray()
        self.mismatch = ""


async def _read_until(
    receive: Callable[[int], Awaitable[bytes | bytearray]],
    expect: re.Pattern[bytes],
    exchange: _Exchange,
) -> None:
    """Read until `expect` matches; EOF or the read cap first sets `exchange.mismatch`."""
    buf = exchange.received
    while not expect.search(buf):
        if len(buf) >= READ_CAP:
            exchange.mismatch = f"expect not matched in {READ_CAP} bytes: got {quote(bytes(buf))}"
            return
        chunk = await receive(READ_CAP - len(buf))
        if not chunk:
            exchange.mismatch = f"expect not matched: got {quote(bytes(buf))}"
            return
        buf += chunk
