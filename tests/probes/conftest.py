"""Real loopback servers for the probe tests, all on 127.0.0.1 port 0.

Servers run in pytest-trio's `nursery` fixture, which is cancelled when the
test ends, so nothing outlives its test.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import trustme

from tests.e2e.helpers import refused_ports

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
