"""Real loopback servers for the probe tests, all on 127.0.0.1 port 0.

Servers run in pytest-trio's `nursery` fixture, which is cancelled when the
test ends, so nothing outlives its test. dnsmasq (the dns probe) and grpcio's
reference health server (the grpc probe) run as processes, killed by PID.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from tests.e2e.helpers import (
    Processes,
    free_port,
    port_open,
    refused_ports,
    require_binary,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
Handler = Callable[[trio.abc.Stream], Awaitable[None]]
Serve = Callable[..., Awaitable[int]]


async def until(check: Callable[[], object]) -> None:
    """Wait, at most 10 s, until `check()` is true (engine state has no event to wait
    on, so it is looked at every 10 ms)."""
    with trio.fail_after(10):
        while not check():  # noqa: ASYNC110  # polled: nothing signals these changes
            await trio.sleep(0.01)


@pytest.fixture
def serve(nursery: trio.Nursery) -> Serve:
    """`await serve(handler, tls=None) -> port`: a TCP (or TLS) server in the test's nursery."""

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> int:
        async def guarded(stream: trio.SocketStream) -> None:
            # A probe hanging up (or failing its TLS handshake) must not fail the test.
            try:
                if tls is None:
                    await handler(stream)
                else:
                    tls_stream = trio.SSLStream(stream, tls, server_side=True)
                    await tls_stream.do_handshake()
                    await handler(tls_stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

        listeners = await nursery.start(partial(trio.serve_tcp, guarded, 0, host="127.0.0.1"))
        port: int = listeners[0].socket.getsockname()[1]
        return port

    return start


async def pong(stream: trio.abc.Stream) -> None:
    """A Redis-like line server: `PING` gets `+PONG`, anything else `-ERR` and a close."""
    buf = b""
    while True:
        chunk = await stream.receive_some(1024)
        if not chunk:
            return
        buf += chunk
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if line != b"PING":
                await stream.send_all(b"-ERR unknown command\r\n")
                return
            await stream.send_all(b"+PONG\r\n")


async def banner(stream: trio.abc.Stream) -> None:
    """Greet like an SMTP server, then wait for the client to leave."""
    await stream.send_all(b"220 ready\r\n")
    await stream.receive_some(1024)


async def silent(stream: trio.abc.Stream) -> None:
    """Accept and never answer."""
    await trio.sleep_forever()


async def reset(stream: trio.abc.Stream) -> None:
    """Close with SO_LINGER 0, so the client gets an RST instead of a FIN."""
    assert isinstance(stream, trio.SocketStream)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def hang_up(stream: trio.abc.Stream) -> None:
    """Read the request, then close cleanly without a word."""
    await stream.receive_some(1024)
    await stream.aclose()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused, and nobody else gets it."""
    with refused_ports() as [port]:
        yield port


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for localhost and 127.0.0.1, signed by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_trusting_ca(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts `ca`."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def read_head(stream: trio.abc.Stream) -> bytes | None:
    """Read up to the end of an HTTP request head; None when the client left first."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        head += chunk
    return head


@dataclass
class HttpServer:
    """A one-request-per-connection HTTP/1.1 server that records what it was sent."""

    status: int = 200
    body: bytes = b'{"status": "ok"}'
    headers: tuple[tuple[str, str], ...] = ()
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Read one request head, record it, answer and close."""
        head = await read_head(stream)
        if head is None:
            return
        request_line, *lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        fields = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        self.requests.append((request_line, fields))
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        await stream.send_all(
            f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.body)}\r\n{extra}"
            "Connection: close\r\n\r\n".encode("latin-1") + self.body
        )


@pytest.fixture
def http_server(serve: Serve) -> Callable[..., Awaitable[HttpServer]]:
    """`await http_server(status=503, body=b"...", tls=ctx)`: a running HttpServer."""

    async def start(tls: ssl.SSLContext | None = None, **options: object) -> HttpServer:
        server = HttpServer(**options)  # type: ignore[arg-type]
        server.port = await serve(server.handle, tls)
        return server

    return start


# -- dnsmasq, for the dns probe ---------------------------------------------------------

# 40 TXT strings of ~45 bytes: over 512 bytes, so a plain UDP answer is truncated.
BIG = [f"--txt-record=big.test,padding-{i:02d}-{'x' * 32}" for i in range(40)]


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A UDP port nobody listens on (bound, never read: it stays ours)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def servfail_upstream() -> Iterator[socket.socket]:
    """A UDP socket the test answers from (see `answer_servfail`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


@pytest.fixture
def dnsmasq(tmp_path: Path, dead_port: int, servfail_upstream: socket.socket) -> Iterator[int]:
    """dnsmasq on a free loopback port (UDP and TCP): ok.test A 192.0.2.1, big.test's
    TXT records too big for UDP, other *.test names NXDOMAIN, dead.example forwarded to
    a port that never answers, fail.example to `servfail_upstream`."""
    binary = require_binary("dnsmasq")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    port = free_port()
    upstream = servfail_upstream.getsockname()[1]
    try:
        proc = procs.start([
            binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--pid-file=", "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}",
            "--log-facility=-", "--log-queries",
            "--local=/test/", "--address=/ok.test/192.0.2.1", *BIG,
            f"--server=/dead.example/127.0.0.1#{dead_port}",
            f"--server=/fail.example/127.0.0.1#{upstream}",
        ], "dnsmasq")
        wait_until(lambda: proc.poll() is not None or port_open(port), what="dnsmasq")
        if proc.poll() is not None:
            raise AssertionError(f"dnsmasq exited: {procs.log('dnsmasq').read_text()}")
        yield port
    finally:
        procs.close()


# -- grpcio's reference health server, for the grpc probe --------------------------------

class ReferenceServer:
    """grpcio's health server in a subprocess, driven over its stdin (see grpc_server.py)."""

    def __init__(self, *tls: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.probes.grpc_server", *(["--tls", *tls] if tls else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True)
        self.port = int(self._line())

    def _line(self, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"grpc server said nothing within {timeout:g}s")
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            raise AssertionError(f"grpc server exited: {self.proc.wait(timeout=5)}")
        return line

    def command(self, line: str) -> None:
        """Send one command and wait for its `ok`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        assert self._line() == "ok"

    def kill(self) -> None:
        """Kill by PID and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def grpc_server() -> Iterator[ReferenceServer]:
    """A running reference server; killed by PID when the test ends."""
    server = ReferenceServer()
    try:
        yield server
    finally:
        server.kill()
