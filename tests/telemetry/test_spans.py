"""Span shape (SDK in-memory exporter), sampling, resource attributes and log ids."""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sentinel.config.model import TelemetryConfig
from sentinel.telemetry.logs import JsonFormatter
from sentinel.telemetry.traces import Telemetry, otlp_endpoint
from tests.telemetry.conftest import MakeTelemetry
from tests.telemetry.helpers import START, probe_record

DOWN = ("up", "down", "1 failure within 10s; last: connection refused")


async def test_failed_probe_span_has_the_spec_attributes_status_and_transition_event(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter) -> None:
    """A failed probe that took a backend down: `sentinel.probe` with the SPEC attributes,
    error status and error.type, the probe's own start/end times, and a
    `sentinel.transition` event (from, to, reason); the returned id is its trace."""
    telemetry = make_telemetry(sample_ok=0.0)
    trace_id = telemetry.probe_finished(probe_record(False, transition=DOWN, latency=0.5))
    (span,) = exporter.get_finished_spans()
    assert span.name == "sentinel.probe"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is None
    assert trace_id == format(span.context.trace_id, "032x")
    assert dict(span.attributes or {}) == {
        "sentinel.service": "web", "sentinel.backend": "web1",
        "server.address": "10.0.0.11", "server.port": 8080,
        "sentinel.probe.type": "http", "sentinel.probe.ok": False,
        "error.type": "connect", "sentinel.probe.error": "connection refused"}
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "connection refused"
    assert (span.start_time, span.end_time) == (int(START * 1e9), int(START * 1e9) + 500_000_000)
    (event,) = span.events
    assert event.name == "sentinel.transition"
    assert dict(event.attributes or {}) == {"from": "up", "to": "down", "reason": DOWN[2]}
    assert event.timestamp == span.end_time


async def test_successful_probe_span_carries_no_error(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter) -> None:
    """A kept successful probe: ok=true, status unset, no error.type, no events."""
    make_telemetry(sample_ok=1.0).probe_finished(probe_record(True))
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["sentinel.probe.ok"] is True
    assert "error.type" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events


async def test_sink_apply_spans_name_the_sink_and_outcome(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter) -> None:
    """`sentinel.sink.apply` per apply: sink, service, ok; a failure has error status,
    error.type and the message; times come from the runner."""
    telemetry = make_telemetry(sample_ok=0.0)
    telemetry.sink_applied("edge", "web", None, START, 0.25)
    telemetry.sink_applied("edge", "web", "nginx -t failed: exit 1", START + 1, 0.5)
    ok, failed = exporter.get_finished_spans()
    assert (ok.name, failed.name) == ("sentinel.sink.apply", "sentinel.sink.apply")
    assert ok.kind is SpanKind.INTERNAL
    assert dict(ok.attributes or {}) == {"sentinel.sink": "edge", "sentinel.service": "web",
                                         "sentinel.sink.ok": True}
    assert (ok.start_time, ok.end_time) == (int(START * 1e9), int(START * 1e9) + 250_000_000)
    assert failed.attributes is not None
    assert (failed.attributes["sentinel.sink.ok"], failed.attributes["error.type"]) == (
        False, "sink_error")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "nginx -t failed: exit 1"


async def test_resource_names_service_instance_host_and_version(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter, tmp_path: Path) -> None:
    """Resource: service.name from the config, service.instance.id stable for one
    state_dir and different for another, host.name, service.version, extras."""
    first = make_telemetry(service_name="edge-sentinel",
                           resource=(("deployment.environment", "prod"),))
    again = make_telemetry()
    other = make_telemetry(state_dir=tmp_path / "other")
    for telemetry in (first, again, other):
        telemetry.probe_finished(probe_record(False))
    attrs = [dict(s.resource.attributes) for s in exporter.get_finished_spans()]
    assert attrs[0]["service.name"] == "edge-sentinel"
    assert attrs[0]["deployment.environment"] == "prod"
    assert attrs[0]["service.version"] == "0.1.0"
    assert attrs[0]["host.name"]
    assert attrs[0]["service.instance.id"] == attrs[1]["service.instance.id"]
    assert attrs[0]["service.instance.id"] != attrs[2]["service.instance.id"]


async def test_failed_probes_are_always_kept(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter) -> None:
    """sample_ok 0: every failed probe still becomes a span and returns its trace id."""
    telemetry = make_telemetry(sample_ok=0.0, seed=1)
    ids = [telemetry.probe_finished(probe_record(False)) for _ in range(300)]
    assert None not in ids
    assert len(set(ids)) == 300
    assert len(exporter.get_finished_spans()) == 300


async def test_transitions_are_kept_even_when_the_probe_succeeded(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter) -> None:
    """sample_ok 0: a successful probe that brought a backend back is still a span."""
    telemetry = make_telemetry(sample_ok=0.0)
    assert telemetry.probe_finished(probe_record(True)) is None
    assert telemetry.probe_finished(probe_record(True, transition=("down", "up", "2 passes")))
    (span,) = exporter.get_finished_spans()
    assert [e.name for e in span.events] == ["sentinel.transition"]


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 1.0])
async def test_successful_probes_are_kept_at_the_ratio_and_no_span_is_wasted(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter, ratio: float) -> None:
    """With a seeded RNG, exactly the probes whose draw is below sample_ok become spans
    (the draw happens before any span is built, so every span built is exported)."""
    telemetry = make_telemetry(sample_ok=ratio, seed=42)
    draws = random.Random(42)
    kept = [telemetry.probe_finished(probe_record(True)) is not None for _ in range(2000)]
    assert kept == [draws.random() < ratio for _ in range(2000)]
    assert len(exporter.get_finished_spans()) == sum(kept)
    assert abs(sum(kept) - 2000 * ratio) <= 2000 * 0.04


async def test_tracing_off_builds_no_span_and_returns_no_trace_id(tmp_path: Path) -> None:
    """exporter none: probe_finished returns None (events carry no trace_id)."""
    telemetry = Telemetry(TelemetryConfig(), tmp_path)
    assert telemetry.probe_finished(probe_record(False, transition=DOWN)) is None
    await telemetry.aclose()


@pytest.mark.parametrize(("base", "url"), [
    ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
    ("http://collector:4318/", "http://collector:4318/v1/traces"),
    ("https://otlp.example/v1/traces", "https://otlp.example/v1/traces"),
    ("https://gw.example/otlp", "https://gw.example/otlp/v1/traces"),
])
def test_otlp_endpoint_appends_v1_traces_unless_present(base: str, url: str) -> None:
    """The configured endpoint is a base URL; /v1/traces is appended unless already there."""
    assert otlp_endpoint(base) == url


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """JSON log lines of the root logger (INFO and up), as `--log-format json` writes them;
    installed before Telemetry is built, as the command line does."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def logged(out: io.StringIO) -> list[dict[str, str]]:
    """The JSON objects written so far."""
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_log_lines_after_a_transition_carry_its_trace_and_span_ids(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter,
        json_lines: io.StringIO) -> None:
    """JSON log lines written after a transition's span carry its trace_id and span_id;
    after the task's next (unsampled) probe they carry none."""
    log = logging.getLogger("sentinel.test")
    telemetry = make_telemetry(sample_ok=0.0)
    trace_id = telemetry.probe_finished(probe_record(False, transition=DOWN))
    log.info("web/web1 up -> down")
    telemetry.probe_finished(probe_record(True))
    log.info("nothing happened")
    first, second = logged(json_lines)
    (span,) = exporter.get_finished_spans()
    assert (first["trace_id"], first["span_id"]) == (trace_id,
                                                     format(span.context.span_id, "016x"))
    assert "trace_id" not in second


async def test_a_sink_failure_line_carries_the_apply_span_and_explicit_ids_win(
        make_telemetry: MakeTelemetry, exporter: InMemorySpanExporter,
        json_lines: io.StringIO) -> None:
    """The runner's failure line after a failed apply names the apply's span; a record
    that names its trace itself (`extra={"trace_id": ...}`) keeps it."""
    log = logging.getLogger("sentinel.test")
    telemetry = make_telemetry(sample_ok=0.0)
    telemetry.sink_applied("edge", "web", "nginx -t failed", START, 0.1)
    log.warning("sink edge failed for service web")
    log.info("web/web1 up -> down", extra={"trace_id": "ab" * 16})
    failure, explicit = logged(json_lines)
    (span,) = exporter.get_finished_spans()
    assert (failure["trace_id"], failure["span_id"]) == (
        format(span.context.trace_id, "032x"), format(span.context.span_id, "016x"))
    assert explicit["trace_id"] == "ab" * 16
    assert "span_id" not in explicit
