"""OpenTelemetry traces and the Observer that feeds traces and metrics: the one place
spans open.

Every probe is counted in the metrics histogram through the series its check
keeps (`probe_counter`). With a span exporter, the engine also calls
`Telemetry.probe_finished` after every probe, so that path is kept cheap:
sampling is decided before anything is built. A failed probe or one that
changed what is published is always kept; a successful one is kept at
`sample_ok` (one `random()` call). Only a kept probe becomes a span:
`sentinel.probe`, created after the fact with the probe's own start and end
times, carrying a `sentinel.transition` span event when it changed something;
its trace id goes into the event document.

Export runs on the SDK's BatchSpanProcessor worker thread, behind a gate that
bounds the queue and counts what it drops (`BoundedSpanProcessor`): a collector
that is down or slow costs a full queue, never a slower probe.

Log lines carry trace and span ids where there is a span. The engine names the
trace on its transition line itself (its commit may run in another task than the
probe). Otherwise a task's log lines after it recorded a span (the sink runner's
failure line) get that span's ids: it is kept in a context variable of the task
until the task's next probe or apply, and `SpanLogFilter` copies it (or
OpenTelemetry's current span, if any) onto log records.
"""

from __future__ import annotations

import logging
import random
import socket
import sys
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from sentinel import __version__
from sentinel.config.model import TelemetryConfig, TracesConfig
from sentinel.model import Event
from sentinel.observe import NULL_COUNTER, ProbeCounter, ProbeRecord
from sentinel.telemetry.metrics import Metrics, TraceStatistics

if TYPE_CHECKING:
    from sentinel.engine.engine import Engine

log = logging.getLogger(__name__)
MAX_QUEUE = 2048  # spans waiting for export; beyond this they are dropped and counted
MAX_BATCH = 128  # spans per export request: encoding holds the GIL, and a 512-span
# batch (~11 ms) made probes start up to 30 ms late at 1,000 spans/s; 128 keeps it ~6 ms
EXPORT_DELAY_MS = 2000  # how long spans may wait for a fuller batch
DROP_LOG_EVERY = 1000  # log the first dropped span, then every 1000th
ROOT = otel_context.Context()  # every probe and apply starts a trace of its own
_log_span: ContextVar[SpanContext | None] = ContextVar("sentinel_log_span", default=None)


# -- export --------------------------------------------------------------------------


class _CountingExporter(SpanExporter):
    """Passes batches on and counts what was taken from the queue and what came of it."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.taken = 0
        self.exported = 0
        self.failed = 0
        self.last_ok = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export one batch (on the processor's worker thread)."""
        self.taken += len(spans)
        result = self.inner.export(spans)
        self.last_ok = result is SpanExportResult.SUCCESS
        if self.last_ok:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        """Shut the real exporter down (interrupts its retry backoff)."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return self.inner.force_flush(timeout_millis)


class BoundedSpanProcessor(SpanProcessor):
    """The SDK's BatchSpanProcessor behind a gate that keeps at most `max_queue` spans
    waiting and counts the ones it turns away (the SDK's own queue would drop the
    oldest with a warning per span, and count nothing unless its internal metrics are
    switched on). Only the Trio thread hands spans in; only the worker thread counts
    them out, so the two counters need no lock."""

    def __init__(self, exporter: SpanExporter, max_queue: int = MAX_QUEUE,
                 max_batch: int = MAX_BATCH, delay_ms: int = EXPORT_DELAY_MS) -> None:
        self.max_queue = max_queue
        self._exporter = _CountingExporter(exporter)
        self._batch = BatchSpanProcessor(self._exporter, max_queue_size=max_queue,
                                         schedule_delay_millis=delay_ms,
                                         max_export_batch_size=min(max_batch, max_queue))
        self._handed = 0
        self._dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished span, unless the queue is full."""
        if self._handed - self._exporter.taken >= self.max_queue:
            self._dropped += 1
            if self._dropped % DROP_LOG_EVERY == 1:
                log.warning("trace export queue full (%d spans): %d spans dropped so far; "
                            "is the collector reachable?", self.max_queue, self._dropped)
            return
        self._handed += 1
        self._batch.on_end(span)

    def shutdown(self) -> None:
        """Export what is queued, then stop the worker (blocks; see `Telemetry.aclose`)."""
        self._batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now (blocks)."""
        return self._batch.force_flush(timeout_millis)

    @property
    def collector_ok(self) -> bool:
        """False when the last export failed (or none has succeeded since a failure)."""
        return self._exporter.last_ok

    def statistics(self) -> TraceStatistics:
        """Queued, exported, failed and dropped span counts."""
        e = self._exporter
        return TraceStatistics(self._handed - e.taken, e.exported, e.failed, self._dropped)


def otlp_endpoint(base: str) -> str:
    """The OTLP/HTTP traces URL for a base URL: `/v1/traces` appended unless present."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def make_exporter(traces: TracesConfig) -> SpanExporter:
    """The configured exporter: OTLP over HTTP/protobuf, or JSON lines on stdout."""
    if traces.exporter == "console":
        return ConsoleSpanExporter(out=sys.stdout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # the exporter warns on every retry of a batch; its final error per batch is enough
    quiet = logging.getLogger("opentelemetry.exporter")
    quiet.setLevel(max(logging.ERROR, logging.getLogger().getEffectiveLevel()))
    return OTLPSpanExporter(endpoint=otlp_endpoint(traces.endpoint),
                            headers=dict(traces.headers), timeout=traces.timeout)


def make_resource(config: TelemetryConfig, state_dir: Path) -> Resource:
    """service.name, service.instance.id, service.version, host.name and the
    configured extras (`OTEL_RESOURCE_ATTRIBUTES` is merged by the SDK). The
    instance id is a UUIDv5 of host and state_dir: stable across restarts of one
    instance, different for two instances on one host."""
    host = socket.gethostname()
    instance = uuid.uuid5(uuid.NAMESPACE_URL, f"sentinel://{host}{state_dir.resolve()}")
    return Resource.create({"service.name": config.service_name,
                            "service.instance.id": str(instance),
                            "service.version": __version__, "host.name": host,
                            **dict(config.resource)})


# -- logs ------------------------------------------------------------------------------


class SpanLogFilter(logging.Filter):
    """Adds `trace_id` and `span_id` to records written where there is a span: the one
    this task just recorded, else OpenTelemetry's current span. A record that names its
    trace itself (the engine's transition line, `extra={"trace_id": ...}`) keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate `record`; never drops it."""
        if hasattr(record, "trace_id"):
            return True
        ctx = _log_span.get() or trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


# -- the observer ----------------------------------------------------------------------


class Telemetry:
    """The engine's Observer: metrics for every probe, sampled spans, and the
    tracer provider's life. `aclose()` flushes pending spans on a clean stop."""

    def __init__(self, config: TelemetryConfig, state_dir: Path, *,
                 processor: SpanProcessor | None = None, rng: random.Random | None = None
                 ) -> None:
        """`processor` replaces the configured export (tests pass the SDK's
        SimpleSpanProcessor over an InMemorySpanExporter); `rng` decides sampling."""
        self.config = config
        self.metrics = Metrics() if config.prometheus else None
        self._sample_ok = config.traces.sample_ok
        self._random = (rng or random.Random()).random
        self._provider: TracerProvider | None = None
        self._processor = processor
        self._tracer: trace.Tracer | None = None
        self._log_filter: SpanLogFilter | None = None
        if processor is None and config.traces.exporter != "none":
            self._processor = BoundedSpanProcessor(make_exporter(config.traces))
        self.traced = self._processor is not None  # `probe_finished` gets every probe
        if self._processor is not None:
            # sampling is decided here, before a span is built: the SDK keeps all it gets
            self._provider = TracerProvider(resource=make_resource(config, state_dir),
                                            sampler=ALWAYS_ON, shutdown_on_exit=False)
            self._provider.add_span_processor(self._processor)
            self._tracer = self._provider.get_tracer("sentinel", __version__)
            self._log_filter = SpanLogFilter()
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._log_filter)

    def watch(self, engine: Engine) -> None:
        """Let the metrics read gauges from the running engine at scrape time."""
        if self.metrics is not None:
            bounded = isinstance(self._processor, BoundedSpanProcessor)
            self.metrics.watch(engine, self.trace_statistics if bounded else None)

    def trace_statistics(self) -> TraceStatistics:
        """What the exporter did with the spans so far (zeros without a bounded queue)."""
        if not isinstance(self._processor, BoundedSpanProcessor):
            return TraceStatistics(0, 0, 0, 0)
        return self._processor.statistics()

    # -- Observer ----------------------------------------------------------------

    def probe_counter(self, service: str, backend: str, probe_type: str) -> ProbeCounter:
        """The probe histogram's series for these labels (nothing without metrics)."""
        if self.metrics is None:
            return NULL_COUNTER
        return self.metrics.probe_series(service, backend, probe_type)

    def probe_finished(self, record: ProbeRecord) -> str | None:
        """Record a span if the probe is kept; its trace id, or None."""
        if self._tracer is None:
            return None
        if _log_span.get() is not None:
            _log_span.set(None)
        if (record.result.ok and record.transition is None
                and self._random() >= self._sample_ok):
            return None
        return self._probe_span(record, self._tracer)

    def event_emitted(self, event: Event) -> None:
        """Count transitions."""
        if self.metrics is not None:
            self.metrics.observe_event(event)

    def sink_applied(self, sink: str, service: str, error: str | None, start_unix: float,
                     duration: float) -> None:
        """Count the apply and record a `sentinel.sink.apply` span (always kept: applies
        happen on changes and retries only)."""
        if self.metrics is not None:
            self.metrics.observe_sink(sink, error)
        if self._tracer is None:
            return
        start = int(start_unix * 1e9)
        span = self._tracer.start_span(
            "sentinel.sink.apply", context=ROOT, kind=SpanKind.INTERNAL, start_time=start,
            attributes={"sentinel.sink": sink, "sentinel.service": service,
                        "sentinel.sink.ok": error is None})
        if error is not None:
            span.set_attribute("error.type", "sink_error")
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=start + int(duration * 1e9))
        _log_span.set(span.get_span_context())

    # -- spans -------------------------------------------------------------------

    @staticmethod
    def _probe_span(record: ProbeRecord, tracer: trace.Tracer) -> str:
        result = record.result
        start = int(record.start_unix * 1e9)
        end = start + int(result.latency * 1e9)
        span = tracer.start_span(
            "sentinel.probe", context=ROOT, kind=SpanKind.CLIENT, start_time=start,
            attributes={"sentinel.service": record.service, "sentinel.backend": record.backend,
                        "server.address": record.host, "server.port": record.port,
                        "sentinel.probe.type": record.probe_type,
                        "sentinel.probe.ok": result.ok})
        if not result.ok:
            span.set_attribute("error.type", result.failure.value if result.failure
                               else "error")
            span.set_attribute("sentinel.probe.error", result.error)
            span.set_status(Status(StatusCode.ERROR, result.error))
        if record.transition is not None:
            from_state, to_state, reason = record.transition
            span.add_event("sentinel.transition", {"from": from_state, "to": to_state,
                                                   "reason": reason}, timestamp=end)
        span.end(end_time=end)
        ctx = span.get_span_context()
        if record.transition is not None:
            _log_span.set(ctx)
        return format(ctx.trace_id, "032x")

    # -- stopping ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Export what is pending (clean stop), waiting at most the export timeout plus
        a second, or one second when the last export failed: a collector that is down
        delays a stop by that much, never hangs it."""
        if self._log_filter is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._log_filter)
        if self._provider is None:
            return
        provider, self._provider, self._tracer = self._provider, None, None
        failing = (isinstance(self._processor, BoundedSpanProcessor)
                   and not self._processor.collector_ok)
        limit = 1.0 if failing else self.config.traces.timeout + 1
        with trio.move_on_after(limit) as scope:
            await trio.to_thread.run_sync(provider.shutdown, abandon_on_cancel=True)
        if scope.cancelled_caught:
            log.warning("trace export did not finish within %gs; %d spans not exported",
                        limit, self.trace_statistics().queued)
