"""GET /v1/outbox and POST /v1/outbox/retry|purge, served for real by Hypercorn over an
Engine whose sink `rec` is a webhook sink; token-protected when a token is set."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from sentinel.api.app import Api, serve_api
from sentinel.config.model import ApiConfig
from sentinel.engine.engine import Engine
from tests.api.clients import BROKEN_CHUNK, CountingApi, send_raw
from tests.engine.fakes import FakeProbe, config, service
from tests.sinks.webhook.conftest import MakeSink, event, until, update
from tests.sinks.webhook.receiver import Receiver, Reply

TOKEN = "s3cret"


async def test_outbox_endpoints_list_retry_and_purge_behind_the_token(
        tmp_path: Path, make_sink: MakeSink, nursery: trio.Nursery, refused_port: int) -> None:
    """Without the token 401; with it, the list shows pending entries and their last
    error, retry resets attempts, purge --all drops; unknown sinks are 404."""
    sink = await make_sink(f"http://127.0.0.1:{refused_port}/hook", initial_delay=30.0)
    probe = FakeProbe()
    engine = Engine(config(tmp_path / "engine", service("web", [9001])), sinks={"rec": sink},
                    probe_factory=probe.factory(), poller=probe.poller)
    url = await nursery.start(serve_api, Api(engine, TOKEN),
                              ApiConfig(host="127.0.0.1", port=0), tmp_path)
    first, second = event(), event()
    await sink.apply(update(first, second))
    await until(sink, lambda s: s.failed_attempts >= 1)
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/v1/outbox")).status_code == 401
        assert (await client.post("/v1/outbox/retry")).status_code == 401
        listed = (await client.get("/v1/outbox", headers=auth)).json()["sinks"]["rec"]
        assert [e["id"] for e in listed["entries"]] == [first.id, second.id]
        assert listed["pending"] == 2
        assert "ConnectError" in listed["entries"][0]["last_error"]
        retried = (await client.post("/v1/outbox/retry", headers=auth,
                                     params={"id": first.id})).json()["sinks"]["rec"]
        assert [e["attempts"] for e in retried["entries"]] == [0]
        purged = (await client.post("/v1/outbox/purge", headers=auth,
                                    params={"all": "true"})).json()["sinks"]["rec"]
        assert {e["id"] for e in purged["entries"]} == {first.id, second.id}
        assert purged["pending"] == 0
        missing = await client.get("/v1/outbox", headers=auth, params={"sink": "nope"})
        assert missing.status_code == 404
        assert (await client.get("/v1/outbox/retry", headers=auth)).status_code == 405


@pytest.mark.parametrize("path", ["/v1/outbox/retry", "/v1/outbox/purge"])
@pytest.mark.parametrize(("refusal", "status", "error"), [
    ("broken chunk", 400, ""),
    ("limit=" + "9" * 5000, 400, "limit must be an integer from 0 to 10000000, got '999"),
    ("state=gone", 400, "state must be one of all, dead, got 'gone'"),
    ("all=yes", 400, "all must be one of false, true, got 'yes'"),
    ("idd=x", 400, "unknown query parameter 'idd'"),
    ("sink=rec&sink=nope", 404, "no webhook sink nope"),
])
async def test_a_refused_outbox_post_changes_nothing(
        tmp_path: Path, make_sink: MakeSink, receiver: Receiver, nursery: trio.Nursery,
        path: str, refusal: str, status: int, error: str) -> None:
    """retry and purge change nothing when the request is refused: a malformed body
    (Hypercorn's 400), a value they cannot take (400 with a message), an unknown sink
    (404). The handler is waited for, not only the answer."""
    # one failed attempt, then none for an hour: the entry changes only if retried or purged
    receiver.script = lambda r, seen: Reply(503, (("retry-after", "3600"),))
    sink = await make_sink(receiver.url)
    probe = FakeProbe()
    engine = Engine(config(tmp_path / "engine", service("web", [9001])), sinks={"rec": sink},
                    probe_factory=probe.factory(), poller=probe.poller)
    api = CountingApi(engine, TOKEN)
    url = await nursery.start(serve_api, api, ApiConfig(host="127.0.0.1", port=0), tmp_path)
    await sink.apply(update(event()))
    before = await until(sink, lambda s: s.failed_attempts >= 1)
    entries = await sink.entries(dead=None, limit=-1)
    broken = refusal == "broken chunk"
    query = [] if broken else [refusal]
    if path.endswith("purge") and "all=" not in refusal:
        query.append("all=true")  # pending entries too: an applied purge would show
    target = f"{path}?{'&'.join(query)}" if query else path
    request = (f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               f"Authorization: Bearer {TOKEN}\r\n").encode() + (
        BROKEN_CHUNK if broken else b"Content-Length: 0\r\n\r\n")
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await send_raw(client, request)
    with trio.fail_after(5):
        await api.wait_handled(1)
    assert int(answer.split()[1]) == status
    assert error in answer.decode().split("\r\n\r\n", 1)[1]
    assert await sink.entries(dead=None, limit=-1) == entries
    assert sink.statistics().outbox == before.outbox


@pytest.mark.parametrize(("query", "error"), [
    ({"limit": "9" * 5000}, "limit must be an integer from 0 to 10000000, got '9999"),
    ({"limit": "-1"}, "limit must be an integer from 0 to 10000000, got '-1'"),
    ({"state": "pending"}, "state must be one of all, dead, got 'pending'"),
    ({"sink": ["rec", "nope"]}, "no webhook sink nope"),
])
async def test_outbox_list_refuses_malformed_values(
        tmp_path: Path, make_sink: MakeSink, nursery: trio.Nursery, refused_port: int,
        query: dict[str, str], error: str) -> None:
    """GET /v1/outbox with a value it cannot take answers 4xx with a message (a
    5,000-digit limit was a 500)."""
    sink = await make_sink(f"http://127.0.0.1:{refused_port}/hook")
    probe = FakeProbe()
    engine = Engine(config(tmp_path / "engine", service("web", [9001])), sinks={"rec": sink},
                    probe_factory=probe.factory(), poller=probe.poller)
    url = await nursery.start(serve_api, Api(engine), ApiConfig(host="127.0.0.1", port=0),
                              tmp_path)
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/v1/outbox", params=query)
    assert response.status_code == (404 if "sink" in query else 400)
    assert response.json()["error"].startswith(error)
