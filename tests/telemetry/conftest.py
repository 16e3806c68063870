"""Fixtures for telemetry tests: Telemetry over an in-memory exporter."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sentinel.config.model import TelemetryConfig, TracesConfig
from sentinel.telemetry.traces import Telemetry
from tests.e2e.conftest import processes  # noqa: F401  (killed and reaped by PID)
from tests.probes.conftest import refused_port  # noqa: F401  (a port nobody listens on)

MakeTelemetry = Callable[..., Telemetry]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Collects every span that ends."""
    return InMemorySpanExporter()


@pytest.fixture
async def make_telemetry(tmp_path: Path, exporter: InMemorySpanExporter
                         ) -> AsyncIterator[MakeTelemetry]:
    """Builds Telemetry instances exporting synchronously to `exporter` (or through the
    given processor); each is closed when the test ends."""
    made: list[Telemetry] = []

    def make(sample_ok: float = 1.0, *, seed: int | None = None,
             processor: SpanProcessor | None = None, prometheus: bool = True,
             state_dir: Path = tmp_path, timeout: float = 10.0, **telemetry: object
             ) -> Telemetry:
        traces = TracesConfig(exporter="otlp", sample_ok=sample_ok, timeout=timeout)
        config = TelemetryConfig(traces=traces, prometheus=prometheus,
                                 **telemetry)  # type: ignore[arg-type]
        made.append(Telemetry(config, state_dir,
                              processor=processor or SimpleSpanProcessor(exporter),
                              rng=random.Random(seed)))
        return made[-1]

    yield make
    for t in made:
        await t.aclose()
