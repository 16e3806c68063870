"""GET /v1/stream served for real by Hypercorn on 127.0.0.1, read with httpx (and with a
raw socket for a client that never reads); the engine runs with a fake probe."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sentinel.api.app import Api, serve_api
from sentinel.cli.watch import SseMessage, read_sse
from sentinel.config.model import ApiConfig
from sentinel.engine.engine import Engine
from sentinel.engine.streamhub import StreamLimits
from sentinel.sinks.memory import RecordingSink
from tests.engine.fakes import FakeProbe, config, service

TOKEN = "s3cret"
Served = tuple[httpx.AsyncClient, Engine, FakeProbe]
Serve = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """A running engine (service `web`: b9001, b9002, probed every 0.2 s by a fake probe)
    and its API on 127.0.0.1:0."""

    @asynccontextmanager
    async def start(token: str | None = None, limits: StreamLimits | None = None
                    ) -> AsyncIterator[Served]:
        probe = FakeProbe()
        engine = Engine(config(tmp_path, service("web", [9001, 9002], interval=0.2)),
                        sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                        poller=probe.poller)
        if limits is not None:
            engine.hub.limits = limits
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            url = await nursery.start(serve_api, Api(engine, token),
                                      ApiConfig(host="127.0.0.1", port=0), tmp_path)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                yield client, engine, probe
            engine.stop()
            nursery.cancel_scope.cancel()

    return start


class Reader:
    """The messages of one open stream, taken as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments = 0

    async def next(self) -> SseMessage:
        """The next message (comments are counted, not returned)."""
        lines: list[str] = []
        while True:
            line = await anext(self._lines)
            if line.startswith(":"):
                self.comments += 1
                continue
            if line:
                lines.append(line)
                continue
            for message in read_sse([*lines, ""]):
                return message
            lines = []  # a field without data: `retry:`

    async def until(self, wanted: Callable[[SseMessage, Any], bool]
                    ) -> list[tuple[SseMessage, Any]]:
        """Every message up to and including the first that `wanted` accepts (within 10 s)."""
        seen: list[tuple[SseMessage, Any]] = []
        with trio.fail_after(10):
            while True:
                message = await self.next()
                seen.append((message, json.loads(message.data)))
                if wanted(*seen[-1]):
                    return seen


@asynccontextmanager
async def stream(client: httpx.AsyncClient, **kwargs: Any) -> AsyncIterator[Reader]:
    """An open GET /v1/stream (it must answer 200)."""
    async with client.stream("GET", "/v1/stream", **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        yield Reader(response)


def is_event(seq: int) -> Callable[[SseMessage, Any], bool]:
    """Accepts the event message numbered `seq`."""
    return lambda m, d: m.kind == "event" and d["seq"] == seq


async def test_a_stream_starts_with_held_events_then_every_service_then_goes_live(
        serve: Serve) -> None:
    """?after=0: the held events (id = seq), a full `state` per service and a `summary`;
    then an override's event arrives live, followed by a `state` with that backend only."""
    async with serve() as (client, engine, _):
        await engine.set_override("web", "b9001", "drain")
        async with stream(client, params={"after": "0"}) as reader:
            assert reader.response.headers["content-type"].startswith("text/event-stream")
            first = await reader.until(lambda m, d: m.kind == "summary")
            await engine.set_override("web", "b9002", "maint")
            live = await reader.until(lambda m, d: m.kind == "state"
                                      and any(b["state"] == "maint" for b in d["backends"]))
    assert [(m.kind, m.id) for m, _ in first] == [("event", "1"), ("state", None),
                                                  ("summary", None)]
    web = first[1][1]
    assert (web["service"], web["full"], web["up"], web["total"]) == ("web", True, 1, 2)
    assert [(b["name"], b["state"]) for b in web["backends"]] == [("b9001", "drain"),
                                                                   ("b9002", "up")]
    assert first[2][1]["seq"] == 1
    assert set(first[2][1]) >= {"sinks", "engine", "seq"}
    event = next(d for m, d in live if m.kind == "event")
    assert (event["seq"], event["backend"], event["to"], event["reason"]) == (
        2, "b9002", "maint", "admin: maint")
    assert live[-1][1]["full"] is False


async def test_last_event_id_resumes_where_the_client_stopped(serve: Serve) -> None:
    """A reconnect with Last-Event-ID: 1 after three events gets events 2 and 3 from the
    journal first, then the snapshot, then event 4 live: none twice, none missing
    (Last-Event-ID, which a reconnecting EventSource sends, wins over ?after=)."""
    async with serve() as (client, engine, _):
        for action in ("drain", "ready", "maint"):
            await engine.set_override("web", "b9001", action)
        async with stream(client, headers={"Last-Event-ID": "1"},
                          params={"after": "2"}) as reader:
            seen = await reader.until(lambda m, d: m.kind == "summary")
            await engine.set_override("web", "b9001", "ready")
            live = await reader.until(is_event(4))
    assert [(m.kind, m.id) for m, _ in seen] == [("event", "2"), ("event", "3"),
                                                 ("state", None), ("summary", None)]
    assert [m.id for m, _ in live if m.kind == "event"] == ["4"]


@pytest.mark.parametrize(("headers", "params"), [({"Last-Event-ID": "x1"}, {}),
                                                 ({}, {"after": "1.5"}),
                                                 ({"Last-Event-ID": "9" * 30}, {})])
async def test_a_bad_resume_point_is_a_400(serve: Serve, headers: dict[str, str],
                                           params: dict[str, str]) -> None:
    """A Last-Event-ID or ?after= that is not an integer seq is refused with a message."""
    async with serve() as (client, _, _):
        response = await client.get("/v1/stream", headers=headers, params=params)
    assert response.status_code == 400
    assert "must be an event seq" in response.json()["error"]


async def test_the_stream_needs_the_token_when_the_api_has_one(serve: Serve) -> None:
    """Read like /v1/events: 401 without the token or with another, 200 with it."""
    async with serve(token=TOKEN) as (client, _, _):
        assert (await client.get("/v1/stream")).status_code == 401
        wrong = await client.get("/v1/stream", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        async with stream(client, headers={"Authorization": f"Bearer {TOKEN}"}) as reader:
            assert (await reader.next()).kind == "state"


async def test_concurrent_streams_are_capped_with_a_503(serve: Serve) -> None:
    """With max_streams 2 a third stream gets 503 and a message; once one ends, a new one
    is served."""
    async with serve(limits=StreamLimits(max_streams=2)) as (client, engine, _):
        async with stream(client), stream(client) as second:
            await second.next()
            refused = await client.get("/v1/stream")
            assert refused.status_code == 503
            assert "too many streams open (2)" in refused.json()["error"]
        with trio.fail_after(10):
            while engine.hub.streams:  # noqa: ASYNC110 - the count is all there is to see
                await trio.sleep(0.02)
        async with stream(client) as again:
            assert (await again.next()).kind == "state"


async def test_heartbeat_comments_arrive_on_the_wire(serve: Serve) -> None:
    """A `: heartbeat` comment line comes every `heartbeat` seconds (0.3 s here)."""
    async with serve(limits=StreamLimits(heartbeat=0.3)) as (client, _, _), \
            stream(client) as reader:
        with trio.fail_after(10):
            while reader.comments < 2:
                await reader.next()


async def test_a_client_that_never_reads_is_dropped_and_probing_goes_on(serve: Serve) -> None:
    """A client with a tiny receive buffer that never reads: once its queue passes the
    limit the hub drops it; meanwhile overrides commit, a reading client gets every event,
    and a backend that dies is still found and published."""
    limits = StreamLimits(max_queued_messages=20)
    async with serve(limits=limits) as (client, engine, probe), stream(client) as reader:
        host, port = client.base_url.host, client.base_url.port
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        try:
            stuck.connect((host, port))
            stuck.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            with trio.fail_after(10):
                while engine.hub.streams < 2:  # noqa: ASYNC110 - as above
                    await trio.sleep(0.01)
            seq = 0
            with trio.fail_after(60):
                while not engine.hub.dropped:
                    seq += 1
                    await engine.set_override("web", "b9001", "drain" if seq % 2 else "ready")
            probe.alive[("127.0.0.1", 9002)] = False
            seen = await reader.until(lambda m, d: m.kind == "event" and d["backend"] == "b9002")
            assert engine.hub.streams == 1
        finally:
            stuck.close()
    events = [d["seq"] for m, d in seen if m.kind == "event"]
    assert events == list(range(1, seq + 2))
    assert seen[-1][1]["to"] == "down"
