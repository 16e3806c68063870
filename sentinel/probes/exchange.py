"""Lean checks as pull-style sans-I/O exchanges, and the Trio driver that runs one check.

A lean probe (`tcp`, `http`, `agent`) describes one check as an `Exchange`
that says what it needs next, as h11's `next_event()` does: `Connect` (to
this port, from this source address, with a delayed ACK or not, and the
bytes to send as soon as connected, if any: the request), `RECEIVE` (the
driver then hands it what came with `receive`, b"" when the peer closed),
or `DONE`; then it gives its verdict. The
exchange decides; a driver does the I/O and asks again. Two drivers follow
the same exchanges, so the sequence of a check is written once:

- `follow` here: one Trio task per check, on a raw socket (`rawsock`; host
  names resolved first, within the check's timeout: `sentinel.probes.resolve`)
  or on a trio stream (TLS);
- `sentinel.engine.probeloop`: one epoll loop advancing every due check.

A check therefore gives the same result, failure kind and text on either
path. `Conversation` is the one sequence the three kinds share (connect,
send the request if there is one, read until the answer is complete).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

import trio

from sentinel.model import ProbeResult
from sentinel.probes import rawsock
from sentinel.probes.base import Target
from sentinel.probes.rawsock import Address
from sentinel.probes.resolve import Resolver


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect to `port` (of the target's address), from `source` when set; `delay_ack`
    for a check that ends at the handshake (see `rawsock`); `then`: send all of these
    bytes as soon as connected, as part of this step (the request of a check that sends
    one: the probe loop's first `send` then also tells whether the connect is done, one
    system call fewer than asking)."""

    port: int
    delay_ack: bool = False
    source: Address | None = None
    then: bytes | None = None


class Need(enum.Enum):
    """The steps that carry nothing: read once and `receive` it, or stop and judge."""

    RECEIVE = "receive"
    DONE = "done"


RECEIVE, DONE = Need.RECEIVE, Need.DONE
Step = Connect | Need


class Verdicts(Protocol):
    """What a driver asks of a check when it ends: the exchange's three verdicts (also
    met by checks that are not exchanges, such as a gRPC call or a DNS query)."""

    def result(self, latency: float) -> ProbeResult:
        """The verdict once the check is DONE."""

    def timed_out(self, latency: float) -> ProbeResult:
        """The verdict when the timeout ended the check."""

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """The verdict when the check raised `exc` (translated at this edge)."""


class Exchange(Verdicts, Protocol):
    """One check's conversation, without I/O: the driver does each step `next_step`
    returns and asks again, until DONE. An exception from a step (the socket's, or one
    raised by `receive`) ends the check with `failed`; the timeout with `timed_out`."""

    def next_step(self) -> Step:
        """What the check needs next."""

    def receive(self, data: bytes) -> None:
        """The bytes one RECEIVE read; b"" when the peer closed."""


@runtime_checkable
class LeanProbe(Protocol):
    """A probe whose checks are exchanges (the probe loop takes these)."""

    lean: bool  # False: this probe's checks need trio streams (TLS)
    timeout: float
    resolver: Resolver  # for host names: the probe loop resolves through it too

    def exchange(self, target: Target) -> Exchange:
        """A fresh exchange for one check of `target`."""


_CONNECT, _CONNECTED, _READ, _DONE = range(4)
START = _CONNECT  # where a Conversation starts (for subclasses that set its fields)


class Conversation:
    """The sequence `tcp`, `http` and `agent` share: `connect` (which carries the
    request, if any: `Connect.then`), then RECEIVE while `sent()` said a reply is
    wanted, until `feed` has what it needs or the peer closes (`eof`). Subclasses give
    the hooks and the verdicts."""

    __slots__ = ("_at", "connect")

    def __init__(self, connect: Connect) -> None:
        self.connect = connect
        self._at = _CONNECT

    def next_step(self) -> Step:
        """Connect (and send), then receive until done (see the class docstring)."""
        at = self._at
        if at == _READ:
            return RECEIVE
        if at == _CONNECT:
            self._at = _CONNECTED
            return self.connect
        if at == _CONNECTED:
            self.connected()
            if self.sent():
                self._at = _READ
                return RECEIVE
        self._at = _DONE
        return DONE

    def receive(self, data: bytes) -> None:
        """Feed what was read; the peer closing ends the reading."""
        if not data:
            self._at = _DONE
            self.eof()
        elif self.feed(data):
            self._at = _DONE

    def connected(self) -> None:
        """The connection is up (and, for TLS, the handshake done)."""

    def sent(self) -> bool:
        """The request is out; True when a reply must be read."""
        return False

    def feed(self, data: bytes) -> bool:
        """Take the next bytes read; True when the check has what it needs."""
        return True

    def eof(self) -> None:
        """The peer closed before `feed` was satisfied."""


class Channel(Protocol):
    """A connected byte stream as `follow` uses it (a trio stream is one)."""

    async def send_all(self, data: bytes) -> None:
        """Send all of `data`."""

    async def receive_some(self) -> bytes | bytearray:
        """The next bytes; b"" at EOF."""

    async def aclose(self) -> None:
        """Close (`follow` closes forcefully: no goodbye is awaited)."""


async def follow(exchange: Exchange, connect: Callable[[Connect], Awaitable[Channel]]
                 ) -> None:
    """Do what `exchange` asks until it is DONE: the per-task driver. `connect` opens
    the channel a Connect step asks for; the channel is closed however this ends."""
    channel: Channel | None = None
    try:
        while (step := exchange.next_step()) is not DONE:
            if step is RECEIVE:
                assert channel is not None, "RECEIVE before Connect"
                exchange.receive(bytes(await channel.receive_some()))
            else:
                assert isinstance(step, Connect)
                channel = await connect(step)
                if step.then is not None:
                    await channel.send_all(step.then)
    finally:
        if channel is not None:
            with trio.CancelScope() as scope:  # forcefully: no goodbye is awaited
                scope.cancel()
                await channel.aclose()


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


async def check_raw(probe: LeanProbe, target: Target) -> ProbeResult:
    """One check of `target` by `probe` in this task, on a raw socket."""
    exchange = probe.exchange(target)
    return await check(exchange, target.host, probe.timeout, probe.resolver,
                       partial(drive_raw, exchange))


async def drive_raw(exchange: Exchange, address: Address) -> None:
    """Follow `exchange` on raw sockets to `address` (resolved already)."""

    async def connect(step: Connect) -> Channel:
        sock = await rawsock.connect(address, step.port, delay_ack=step.delay_ack,
                                     source=step.source)
        return rawsock.RawChannel(sock)

    await follow(exchange, connect)
