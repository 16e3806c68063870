"""Helpers for telemetry tests: probe records and a Prometheus text reader."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sentinel.model import FailureKind, ProbeResult
from sentinel.observe import ProbeRecord

START = 1_800_000_000.25  # a wall-clock probe start, seconds
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def probe_record(ok: bool = True, *, transition: tuple[str, str, str] | None = None,
                 latency: float = 0.002, backend: str = "web1") -> ProbeRecord:
    """A finished http probe of web/`backend` at 10.0.0.11:8080; a failure is a refused
    connection."""
    result = (ProbeResult(True, latency) if ok else
              ProbeResult(False, latency, FailureKind.CONNECT, "connection refused"))
    return ProbeRecord("web", backend, "10.0.0.11", 8080, "http", result, START, transition)


def parse_metrics(text: str) -> Samples:
    """Prometheus text -> {(sample name, labels): value}, through prometheus_client's
    parser (which rejects malformed exposition)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, None when absent."""
    return samples.get((name, frozenset(labels.items())))
