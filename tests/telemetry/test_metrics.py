"""Metrics and traces fed by a running Engine (virtual clock), and GET /metrics on the API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sentinel.api.app import Api, serve_api
from sentinel.config.model import ApiConfig, TelemetryConfig
from sentinel.engine.engine import Engine
from sentinel.model import ProbeResult
from sentinel.sinks.memory import RecordingSink
from sentinel.telemetry.metrics import CONTENT_TYPE, Metrics
from sentinel.telemetry.traces import Telemetry
from tests.engine.drive import WALL_BASE, run_for, toggles
from tests.engine.fakes import FakeProbe, config, run_inline, service
from tests.telemetry.conftest import MakeTelemetry
from tests.telemetry.helpers import Samples, parse_metrics, sample


def watched_engine(tmp_path: Path, probe: FakeProbe, telemetry: Telemetry) -> Engine:
    """Service `web` (b9001, b9002; nginx breaker, max_fails 1) observed by `telemetry`."""
    engine = Engine(config(tmp_path, service("web", [9001, 9002])),
                    sinks={"rec": RecordingSink("rec")}, probe_factory=probe.factory(),
                    poller=probe.poller,
                    run_blocking=run_inline, observer=telemetry,
                    wall=lambda: WALL_BASE + trio.current_time())
    telemetry.watch(engine)
    return engine


async def test_metrics_follow_a_backend_going_down(
        tmp_path: Path, autojump_clock: trio.testing.MockClock,
        make_telemetry: MakeTelemetry) -> None:
    """After b9002 dies at 2 s (probed at 0.5, 1.5, 2.5): up 0 and weight 0 for it, 1 for
    b9001; one transition to down; probe durations by result; sink applies counted with a
    last-success time; panic 0; the scheduler's probe count and lateness are exported."""
    telemetry = make_telemetry(sample_ok=0.0)
    probe = FakeProbe()
    engine = watched_engine(tmp_path, probe, telemetry)
    await run_for(engine, 4.5, toggles((2.0, 9002, False)), probe)
    assert telemetry.metrics is not None
    body, content_type = await telemetry.metrics.render()
    assert content_type == CONTENT_TYPE
    m = parse_metrics(body.decode())
    assert sample(m, "sentinel_backend_up", service="web", backend="b9001") == 1
    assert sample(m, "sentinel_backend_up", service="web", backend="b9002") == 0
    assert sample(m, "sentinel_backend_weight", service="web", backend="b9001") == 1
    assert sample(m, "sentinel_backend_weight", service="web", backend="b9002") == 0
    assert sample(m, "sentinel_transitions_total", service="web", backend="b9002",
                  to="down") == 1
    assert sample(m, "sentinel_transitions_total", service="web", backend="b9001",
                  to="down") is None
    ok = sample(m, "sentinel_probe_duration_seconds_count", service="web", backend="b9002",
                type="tcp", result="ok")
    failed = sample(m, "sentinel_probe_duration_seconds_count", service="web",
                    backend="b9002", type="tcp", result="connect")
    assert (ok, failed) == (2, 1)  # 0.5 and 1.5 ok; 2.5 refused: down until 12.5
    assert sample(m, "sentinel_probe_duration_seconds_bucket", service="web", backend="b9002",
                  type="tcp", result="connect", le="0.0005") == 1
    assert (sample(m, "sentinel_sink_apply_total", sink="rec", result="ok") or 0) >= 2
    assert sample(m, "sentinel_sink_last_success_timestamp_seconds", sink="rec")
    assert sample(m, "sentinel_sink_ok", sink="rec") == 1
    assert sample(m, "sentinel_panic", service="web") == 0
    assert sample(m, "sentinel_probes_total") == 8  # b9001 at 0..4 s, b9002 three times
    assert sample(m, "sentinel_probe_lateness_seconds", quantile="0.99") is not None
    assert sample(m, "sentinel_info", version="0.1.0") == 1


async def test_event_trace_id_is_the_trace_of_the_span_carrying_the_transition(
        tmp_path: Path, autojump_clock: trio.testing.MockClock,
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter) -> None:
    """The engine's event for b9002 going down has the trace id of the failed probe's
    span, whose `sentinel.transition` event says up -> down; sink applies are spans too."""
    telemetry = make_telemetry(sample_ok=0.0)
    probe = FakeProbe()
    engine = watched_engine(tmp_path, probe, telemetry)
    await run_for(engine, 4.5, toggles((2.0, 9002, False)), probe)
    (event,) = [e for e in engine.events_after(0) if e.backend == "b9002"]
    spans = exporter.get_finished_spans()
    carrying = [s for s in spans if s.events]
    assert len(carrying) == 1
    span = carrying[0]
    assert event.trace_id == format(span.context.trace_id, "032x")
    assert dict(span.events[0].attributes or {})["to"] == "down"
    assert span.start_time == int((WALL_BASE + 2.5) * 1e9)
    assert {s.name for s in spans} == {"sentinel.probe", "sentinel.sink.apply"}
    probes = [s for s in spans if s.name == "sentinel.probe"]
    assert len(probes) == 1  # only the failed probe: sample_ok is 0


async def test_metrics_route_is_open_and_absent_without_prometheus(
        tmp_path: Path, make_telemetry: MakeTelemetry) -> None:
    """GET /metrics answers Prometheus text without the bearer token (scrapers carry
    none) while /v1/events still needs it; without prometheus there is no route."""
    telemetry = make_telemetry(sample_ok=0.0)
    engine = watched_engine(tmp_path, FakeProbe(), telemetry)
    plain = Telemetry(TelemetryConfig(prometheus=False), tmp_path)
    assert telemetry.metrics is not None
    assert plain.metrics is None
    async with trio.open_nursery() as nursery:
        with_metrics = await nursery.start(
            serve_api, Api(engine, "s3cret", metrics=telemetry.metrics.render),
            ApiConfig(host="127.0.0.1", port=0), tmp_path)
        without = await nursery.start(serve_api, Api(engine, "s3cret"),
                                      ApiConfig(host="127.0.0.1", port=0), tmp_path)
        async with httpx.AsyncClient(timeout=5) as client:
            metrics = await client.get(f"{with_metrics}/metrics")
            events = await client.get(f"{with_metrics}/v1/events")
            missing = await client.get(f"{without}/metrics")
        nursery.cancel_scope.cancel()
    await plain.aclose()
    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == CONTENT_TYPE
    assert sample(parse_metrics(metrics.text), "sentinel_backend_up", service="web",
                  backend="b9001") == 1
    assert events.status_code == 401
    assert missing.status_code == 404


async def test_series_of_what_a_reload_removed_disappear(
        tmp_path: Path, autojump_clock: trio.testing.MockClock,
        make_telemetry: MakeTelemetry) -> None:
    """web [b9001, b9002] and api [b9003] on sinks rec and old; b9002 goes down at 2 s; at
    4.2 s a reload keeps web [b9001] on rec: every series of b9002, of service api and of
    sink old (probe histograms, transitions, sink applies, gauges) is gone from the next
    scrape, while b9001's and rec's go on."""
    telemetry = make_telemetry(sample_ok=0.0)
    probe = FakeProbe()
    engine = Engine(config(tmp_path, service("web", [9001, 9002], sinks=("rec", "old")),
                           service("api", [9003], sinks=("old",)), sinks=("rec", "old")),
                    sinks={"rec": RecordingSink("rec"), "old": RecordingSink("old")},
                    probe_factory=probe.factory(), poller=probe.poller, run_blocking=run_inline,
                    observer=telemetry, wall=lambda: WALL_BASE + trio.current_time())
    telemetry.watch(engine)
    assert telemetry.metrics is not None
    scrapes: list[Samples] = []

    async def script(probe: FakeProbe) -> None:
        await toggles((2.0, 9002, False))(probe)
        await trio.sleep(2.2)
        assert telemetry.metrics is not None
        scrapes.append(parse_metrics((await telemetry.metrics.render())[0].decode()))
        await engine.reload(config(tmp_path, service("web", [9001])))
        await trio.sleep(1.0)  # b9001 probed again
        scrapes.append(parse_metrics((await telemetry.metrics.render())[0].decode()))

    await run_for(engine, 6.0, script, probe)
    before, after = scrapes

    def labelled(samples: Samples, **labels: str) -> set[str]:
        return {name for (name, have), _ in samples.items() if set(labels.items()) <= have}

    gone = {"sentinel_probe_duration_seconds_count", "sentinel_backend_up"}
    assert gone | {"sentinel_transitions_total"} <= labelled(before, backend="b9002")
    assert gone <= labelled(before, service="api")
    assert "sentinel_sink_apply_total" in labelled(before, sink="old")
    assert labelled(after, backend="b9002") == set()
    assert labelled(after, service="api") == set()
    assert labelled(after, sink="old") == set()
    assert gone <= labelled(after, backend="b9001")
    assert "sentinel_sink_apply_total" in labelled(after, sink="rec")
    assert (sample(after, "sentinel_probe_duration_seconds_count", service="web",
                   backend="b9001", type="tcp", result="ok") or 0) > (
        sample(before, "sentinel_probe_duration_seconds_count", service="web",
               backend="b9001", type="tcp", result="ok") or 0)


async def test_a_reload_removes_the_series_of_a_removed_backend(
        tmp_path: Path, autojump_clock: trio.testing.MockClock,
        make_telemetry: MakeTelemetry) -> None:
    """b9002 goes down (a transition, refused probes), then a reload removes it: no series
    names it any more, gauges, histogram and counter alike; b9001's stay."""
    telemetry = make_telemetry(sample_ok=0.0)
    assert telemetry.metrics is not None
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9002)] = False
    engine = watched_engine(tmp_path, probe, telemetry)

    async def scrape() -> Samples:
        assert telemetry.metrics is not None
        return parse_metrics((await telemetry.metrics.render())[0].decode())

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await trio.sleep(2.5)
        before = await scrape()
        await engine.reload(config(tmp_path, service("web", [9001])))
        after = await scrape()
        engine.stop()
    named = {name for name, labels in before if ("backend", "b9002") in labels}
    assert {"sentinel_backend_up", "sentinel_backend_state", "sentinel_transitions_total",
            "sentinel_probe_duration_seconds_count"} <= named
    assert sample(before, "sentinel_backend_state", service="web", backend="b9002",
                  state="down") == 1
    assert [name for name, labels in after if ("backend", "b9002") in labels] == []
    assert sample(after, "sentinel_backend_state", service="web", backend="b9001",
                  state="up") == 1
    assert sample(after, "sentinel_probe_duration_seconds_count", service="web",
                  backend="b9001", type="tcp", result="ok") == 3  # at 0, 1 and 2 s


async def test_lateness_and_loop_lag_are_summaries(
        tmp_path: Path, autojump_clock: trio.testing.MockClock,
        make_telemetry: MakeTelemetry) -> None:
    """Probe lateness and event-loop lag are summaries: quantiles over the recent window
    plus a count and sum since start (on a virtual clock, nothing is late)."""
    telemetry = make_telemetry(sample_ok=0.0)
    engine = watched_engine(tmp_path, FakeProbe(), telemetry)
    await run_for(engine, 2.05)
    assert telemetry.metrics is not None
    m = parse_metrics((await telemetry.metrics.render())[0].decode())
    assert sample(m, "sentinel_probe_lateness_seconds", quantile="0.99") == 0
    assert (sample(m, "sentinel_probe_lateness_seconds_count"),
            sample(m, "sentinel_probe_lateness_seconds_sum")) == (5, 0)  # 0, 0.5, 1, 1.5, 2
    assert sample(m, "sentinel_event_loop_lag_seconds_count") == 4  # a tick per 500 ms
    assert sample(m, "sentinel_event_loop_lag_seconds_sum") == pytest.approx(0, abs=1e-9)


async def test_probe_durations_land_in_cumulative_buckets() -> None:
    """Latencies of 0.4 ms, exactly 1 ms, 30 ms and 20 s: each counted in every bucket at
    or above it (a bound is inclusive), the last only in +Inf; count and sum add up."""
    metrics = Metrics()
    for latency in (0.0004, 0.001, 0.03, 20.0):
        metrics.probe_series("web", "b1", "tcp").observe(ProbeResult(ok=True, latency=latency))
    m = parse_metrics((await metrics.render())[0].decode())
    labels = {"service": "web", "backend": "b1", "type": "tcp", "result": "ok"}
    buckets = {le: sample(m, "sentinel_probe_duration_seconds_bucket", le=le, **labels)
               for le in ("0.0005", "0.001", "0.025", "0.05", "10.0", "+Inf")}
    assert buckets == {"0.0005": 1, "0.001": 2, "0.025": 2, "0.05": 3, "10.0": 3, "+Inf": 4}
    assert sample(m, "sentinel_probe_duration_seconds_count", **labels) == 4
    assert sample(m, "sentinel_probe_duration_seconds_sum", **labels) == pytest.approx(20.0314)
