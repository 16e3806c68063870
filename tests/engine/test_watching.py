"""Watched connections in the probe loop, against a real loopback listener the test
controls: held without traffic, a crash is a hint within milliseconds, idle closes and
resets by a live server are quiet, a dropped group's connection is closed."""

from __future__ import annotations

import contextlib
import math
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
import trio

from sentinel.config.model import (
    ProbeConfig,
    TcpSpec,
    Timing,
    WatchConfig,
)
from sentinel.engine.probegroups import ProbeGroup
from sentinel.engine.probeloop import ProbeLoop
from sentinel.engine.slots import Slots
from sentinel.engine.watching import WatchStatistics
from sentinel.model import ProbeResult
from sentinel.probes.tcp import TcpProbe
from tests.engine.loop import group
from tests.probes.conftest import until

LINGER_0 = struct.pack("ii", 1, 0)


@dataclass
class Backend:
    """A listener on 127.0.0.1 that accepts and holds connections until told otherwise."""

    listener: trio.socket.SocketType
    held: list[trio.socket.SocketType] = field(default_factory=list)
    accepted: int = 0

    @property
    def port(self) -> int:
        """Where it listens."""
        return int(self.listener.getsockname()[1])

    async def serve(self) -> None:
        """Accept until the listener is closed."""
        while True:
            try:
                conn, _ = await self.listener.accept()
            except (OSError, trio.ClosedResourceError):  # crashed
                return
            self.accepted += 1
            self.held.append(conn)

    def close_held(self, *, reset: bool = False) -> None:
        """Close every held connection: a FIN, or an RST when `reset`."""
        for conn in self.held:
            if reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            conn.close()
        self.held.clear()

    def crash(self) -> None:
        """What a killed process's kernel does: the listener and every connection closed."""
        self.listener.close()
        self.close_held()


@pytest.fixture
async def backend(nursery: trio.Nursery) -> AsyncIterator[Backend]:
    """A running Backend, closed when the test ends."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    b = Backend(listener)
    nursery.start_soon(b.serve)
    yield b
    b.crash()


class Host:
    """Records hints; probes are never due (only the watch acts)."""

    def __init__(self) -> None:
        self.hints: list[str] = []

    def probes_started(self, lateness: Sequence[float]) -> None:
        """Not expected."""

    def probe_done(self, group: ProbeGroup, result: ProbeResult, started: float, now: float,
                   start_unix: float, anchor: float) -> None:
        """Not expected: the member is never due."""

    def watch_lost(self, group: ProbeGroup, hint: str) -> None:
        """Record the hint."""
        self.hints.append(hint)


def watched_group(port: int, interval: float = 0.2, timeout: float = 0.1
                  ) -> tuple[ProbeGroup, TcpProbe]:
    """A group over 127.0.0.1:`port` with `watch: true`, never due for a probe."""
    config = ProbeConfig("tcp", Timing(interval=interval, timeout=timeout), TcpSpec(),
                         watch=WatchConfig())
    return group(port, math.inf, probe=config), TcpProbe(config)


async def start_loop(nursery: trio.Nursery, host: Host) -> ProbeLoop:
    """A running probe loop."""
    loop = ProbeLoop(host, Slots(8), lambda: 0.0)
    await nursery.start(loop.run)
    return loop


def stats(loop: ProbeLoop) -> WatchStatistics:
    """The loop's watched connections (it has some)."""
    found = loop.watch_statistics()
    assert found is not None
    return found


async def test_a_crash_is_a_hint(nursery: trio.Nursery, backend: Backend) -> None:
    """Held: one accepted connection, nothing sent. The process dies (listener and
    connection closed): a hint naming the refused reconnect."""
    host = Host()
    loop = await start_loop(nursery, host)
    group, probe = watched_group(backend.port)
    loop.add(group, probe)
    await until(lambda: backend.held and stats(loop).held == 1)
    backend.crash()
    await until(lambda: host.hints)
    assert host.hints == ["watched connection closed by the backend, then connection refused"]


async def test_idle_closes_and_resets_by_a_live_server_are_quiet(
        nursery: trio.Nursery, backend: Backend) -> None:
    """The server closes the held connection (an idle timeout), then resets the next one
    (a firewall's or the server's own RST), each once the connection outlived the
    probe timeout: reconnected each time, once, and no hint."""
    host = Host()
    loop = await start_loop(nursery, host)
    group, probe = watched_group(backend.port, interval=0.05)
    loop.add(group, probe)
    for round_, reset in enumerate((False, True, False), start=1):
        await until(lambda r=round_: backend.accepted == r and backend.held)
        await trio.sleep(0.15)  # past the 0.1 s timeout: not a reconnect cut short
        backend.close_held(reset=reset)
    await until(lambda: stats(loop).lost == 3 and backend.accepted == 4)
    assert host.hints == []


async def test_a_reconnect_cut_short_is_a_hint(
        nursery: trio.Nursery, backend: Backend) -> None:
    """A dying process's listener may take the reconnect and then close it: closed within
    the probe timeout of reconnecting, that is a hint too (a long timeout here: the test
    closes it well within)."""
    host = Host()
    loop = await start_loop(nursery, host)
    group, probe = watched_group(backend.port, interval=0.05, timeout=10.0)
    loop.add(group, probe)
    await until(lambda: backend.held)
    backend.close_held()
    await until(lambda: backend.accepted == 2 and backend.held)
    backend.close_held()
    await until(lambda: host.hints)
    assert host.hints == [
        "watched connection closed by the backend again right after reconnecting"]


async def test_a_dropped_group_closes_its_connection(
        nursery: trio.Nursery, backend: Backend) -> None:
    """A regroup stops the group: the server sees its connection end."""
    loop = await start_loop(nursery, Host())
    group, probe = watched_group(backend.port)
    loop.add(group, probe)
    await until(lambda: backend.held)
    group.stop()
    loop.drop(group)
    with trio.fail_after(10), contextlib.suppress(ConnectionResetError):  # closed with an RST
        assert await backend.held[0].recv(1) == b""
    assert stats(loop).watched == 0
