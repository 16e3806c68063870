"""The export queue: bounded, drops counted, a dead or hanging collector never slows the
probe path, a clean stop flushes what is queued and is itself bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from sentinel.config.model import TracesConfig
from sentinel.telemetry.traces import BoundedSpanProcessor, make_exporter
from tests.e2e.helpers import free_port
from tests.telemetry.conftest import MakeTelemetry
from tests.telemetry.helpers import probe_record
from tests.telemetry.otlp_receiver import OtlpReceiver


class GatedExporter(SpanExporter):
    """Blocks every export until `gate` is set; counts what it was given."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Wait for the gate, then accept."""
        self.gate.wait(timeout=30)
        self.received += len(spans)
        return SpanExportResult.SUCCESS


async def test_a_full_queue_drops_new_spans_and_counts_them(
        make_telemetry: MakeTelemetry) -> None:
    """With export stuck, at most max_queue spans wait (plus the batch being exported);
    the rest are dropped and counted; once export resumes, every queued span goes out."""
    exporter = GatedExporter()
    processor = BoundedSpanProcessor(exporter, max_queue=50, max_batch=10, delay_ms=20)
    telemetry = make_telemetry(sample_ok=0.0, processor=processor)
    for _ in range(500):
        telemetry.probe_finished(probe_record(False))
        stats = processor.statistics()
        assert stats.queued <= 50
    stats = processor.statistics()
    assert stats.dropped >= 500 - 50 - 10
    assert stats.dropped + stats.queued + exporter.received + 10 >= 500
    exporter.gate.set()
    processor.force_flush()
    after = processor.statistics()
    assert after.queued == 0
    assert exporter.received == after.exported == 500 - after.dropped


@pytest.mark.parametrize("collector", ["refused", "hanging"])
async def test_an_unreachable_collector_never_slows_the_probe_path(
        make_telemetry: MakeTelemetry, collector: str) -> None:
    """OTLP to a closed port or to a collector that never answers in time: every
    probe_finished call stays fast (spans are only queued), failures and drops are
    counted, and a clean stop waits at most a second for a collector known to fail."""
    with OtlpReceiver(delay=5.0) as hanging:
        endpoint = (f"http://127.0.0.1:{free_port()}" if collector == "refused"
                    else hanging.url)
        processor = BoundedSpanProcessor(
            make_exporter(TracesConfig(exporter="otlp", endpoint=endpoint, timeout=0.5)),
            max_queue=200, max_batch=50, delay_ms=10)
        telemetry = make_telemetry(sample_ok=0.0, processor=processor, timeout=0.5)
        took: list[float] = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and len(took) < 20_000:
            t0 = time.perf_counter()
            telemetry.probe_finished(probe_record(False))
            took.append(time.perf_counter() - t0)
            if len(took) % 100 == 0:
                await trio.sleep(0.01)  # a probe loop yields between probes
        stats = processor.statistics()
        took.sort()
        # an export blocking the caller would take the 0.5 s timeout; GIL hand-overs to
        # the export thread and a shared machine account for the odd millisecond
        assert took[-1] < 0.25, f"a probe_finished call took {took[-1] * 1000:.1f} ms"
        assert took[len(took) // 2] < 0.001
        assert stats.exported == 0
        assert stats.failed + stats.dropped > 0
        assert stats.failed + stats.dropped + stats.queued <= len(took)
        if collector == "hanging":  # each batch waits out the timeout: the queue fills
            assert stats.dropped > 0
        assert not processor.collector_ok
        started = time.monotonic()
        await telemetry.aclose()  # the last export failed: one second at most
        assert time.monotonic() - started < 1.25
