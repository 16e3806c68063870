"""The http and https probes against real loopback servers."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trio

from sentinel.config.model import HttpSpec, ProbeConfig, StatusClass, Timing
from sentinel.model import FailureKind
from sentinel.probes.base import Target
from sentinel.probes.https import HttpProbe, classify_httpx, describe_status
from sentinel.probes.registry import make_probe
from tests.probes.conftest import HttpServer, Serve, hang_up, reset, silent

StartHttp = Callable[..., Awaitable[HttpServer]]
MakeProbe = Callable[..., HttpProbe]


@pytest.fixture
async def make() -> AsyncIterator[MakeProbe]:
    """`make(type="http", timeout=10.0, ssl_context=None, **spec)`; every probe is closed
    after. The timeout is generous (a check that must pass, or fail otherwise, never meets
    it on a loaded machine) unless a test of timeouts sets a short one."""
    made: list[HttpProbe] = []

    def build(
        type: str = "http",
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        **spec: object,
    ) -> HttpProbe:
        config = ProbeConfig(type=type, timing=Timing(timeout=timeout), spec=HttpSpec(**spec))  # type: ignore[arg-type]
        made.append(HttpProbe(config, ssl_context=ssl_context))
        return made[-1]

    yield build
    for p in made:
        await p.aclose()


def at(port: int, host: str = "127.0.0.1") -> Target:
    """The target for a loopback port."""
    return Target(service="svc", backend="b1", host=host, port=port)


async def test_ok(http_server: StartHttp, make: MakeProbe) -> None:
    """A 200 is healthy, and the configured method and path are requested."""
    server = await http_server()
    result = await make(method="HEAD", path="/healthz?full=1").check(at(server.port))
    assert result.ok, result.detail
    assert server.requests[0][0] == "HEAD /healthz?full=1 HTTP/1.1"


async def test_status_503(http_server: StartHttp, make: MakeProbe) -> None:
    """A status outside `expect_status` is a STATUS failure naming the expected classes."""
    server = await http_server(status=503)
    result = await make().check(at(server.port))
    assert result.failure is FailureKind.STATUS
    assert result.detail == "status 503 not in 2xx,3xx"


async def test_redirect_not_followed(http_server: StartHttp, make: MakeProbe) -> None:
    """A 301 is judged as is (healthy under the 2xx/3xx default), never followed."""
    server = await http_server(status=301, headers=(("Location", "http://127.0.0.1:1/x"),))
    assert (await make().check(at(server.port))).ok
    strict = await make(expect_status=(StatusClass(200, 200),)).check(at(server.port))
    assert strict.detail == "status 301 not in 200"
    assert len(server.requests) == 2


async def test_body_matches(http_server: StartHttp, make: MakeProbe) -> None:
    """`expect_body` is a regex searched in the response text."""
    server = await http_server()
    result = await make(expect_body=re.compile(r'"status":\s*"ok"')).check(at(server.port))
    assert result.ok, result.detail


async def test_wrong_body(http_server: StartHttp, make: MakeProbe) -> None:
    """A body that does not match `expect_body` is a BODY failure quoting both."""
    server = await http_server(body=b'{"status": "degraded"}')
    result = await make(expect_body=re.compile(r'"status":\s*"ok"')).check(at(server.port))
    assert result.failure is FailureKind.BODY
    assert result.detail == (
        """body did not match '"status":\\\\s*"ok"': got '{"status": "degraded"}'"""
    )


async def test_host_and_headers_sent(http_server: StartHttp, make: MakeProbe) -> None:
    """The `host` override and configured headers reach the server; User-Agent is replaceable."""
    server = await http_server()
    headers = (("X-Probe", "1"), ("User-Agent", "lb-check"))
    result = await make(host="web.example", headers=headers).check(at(server.port))
    assert result.ok, result.detail
    seen = server.requests[0][1]
    assert seen["host"] == "web.example"
    assert seen["x-probe"] == "1"
    assert seen["user-agent"] == "lb-check"


async def test_default_host_is_target(http_server: StartHttp, make: MakeProbe) -> None:
    """Without `host`, the Host header is the target's address."""
    server = await http_server()
    await make().check(at(server.port))
    assert server.requests[0][1]["host"] == f"127.0.0.1:{server.port}"


async def test_refused(refused_port: int, make: MakeProbe) -> None:
    """A refused connection is a CONNECT failure."""
    result = await make().check(at(refused_port))
    assert result.failure is FailureKind.CONNECT
    assert result.detail == "connection refused"


async def test_silent_server_times_out(serve: Serve, make: MakeProbe) -> None:
    """A server that accepts and never answers is a TIMEOUT after `timeout`."""
    port = await serve(silent)
    start = trio.current_time()
    with trio.fail_after(10):  # nothing but the timeout can end this check
        result = await make(timeout=0.3).check(at(port))
    took = trio.current_time() - start
    assert result.failure is FailureKind.TIMEOUT, result.detail
    assert result.detail == "no answer within 300ms"
    assert 0.29 <= result.latency <= took  # httpx's own timer may fire a hair early


async def test_trickling_body_bounded_by_timeout(serve: Serve, make: MakeProbe) -> None:
    """A body sent a byte at a time cannot stretch the check past `timeout`: it ends at
    the timeout while the body is still coming (a timer that each byte reset would have
    waited for all of it, 60 s)."""
    sent: list[int] = []

    async def trickle(stream: trio.abc.Stream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1200\r\n\r\n")
        for _ in range(1200):
            await stream.send_all(b"x")
            sent.append(1)
            await trio.sleep(0.05)

    port = await serve(trickle)
    with trio.fail_after(10):  # far less than the 60 s the body takes
        result = await make(timeout=0.3, expect_body=re.compile("never")).check(at(port))
    assert result.failure is FailureKind.TIMEOUT
    assert result.detail == "no answer within 300ms"
    assert sent  # the body was flowing when the timeout ended the check


async def test_reset(serve: Serve, make: MakeProbe) -> None:
    """A connection reset is a RESET failure."""
    port = await serve(reset)
    result = await make().check(at(port))
    assert result.failure is FailureKind.RESET, result.detail


async def test_closed_without_response(serve: Serve, make: MakeProbe) -> None:
    """A clean close before any response bytes is a RESET failure too."""
    port = await serve(hang_up)
    result = await make().check(at(port))
    assert result.failure is FailureKind.RESET
    assert result.detail == "server closed the connection without a response"


async def test_garbage_response(serve: Serve, make: MakeProbe) -> None:
    """A peer that does not speak HTTP is a PROTOCOL failure."""

    async def smtp(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"220 mail ready\r\n\r\n")
        await stream.receive_some(4096)

    port = await serve(smtp)
    result = await make().check(at(port))
    assert result.failure is FailureKind.PROTOCOL, result.detail


async def test_https_verify_fails(
    http_server: StartHttp, make: MakeProbe, server_tls: ssl.SSLContext
) -> None:
    """https with `verify` on and an unknown CA is a TLS failure."""
    server = await http_server(tls=server_tls)
    result = await make(type="https").check(at(server.port))
    assert result.failure is FailureKind.TLS
    assert "CERTIFICATE_VERIFY_FAILED" in result.detail


async def test_https_verify_off(
    http_server: StartHttp, make: MakeProbe, server_tls: ssl.SSLContext
) -> None:
    """https with `verify: false` talks to a self-signed server."""
    server = await http_server(tls=server_tls)
    result = await make(type="https", verify=False).check(at(server.port))
    assert result.ok, result.detail


async def test_https_trusted_ca(
    http_server: StartHttp,
    make: MakeProbe,
    server_tls: ssl.SSLContext,
    client_trusting_ca: ssl.SSLContext,
) -> None:
    """https with the CA trusted verifies the certificate for the target's address."""
    server = await http_server(tls=server_tls)
    result = await make(type="https", ssl_context=client_trusting_ca).check(at(server.port))
    assert result.ok, result.detail


async def test_http_to_tls_server_is_not_ok(
    http_server: StartHttp, make: MakeProbe, server_tls: ssl.SSLContext
) -> None:
    """Plain http to a TLS port fails rather than hangs."""
    server = await http_server(tls=server_tls)
    result = await make().check(at(server.port))
    assert not result.ok
    assert result.failure is not FailureKind.ERROR, result.detail


async def test_ipv6_url() -> None:
    """The registry maps https to HttpProbe, and IPv6 literals are bracketed in the URL."""
    probe = make_probe(ProbeConfig(type="https", spec=HttpSpec(path="/h")))
    assert isinstance(probe, HttpProbe)
    assert probe.url(Target("s", "b", "::1", 8443)) == "https://[::1]:8443/h"
    await probe.aclose()


def test_describe_status() -> None:
    """Status classes print as written in the config."""
    classes = (StatusClass(200, 299), StatusClass(301, 301), StatusClass(500, 503))
    assert describe_status(classes) == "2xx,301,500-503"


def test_classify_httpx_table() -> None:
    """httpx exceptions without a transport cause map by the table."""
    assert classify_httpx(httpx.ReadTimeout("t"))[0] is FailureKind.TIMEOUT
    assert classify_httpx(httpx.ReadError(""))[0] is FailureKind.RESET
    assert classify_httpx(ValueError("bug")) == (FailureKind.ERROR, "ValueError: bug")
