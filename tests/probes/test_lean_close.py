"""How lean checks end: a connect-only check never reaches the backend's application."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio

from sentinel.config.model import ProbeConfig, TcpSpec, Timing
from sentinel.probes.base import Target
from sentinel.probes.tcp import TcpProbe


@pytest.fixture
def unaccepted() -> Iterator[socket.socket]:
    """A listening socket nobody accepts on (the test drains it by hand)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        yield sock


def accepted(sock: socket.socket) -> int:
    """How many connections were waiting in `sock`'s accept queue (closes them)."""
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


async def test_connect_only_check_is_never_accepted(unaccepted: socket.socket) -> None:
    """A plain TCP check resets before its last handshake ACK: nothing reaches accept()."""
    port = unaccepted.getsockname()[1]
    probe = TcpProbe(ProbeConfig("tcp", Timing(timeout=0.5), TcpSpec()))
    for _ in range(10):
        assert (await probe.check(Target("s", "b", "127.0.0.1", port))).ok
    await trio.sleep(0.05)
    assert accepted(unaccepted) == 0


async def test_send_check_completes_the_handshake(unaccepted: socket.socket) -> None:
    """A check with `send` acknowledges at once: the backend accepts its connection."""
    port = unaccepted.getsockname()[1]
    probe = TcpProbe(ProbeConfig("tcp", Timing(timeout=0.5), TcpSpec(send=b"PING\r\n")))
    assert (await probe.check(Target("s", "b", "127.0.0.1", port))).ok
    await trio.sleep(0.05)
    assert accepted(unaccepted) == 1
