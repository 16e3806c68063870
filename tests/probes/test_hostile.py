"""Hostile backends against real loopback servers: a chunk declared huge, answers trickled
a byte at a time. Every check ends (at its timeout at the latest) on every path, with the
HTTP reader's memory bounded by its caps."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial

import pytest
import trio

from sentinel.config.model import HttpSpec, ProbeConfig, TcpSpec, Timing
from sentinel.errors import ProtocolError
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import exchange as lean
from sentinel.probes.base import Target
from sentinel.probes.http import HttpExchange, LeanHttpProbe
from sentinel.probes.http1 import BODY_CAP, LINE_CAP, ResponseReader
from sentinel.probes.https import HttpProbe
from sentinel.probes.rawsock import RECV_SIZE
from sentinel.probes.resolve import default_resolver
from sentinel.probes.tcp import TcpProbe
from tests.engine.loop import loop_checks
from tests.probes.peers import CHUNKED

from .conftest import Serve, read_head

TIMEOUT = 0.5
HUGE_CHUNK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFF\r\n"
BOUND = BODY_CAP + RECV_SIZE  # the body kept plus one read not yet digested


def flood(head: bytes) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """A handler that answers `head`, then sends 64 KiB pieces as fast as it can, forever."""

    async def handle(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        await stream.send_all(head)
        while True:
            await stream.send_all(b"x" * 65536)

    return handle


Trickle = Callable[[bytes, bytes], int]
def test_a_chunked_answer_fed_a_byte_at_a_time_reads_the_same() -> None:
    """Head and chunks split anywhere give the same status and body."""
    reader = ResponseReader(want_body=True)
    for byte in CHUNKED:
        reader.feed(bytes([byte]))
    assert (reader.done, reader.status, bytes(reader.body)) == (True, 200, b'{"status": "ok"}')


def test_chunk_framing_is_checked_within_caps() -> None:
    """An endless chunk-size line and chunk data longer than its size are protocol errors."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    reader = ResponseReader(want_body=True)
    reader.feed(head + b"1" * LINE_CAP)
    with pytest.raises(ProtocolError, match="chunk size line"):
        reader.feed(b"1")
    with pytest.raises(ProtocolError, match="longer than its size"):
        ResponseReader(want_body=True).feed(head + b"2\r\nabc\r\n")
    with pytest.raises(ProtocolError, match="bad chunk size"):
        ResponseReader(want_body=True).feed(head + b"1" * 17 + b"\r\n")


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    """`trickle(head, piece) -> port`: a server on a thread of its own (so it keeps
    sending while the event loop works) that answers each connection with `head`, then
    `piece` every 0.2 ms until the client leaves. Stopped when the test ends."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def send(conn: socket.socket, head: bytes, piece: bytes) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(4096)
            conn.sendall(head)
            while not stop.is_set():
                conn.sendall(piece)
                time.sleep(0.0002)

    def accept(listener: socket.socket, head: bytes, piece: bytes) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = listener.accept()
                conn.settimeout(None)
                sender = threading.Thread(target=send, args=(conn, head, piece), daemon=True)
                threads.append(sender)
                sender.start()

    def start(head: bytes, piece: bytes) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        listeners.append(listener)
        thread = threading.Thread(target=accept, args=(listener, head, piece), daemon=True)
        threads.append(thread)
        thread.start()
        port: int = listener.getsockname()[1]
        return port

    try:
        yield start
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        for listener in listeners:
            listener.close()


class Watched(HttpExchange):
    """A real exchange that records the most its reader ever held."""

    __slots__ = ("most",)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.most = 0

    def feed(self, data: bytes) -> bool:
        """Feed, then note how much the reader holds."""
        done = super().feed(data)
        self.most = max(self.most, self._reader.buffered)
        return done


class WatchedProbe(LeanHttpProbe):
    """A lean http probe whose exchanges are `Watched` (kept in `exchanges`)."""

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__(config)
        self.exchanges: list[Watched] = []

    def exchange(self, target: Target) -> Watched:
        """A watched exchange, remembered."""
        plain = super().exchange(target)
        watched = Watched(self._spec, self.timeout, plain.connect, self._passing)
        self.exchanges.append(watched)
        return watched


def config(**spec: object) -> ProbeConfig:
    """An http probe config with the module's timeout."""
    return ProbeConfig("http", Timing(timeout=TIMEOUT), HttpSpec(**spec))  # type: ignore[arg-type]


BODY = {"expect_body": re.compile("ok")}


async def task_check(probe: WatchedProbe, port: int) -> tuple[ProbeResult, int]:
    """One per-task check of `port`: its result and the most its reader held."""
    target = Target("svc", "b", "127.0.0.1", port)
    exchange = probe.exchange(target)
    with trio.fail_after(10):  # a check that the flow of bytes kept alive would never end
        result = await lean.check(exchange, target.host, probe.timeout, default_resolver(),
                                  partial(lean.drive_raw, exchange))
    return result, exchange.most


async def loop_check(probe: WatchedProbe, port: int) -> tuple[ProbeResult, int]:
    """One probe-loop check of `port`: its result and the most its reader held."""
    with trio.fail_after(10):  # before the fix the check never ended
        (result, _), = (await loop_checks([(probe, port)]))[0]
    return result, probe.exchanges[-1].most


async def test_a_huge_declared_chunk_is_read_in_bounded_memory(serve: Serve) -> None:
    """A chunk declared as 2**48 bytes and sent as fast as loopback allows fills the body
    cap and is judged (BODY), holding no more than the caps, in a task and in the loop."""
    port = await serve(flood(HUGE_CHUNK))
    for run in (task_check, loop_check):
        result, most = await run(WatchedProbe(config(**BODY)), port)
        assert result.failure is FailureKind.BODY, (run.__name__, result)
        assert most <= BOUND, run.__name__


async def test_a_trickled_huge_chunk_ends_at_the_timeout(trickle: Trickle) -> None:
    """The same chunk trickled a byte at a time never fills the cap: the check ends at its
    timeout, in a task and in the loop (the bytes never stop: nothing else ends it)."""
    port = trickle(HUGE_CHUNK, b"x")
    for run in (task_check, loop_check):
        result, most = await run(WatchedProbe(config(**BODY)), port)
        assert result.failure is FailureKind.TIMEOUT, (run.__name__, result)
        assert result.latency >= TIMEOUT, run.__name__
        assert most <= BOUND


async def test_other_paths_end_on_an_endless_answer(serve: Serve, trickle: Trickle) -> None:
    """httpx's path and a tcp expect also end on an endless answer, fast or trickled."""
    fast, slow = await serve(flood(HUGE_CHUNK)), trickle(HUGE_CHUNK, b"x")
    httpx_probe = HttpProbe(config(**BODY))
    tcp = TcpProbe(ProbeConfig("tcp", Timing(timeout=TIMEOUT),
                               TcpSpec(send=b"GET / HTTP/1.1\r\n\r\n", expect=re.compile(b"ok"))))
    try:
        for probe in (httpx_probe, tcp):
            with trio.fail_after(5):
                done = await probe.check(Target("svc", "b", "127.0.0.1", fast))
                trickled = await probe.check(Target("svc", "b", "127.0.0.1", slow))
            assert done.failure is FailureKind.BODY, done
            assert trickled.failure is FailureKind.TIMEOUT, trickled
    finally:
        await httpx_probe.aclose()


async def test_a_trickling_backend_is_timed_out_in_the_loop_on_time(trickle: Trickle) -> None:
    """A backend that sends a byte every 0.2 ms, for ever (so every loop pass reads some),
    is spared at most once past its deadline: TIMEOUT. A loop that spared a check each
    pass it moved on would keep this one alive as long as the bytes come: for ever."""
    port = trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"y")
    result, _ = await loop_check(WatchedProbe(config()), port)
    assert result.failure is FailureKind.TIMEOUT
    assert result.latency >= TIMEOUT
