"""GET /v1/outbox and POST /v1/outbox/retry|purge, served for real by Hypercorn over an
Engine whose sink `rec` is a webhook sink; token-protected when a token is set."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from sentinel.api import Api, serve_api
from sentinel.config import ApiConfig
from sentinel.engine import Engine
from tests.e2e.helpers import free_port
from tests.engine.fakes import FakeProbe, config, service
from tests.webhook.conftest import MakeSink, event, until, update

TOKEN = "s3cret"


async def test_outbox_endpoints_list_retry_and_purge_behind_the_token(
        tmp_path: Path, make_sink: MakeSink, nursery: trio.Nursery) -> None:
    """Without the token 401; with it, the list shows pending entries and their last
    error, retry resets attempts, purge --all drops; unknown sinks are 404."""
    sink = await make_sink(f"http://127.0.0.1:{free_port()}/hook", initial_delay=30.0)
    engine = Engine(config(tmp_path / "engine", service("web", [9001])), sinks={"rec": sink},
                    probe_factory=FakeProbe().factory())
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
