"""How lean checks end: a connect-only check never reaches the backend's application,
also when the probe loop hands its socket on to the next check."""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import re
import select
import socket
import time
from collections.abc import Iterator

import pytest
import trio

from sentinel.config.model import HttpSpec, ProbeConfig, TcpSpec, Timing
from sentinel.engine.probeloop import EpollPoller, ProbeLoop
from sentinel.engine.slots import Slots
from sentinel.probes import rawsock
from sentinel.probes.base import Target
from sentinel.probes.http import LeanHttpProbe
from sentinel.probes.tcp import TcpProbe
from tests.engine.loop import Recheck, group, loop_checks
from tests.probes.conftest import Serve, pong
from tests.probes.peers import OK_BODY, reply, trickle


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


def count_sockets(monkeypatch: pytest.MonkeyPatch) -> list[socket.AddressFamily]:
    """The family of every new socket the probe loop makes from now on (the test's end
    undoes the counting)."""
    made: list[socket.AddressFamily] = []
    open_socket = rawsock.open_socket

    def counted(family: socket.AddressFamily, delay_ack: bool,
                source: rawsock.Address | None = None) -> _socket.socket:
        made.append(family)
        return open_socket(family, delay_ack, source)

    monkeypatch.setattr(rawsock, "open_socket", counted)
    return made


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


async def test_loop_checks_on_a_reused_socket_answer_as_on_a_new_one(
        unaccepted: socket.socket, refused_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe loop hands the socket of a connect-only check that connected within
    `connect` to the next check: ten checks of a port nobody accepts on, a refused one,
    ten more, make two sockets (the refused check's is closed). Each check answers as
    on a new socket (the reset that freed it is not taken for the next one's error; the
    refused one is refused), and none reaches accept(): a reused socket delays its last
    handshake ACK again."""
    made = count_sockets(monkeypatch)
    port = unaccepted.getsockname()[1]
    probe = TcpProbe(ProbeConfig("tcp", Timing(timeout=0.5), TcpSpec()))
    ports = [port] * 10 + [refused_port] + [port] * 10
    results, _ = await loop_checks([(probe, p) for p in ports])
    assert [(r.ok, r.detail) for r, _ in results] == (
        [(True, "")] * 10 + [(False, "connection refused")] + [(True, "")] * 10)
    assert len(made) == 2
    await trio.sleep(0.05)
    assert accepted(unaccepted) == 0


def test_a_disconnected_socket_is_clean_for_its_next_connect(unaccepted: socket.socket
                                                              ) -> None:
    """`disconnect` resets a connection; the error the reset leaves pending (never read)
    is gone once the socket connects again, from a new local port: the next check's
    readiness is a plain "writable", its SO_ERROR 0, and what it sends arrives."""
    port = unaccepted.getsockname()[1]
    sock = rawsock.open_socket(socket.AF_INET, delay_ack=False)
    with contextlib.closing(sock), select.epoll() as ready:
        ready.register(sock.fileno(), select.EPOLLOUT)
        ports = []
        for n in range(3):
            assert sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
            assert ready.poll(5) == [(sock.fileno(), select.EPOLLOUT)]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            ports.append(sock.getsockname()[1])
            assert sock.send(b"check %d" % n) == 7
            conn, _ = unaccepted.accept()
            with conn:
                conn.settimeout(5)
                assert conn.recv(64) == b"check %d" % n
            assert rawsock.disconnect(sock)
        assert len(set(ports)) == 3


@pytest.mark.parametrize("kind", ["http", "http, a line at a time", "tcp send/expect"])
async def test_a_check_that_read_its_answer_hands_its_socket_on(
        serve: Serve, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that waited in the poller for its answer and read it hands its socket on
    too (left in the poller's set, disarmed: it is watched one-shot): five checks 50 ms
    apart make one socket, and each reads its own answer (nothing of the last connection
    is left on the socket), also an answer that comes in pieces (the socket is watched
    again after each)."""
    made = count_sockets(monkeypatch)
    timing = Timing(timeout=0.5)
    if kind.startswith("http"):
        port = await serve(trickle(OK_BODY, 0.01) if "line" in kind else reply(OK_BODY))
        config = ProbeConfig("http", timing, HttpSpec())
        probe: TcpProbe | LeanHttpProbe = LeanHttpProbe(config)
    else:
        port = await serve(pong)
        config = ProbeConfig("tcp", timing, TcpSpec(send=b"PING\r\n",
                                                   expect=re.compile(rb"\+PONG")))
        probe = TcpProbe(config)
    host = Recheck(5, interval=0.05)
    loop = ProbeLoop(host, Slots(8), time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        loop.add(group(port, trio.current_time(), probe=config), probe)
        with trio.fail_after(10):
            await host.done.wait()
        nursery.cancel_scope.cancel()
    assert [(result.ok, result.detail) for _, result, _ in host.results] == [(True, "")] * 5
    assert len(made) == 1


@pytest.mark.parametrize("watches", [["arm", "register"], ["arm"]],
                         ids=["watched, then closed", "closed before it was watched"])
def test_a_socket_a_check_left_idle_is_watched_and_its_number_used_again(
        unaccepted: socket.socket, watches: list[str]) -> None:
    """A check's socket left idle stays in the poller's epoll set, disarmed. A watched
    connection may take it and register it for good (it is watched all the same), or
    give it up before watching it (its connect failed at once); once it is discarded, a
    new check socket on the same descriptor number is watched as any other (epoll has
    forgotten the number, and so has the poller)."""
    port = unaccepted.getsockname()[1]
    poller = EpollPoller()
    try:
        sock = poller.socket(socket.AF_INET, False, None)
        for name in watches:  # a check's wait, then (maybe) a watched connection's
            sock.connect_ex(("127.0.0.1", port))
            getattr(poller, name)(sock.fileno(), select.EPOLLOUT)
            assert poller.poll(8) == [(sock.fileno(), select.EPOLLOUT)]
            poller.reuse(sock, socket.AF_INET, None)
            assert poller.socket(socket.AF_INET, False, None) is sock  # the idle one
        fd = sock.fileno()
        poller.discard(sock)  # as a watched connection's end does
        fresh = on_descriptor(rawsock.open_socket(socket.AF_INET, False), fd)
        with contextlib.closing(fresh):
            fresh.connect_ex(("127.0.0.1", port))
            poller.arm(fd, select.EPOLLOUT)
            assert poller.poll(8) == [(fd, select.EPOLLOUT)]
    finally:
        poller.close()


async def test_hundreds_of_checks_in_flight_keep_their_sockets(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sockets are kept for the next checks however many ran at once: 300 HTTP checks
    in flight together (the answer comes after 100 ms), twice, make no more sockets
    than ran at once (300), not a new one the second time for every check beyond a
    smaller pool."""
    made = count_sockets(monkeypatch)
    port = await serve(reply(OK_BODY, delay=0.1))
    config = ProbeConfig("http", Timing(timeout=2.0), HttpSpec())
    probe = LeanHttpProbe(config)
    host = Recheck(600, interval=0.5)
    loop = ProbeLoop(host, Slots(1024), time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        now = trio.current_time()
        for _ in range(300):
            loop.add(group(port, now, probe=config), probe)
        with trio.fail_after(20):
            await host.done.wait()
        nursery.cancel_scope.cancel()
    assert [result.ok for _, result, _ in host.results] == [True] * 600
    assert len(made) <= 300


def on_descriptor(sock: _socket.socket, fd: int) -> _socket.socket:
    """`sock` moved to descriptor number `fd` (free), whatever else is free."""
    if sock.fileno() == fd:
        return sock
    os.dup2(sock.fileno(), fd)
    sock.close()
    return socket.socket(fileno=fd)
