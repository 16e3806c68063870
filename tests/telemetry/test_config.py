"""The `telemetry` section of the configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config.model import TelemetryConfig, TracesConfig
from sentinel.errors import ConfigErrors
from sentinel.sinks.registry import load_config

BASE = """\
version: 1
telemetry:
{telemetry}
services:
  web: {{backends: ["127.0.0.1:8080"]}}
"""


def load(tmp_path: Path, telemetry: str) -> TelemetryConfig:
    """The parsed telemetry section of a file holding `telemetry` (indented YAML)."""
    path = tmp_path / "sentinel.yaml"
    path.write_text(BASE.format(telemetry=telemetry))
    return load_config(path, env={"OTLP_KEY": "k3y"}).telemetry


def test_sample_ok_is_a_share_like_every_rate(tmp_path: Path) -> None:
    """sample_ok takes a percent as failure_rate and jitter do: 12.5% is 0.125."""
    assert load(tmp_path, "  traces: {sample_ok: 12.5%}").traces.sample_ok == 0.125


def test_full_telemetry_section(tmp_path: Path) -> None:
    """Every key: service name, resource attributes, OTLP endpoint, headers (with ${VAR}),
    timeout as a duration, sample_ok, prometheus off."""
    telemetry = load(tmp_path, """\
  service_name: edge
  resource: {deployment.environment: prod, team: infra}
  traces:
    exporter: otlp
    endpoint: https://otlp.example/
    headers: {x-api-key: "${OTLP_KEY}"}
    timeout: 2500ms
    sample_ok: 0.25
  metrics: {prometheus: false}""")
    assert telemetry == TelemetryConfig(
        service_name="edge", resource=(("deployment.environment", "prod"), ("team", "infra")),
        traces=TracesConfig(exporter="otlp", endpoint="https://otlp.example/",
                            headers=(("x-api-key", "k3y"),), timeout=2.5, sample_ok=0.25),
        prometheus=False)


def test_defaults_trace_nothing_and_serve_metrics(tmp_path: Path) -> None:
    """Without keys: no exporter, sample_ok 0.1, a 10 s export timeout, /metrics on."""
    telemetry = load(tmp_path, "  service_name: sentinel")
    assert telemetry.traces == TracesConfig()
    assert (telemetry.traces.exporter, telemetry.traces.sample_ok,
            telemetry.traces.timeout, telemetry.prometheus) == ("none", 0.1, 10.0, True)


@pytest.mark.parametrize(("telemetry", "message"), [
    ("  traces: {exporter: jaeger}",
     "telemetry.traces.exporter: expected one of none, console, otlp; got 'jaeger'"),
    ("  traces: {endpoint: 127.0.0.1:4318}",
     "telemetry.traces.endpoint: expected an http:// or https:// URL"),
    ("  traces: {sample_ok: 1.5}", "telemetry.traces.sample_ok"),
    ("  traces: {timeout: 0s}", "telemetry.traces.timeout"),
    ("  traces: {headers: [a, b]}", "telemetry.traces.headers: expected a mapping"),
    ("  traces: {compression: gzip}", "unknown key 'compression'"),
    ("  resource: {team: [a]}", "telemetry.resource.team"),
])
def test_mistakes_are_reported_with_their_key_path(tmp_path: Path, telemetry: str,
                                                   message: str) -> None:
    """A bad exporter, endpoint, ratio, timeout, headers, key or resource value is a
    config error naming the key path."""
    with pytest.raises(ConfigErrors) as caught:
        load(tmp_path, telemetry)
    assert message in str(caught.value)
