"""The lean probe path (raw sockets) and the reference path (httpx / trio streams)
give the same verdicts against the same real servers."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest
import trio

from sentinel.config.model import HttpSpec, ProbeConfig, TcpSpec, Timing
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes.base import Target
from sentinel.probes.http import LeanHttpProbe
from sentinel.probes.https import HttpProbe
from sentinel.probes.tcp import TcpProbe
from tests.probes.peers import (
    CHUNKED,
    CLOSE_DELIMITED,
    OK_BODY,
    TIMEOUT,
    new_time_waits,
    reply,
    time_waits,
    trickle,
)

from .conftest import Serve, banner, hang_up, pong, reset, silent


def at(port: int) -> Target:
    """The loopback target."""
    return Target("svc", "b1", "127.0.0.1", port)


async def both_http(port: int, **spec: object) -> tuple[ProbeResult, ProbeResult]:
    """(lean, httpx) results for one HTTP check of `port`."""
    config = ProbeConfig("http", Timing(timeout=TIMEOUT), HttpSpec(**spec))  # type: ignore[arg-type]
    lean, ref = LeanHttpProbe(config), HttpProbe(config)
    try:
        return await lean.check(at(port)), await ref.check(at(port))
    finally:
        await ref.aclose()


@pytest.mark.parametrize(("handler", "spec", "ok", "kind"), [
    (reply(OK_BODY), {}, True, None),
    (reply(OK_BODY), {"expect_body": re.compile(r'"status":\s*"ok"')}, True, None),
    (reply(OK_BODY), {"expect_body": re.compile("down")}, False, FailureKind.BODY),
    (reply(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"), {}, False, FailureKind.STATUS),
    (reply(CHUNKED), {"expect_body": re.compile(r'"status": "ok"')}, True, None),
    (reply(CHUNKED), {"expect_body": re.compile("nope")}, False, FailureKind.BODY),
    (reply(CLOSE_DELIMITED), {"expect_body": re.compile("ok")}, True, None),
    (trickle(OK_BODY, 0.05), {}, True, None),  # slow headers, inside the timeout
    (trickle(OK_BODY, 0.3), {}, False, FailureKind.TIMEOUT),  # slow headers, past it
    (reply(OK_BODY, delay=1.0), {}, False, FailureKind.TIMEOUT),
    (silent, {}, False, FailureKind.TIMEOUT),
    (reset, {}, False, FailureKind.RESET),
    (hang_up, {}, False, FailureKind.RESET),
    (reply(b"SSH-2.0-OpenSSH\r\n\r\n"), {}, False, FailureKind.PROTOCOL),
])
async def test_http_paths_agree(serve: Serve, handler: Callable[[trio.abc.Stream],
                                Awaitable[None]], spec: dict[str, object], ok: bool,
                                kind: FailureKind | None) -> None:
    """Lean and httpx HTTP probes reach the same verdict and failure kind."""
    port = await serve(handler)
    lean, ref = await both_http(port, **spec)
    assert (lean.ok, lean.failure) == (ok, kind), lean
    assert (ref.ok, ref.failure) == (ok, kind), ref
    if kind in (FailureKind.STATUS, FailureKind.BODY, FailureKind.TIMEOUT):
        assert lean.detail == ref.detail  # the same words, from the same verdict functions


async def test_http_refused_agrees(refused_port: int) -> None:
    """A refused port is CONNECT "connection refused" on both paths."""
    lean, ref = await both_http(refused_port)
    assert (lean.failure, lean.detail) == (FailureKind.CONNECT, "connection refused")
    assert ref.failure is FailureKind.CONNECT


async def tcp_both(port: int, spec: TcpSpec) -> tuple[ProbeResult, ProbeResult]:
    """(lean, trio-stream) results for one TCP check of `port`."""
    probe = TcpProbe(ProbeConfig("tcp", Timing(timeout=TIMEOUT), spec))
    return await probe.check(at(port)), await probe.check_streams(at(port))


@pytest.mark.parametrize(("handler", "spec", "ok", "kind"), [
    (silent, TcpSpec(), True, None),  # plain connect: accepting is healthy
    (pong, TcpSpec(send=b"PING\r\n", expect=re.compile(rb"\+PONG")), True, None),
    (pong, TcpSpec(send=b"QUIT\r\n", expect=re.compile(rb"\+PONG")), False, FailureKind.BODY),
    (banner, TcpSpec(expect=re.compile(rb"^220 ")), True, None),
    (silent, TcpSpec(expect=re.compile(rb"220")), False, FailureKind.TIMEOUT),
])
async def test_tcp_paths_agree(serve: Serve, handler: Callable[[trio.abc.Stream],
                               Awaitable[None]], spec: TcpSpec, ok: bool,
                               kind: FailureKind | None) -> None:
    """Lean and stream TCP probes reach the same verdict, kind and text."""
    port = await serve(handler)
    lean, ref = await tcp_both(port, spec)
    assert (lean.ok, lean.failure, lean.detail) == (ok, kind, ref.detail)
    assert (ref.ok, ref.failure) == (ok, kind)


async def test_tcp_refused_agrees(refused_port: int) -> None:
    """A refused port reads the same on both TCP paths."""
    lean, ref = await tcp_both(refused_port, TcpSpec())
    assert (lean.failure, lean.detail) == (ref.failure, ref.detail)
    assert lean.detail == "connection refused"


async def test_lean_tcp_leaves_no_time_wait(serve: Serve) -> None:
    """20 lean TCP checks leave no TIME_WAIT socket; the stream path leaves some behind."""
    lean_port = await serve(hang_up)  # closes once the client has left
    before = time_waits(lean_port)
    probe = TcpProbe(ProbeConfig("tcp", Timing(timeout=TIMEOUT), TcpSpec()))
    for _ in range(20):
        assert (await probe.check(at(lean_port))).ok
    await trio.sleep(0.05)
    assert new_time_waits(lean_port, before) == 0
    stream_port = await serve(hang_up)
    before = time_waits(stream_port)
    for _ in range(20):
        assert (await probe.check_streams(at(stream_port))).ok
    await trio.sleep(0.05)
    assert new_time_waits(stream_port, before) > 0
