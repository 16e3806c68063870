"""`source`: every network probe connects from the configured local address, in a task and
in the probe loop, as real loopback servers see it (127.0.0.2 is local on any Linux)."""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import dns.message
import pytest
import trio

from sentinel.config.model import (
    AgentSpec,
    BackendConfig,
    DnsSpec,
    GrpcSpec,
    HttpSpec,
    ProbeConfig,
    ProbeSpec,
    TcpSpec,
    Timing,
)
from sentinel.engine.engine import Engine
from sentinel.model import FailureKind
from sentinel.probes.agent import AgentProbe
from sentinel.probes.base import Target
from sentinel.probes.dns import DnsProbe
from sentinel.probes.grpc import GrpcProbe
from sentinel.probes.https import HttpProbe
from sentinel.probes.registry import make_probe
from sentinel.probes.tcp import TcpProbe
from sentinel.sinks.memory import RecordingSink
from tests.engine.fakes import config, service

from .conftest import Serve, until

SOURCE = "127.0.0.2"
TIMING = Timing(interval=0.2, fast_interval=0.2, down_interval=0.2, timeout=1.0)
OK = re.compile(rb"200 OK")  # a tcp check waits for the answer: a reset socket has no peer
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def peer_of(stream: trio.abc.Stream) -> str:
    """The client address of a (TLS or plain) stream from `serve`."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    address: str = stream.socket.getpeername()[0]
    return address


def recording(peers: list[str]) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """A handler that notes the client's address, answers an HTTP 200 at once (an agent
    reads it as a line of unknown words: healthy), then reads what the client sent."""

    async def handle(stream: trio.abc.Stream) -> None:
        peers.append(peer_of(stream))
        await stream.send_all(ANSWER)
        with trio.move_on_after(0.5):
            await stream.receive_some(4096)

    return handle


async def dns_server(nursery: trio.Nursery, peers: list[str]) -> int:
    """A UDP DNS server on 127.0.0.1 answering NOERROR to anything, noting each client."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def answer() -> None:
        with sock:
            while True:
                data, client = await sock.recvfrom(4096)
                peers.append(client[0])
                reply = dns.message.make_response(dns.message.from_wire(data))
                await sock.sendto(reply.to_wire(), client)

    nursery.start_soon(answer)
    port: int = sock.getsockname()[1]
    return port


def probe_config(kind: str, spec: ProbeSpec, source: str | None = SOURCE) -> ProbeConfig:
    """A `kind` probe with `source`."""
    return ProbeConfig(kind, TIMING, spec, source=source)  # type: ignore[arg-type]


def at(port: int) -> Target:
    """The loopback target."""
    return Target("svc", "b", "127.0.0.1", port)


async def test_every_network_probe_connects_from_the_source_in_a_task(
        serve: Serve, nursery: trio.Nursery, server_tls: ssl.SSLContext,
        client_trusting_ca: ssl.SSLContext) -> None:
    """tcp (plain and TLS), http, https, grpc, dns and agent checks each reach their server
    from 127.0.0.2."""
    peers: list[str] = []
    plain, secure = await serve(recording(peers)), await serve(recording(peers), server_tls)
    https = HttpProbe(probe_config("https", HttpSpec()), ssl_context=client_trusting_ca)
    probes = [
        (TcpProbe(probe_config("tcp", TcpSpec(send=b"hi\r\n", expect=OK))), plain, True),
        (TcpProbe(probe_config("tcp", TcpSpec(tls=True)), ssl_context=client_trusting_ca),
         secure, True),
        (make_probe(probe_config("http", HttpSpec())), plain, True),
        (https, secure, True),
        (GrpcProbe(probe_config("grpc", GrpcSpec())), plain, False),  # not gRPC: fails
        (AgentProbe(probe_config("agent", AgentSpec())), plain, True),
        (DnsProbe(probe_config("dns", DnsSpec(name="example.com"))),
         await dns_server(nursery, peers), True),
    ]
    try:
        for probe, port, ok in probes:
            before = len(peers)
            result = await probe.check(at(port))
            assert result.ok == ok, (probe, result)
            await until(lambda before=before: len(peers) > before)  # type: ignore[misc]
            assert peers[before:] == [SOURCE], probe
    finally:
        await https.aclose()


async def test_loop_checks_connect_from_the_source(serve: Serve, tmp_path: Path) -> None:
    """In a running engine the probe loop's tcp, http and agent checks (an IP backend and
    a host-name one) reach their servers from 127.0.0.2 and pass."""
    peers: list[str] = []
    port = await serve(recording(peers))
    named = BackendConfig("named", f"localhost:{port}", "localhost", port)
    kinds = (("tcp", TcpSpec(send=b"hi\r\n", expect=OK)), ("http", HttpSpec()),
             ("agent", AgentSpec()))
    services = [replace(service(kind, [port]), probe=probe_config(kind, spec))
                for kind, spec in kinds]
    services[0] = replace(services[0], backends=(*services[0].backends, named))
    engine = Engine(config(tmp_path, *services), sinks={"rec": RecordingSink()})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        backends = [b for svc in engine.services.values() for b in svc.backends]
        await until(lambda: all(b.last_probe and b.last_probe.ok for b in backends))
        engine.stop()
    assert len(peers) >= len(backends)
    assert set(peers) == {SOURCE}


@pytest.mark.parametrize("in_loop", [True, False])
async def test_a_source_of_the_other_family_fails_the_check_saying_so(
        serve: Serve, tmp_path: Path, in_loop: bool) -> None:
    """An IPv6 source for an IPv4 backend: each check fails as `connect`, naming both."""
    port = await serve(recording([]))
    probe = TcpProbe(probe_config("tcp", TcpSpec(), source="::1"))
    expected = "source address ::1 is IPv6; the backend's address is IPv4"
    if not in_loop:
        result = await probe.check(at(port))
        assert (result.failure, result.detail) == (FailureKind.CONNECT, expected)
        return
    svc = replace(service("v6", [port]), probe=probe_config("tcp", TcpSpec(), source="::1"))
    engine = Engine(config(tmp_path, svc), sinks={"rec": RecordingSink()})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        [backend] = engine.services["v6"].backends
        await until(lambda: backend.last_probe is not None)
        engine.stop()
    assert backend.last_probe is not None
    assert backend.last_probe.error == expected
