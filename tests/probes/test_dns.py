"""The dns probe against a real dnsmasq on a loopback port (started and killed by PID per
test), a silent UDP socket, and a tiny upstream that answers SERVFAIL through dnsmasq."""

from __future__ import annotations

import re
import socket

import dns.message
import dns.rcode
import trio

from sentinel.config.model import DnsSpec, ProbeConfig, Timing
from sentinel.model import FailureKind
from sentinel.probes.base import Target
from sentinel.probes.dns import OVER_TCP, DnsProbe
from sentinel.probes.registry import make_probe


def probe(timeout: float = 1.0, **spec: object) -> DnsProbe:
    """A dns probe."""
    config = ProbeConfig(type="dns", timing=Timing(interval=timeout, timeout=timeout),
                         spec=DnsSpec(**spec))  # type: ignore[arg-type]
    return DnsProbe(config)


def at(port: int, host: str = "127.0.0.1") -> Target:
    """The target for a loopback port."""
    return Target(service="svc", backend="b1", host=host, port=port)


async def test_noerror_answer(dnsmasq: int) -> None:
    """A NOERROR answer is healthy (by default nothing more is asked of it)."""
    result = await probe(name="ok.test").check(at(dnsmasq))
    assert (result.ok, result.detail) == (True, "")


async def test_host_name_target(dnsmasq: int) -> None:
    """A backend given by host name is resolved per check (dnspython takes addresses)."""
    assert (await probe(name="ok.test").check(at(dnsmasq, host="localhost"))).ok


async def test_nxdomain(dnsmasq: int) -> None:
    """NXDOMAIN fails a probe expecting NOERROR, and passes one expecting NXDOMAIN."""
    result = await probe(name="missing.test").check(at(dnsmasq))
    assert (result.failure, result.detail) == (FailureKind.STATUS,
                                               "rcode NXDOMAIN, expected NOERROR")
    assert (await probe(name="missing.test", expect_rcode="NXDOMAIN").check(at(dnsmasq))).ok


async def test_servfail_passed_on(dnsmasq: int, servfail_upstream: socket.socket) -> None:
    """dnsmasq passing on its upstream's SERVFAIL is a STATUS failure."""

    async def answer_servfail() -> None:
        await trio.lowlevel.wait_readable(servfail_upstream)
        data, peer = servfail_upstream.recvfrom(4096)
        reply = dns.message.make_response(dns.message.from_wire(data))
        reply.set_rcode(dns.rcode.SERVFAIL)
        servfail_upstream.sendto(reply.to_wire(), peer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_servfail)
        result = await probe(name="x.fail.example").check(at(dnsmasq))
    assert (result.failure, result.detail) == (FailureKind.STATUS,
                                               "rcode SERVFAIL, expected NOERROR")


async def test_dead_upstream_times_out(dnsmasq: int) -> None:
    """A recursor whose upstream is dead does not answer within the timeout: TIMEOUT."""
    result = await probe(timeout=0.3, name="x.dead.example").check(at(dnsmasq))
    assert (result.failure, result.detail) == (FailureKind.TIMEOUT, "no answer within 300ms")


async def test_silent_server(dead_port: int) -> None:
    """A UDP port that never answers is a TIMEOUT (one query, no retry)."""
    result = await probe(timeout=0.2, name="ok.test").check(at(dead_port))
    assert (result.failure, result.detail) == (FailureKind.TIMEOUT, "no answer within 200ms")


async def test_expect_answer_addresses(dnsmasq: int) -> None:
    """A list of addresses must be exactly the answered addresses: a wrong answer is BODY."""
    assert (await probe(name="ok.test",
                        expect_answer=frozenset({"192.0.2.1"})).check(at(dnsmasq))).ok
    result = await probe(name="ok.test",
                         expect_answer=frozenset({"192.0.2.9"})).check(at(dnsmasq))
    assert (result.failure, result.detail) == (FailureKind.BODY,
                                               "answer has 192.0.2.1; expected 192.0.2.9")


async def test_expect_answer_regex(dnsmasq: int) -> None:
    """A regex is searched in the answer section's zone-file text."""
    assert (await probe(name="ok.test",
                        expect_answer=re.compile(r"IN A 192\.0\.2\.1$")).check(at(dnsmasq))).ok
    result = await probe(name="ok.test",
                         expect_answer=re.compile(r"IN A 10\.")).check(at(dnsmasq))
    assert result.failure is FailureKind.BODY
    assert result.detail == "answer did not match 'IN A 10\\\\.': got 'ok.test. 0 IN A 192.0.2.1'"


async def test_truncation_falls_back_to_tcp(dnsmasq: int) -> None:
    """An answer truncated over UDP is asked for again over TCP and judged whole."""
    spec = {"name": "big.test", "qtype": "TXT", "expect_answer": re.compile("padding-39")}
    result = await probe(**spec).check(at(dnsmasq))
    assert (result.ok, result.detail) == (True, OVER_TCP)


async def test_make_probe_builds_dns() -> None:
    """The registry knows `dns`."""
    config = ProbeConfig(type="dns", timing=Timing(), spec=DnsSpec(name="x."))
    assert isinstance(make_probe(config), DnsProbe)
