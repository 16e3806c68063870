"""Prometheus metrics (GET /metrics), through prometheus_client and a private registry.

Two kinds of series:

- counted as things happen, from the Observer hooks: the probe latency
  histogram, transitions and sink applies. A probe is counted on every
  check, so the histogram is kept here as plain per-series bucket counts (a
  bisect and two additions), not as a prometheus_client Histogram, whose
  `observe` takes a lock twice and scans the buckets: at 5,000 checks a
  second that was a tenth of the probe loop's time. Each check keeps its
  `ProbeSeries` (`probe_series`), so counting looks nothing up by labels. It
  is exposed at scrape time as the same `_bucket`/`_count`/`_sum` series;
- read at scrape time from the engine (`ScrapeCollector`): backend state and
  weight, panic, sink health, schedule lateness, the webhook outboxes and the
  trace exporter's queue. Nothing is kept for them between scrapes, so a
  backend removed by a reload disappears from the next scrape.

The counted series of a backend, service or sink a reload removed are dropped
at the next scrape too (checked then, not at the reload: a probe that was in
flight during the reload may still report the removed backend once).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from sentinel import __version__
from sentinel.engine.suspect import Cause
from sentinel.model import Event, ProbeResult, State

if TYPE_CHECKING:
    from sentinel.cluster.node import ClusterStatistics
    from sentinel.engine.engine import Engine

# Loopback probes answer in well under a millisecond; remote ones in a few ms; timeouts
# sit at the probe timeout (typically 0.5-2 s).
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the classic text format every scraper reads


@dataclass(frozen=True, slots=True)
class TraceStatistics:
    """What the trace exporter has done with the spans handed to it since start."""

    queued: int  # waiting to be exported
    exported: int  # accepted by the collector
    failed: int  # the export of their batch failed (collector down, refused)
    dropped: int  # not queued: the queue was full


TraceSource = Callable[[], TraceStatistics]


class ProbeSeries:
    """The probe histogram of one (service, backend, type): by result (ok or the failure
    kind), one list of the bucket counts (the last is +Inf) followed by the sum of
    latencies. (One list per result, and the ok one kept at hand: counting a probe at
    10,000 backends touched a dict, a tuple and two lists, each a likely cache miss.)"""

    __slots__ = ("by_result", "ok")

    def __init__(self) -> None:
        self.by_result: dict[str, list[float]] = {}
        self.ok: list[float] | None = None  # by_result["ok"], once there is one

    def observe(self, result: ProbeResult) -> None:
        """Count one probe (runs for every probe: keep it cheap)."""
        series = self.ok if result.ok else None
        if series is None:
            outcome = "ok" if result.ok else (result.failure or "error")
            series = self.by_result.get(outcome)
            if series is None:
                series = self.by_result[outcome] = [0] * (len(PROBE_BUCKETS) + 1) + [0.0]
                if result.ok:
                    self.ok = series
        latency = result.latency
        series[bisect_left(PROBE_BUCKETS, latency)] += 1
        series[-1] += latency


class Metrics:
    """Sentinel's Prometheus metrics; `watch` an engine before the first scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._transitions = Counter(
            "sentinel_transitions", "Changes of a backend's published state, by the state "
            "it moved to.", ["service", "backend", "to"], registry=self.registry)
        self._sink_applies = Counter(
            "sentinel_sink_apply", "Sink applies, by result (ok or error).",
            ["sink", "result"], registry=self.registry)
        # (service, backend, type) -> by result, a count per bucket (the last is +Inf), sum
        self._probe_series: dict[tuple[str, str, str], ProbeSeries] = {}
        self._transition_keys: set[tuple[str, str, str]] = set()
        self._sink_keys: set[tuple[str, str]] = set()
        self._engine: Engine | None = None
        self._traces: TraceSource | None = None
        self.registry.register(ScrapeCollector(self))

    def watch(self, engine: Engine, traces: TraceSource | None = None) -> None:
        """Read backend, sink and scheduler gauges from `engine` (and the trace
        exporter's counters from `traces`) at scrape time."""
        self._engine = engine
        self._traces = traces

    def probe_series(self, service: str, backend: str, probe_type: str) -> ProbeSeries:
        """Where the `probe_type` probes of `backend` are counted (made on first ask)."""
        key = (service, backend, probe_type)
        series = self._probe_series.get(key)
        if series is None:
            series = self._probe_series[key] = ProbeSeries()
        return series

    def probe_histogram(self) -> Metric:
        """`sentinel_probe_duration_seconds` from the counts kept by each `ProbeSeries`."""
        family = HistogramMetricFamily(
            "sentinel_probe_duration_seconds", "How long probes took, by outcome "
            "(result: ok or the failure kind).",
            labels=["service", "backend", "type", "result"])
        bounds = [*map(floatToGoString, PROBE_BUCKETS), "+Inf"]
        for key, series in list(self._probe_series.items()):
            for outcome, counts in list(series.by_result.items()):
                family.add_metric([*key, outcome],
                                  list(zip(bounds, accumulate(counts[:-1]), strict=True)),
                                  counts[-1])
        return family

    def observe_event(self, event: Event) -> None:
        """A backend's published state or weight changed (panic events have their
        own gauge, and weight-only changes are not transitions)."""
        if event.backend and event.from_state != event.to_state:
            key = (event.service, event.backend, event.to_state)
            self._transition_keys.add(key)
            self._transitions.labels(*key).inc()

    def observe_sink(self, sink: str, error: str | None) -> None:
        """One sink apply finished."""
        key = (sink, "ok" if error is None else "error")
        self._sink_keys.add(key)
        self._sink_applies.labels(*key).inc()

    async def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type (GET /metrics)."""
        if self._engine is not None:
            self._forget_removed(self._engine)
        return generate_latest(self.registry), CONTENT_TYPE

    def _forget_removed(self, engine: Engine) -> None:
        """Drop the counted series of backends, services and sinks the engine no longer
        has (see the module docstring)."""
        live = {(name, b.config.name) for name, svc in list(engine.services.items())
                for b in svc.backends}
        for key in [k for k in self._probe_series if k[:2] not in live]:
            del self._probe_series[key]
        for tkey in [k for k in self._transition_keys if k[:2] not in live]:
            self._transition_keys.discard(tkey)
            self._transitions.remove(*tkey)
        for skey in [k for k in self._sink_keys if k[0] not in engine.runners]:
            self._sink_keys.discard(skey)
            self._sink_applies.remove(*skey)

    def scrape(self) -> Iterator[Metric]:
        """The series read from the engine now (see the module docstring)."""
        info = GaugeMetricFamily("sentinel_info", "Always 1; the version as a label.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield self.probe_histogram()
        if self._engine is not None:
            yield from _engine_series(self._engine)
            yield from _suspect_series(self._engine)
            yield from _outbox_series(self._engine)
            if self._engine.cluster is not None:
                yield from _cluster_series(self._engine.cluster.node.statistics())
        if self._traces is not None:
            yield from _trace_series(self._traces())


class ScrapeCollector(Collector):
    """Adapts `Metrics.scrape` to prometheus_client's collector interface."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """Called by the registry on every scrape."""
        return self._metrics.scrape()


def _engine_series(engine: Engine) -> Iterator[Metric]:
    """Backend, service, sink and scheduler gauges of a running engine."""
    pair = ["service", "backend"]
    up = GaugeMetricFamily("sentinel_backend_up", "1 when the backend is published up.",
                           labels=pair)
    weight = GaugeMetricFamily("sentinel_backend_weight", "The backend's published weight "
                               "(0 unless up).", labels=pair)
    state = GaugeMetricFamily("sentinel_backend_state", "Always 1; the backend's published "
                              "state (up, down, drain, maint) as a label.",
                              labels=[*pair, "state"])
    panic = GaugeMetricFamily("sentinel_panic", "1 while the service's panic guard holds "
                              "down backends published up (min_up).", labels=["service"])
    for name, svc in list(engine.services.items()):
        view = svc.decided.view
        panic.add_metric([name], int(view.panic))
        for b in view.backends:
            up.add_metric([name, b.name], int(b.state is State.UP))
            weight.add_metric([name, b.name], b.weight)
            state.add_metric([name, b.name, b.state.value], 1)
    yield from (up, weight, state, panic)
    sink_ok = GaugeMetricFamily("sentinel_sink_ok", "1 unless the sink is failing for a "
                                "service.", labels=["sink"])
    last = GaugeMetricFamily("sentinel_sink_last_success_timestamp_seconds",
                             "Unix time of the sink's last successful apply.", labels=["sink"])
    pending = GaugeMetricFamily("sentinel_sink_pending", "Services waiting for the sink "
                                "(coalesced updates, retries).", labels=["sink"])
    for name, runner in list(engine.runners.items()):
        stats = runner.statistics()
        sink_ok.add_metric([name], int(stats.ok))
        pending.add_metric([name], stats.pending)
        if stats.last_success is not None:
            last.add_metric([name], stats.last_success)
    yield from (sink_ok, last, pending)
    persistence = engine.journal.statistics()
    yield GaugeMetricFamily("sentinel_state_persisted", "1 while state.json takes every "
                            "write; 0 while the state dir refuses them (full, read-only).",
                            value=int(persistence.ok))
    yield CounterMetricFamily("sentinel_state_write_failures", "State writes the state dir "
                              "refused (each is retried).", value=persistence.failures)
    yield from _scheduler_series(engine)


def _scheduler_series(engine: Engine) -> Iterator[Metric]:
    """Probe count, in-flight probes, local errors, schedule lateness and event-loop lag."""
    stats = engine.statistics()
    yield CounterMetricFamily("sentinel_probes", "Probes started.", value=stats.probes)
    yield GaugeMetricFamily("sentinel_probes_in_flight", "Probes running now.",
                            value=stats.in_flight)
    yield CounterMetricFamily("sentinel_probe_local_errors", "Checks not made for the "
                              "checker's own reasons (out of file descriptors, buffers, "
                              "ports); never counted against a backend.",
                              value=stats.local_errors)
    yield _summary("sentinel_probe_lateness_seconds", "How late probes started against "
                   "their schedule (quantiles over the recent probes).",
                   {"0.5": stats.lateness_p50_ms, "0.99": stats.lateness_p99_ms,
                    "1": stats.lateness_max_ms}, stats.probes, stats.lateness_sum)
    yield _summary("sentinel_event_loop_lag_seconds", "Oversleep of a 500 ms timer "
                   "(quantiles over the last minute).",
                   {"0.99": stats.loop_lag_p99_ms, "1": stats.loop_lag_max_ms},
                   stats.loop_lag_ticks, stats.loop_lag_sum)


def _summary(name: str, documentation: str, quantiles_ms: dict[str, float], count: int,
             total: float) -> Metric:
    """A summary from quantiles in milliseconds over a recent window and the count and sum
    (seconds) since start, as prometheus_client's own Summary would expose them
    (its SummaryMetricFamily cannot carry quantiles)."""
    summary = Metric(name, documentation, "summary")
    for q, ms in quantiles_ms.items():
        summary.add_sample(name, {"quantile": q}, ms / 1000)
    summary.add_sample(f"{name}_count", {}, count)
    summary.add_sample(f"{name}_sum", {}, total)
    return summary


def _suspect_series(engine: Engine) -> Iterator[Metric]:
    """Self-suspicion (SPEC 11), when configured: why sentinel doubts itself, how many
    downs it holds back, and each canary's last answer."""
    if engine.doubt is None:
        return
    stats = engine.doubt.statistics()
    suspect = GaugeMetricFamily("sentinel_suspect", "1 while sentinel suspects its own "
                                "network and holds every down, by cause (canaries, "
                                "mass_failure).", labels=["cause"])
    for cause in Cause:
        suspect.add_metric([cause.name.lower()], int(stats.cause() is cause))
    yield suspect
    yield GaugeMetricFamily("sentinel_suspect_held", "Backends whose down verdict "
                            "self-suspicion holds back (published up).", value=stats.held)
    canary_up = GaugeMetricFamily("sentinel_canary_up", "1 when the canary's last probe "
                                  "passed (absent before its first).", labels=["canary"])
    for name, last in stats.canaries:
        if last is not None:
            canary_up.add_metric([name], int(last.ok))
    yield canary_up


def _outbox_series(engine: Engine) -> Iterator[Metric]:
    """Each webhook sink's durable outbox (its counts are kept in memory)."""
    outboxes = {name: runner.can.outbox.outbox_counts()
                for name, runner in list(engine.runners.items())
                if runner.can.outbox is not None}
    if not outboxes:
        return
    depth = GaugeMetricFamily("sentinel_outbox_pending", "Webhook events waiting for "
                              "delivery in the durable outbox.", labels=["sink"])
    dead = GaugeMetricFamily("sentinel_outbox_dead", "Webhook events given up on (dead "
                             "letters kept for `sentinel outbox retry`).", labels=["sink"])
    dropped = CounterMetricFamily("sentinel_outbox_dropped", "Webhook events dropped by "
                                  "the outbox bounds.", labels=["sink"])
    for name, counts in outboxes.items():
        depth.add_metric([name], counts.pending)
        dead.add_metric([name], counts.dead)
        dropped.add_metric([name], counts.dropped)
    yield from (depth, dead, dropped)


def _cluster_series(stats: ClusterStatistics) -> Iterator[Metric]:
    """This member's part in the cluster (SPEC 12): health, leadership, lease, etcd."""
    m = stats.membership
    yield GaugeMetricFamily("sentinel_cluster_ok", "1 while this member is registered, "
                            "follows etcd and enough members are live to vote a backend "
                            "down.", value=int(stats.ok))
    yield GaugeMetricFamily("sentinel_cluster_leader", "1 while this member leads (votes, "
                            "numbers events, runs scope: leader sinks).",
                            value=int(stats.leading))
    yield CounterMetricFamily("sentinel_cluster_terms", "Terms this member has led.",
                              value=stats.terms)
    yield GaugeMetricFamily("sentinel_cluster_members", "Live members, this one included.",
                            value=len(m.members))
    yield GaugeMetricFamily("sentinel_cluster_mismatched_members", "Live members whose "
                            "configuration file differs from this one's.",
                            value=len(m.mismatched))
    yield GaugeMetricFamily("sentinel_cluster_suspect_members", "Live members that suspect "
                            "themselves (SPEC 11): their down votes are not counted.",
                            value=len(stats.suspects))
    yield GaugeMetricFamily("sentinel_cluster_not_following", "1 while the leader runs "
                            "another configuration: this member's sinks stay on the last "
                            "agreed view it took.", value=int(not stats.following))
    yield GaugeMetricFamily("sentinel_cluster_probed_backends", "Backends this member "
                            "probes (its share of the assignment).", value=stats.probing)
    yield CounterMetricFamily("sentinel_cluster_lease_renewals", "Lease keep-alives etcd "
                              "answered.", value=m.renewals)
    yield CounterMetricFamily("sentinel_cluster_lease_lapses", "Leases that lapsed (paused, "
                              "or etcd lost for longer than lease_ttl): the member stopped "
                              "acting and registered again.", value=m.lapses)
    yield CounterMetricFamily("sentinel_cluster_etcd_calls", "Calls to etcd.",
                              value=stats.etcd.calls)
    yield CounterMetricFamily("sentinel_cluster_etcd_errors", "Calls to etcd that failed "
                              "(unreachable, timed out, refused).", value=stats.etcd.errors)
    yield CounterMetricFamily("sentinel_cluster_silent_watches", "Watches on etcd found "
                              "fallen silent (etcd held changes they did not deliver: a "
                              "connection dropped on the way) and started again.",
                              value=stats.silent_watches)
    yield _summary("sentinel_cluster_etcd_latency_seconds", "How long calls to etcd took "
                   "(quantiles over the recent calls).",
                   {"0.5": stats.etcd.latency_p50_ms, "0.99": stats.etcd.latency_p99_ms,
                    "1": stats.etcd.latency_max_ms}, stats.etcd.calls, stats.etcd.latency_sum)
    yield _summary("sentinel_cluster_agreed_lag_seconds", "From the leader writing an agreed "
                   "view to this member seeing it (wall clocks; quantiles over the recent "
                   "views).", {"0.5": stats.lag_p50_ms, "0.99": stats.lag_p99_ms},
                   stats.lag_count, stats.lag_sum)
    yield CounterMetricFamily("sentinel_cluster_observation_writes", "Verdicts this member "
                              "wrote to etcd (only changes are written).",
                              value=stats.writer.writes)


def _trace_series(stats: TraceStatistics) -> Iterator[Metric]:
    """The trace exporter's queue and what became of the spans."""
    yield GaugeMetricFamily("sentinel_trace_queue_spans", "Spans waiting for export.",
                            value=stats.queued)
    spans = CounterMetricFamily("sentinel_trace_spans", "Spans handed to the exporter, by "
                                "outcome.", labels=["result"])
    spans.add_metric(["exported"], stats.exported)
    spans.add_metric(["failed"], stats.failed)
    spans.add_metric(["dropped"], stats.dropped)
    yield spans
