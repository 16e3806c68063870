"""Host-name resolution against real DNS servers on loopback: one that answers (a small
UDP server built on dnspython's messages, counting queries) and one that never does (a
UDP socket that reads and drops). Answers are cached for their TTL, failures briefly; a
lookup never takes a worker thread and ends at the check's deadline as a DNS failure."""

from __future__ import annotations

import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
import trio.testing
import trustme

from sentinel.config.model import BackendConfig, HttpSpec, ProbeConfig, TcpSpec, Timing
from sentinel.engine.engine import Engine
from sentinel.errors import ResolveError
from sentinel.model import FailureKind
from sentinel.probes.base import Probe, Target
from sentinel.probes.http import LeanHttpProbe
from sentinel.probes.https import HttpProbe
from sentinel.probes.resolve import HOSTS_CHECK, NEGATIVE_TTL, Resolver, read_hosts
from sentinel.probes.tcp import TcpProbe
from sentinel.sinks.memory import RecordingSink
from tests.engine.fakes import config, service

from .conftest import HttpServer, Serve, silent, until

FAR = 1e9  # a deadline that does not matter (virtual time stands still)


class DnsServer:
    """A UDP DNS server on 127.0.0.1: answers `records[(name, type)] = (address, ttl)`,
    NXDOMAIN for names it has no record of, and counts every query by (name, type)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[str, int]] = {}
        self.queries: Counter[tuple[str, str]] = Counter()
        self.port = 0

    async def serve(self, sock: trio.socket.SocketType) -> None:
        """Answer queries until cancelled."""
        while True:
            data, peer = await sock.recvfrom(4096)
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries[(name, rdtype)] += 1
            response = dns.message.make_response(query)
            record = self.records.get((name, rdtype))
            if record is not None:
                address, ttl = record
                response.answer.append(dns.rrset.from_text(question.name, ttl, "IN", rdtype,
                                                           address))
            elif all(known != name for known, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            await sock.sendto(response.to_wire(), peer)


async def udp_socket(nursery: trio.Nursery, serve: Callable[[trio.socket.SocketType],
                     Awaitable[None]]) -> int:
    """A UDP socket on 127.0.0.1 served by `serve` in `nursery`; its port."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    nursery.start_soon(serve, sock)
    port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def dns_server(nursery: trio.Nursery) -> DnsServer:
    """A running DnsServer."""
    server = DnsServer()
    server.port = await udp_socket(nursery, server.serve)
    return server


@pytest.fixture
async def black_hole(nursery: trio.Nursery) -> int:
    """The port of a UDP "DNS server" that reads every query and never answers."""

    async def drop(sock: trio.socket.SocketType) -> None:
        while True:
            await sock.recvfrom(4096)

    return await udp_socket(nursery, drop)


def resolver(port: int, hosts: Path = Path("/nonexistent/hosts")) -> Resolver:
    """A resolver asking only 127.0.0.1:`port`, with `hosts` as its hosts file."""
    return Resolver([("127.0.0.1", port)], hosts=hosts)


async def test_answers_are_cached_for_their_ttl(
        dns_server: DnsServer, mock_clock: trio.testing.MockClock) -> None:
    """A name is asked once and cached for its TTL; then asked again. A name with only an
    AAAA record resolves to IPv6; one with both to IPv4."""
    dns_server.records[("web.test", "A")] = ("127.0.0.7", 30)
    dns_server.records[("v6.test", "AAAA")] = ("::1", 30)
    dns_server.records[("both.test", "A")] = ("127.0.0.8", 30)
    dns_server.records[("both.test", "AAAA")] = ("::1", 30)
    names = resolver(dns_server.port)
    assert await names.resolve("web.test", FAR) == (socket.AF_INET, "127.0.0.7")
    assert await names.resolve("WEB.test.", FAR) == (socket.AF_INET, "127.0.0.7")
    assert await names.resolve("v6.test", FAR) == (socket.AF_INET6, "::1")
    assert await names.resolve("both.test", FAR) == (socket.AF_INET, "127.0.0.8")
    assert dns_server.queries == {("web.test", "A"): 1, ("v6.test", "A"): 1,
                                  ("v6.test", "AAAA"): 1, ("both.test", "A"): 1}
    mock_clock.jump(29.5)
    await names.resolve("web.test", FAR)
    assert dns_server.queries[("web.test", "A")] == 1
    mock_clock.jump(1.0)
    await names.resolve("web.test", FAR)
    assert dns_server.queries[("web.test", "A")] == 2


async def test_a_missing_name_is_cached_briefly(
        dns_server: DnsServer, mock_clock: trio.testing.MockClock) -> None:
    """NXDOMAIN is a DNS failure naming it, cached for NEGATIVE_TTL, then asked again."""
    names = resolver(dns_server.port)
    for _ in range(2):
        with pytest.raises(ResolveError, match=r"resolve gone\.test: no such name \(NXDOMAIN\)"):
            await names.resolve("gone.test", FAR)
    assert dns_server.queries[("gone.test", "A")] == 1
    mock_clock.jump(NEGATIVE_TTL)
    with pytest.raises(ResolveError):
        await names.resolve("gone.test", FAR)
    assert dns_server.queries[("gone.test", "A")] == 2


async def test_checks_of_one_name_share_one_query(dns_server: DnsServer) -> None:
    """Ten checks asking for the same name at once cause one query."""
    dns_server.records[("web.test", "A")] = ("127.0.0.7", 30)
    names = resolver(dns_server.port)
    found = []

    async def ask() -> None:
        found.append(await names.resolve("web.test", trio.current_time() + 5))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(ask)
    assert found == [(socket.AF_INET, "127.0.0.7")] * 10
    assert dns_server.queries == {("web.test", "A"): 1}


async def test_hosts_file_comes_first(black_hole: int, tmp_path: Path,
                                      mock_clock: trio.testing.MockClock) -> None:
    """Names in the hosts file resolve without a query (IPv4 preferred, re-read when the
    file changes); localhost is loopback even when the file does not list it."""
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n::1 db.internal\n10.0.0.5 db.internal api  # two names\n"
                     "not-an-address web\n")
    names = resolver(black_hole, hosts)
    assert await names.resolve("db.internal", FAR) == (socket.AF_INET, "10.0.0.5")
    assert await names.resolve("API", FAR) == (socket.AF_INET, "10.0.0.5")
    assert await names.resolve("localhost", FAR) == (socket.AF_INET, "127.0.0.1")
    hosts.write_text("10.0.0.6 api\n")
    mock_clock.jump(HOSTS_CHECK)
    assert await names.resolve("api", FAR) == (socket.AF_INET, "10.0.0.6")
    assert read_hosts(tmp_path / "missing") == {}


def every_path(names: Resolver, timeout: float) -> list[Probe]:
    """A probe of each kind that resolves names: tcp, TLS tcp, lean http, https."""
    timing = Timing(timeout=timeout)
    return [TcpProbe(ProbeConfig("tcp", timing, TcpSpec()), resolver=names),
            TcpProbe(ProbeConfig("tcp", timing, TcpSpec(tls=True)), resolver=names),
            LeanHttpProbe(ProbeConfig("http", timing, HttpSpec()), resolver=names),
            HttpProbe(ProbeConfig("https", timing, HttpSpec()), resolver=names)]


async def test_a_resolver_that_never_answers_fails_checks_at_their_deadline(
        black_hole: int, autojump_clock: trio.testing.MockClock) -> None:
    """With a name server that never answers, checks of names fail as DNS exactly at
    their timeout, on every path, the reason naming the timeout."""
    probes = every_path(resolver(black_hole), 0.3)
    results = {}

    async def check(index: int) -> None:
        start = trio.current_time()
        result = await probes[index % 4].check(Target("svc", "b", f"n{index}.test", 80))
        results[index] = (result, trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for index in range(60):
            nursery.start_soon(check, index)
    assert len(results) == 60
    for index, (result, took) in results.items():
        assert result.failure is FailureKind.DNS
        assert result.detail == f"resolve n{index}.test timed out after 300ms"
        assert took == pytest.approx(0.3)
    await probes[3].aclose()


async def test_lookups_that_never_answer_take_no_worker_thread(black_hole: int) -> None:
    """While 60 checks of names wait on a name server that never answers, no worker thread
    is taken (state saves and sinks use that pool) and one runs at once."""
    probes = every_path(resolver(black_hole), 30.0)
    async with trio.open_nursery() as nursery:
        for index in range(60):
            nursery.start_soon(probes[index % 4].check, Target("svc", "b", f"n{index}.test", 80))
        await trio.testing.wait_all_tasks_blocked()  # every lookup is waiting now
        assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
        with trio.fail_after(10):  # lookups holding the pool would hold it for 30 s
            await trio.to_thread.run_sync(lambda: None)
        nursery.cancel_scope.cancel()
    await probes[3].aclose()


async def test_named_backends_are_probed_at_their_address(
        dns_server: DnsServer, serve: Serve, http_server: Callable[..., Awaitable[HttpServer]],
        ca: trustme.CA, client_trusting_ca: ssl.SSLContext) -> None:
    """tcp, http and https checks of a name connect to its address; http sends the name as
    Host, https verifies the certificate against the name (SNI)."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("web.test").configure_cert(tls)
    plain, secure = await http_server(), await http_server(tls=tls)
    dns_server.records[("web.test", "A")] = ("127.0.0.1", 30)
    names = resolver(dns_server.port)
    timing = Timing(timeout=2.0)
    tcp = TcpProbe(ProbeConfig("tcp", timing, TcpSpec()), resolver=names)
    lean = LeanHttpProbe(ProbeConfig("http", timing, HttpSpec()), resolver=names)
    https = HttpProbe(ProbeConfig("https", timing, HttpSpec()), resolver=names,
                      ssl_context=client_trusting_ca)
    try:
        assert (await tcp.check(Target("svc", "b", "web.test", await serve(silent)))).ok
        assert (await lean.check(Target("svc", "b", "web.test", plain.port))).ok
        assert plain.requests[-1][1]["host"] == f"web.test:{plain.port}"
        result = await https.check(Target("svc", "b", "web.test", secure.port))
        assert result.ok, result
        assert secure.requests[-1][1]["host"] == f"web.test:{secure.port}"
    finally:
        await https.aclose()


async def test_a_dead_ip_backend_is_published_while_lookups_hang(
        black_hole: int, refused_port: int, tmp_path: Path) -> None:
    """Forty-five backends whose names never resolve (5 s timeout; first checks in the
    first 0.1 s) do not hold up the publication of a dead IP backend's down (first check
    at about 1 s): it is on disk and at the sink while every lookup still waits."""
    names = resolver(black_hole)
    slow = service("named", [], interval=0.1, timeout=5.0)
    slow = replace(slow, backends=tuple(BackendConfig(f"n{i}", f"n{i}.test:80", f"n{i}.test", 80)
                                        for i in range(45)))
    dead = service("ip", [refused_port], interval=1.0, timeout=5.0)
    sink = RecordingSink()
    engine = Engine(config(tmp_path, slow, dead), sinks={"rec": sink},
                    probe_factory=partial(TcpProbe, resolver=names))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await until(lambda: any(e.to_state == "down" for u in sink.updates for e in u.events))
        assert [b.last_probe for b in engine.services["named"].backends if b.last_probe] == []
        engine.stop()


async def test_a_named_backend_in_the_probe_loop_is_checked_at_its_address(
        dns_server: DnsServer, serve: Serve, tmp_path: Path) -> None:
    """A backend given by a name the DNS server answers (TTL 30 s) is checked in the probe
    loop at the address looked up once, ahead of its checks, not once per check."""
    dns_server.records[("web.test", "A")] = ("127.0.0.1", 30)
    port = await serve(silent)
    svc = replace(service("web", [], interval=0.05, timeout=0.5),
                  backends=(BackendConfig("web", f"web.test:{port}", "web.test", port),))
    engine = Engine(config(tmp_path, svc), sinks={"rec": RecordingSink()},
                    probe_factory=partial(TcpProbe, resolver=resolver(dns_server.port)))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await until(lambda: engine.statistics().probes >= 10)
        engine.stop()
    [backend] = engine.services["web"].backends
    assert backend.last_probe is not None
    assert backend.last_probe.ok
    assert dns_server.queries == Counter({("web.test", "A"): 1})
