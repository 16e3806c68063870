"""The export queue: bounded, drops counted, a dead or hanging collector never slows the
probe path, a clean stop flushes what is queued and is itself bounded."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from sentinel.config.model import TracesConfig
from sentinel.telemetry.traces import BoundedSpanProcessor, make_exporter
from tests.telemetry.conftest import MakeTelemetry
from tests.telemetry.helpers import probe_record
from tests.telemetry.otlp_receiver import OtlpReceiver


class GatedExporter(SpanExporter):
    """Blocks every export until `gate` is set (or fails it at once while `fail` is set);
    counts what it accepted."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.fail = False
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Fail at once, or wait for the gate, then accept."""
        if self.fail:
            return SpanExportResult.FAILURE
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


class HeldExporter(SpanExporter):
    """The real exporter, watched: notes the threads exports run on, and holds the first
    failed export open (after the real exporter gave up) until `release` is set."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.threads: set[int] = set()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.held_too_long = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the real exporter; hold the first failure."""
        self.threads.add(threading.get_ident())
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS and not self.holding.is_set():
            self.holding.set()
            self.held_too_long = not self.release.wait(timeout=30)
        return result

    def shutdown(self) -> None:
        """Let a held export go, then shut the real exporter down."""
        self.release.set()
        self.inner.shutdown()


@pytest.mark.parametrize("collector", ["refused", "hanging"])
async def test_an_unreachable_collector_never_slows_the_probe_path(
        make_telemetry: MakeTelemetry, collector: str, refused_port: int) -> None:
    """OTLP to a closed port or to a collector that never answers in time: exports run on
    the processor's thread only, probe_finished goes on while one is in flight (spans are
    only queued, and dropped once the queue is full), and failures and drops are counted."""
    with OtlpReceiver(delay=5.0) as hanging:
        endpoint = (f"http://127.0.0.1:{refused_port}" if collector == "refused"
                    else hanging.url)
        exporter = HeldExporter(make_exporter(TracesConfig(exporter="otlp", endpoint=endpoint,
                                                           timeout=0.5)))
        processor = BoundedSpanProcessor(exporter, max_queue=200, max_batch=50, delay_ms=10)
        telemetry = make_telemetry(sample_ok=0.0, processor=processor, timeout=0.5)
        handed = 0
        with trio.fail_after(20):
            while not exporter.holding.is_set():  # until an export has failed
                for _ in range(50):
                    telemetry.probe_finished(probe_record(False))
                handed += 50
                await trio.sleep(0.01)  # a probe loop yields between probes
        # That export is still in flight, held on the processor's thread: a probe path
        # that waited for exports would not get through these until it was let go.
        for _ in range(500):
            telemetry.probe_finished(probe_record(False))
        handed += 500
        exporter.release.set()
        with trio.fail_after(20):
            while processor.statistics().failed == 0:  # noqa: ASYNC110 - a thread's counter
                await trio.sleep(0.01)
        stats = processor.statistics()
    assert not exporter.held_too_long
    assert exporter.threads
    assert threading.get_ident() not in exporter.threads
    assert stats.exported == 0
    assert stats.dropped > 0  # the queue (200) was full while the export was held
    assert stats.failed + stats.dropped + stats.queued <= handed
    assert not processor.collector_ok


@pytest.mark.parametrize(("failing", "waited"), [(True, 1.0), (False, 0.5 + 1)])
async def test_a_clean_stop_is_bounded_by_the_collector_state(
        make_telemetry: MakeTelemetry, autojump_clock: trio.testing.MockClock,
        caplog: pytest.LogCaptureFixture, failing: bool, waited: float) -> None:
    """A stop with spans queued and the export stuck waits one second when the last
    export failed, the export timeout plus one when it did not, then goes on with a
    warning."""
    exporter = GatedExporter()  # stuck until the gate opens
    processor = BoundedSpanProcessor(exporter, delay_ms=3_600_000)  # exports when told
    telemetry = make_telemetry(sample_ok=0.0, processor=processor, timeout=0.5)
    if failing:
        exporter.fail = True
        telemetry.probe_finished(probe_record(False))
        processor.force_flush()  # on this thread: the export fails at once
        exporter.fail = False
    assert processor.collector_ok is not failing
    telemetry.probe_finished(probe_record(False))  # left for the stop to export
    started = trio.current_time()
    try:
        await telemetry.aclose()
    finally:
        exporter.gate.set()
    assert trio.current_time() - started == pytest.approx(waited)
    assert f"did not finish within {waited:g}s" in caplog.text


