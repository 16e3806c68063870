"""Lean checks as sans-I/O exchanges, and the Trio driver that runs one check.

A lean probe (plain `tcp`, `http`) describes one check as an `Exchange`: the
bytes to send once connected, then a feed of what comes back, ending in a
`ProbeResult`. The exchange decides; a driver does the I/O. Two drivers run
the same exchanges:

- `check` + `drive` here: one Trio task per check on a raw socket
  (`rawsock`), which is what `probe.check(target)` does (host names are
  resolved first, within the check's timeout: `sentinel.probes.resolve`);
- `sentinel.engine.probeloop`: one epoll loop driving every due check at once.

Because both feed the same exchange, a check gives the same result, failure
kind and text on either path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol, runtime_checkable

import trio

from sentinel.model import ProbeResult
from sentinel.probes import rawsock
from sentinel.probes.base import Target
from sentinel.probes.resolve import Address, Resolver


class Verdicts(Protocol):
    """What `check` asks of a check when it ends: the exchange's three verdicts (also
    met by checks that are not exchanges, such as a gRPC call)."""

    def result(self, latency: float) -> ProbeResult:
        """The verdict once the check is complete."""

    def timed_out(self, latency: float) -> ProbeResult:
        """The verdict when the timeout ended the check."""

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """The verdict when the check raised `exc` (translated at this edge)."""


class Exchange(Verdicts, Protocol):
    """One check's conversation, without I/O.

    The driver connects (with a delayed ACK when `connect_only`), calls
    `connected()`, sends `request`, calls `sent()`, and while that said a reply
    is wanted feeds what it reads (`feed` until it returns True, or `eof`).
    Then it asks for `result`; a driver that gave up asks for `timed_out`, and
    one that hit an exception (from the socket or from `feed`/`eof`) for `failed`.
    """

    request: bytes  # sent once connected; b"" for nothing
    connect_only: bool  # nothing sent, nothing read: healthy once the handshake is done

    def connected(self) -> None:
        """The connection is up (and, for TLS, the handshake done)."""

    def sent(self) -> bool:
        """The request is out; True when a reply must be read."""

    def feed(self, data: bytes) -> bool:
        """Take the next bytes read; True when the check has what it needs."""

    def eof(self) -> None:
        """The peer closed before `feed` was satisfied."""


@runtime_checkable
class LeanProbe(Protocol):
    """A probe whose checks can run as exchanges (the probe loop takes these)."""

    lean: bool  # False: this probe's checks need streams (TLS)
    timeout: float

    def exchange(self, target: Target) -> Exchange:
        """A fresh exchange for one check of `target`."""


async def check(exchange: Verdicts, host: str, within: float, resolver: Resolver,
                drive: Callable[[Address], Awaitable[None]]) -> ProbeResult:
    """Resolve `host`, then run `drive` (which feeds `exchange`) on its address, both
    within `within` seconds; never raises for a failed check. A lookup that runs out of
    time is a DNS failure, not the exchange's timeout."""
    start = trio.current_time()
    deadline = start + within
    try:
        address = await resolver.resolve(host, deadline)
        with trio.move_on_at(deadline) as scope:
            await drive(address)
    except Exception as exc:  # the edge: the exchange translates foreign errors
        return exchange.failed(exc, trio.current_time() - start)
    latency = trio.current_time() - start
    if scope.cancelled_caught:
        return exchange.timed_out(latency)
    return exchange.result(latency)


async def converse(exchange: Exchange, send_all: Callable[[bytes], Awaitable[None]],
                   receive_some: Callable[[], Awaitable[bytes | bytearray]]) -> None:
    """Send the request and feed the reply over any connected transport."""
    exchange.connected()
    if exchange.request:
        await send_all(exchange.request)
    if not exchange.sent():
        return
    while True:
        data = await receive_some()
        if not data:
            exchange.eof()
            return
        if exchange.feed(bytes(data)):
            return


async def drive(exchange: Exchange, port: int, address: Address) -> None:
    """One check of `address`, `port` on a raw socket, closed with an RST (see `rawsock`)."""
    sock = await rawsock.connect(address, port, delay_ack=exchange.connect_only)
    try:
        await converse(exchange, partial(rawsock.send_all, sock),
                       partial(rawsock.recv_some, sock))
    finally:
        rawsock.close_rst(sock)
