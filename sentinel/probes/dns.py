"""The `dns` probe: one query to the backend as a DNS server (keepalived's DNS_CHECK).

A check sends one query for `name`/`qtype` over UDP and, when the answer
comes back truncated (TC), asks again over TCP, as a stub resolver does. It
is healthy when the answer's rcode is `expect_rcode` (NOERROR by default)
and, if given, `expect_answer` holds: a regex searched in the answer section
as zone-file text (`www.example. 300 IN A 192.0.2.1`, one record a line), or
a list of addresses that must be exactly the A/AAAA addresses answered.

Why dnspython rather than a hand encoder: encoding a query is twenty lines,
but judging the answer is not: name compression, every record type's rdata
rendered as text for `expect_answer`, the TCP length framing, checking the
answer's id and question against the query. dnspython (pure Python, no
dependencies, maintained since 2003) does all of it and runs on Trio
(`dns.asyncbackend`'s trio backend), so a check stays one Trio task.
"""

from __future__ import annotations

from functools import partial

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from sentinel.config.model import DnsSpec, ProbeConfig
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import exchange as lean
from sentinel.probes.base import Target, classify, failed
from sentinel.probes.rawsock import Address
from sentinel.probes.resolve import Resolver, default_resolver

SHOWN = 120  # how much of the answer section a failure detail quotes
OVER_TCP = "answer over TCP (truncated over UDP)"
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)

# dnspython's exceptions at this edge (STYLE 4); the rest goes to the shared table.
_DNS_KINDS: tuple[tuple[type[Exception], FailureKind, str], ...] = (
    (dns.exception.Timeout, FailureKind.TIMEOUT, "timed out"),
    (dns.exception.FormError, FailureKind.PROTOCOL, "malformed answer"),
    (dns.exception.DNSException, FailureKind.PROTOCOL, "bad answer"),
)


def answer_text(response: dns.message.Message) -> str:
    """The answer section as zone-file text, one record a line."""
    return "\n".join(rrset.to_text() for rrset in response.answer)


def answer_addresses(response: dns.message.Message) -> set[str]:
    """Every A and AAAA address in the answer section."""
    return {rdata.address for rrset in response.answer if rrset.rdtype in _ADDRESS_TYPES
            for rdata in rrset}


def judge(spec: DnsSpec, response: dns.message.Message) -> tuple[FailureKind, str] | None:
    """None when `response` is what `spec` expects, else the failure."""
    rcode = dns.rcode.to_text(response.rcode())
    if rcode != spec.expect_rcode:
        return FailureKind.STATUS, f"rcode {rcode}, expected {spec.expect_rcode}"
    expected = spec.expect_answer
    if expected is None:
        return None
    if isinstance(expected, frozenset):
        got = answer_addresses(response)
        if got == expected:
            return None
        return FailureKind.BODY, (f"answer has {', '.join(sorted(got)) or 'no address'}; "
                                  f"expected {', '.join(sorted(expected))}")
    text = answer_text(response)
    if expected.search(text):
        return None
    shown = text if len(text) <= SHOWN else text[:SHOWN] + "..."
    return FailureKind.BODY, f"answer did not match {expected.pattern!r}: got {shown!r}"


class DnsQuery:
    """One check's verdicts (`lean.Verdicts`): the answer, or what stopped it."""

    __slots__ = ("_spec", "_timeout", "over_tcp", "response")

    def __init__(self, spec: DnsSpec, timeout: float) -> None:
        self._spec = spec
        self._timeout = timeout
        self.response: dns.message.Message | None = None
        self.over_tcp = False

    def result(self, latency: float) -> ProbeResult:
        """Judge the answer."""
        assert self.response is not None
        verdict = judge(self._spec, self.response)
        if verdict is not None:
            return failed(*verdict, latency)
        return ProbeResult(ok=True, latency=latency, detail=OVER_TCP if self.over_tcp else "")

    def timed_out(self, latency: float) -> ProbeResult:
        """No answer in time. One query, no retry; UDP loss, a dead server and a closed
        port (dnspython's socket is unconnected: no ICMP error reaches it) look alike."""
        via = " (over TCP after truncation)" if self.over_tcp else ""
        return failed(FailureKind.TIMEOUT,
                      f"no answer within {self._timeout * 1000:.0f}ms{via}", latency)

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """dnspython's errors by the table above, socket errors by the shared one."""
        for exc_type, kind, text in _DNS_KINDS:
            if isinstance(exc, exc_type):
                return failed(kind, f"{text}: {exc}" if str(exc) else text, latency)
        return failed(*classify(exc), latency)


class DnsProbe:
    """One query per check to the target (host and port) as a DNS server."""

    def __init__(self, config: ProbeConfig, *, resolver: Resolver | None = None) -> None:
        if not isinstance(config.spec, DnsSpec):
            raise TypeError(f"DnsProbe needs a DnsSpec, got {type(config.spec).__name__}")
        self._spec = config.spec
        self.timeout = config.timing.timeout
        self._resolver = resolver or default_resolver()
        self._backend = dns.asyncbackend.get_backend("trio")
        self._rdtype = dns.rdatatype.from_text(self._spec.qtype)
        self._source = config.source

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        query = DnsQuery(self._spec, self.timeout)
        return await lean.check(query, target.host, self.timeout, self._resolver,
                                partial(self._ask, target, query))

    async def aclose(self) -> None:
        """Nothing is pooled; present for the Probe protocol."""

    async def _ask(self, target: Target, query: DnsQuery, address: Address) -> None:
        """`address` is the server, resolved already (dnspython takes no names)."""
        where = address[1]
        # A fresh message per check: a new random id, so a late answer to an earlier
        # check cannot be taken for this one's.
        message = dns.message.make_query(self._spec.name, self._rdtype)
        query.response, query.over_tcp = await dns.asyncquery.udp_with_fallback(
            message, where, port=target.port, source=self._source, backend=self._backend)

