"""The HTTP API (SPEC 6), served for real by Hypercorn on 127.0.0.1 and queried with httpx.

The state source is a real Engine (not running: its state document and
journal are live all the same); events come from admin overrides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from sentinel.api import URL_FILE, Api, serve_api
from sentinel.config import ApiConfig
from sentinel.engine import Engine
from sentinel.sinks.base import RecordingSink
from tests.engine.fakes import FakeProbe, config, service

TOKEN = "s3cret"
EVENT_KEYS = {"id", "seq", "time", "service", "backend", "address", "from", "to", "weight",
              "reason", "probe", "trace_id"}
Serve = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Engine]]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """Serve the API over an Engine with service `web` (b9001, b9002) on 127.0.0.1:0."""

    @asynccontextmanager
    async def start(token: str | None = None
                    ) -> AsyncIterator[tuple[httpx.AsyncClient, Engine]]:
        engine = Engine(config(tmp_path, service("web", [9001, 9002])),
                        sinks={"rec": RecordingSink()}, probe_factory=FakeProbe().factory())
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_api, Api(engine, token),
                                      ApiConfig(host="127.0.0.1", port=0), tmp_path)
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                yield client, engine
            nursery.cancel_scope.cancel()

    return start


async def test_state_document_has_the_spec_shape(serve: Serve, tmp_path: Path) -> None:
    """GET /v1/state: services -> {panic, up, total, backends[name, address, state, weight,
    since, fails, last_probe]}; the bound URL is written to state_dir/api.url."""
    async with serve() as (client, _):
        response = await client.get("/v1/state")
        assert (tmp_path / URL_FILE).read_text().strip() == str(client.base_url).rstrip("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    web = response.json()["services"]["web"]
    assert (web["panic"], web["up"], web["total"]) == (False, 2, 2)
    first = web["backends"][0]
    assert {"name", "address", "state", "weight", "since", "fails", "last_probe"} <= set(first)
    assert (first["name"], first["address"], first["state"], first["weight"]) == (
        "b9001", "127.0.0.1:9001", "up", 1)


async def test_events_after_returns_newer_events_oldest_first(serve: Serve) -> None:
    """GET /v1/events?after=N lists only seq > N, oldest first; no `after` means all."""
    async with serve() as (client, engine):
        await engine.set_override("web", "b9001", "drain")
        await engine.set_override("web", "b9001", "ready")
        await engine.set_override("web", "b9002", "maint")
        everything = (await client.get("/v1/events")).json()["events"]
        after_one = (await client.get("/v1/events", params={"after": 1})).json()["events"]
        after_last = (await client.get("/v1/events", params={"after": 3})).json()["events"]
    assert [e["seq"] for e in everything] == [1, 2, 3]
    assert [(e["seq"], e["backend"], e["from"], e["to"]) for e in after_one] == [
        (2, "b9001", "drain", "up"), (3, "b9002", "up", "maint")]
    assert after_last == []
    assert set(everything[0]) == EVENT_KEYS


@pytest.mark.parametrize("after", ["abc", "1.5", "--1", "²"])
async def test_bad_after_is_400(serve: Serve, after: str) -> None:
    """`after` that is not an integer is a client error with a message, not a 500."""
    async with serve() as (client, _):
        response = await client.get("/v1/events", params={"after": after})
    assert response.status_code == 400
    assert "after" in response.json()["error"]


async def test_healthz(serve: Serve) -> None:
    """GET /healthz answers 200 {"ok": true}, even when a token is set."""
    async with serve(token=TOKEN) as (client, _):
        response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"ok": True})


async def test_unknown_path_is_404(serve: Serve) -> None:
    """An unknown endpoint is 404 with an error document."""
    async with serve() as (client, _):
        response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert "error" in response.json()


async def test_events_require_the_token_when_one_is_set(serve: Serve) -> None:
    """With a token, /v1/events is 401 without it or with a wrong one, 200 with it."""
    async with serve(token=TOKEN) as (client, _):
        missing = await client.get("/v1/events")
        wrong = await client.get("/v1/events", headers={"Authorization": "Bearer nope"})
        right = await client.get("/v1/events", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert right.json() == {"events": []}


async def test_admin_override_needs_the_token_and_a_known_backend(serve: Serve) -> None:
    """POST .../drain: 401 without the token, 404 for an unknown backend, 200 and an event."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(token=TOKEN) as (client, engine):
        denied = await client.post("/v1/backends/web/b9001/drain")
        unknown = await client.post("/v1/backends/web/nope/drain", headers=auth)
        done = await client.post("/v1/backends/web/b9001/drain", headers=auth)
        state = (await client.get("/v1/state")).json()
    assert (denied.status_code, unknown.status_code, done.status_code) == (401, 404, 200)
    assert [e["to"] for e in done.json()["events"]] == ["drain"]
    assert state["services"]["web"]["backends"][0]["state"] == "drain"
    assert engine.journal.seq == 1
