"""The tcp probe against real loopback servers."""

from __future__ import annotations

import re
import ssl

import pytest
import trio
import trio.testing

from sentinel.config.model import ProbeConfig, TcpSpec, Timing
from sentinel.model import FailureKind
from sentinel.probes import exchange as lean
from sentinel.probes.base import Target
from sentinel.probes.registry import make_probe
from sentinel.probes.resolve import Address, default_resolver
from sentinel.probes.tcp import TcpProbe

from .conftest import Serve, banner, pong, reset, silent


def probe(
    timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None, **spec: object
) -> TcpProbe:
    """A tcp probe; its timeout is generous (a check that must pass, or fail otherwise,
    never meets it on a loaded machine) unless a test of timeouts sets a short one."""
    config = ProbeConfig(type="tcp", timing=Timing(timeout=timeout), spec=TcpSpec(**spec))  # type: ignore[arg-type]
    return TcpProbe(config, ssl_context=ssl_context)


def at(port: int, host: str = "127.0.0.1") -> Target:
    """The target for a loopback port."""
    return Target(service="svc", backend="b1", host=host, port=port)


async def test_connect_ok(serve: Serve) -> None:
    """A listening port is healthy, with the check's latency measured."""
    port = await serve(silent)
    start = trio.current_time()
    result = await probe().check(at(port))
    took = trio.current_time() - start
    assert result.ok, result.detail
    assert result.failure is None
    assert 0 <= result.latency <= took


async def test_host_name_resolved_at_probe_time(serve: Serve) -> None:
    """A host name is resolved when the probe runs (localhost reaches 127.0.0.1)."""
    port = await serve(silent)
    result = await probe().check(at(port, host="localhost"))
    assert result.ok, result.detail


async def test_refused(refused_port: int) -> None:
    """A port nobody listens on is a CONNECT failure."""
    result = await probe().check(at(refused_port))
    assert result.failure is FailureKind.CONNECT
    assert result.detail == "connection refused"


async def test_unresolvable_name() -> None:
    """A name that cannot resolve is a DNS failure."""
    result = await probe(timeout=2.0).check(at(80, host="no-such-host.invalid"))
    assert result.failure is FailureKind.DNS


async def test_send_expect_match(serve: Serve) -> None:
    """`send` then `expect`: the check passes once the reply matches."""
    port = await serve(pong)
    result = await probe(send=b"PING\r\n", expect=re.compile(rb"^\+PONG")).check(at(port))
    assert result.ok, result.detail


async def test_expect_mismatch_then_eof(serve: Serve) -> None:
    """EOF before `expect` matched is a BODY failure quoting what was read."""
    port = await serve(pong)
    result = await probe(send=b"HELLO\r\n", expect=re.compile(rb"\+PONG")).check(at(port))
    assert result.failure is FailureKind.BODY
    assert result.detail == r"expect not matched: got b'-ERR unknown command\r\n'"


async def test_expect_without_send_reads_banner(serve: Serve) -> None:
    """`expect` alone matches a greeting the server sends first."""
    port = await serve(banner)
    result = await probe(expect=re.compile(rb"^220 ")).check(at(port))
    assert result.ok, result.detail


async def test_silent_server_times_out(serve: Serve) -> None:
    """A server that accepts but never answers is a TIMEOUT after `timeout`."""
    port = await serve(silent)
    start = trio.current_time()
    with trio.fail_after(10):  # nothing but the timeout can end this check
        result = await probe(timeout=0.3, send=b"PING\r\n",
                             expect=re.compile(rb"PONG")).check(at(port))
    took = trio.current_time() - start
    assert result.failure is FailureKind.TIMEOUT
    assert result.detail == "no answer within 300ms (expect)"
    assert 0.3 <= result.latency <= took


async def test_a_check_without_an_answer_ends_exactly_at_its_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    """The deadline on virtual time: a check whose answer never comes ends exactly
    `timeout` after it began, as TIMEOUT (on loopback, above, load makes it later)."""
    tcp = probe(timeout=0.3, send=b"PING\r\n", expect=re.compile(rb"PONG"))
    exchange = tcp.exchange(at(9))

    async def unanswered(address: Address) -> None:
        exchange.connected()
        assert exchange.sent()
        await trio.sleep_forever()

    start = trio.current_time()
    result = await lean.check(exchange, "127.0.0.1", tcp.timeout, default_resolver(),
                              unanswered)
    assert trio.current_time() - start == pytest.approx(0.3)
    assert (result.failure, result.detail) == (FailureKind.TIMEOUT,
                                               "no answer within 300ms (expect)")
    assert result.latency == pytest.approx(0.3)


async def test_reset(serve: Serve) -> None:
    """A connection reset (RST) while waiting for the reply is a RESET failure."""
    port = await serve(reset)
    result = await probe(send=b"PING\r\n", expect=re.compile(rb"PONG")).check(at(port))
    assert result.failure is FailureKind.RESET, result.detail


async def test_tls_verify_fails_on_untrusted_cert(serve: Serve, server_tls: ssl.SSLContext) -> None:
    """With `verify` on, a certificate from an unknown CA is a TLS failure."""
    port = await serve(banner, server_tls)
    result = await probe(tls=True).check(at(port))
    assert result.failure is FailureKind.TLS
    assert "CERTIFICATE_VERIFY_FAILED" in result.detail


async def test_tls_verify_off(serve: Serve, server_tls: ssl.SSLContext) -> None:
    """With `verify: false` the handshake succeeds and `expect` reads over TLS."""
    port = await serve(banner, server_tls)
    result = await probe(tls=True, verify=False, expect=re.compile(rb"^220")).check(at(port))
    assert result.ok, result.detail


async def test_tls_trusted_ca_and_sni(
    serve: Serve, server_tls: ssl.SSLContext, client_trusting_ca: ssl.SSLContext
) -> None:
    """With the CA trusted, `sni` is the name checked: localhost passes, another name fails."""
    port = await serve(banner, server_tls)
    good = await probe(tls=True, sni="localhost", ssl_context=client_trusting_ca).check(at(port))
    assert good.ok, good.detail
    bad = await probe(tls=True, sni="other.test", ssl_context=client_trusting_ca).check(at(port))
    assert bad.failure is FailureKind.TLS


async def test_tls_to_plaintext_server(serve: Serve) -> None:
    """TLS against a plaintext server that talks first is a TLS failure, not a hang."""
    port = await serve(banner)
    result = await probe(tls=True, verify=False).check(at(port))
    assert result.failure is FailureKind.TLS, result.detail


async def test_make_probe_tcp() -> None:
    """The registry builds a TcpProbe for `type: tcp`."""
    assert isinstance(make_probe(ProbeConfig(type="tcp")), TcpProbe)


async def test_cancellation_propagates(serve: Serve) -> None:
    """Cancelling a check from outside propagates instead of becoming a result."""
    port = await serve(silent)
    with trio.move_on_after(0.1) as scope:
        await probe(timeout=5.0, expect=re.compile(rb"x")).check(at(port))
        pytest.fail("check returned despite cancellation")
    assert scope.cancelled_caught
