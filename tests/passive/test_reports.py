"""POST /v1/reports bodies (pure), and the route served for real: accepted reports become
signals, mistakes are 400, unknown backends 422 naming them all, big bodies 413,
no token 401; a refused request changes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import trio

from sentinel.api.app import Api, serve_api
from sentinel.config.model import ApiConfig, BackendConfig, ServiceConfig
from sentinel.engine.engine import Engine
from sentinel.errors import BadRequest
from sentinel.passive.base import BackendIndex, Signal
from sentinel.passive.reports import MAX_AHEAD, MAX_BODY, Accepted, parse_reports
from sentinel.sinks.memory import RecordingSink
from tests.engine.fakes import FakeProbe, config, service

NOW = 1_795_536_030.0  # 2026-11-24T16:00:30Z
INDEX = BackendIndex([ServiceConfig("web", (
    BackendConfig("web1", "10.0.0.11:8080", "10.0.0.11", 8080),
    BackendConfig("web2", "[2001:db8::2]:8080", "2001:db8::2", 8080)))])


def parse(doc: object) -> Accepted:
    """parse_reports on `doc` as JSON."""
    return parse_reports(json.dumps(doc).encode(), INDEX, NOW)


def refused(doc: object | bytes) -> tuple[int, dict[str, object]]:
    """The status and answer of a refused body."""
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(BadRequest) as caught:
        parse_reports(body, INDEX, NOW)
    return caught.value.status, caught.value.body


def test_failures_become_signals_by_name_or_address() -> None:
    """By name or by address (IPv6 in any spelling); source and error in the reason;
    successes and stale reports are counted, not acted on."""
    accepted = parse({"reports": [
        {"service": "web", "backend": "web1", "ok": False, "error": "502", "source": "lb1"},
        {"service": "web", "address": "[2001:0db8::0002]:8080", "ok": False,
         "time": "2026-11-24T16:00:00Z"},
        {"service": "web", "backend": "web2", "ok": True},
        {"service": "web", "backend": "web2", "ok": False, "time": NOW - 61}]})
    assert accepted.signals == (Signal("web", "web1", "report from lb1", "502"),
                                Signal("web", "web2", "report", "failed"))
    assert accepted.signals[0].reason == "passive: report from lb1: 502"
    assert accepted.to_json() == {"ok": True, "accepted": 2, "successes": 1, "stale": 1,
                                  "future": 0}


@pytest.mark.parametrize(("at", "counted"), [
    (NOW + MAX_AHEAD, "accepted"), (NOW + MAX_AHEAD + 0.001, "future"),
    ("2026-11-24T16:00:40Z", "accepted"), ("2026-11-24T16:00:41Z", "future"),
    (NOW + 3600, "future"), ("2100-01-01T00:00:00Z", "future"), (1e300, "future")])
def test_a_report_from_the_future_counts_only_within_the_clock_allowance(
        at: object, counted: str) -> None:
    """A failure up to MAX_AHEAD (10 s) ahead of sentinel's clock counts; further ahead
    (a wrong clock, a forged time) it is ignored and counted as `future`, however far."""
    accepted = parse({"reports": [{"service": "web", "backend": "web1", "ok": False,
                                   "time": at}]})
    answer = accepted.to_json()
    assert (answer["accepted"], answer["future"], answer["stale"]) == (
        (1, 0, 0) if counted == "accepted" else (0, 1, 0))


def test_unknown_backends_are_422_naming_every_one() -> None:
    """One unknown backend refuses the whole request; every unknown one is named."""
    assert refused({"reports": [
        {"service": "web", "backend": "web1", "ok": False},
        {"service": "web", "backend": "web9", "ok": False},
        {"service": "db", "backend": "db1", "ok": False},
        {"service": "web", "address": "10.0.0.99:80", "ok": False}]}) == (422, {
            "error": "unknown backends: web/web9, db/db1, web/10.0.0.99:80",
            "unknown": ["web/web9", "db/db1", "web/10.0.0.99:80"]})


@pytest.mark.parametrize(("doc", "error"), [
    (b"{not json", "not JSON: Expecting property name enclosed in double quotes: line 1 "
                   "column 2 (char 1)"),
    ({"report": []}, 'expected {"reports": [...]}'),
    ({"reports": [1]}, "reports[0]: expected an object"),
    ({"reports": [{"service": "web", "ok": False}]},
     "reports[0]: give exactly one of `backend` and `address`"),
    ({"reports": [{"service": "web", "backend": "web1"}]}, "reports[0]: `ok` must be true "
                                                           "or false"),
    ({"reports": [{"backend": "web1", "ok": False}]}, "reports[0]: `service` is required"),
    ({"reports": [{"service": "web", "backend": "web1", "ok": False, "time": "yesterday"}]},
     "reports[0]: `time` must be RFC 3339 with a zone (2026-11-24T16:00:00Z) or Unix seconds"),
    ({"reports": [{"service": "web", "backend": "web1", "ok": False, "who": "me"}]},
     "reports[0]: unknown field(s) who; expected address, backend, error, ok, service, "
     "source, time"),
])
def test_malformed_reports_are_400(doc: object, error: str) -> None:
    """Each mistake is named with the report's index."""
    assert refused(doc) == (400, {"error": error})


def test_too_big_is_413() -> None:
    """Over MAX_BODY bytes, or over 1,000 reports."""
    assert refused(b" " * (MAX_BODY + 1))[0] == 413
    many = {"reports": [{"service": "web", "backend": "web1", "ok": True}] * 1001}
    assert refused(many) == (413, {"error": "more than 1000 reports"})


async def test_the_route_needs_the_token_and_hands_signals_to_the_engine(
        tmp_path: Path) -> None:
    """Served for real: 401 without the token, 422 for an unknown backend (no probe
    brought forward), 413 for a big body, 200 for a good one, whose backend is probed
    at once."""
    probe = FakeProbe()
    engine = Engine(config(tmp_path, service("web", [9001], interval=30.0)),
                    sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                    poller=probe.poller)
    seen: list[Signal] = []
    engine.passive = seen.extend  # type: ignore[method-assign]
    good = {"reports": [{"service": "web", "backend": "b9001", "ok": False}]}
    auth = {"Authorization": "Bearer s3cret"}
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, Api(engine, "s3cret"),
                                  ApiConfig(host="127.0.0.1", port=0), tmp_path)
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            assert (await client.post("/v1/reports", json=good)).status_code == 401
            unknown = await client.post("/v1/reports", headers=auth, json={"reports": [
                {"service": "web", "backend": "b1", "ok": False}]})
            big = await client.post("/v1/reports", headers=auth,
                                    content=b" " * (MAX_BODY * 4))
            assert seen == []
            ok = await client.post("/v1/reports", headers=auth, json=good)
        nursery.cancel_scope.cancel()
    assert (unknown.status_code, unknown.json()["unknown"]) == (422, ["web/b1"])
    assert big.status_code == 413
    assert (ok.status_code, ok.json()) == (200, {"ok": True, "accepted": 1, "successes": 0,
                                                 "stale": 0, "future": 0})
    assert seen == [Signal("web", "b9001", "report", "failed")]


async def test_the_route_ignores_reports_timed_in_the_future(tmp_path: Path) -> None:
    """Served for real: failures timed an hour or a century ahead (wrong clock, forged
    time) are answered 200 as `future` and hand the engine nothing, as stale ones;
    one a few seconds ahead (clocks that disagree a little) still counts."""
    probe = FakeProbe()
    engine = Engine(config(tmp_path, service("web", [9001, 9002], interval=30.0)),
                    sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                    poller=probe.poller)
    seen: list[Signal] = []
    engine.passive = seen.extend  # type: ignore[method-assign]
    now = time.time()  # the margins (seconds, an hour) dwarf the request's own delay
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, Api(engine), ApiConfig(host="127.0.0.1", port=0),
                                  tmp_path)
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            ahead = await client.post("/v1/reports", json={"reports": [
                {"service": "web", "backend": "b9001", "ok": False, "time": now + 3600},
                {"service": "web", "backend": "b9001", "ok": False,
                 "time": "2126-11-24T16:00:00Z", "source": "replay"},
                {"service": "web", "backend": "b9001", "ok": False, "time": now - 120}]})
            assert seen == []
            skewed = await client.post("/v1/reports", json={"reports": [
                {"service": "web", "backend": "b9002", "ok": False, "time": now + 5}]})
        nursery.cancel_scope.cancel()
    assert (ahead.status_code, ahead.json()) == (200, {
        "ok": True, "accepted": 0, "successes": 0, "stale": 1, "future": 2})
    assert (skewed.status_code, skewed.json()) == (200, {
        "ok": True, "accepted": 1, "successes": 0, "stale": 0, "future": 0})
    assert seen == [Signal("web", "b9002", "report", "failed")]


@pytest.mark.parametrize("body", [b"[" * 1000 + b"]" * 1000,
                                  b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
                                  b'{"reports": [' + b"[" * 30_000 + b"]" * 30_000 + b"]}"],
                         ids=["arrays", "objects", "inside-reports"])
def test_json_nested_too_deeply_is_400(body: bytes) -> None:
    """JSON nested thousands deep (still under MAX_BODY) is a 400 with a message, not a
    RecursionError."""
    assert refused(body) == (400, {"error": 'JSON nested too deeply; expected '
                                            '{"reports": [{...}]}'})


async def test_the_route_answers_deep_nesting_with_400(tmp_path: Path) -> None:
    """Served for real: `[` * 1000 + `]` * 1000 is a 400 with the message (it was a 500
    with a traceback in the log), depth 500 too, and the API goes on answering."""
    probe = FakeProbe()
    engine = Engine(config(tmp_path, service("web", [9001])), sinks={"rec": RecordingSink()},
                    probe_factory=probe.factory(), poller=probe.poller)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, Api(engine), ApiConfig(host="127.0.0.1", port=0),
                                  tmp_path)
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            deep = await client.post("/v1/reports", content=b"[" * 1000 + b"]" * 1000)
            shallower = await client.post("/v1/reports", content=b"[" * 500 + b"]" * 500)
            after = await client.get("/healthz")
        nursery.cancel_scope.cancel()
    assert (deep.status_code, deep.json()) == (400, {
        "error": 'JSON nested too deeply; expected {"reports": [{...}]}'})
    assert (shallower.status_code, shallower.json()) == (400, {
        "error": 'expected {"reports": [...]}'})
    assert after.status_code == 200
