"""The HTTP API (SPEC 6), served for real by Hypercorn on 127.0.0.1 and queried with httpx.

The state source is a real Engine (not running: its state document and
journal are live all the same); events come from admin overrides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sentinel.api.app import MAX_BODY, URL_FILE, serve_api
from sentinel.config.model import ApiConfig
from sentinel.engine.engine import Engine
from sentinel.sinks.memory import RecordingSink
from tests.api.clients import BROKEN_CHUNK, CountingApi, send_raw
from tests.engine.fakes import FakeProbe, config, service

TOKEN = "s3cret"
EVENT_KEYS = {"id", "seq", "time", "service", "backend", "address", "from", "to", "weight",
              "reason", "probe", "trace_id"}
Serve = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Engine]]]





@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """Serve the API over an Engine with service `web` (b9001, b9002) on 127.0.0.1:0."""

    @asynccontextmanager
    async def start(token: str | None = None, **api_options: Any
                    ) -> AsyncIterator[tuple[httpx.AsyncClient, Engine]]:
        probe = FakeProbe()
        engine = Engine(config(tmp_path, service("web", [9001, 9002])),
                        sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                        poller=probe.poller)
        async with trio.open_nursery() as nursery:
            api = CountingApi(engine, token, **api_options)
            url = await nursery.start(serve_api, api, ApiConfig(host="127.0.0.1", port=0),
                                      tmp_path)
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                client.api = api  # type: ignore[attr-defined]
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


@pytest.mark.parametrize("after", ["abc", "1.5", "--1", "²", "", " 1", "1_0", "9" * 20])
async def test_bad_after_is_400(serve: Serve, after: str) -> None:
    """`after` that is not an integer is a client error with a message, not a 500."""
    async with serve() as (client, _):
        response = await client.get("/v1/events", params={"after": after})
    assert response.status_code == 400
    assert response.json()["error"].startswith("after must be an integer, got ")


async def test_a_5000_digit_after_is_400_with_a_short_message(serve: Serve) -> None:
    """`after` with 5,000 digits (past Python's int() limit) is a 400 whose message does
    not echo the number back, not a 500."""
    async with serve() as (client, _):
        response = await client.get("/v1/events", params={"after": "7" * 5000})
    assert response.status_code == 400
    assert response.json()["error"] == (
        f"after must be an integer, got {'7' * 40!r}... (5000 characters)")


@pytest.mark.parametrize(("path", "error"), [
    ("/v1/events?after=1&after=2", "after given 2 times"),
    ("/v1/events?afterr=1", "unknown query parameter 'afterr' (it takes after)"),
    ("/v1/events?after=%ff", "the query string is not UTF-8 once %-decoded"),
    ("/v1/state?pretty", "unknown query parameter 'pretty' (it takes none)"),
    ("/v1/maglev/web?format=xml", "format must be one of json, bin, got 'xml'"),
    ("/v1/events?" + "&".join(f"p{i}=1" for i in range(101)),
     "more than 100 query parameters"),
])
async def test_malformed_query_values_are_400(serve: Serve, path: str, error: str) -> None:
    """A query the endpoint cannot take (a repeat, a typo'd name, bad %-escapes, a value
    out of its set, a flood of fields) is a 400 naming the problem, never ignored."""
    async with serve() as (client, _):
        response = await client.get(path)
    assert (response.status_code, response.json()) == (400, {"error": error})


@pytest.mark.parametrize("path", ["/healthz", "/v1/state", "/v1/events", "/v1/events?after=1",
                                  "/v1/maglev/web", "/metrics"])
async def test_head_answers_like_get_without_a_body(serve: Serve, path: str) -> None:
    """HEAD on a GET endpoint answers GET's status and headers (its Content-Length too)
    with no body, not 405 (RFC 9110 9.3.2)."""
    async def metrics() -> tuple[bytes, str]:
        return b"sentinel_up 1\n", "text/plain; version=0.0.4"

    async with serve(metrics=metrics) as (client, engine):
        await engine.set_override("web", "b9001", "drain")
        get, head = await client.get(path), await client.head(path)
    assert head.status_code == get.status_code != 405
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) == len(get.content) > 0


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/v1/state", "GET, HEAD"),
    ("DELETE", "/v1/events", "GET, HEAD"),
    ("POST", "/healthz", "GET, HEAD"),
    ("GET", "/v1/backends/web/b9001/drain", "POST"),
    ("HEAD", "/v1/reload", "POST"),
    ("PUT", "/v1/outbox", "GET, HEAD"),
    ("GET", "/v1/outbox/retry", "POST"),
])
async def test_a_wrong_method_is_405_with_allow(serve: Serve, method: str, path: str,
                                                allow: str) -> None:
    """A known endpoint asked with another method answers 405 and says which it takes."""
    async def reload() -> list[str]:
        return []

    async with serve(reload=reload) as (client, engine):
        response = await client.request(method, path)
        assert engine.journal.seq == 0
    assert response.status_code == 405
    assert response.headers["allow"] == allow


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


@pytest.mark.parametrize("path", ["/v1/backends/web/b9001/drain", "/v1/backends/web/b9001/maint",
                                  "/v1/backends/web/b9002/ready", "/v1/reload"])
@pytest.mark.parametrize("refusal", ["broken chunk", "query", "huge body"])
async def test_a_refused_post_changes_nothing(serve: Serve, path: str, refusal: str) -> None:
    """Every POST that takes input changes nothing when the request is refused: a body
    the server rejects as malformed after the headers (Hypercorn's 400; the handler used
    to act on the headers anyway), a query it does not take (400), a body over the limit
    (413). The handler is waited for, not only the answer."""
    reloads: list[int] = []

    async def reload() -> list[str]:
        reloads.append(1)
        return []

    async with serve(reload=reload) as (client, engine):
        await engine.set_override("web", "b9002", "maint")  # so `ready` would change it
        before = (engine.journal.seq, [b.override for b in engine.services["web"].backends])
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        if refusal == "broken chunk":
            status = (await send_raw(client, head + BROKEN_CHUNK)).split(b"\r\n")[0]
        elif refusal == "query":
            status = (await send_raw(client, head.replace(b" HTTP", b"?now=1 HTTP")
                                     + b"Content-Length: 0\r\n\r\n")).split(b"\r\n")[0]
        else:
            body = b"x" * (MAX_BODY + 1)
            status = (await send_raw(client, head + b"Content-Length: %d\r\n\r\n" % len(body)
                                     + body)).split(b"\r\n")[0]
        with trio.fail_after(5):
            await client.api.wait_handled(1)  # type: ignore[attr-defined]
        after = (engine.journal.seq, [b.override for b in engine.services["web"].backends])
    assert status.split()[1] == {"broken chunk": b"400", "query": b"400",
                                 "huge body": b"413"}[refusal]
    assert after == before
    assert reloads == []


async def test_admin_names_are_decoded_one_segment_at_a_time(tmp_path: Path) -> None:
    """POST /v1/backends/SERVICE/BACKEND/ACTION decodes each %-encoded name on its own,
    as `sentinel ctl` and the dashboard (encodeURIComponent) send them: `a%2Fb` names the
    backend `a/b` (not a longer path), `50%25` names `50%`, `a%20b` names `a b`; an
    escape that is not UTF-8 is a 400, and a path with a segment too many a 404."""
    web = service("web", [9001, 9002, 9003])
    names = ("a/b", "50%", "a b")
    web = replace(web, backends=tuple(replace(b, name=n)
                                      for b, n in zip(web.backends, names, strict=True)))
    probe = FakeProbe()
    engine = Engine(config(tmp_path, web), sinks={"rec": RecordingSink()},
                    probe_factory=probe.factory(), poller=probe.poller)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, CountingApi(engine),
                                  ApiConfig(host="127.0.0.1", port=0), tmp_path)
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            answers = [await client.post(f"/v1/backends/web/{quoted}/drain")
                       for quoted in ("a%2Fb", "50%25", "a%20b")]
            bad = await client.post("/v1/backends/web/%ff/drain")
            longer = await client.post("/v1/backends/web/a/b/drain")
        nursery.cancel_scope.cancel()
    assert [(a.status_code, [e["backend"] for e in a.json()["events"]]) for a in answers] == [
        (200, ["a/b"]), (200, ["50%"]), (200, ["a b"])]
    assert [b.override for b in engine.services["web"].backends] == ["drain"] * 3
    assert (bad.status_code, bad.json()) == (400, {
        "error": "the path is not UTF-8 once %-decoded"})
    assert longer.status_code == 404
    assert longer.json()["error"].startswith("no such endpoint: POST /v1/backends/web/a/b/drain")
