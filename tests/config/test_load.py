"""A full valid configuration loads into the expected frozen values."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import re
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest

from sentinel.config.model import (
    ApiConfig,
    BackendConfig,
    CircuitBreakerConfig,
    Config,
    HttpSpec,
    MinUp,
    NginxBreakerConfig,
    ProbeConfig,
    ScriptSpec,
    ServiceConfig,
    SinkBinding,
    SinkConfig,
    StatusClass,
    TcpSpec,
    TelemetryConfig,
    ThresholdBreakerConfig,
    Timing,
    TracesConfig,
)
from sentinel.errors import ConfigErrors
from sentinel.sinks.exec import ExecOptions
from sentinel.sinks.file import FileOptions
from sentinel.sinks.registry import load_config
from tests.config import service_named, write_config

FULL = """\
    version: 1
    state_dir: ./state
    shutdown_timeout: 250ms
    max_in_flight: 64
    api:
      listen: 127.0.0.1:0
      token: ${TOKEN}
    telemetry:
      service_name: edge-sentinel
      traces: {exporter: console, sample_ok: 0.5}
      metrics: {prometheus: false}

    defaults:
      probe: {type: http, path: /healthz, expect_status: [200], interval: 2s, timeout: 1s}
      breaker: {kind: nginx, max_fails: 1, fail_timeout: 10s}
      min_up: 1

    sinks:
      state_file: {type: file, path: ./view.json}
      page: {type: exec, command: "/bin/echo '{service} is' {to}", timeout: 250ms}

    services:
      web:
        backends:
          - {name: web1, address: 10.0.0.11:8080, weight: 5}
          - {name: web2, address: '[::1]:80', backup: true}
          - db.internal:5432
        probe:
          host: ${VHOST:-www.example.com}
          expect_status: [2xx, 301, 4XX]
          expect_body: '"status":\\s*"ok"'
          interval: 1s
          fast_interval: 200ms
          down_interval: 1m
          timeout: 500ms
        breaker: {max_fails: 3, passes: 2}
        sinks: [state_file, {sink: page}]
        slow_start: 1h
        min_up: 50%
      cache:
        backends: ['${CACHE_HOST}:6379']
        probe: {type: tcp, send: 'PING\\r\\n', expect: '^\\+PONG', interval: 3}
        breaker: {kind: threshold, fall: 4}
      job:
        backends: [127.0.0.1:9000, 127.0.0.1:9001]
        probe: {type: script, command: "/bin/sh -c 'exit 0'", interval: 5s, timeout: 2.5}
        breaker: {kind: circuit, window: 30s, min_calls: 4, failure_rate: 25%}
        min_up: 2
    """
ENV = {"TOKEN": "s3cret", "CACHE_HOST": "10.0.0.20"}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The FULL example loaded from a file in tmp_path."""
    return load_config(write_config(tmp_path, textwrap.dedent(FULL)), env=ENV)


def test_top_level(config: Config, tmp_path: Path) -> None:
    """Top-level values: state_dir is relative to the config file, ${TOKEN} substituted."""
    assert config.path == str(tmp_path / "sentinel.yaml")
    assert config.state_dir == str(tmp_path.resolve() / "state")
    assert config.shutdown_timeout == 0.25
    assert config.max_in_flight == 64
    assert config.api == ApiConfig(host="127.0.0.1", port=0, token="s3cret")
    assert config.telemetry == TelemetryConfig(
        service_name="edge-sentinel",
        traces=TracesConfig(exporter="console", sample_ok=0.5), prometheus=False)


def test_sinks(config: Config) -> None:
    """Named sinks carry their kind's parsed options; a command string is split with shlex."""
    assert config.sinks == (
        SinkConfig("state_file", "file", FileOptions(path="./view.json")),
        SinkConfig("page", "exec", ExecOptions(command=("/bin/echo", "{service} is", "{to}"),
                                               timeout=0.25), scope="leader"),
    )


def test_service_merged_over_defaults(config: Config) -> None:
    """`web` keeps the default probe type and path, overrides the rest; the breaker merges
    key by key; sinks by name and by {sink: NAME}; addresses IPv4, [IPv6], host name."""
    assert service_named(config, "web") == ServiceConfig(
        name="web",
        backends=(
            BackendConfig("web1", "10.0.0.11:8080", "10.0.0.11", 8080, weight=5),
            BackendConfig("web2", "[::1]:80", "::1", 80, backup=True),
            BackendConfig("db.internal:5432", "db.internal:5432", "db.internal", 5432),
        ),
        probe=ProbeConfig(
            type="http",
            timing=Timing(interval=1.0, fast_interval=0.2, down_interval=60.0, timeout=0.5),
            spec=HttpSpec(path="/healthz", host="www.example.com",
                          expect_status=(StatusClass(200, 299), StatusClass(301, 301),
                                         StatusClass(400, 499)),
                          expect_body=re.compile(r'"status":\s*"ok"')),
        ),
        breaker=NginxBreakerConfig(max_fails=3, fail_timeout=10.0, passes=2),
        sinks=(SinkBinding("state_file"), SinkBinding("page")),
        slow_start=3600.0,
        min_up=MinUp(share=Fraction(1, 2)),
    )


def test_kind_change_drops_kind_specific_defaults(config: Config) -> None:
    """`cache` switches to tcp and threshold: the default http path/expect_status and
    nginx max_fails are dropped, the shared timeout and the default min_up stay."""
    cache = service_named(config, "cache")
    assert cache.backends == (BackendConfig("10.0.0.20:6379", "10.0.0.20:6379",
                                            "10.0.0.20", 6379),)
    assert cache.probe == ProbeConfig(
        type="tcp", timing=Timing(interval=3.0, fast_interval=3.0, down_interval=3.0,
                                  timeout=1.0),
        spec=TcpSpec(send=b"PING\r\n", expect=re.compile(rb"^\+PONG")))
    assert cache.breaker == ThresholdBreakerConfig(rise=2, fall=4)
    assert cache.min_up == MinUp(count=1)
    assert cache.sinks == ()


def test_script_and_circuit(config: Config) -> None:
    """`job`: a command string split with shlex, a bare-number timeout, a circuit breaker
    with a percent rate, and its own min_up count."""
    job = service_named(config, "job")
    assert job.probe == ProbeConfig(
        type="script",
        timing=Timing(interval=5.0, fast_interval=5.0, down_interval=5.0, timeout=2.5),
        spec=ScriptSpec(command=("/bin/sh", "-c", "exit 0")))
    assert job.breaker == CircuitBreakerConfig(window=30.0, min_calls=4, failure_rate=0.25)
    assert job.min_up == MinUp(count=2)
    assert job.min_up.required(3) == 2


def test_values_are_frozen(config: Config) -> None:
    """Config values cannot be changed after loading."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        service_named(config, "web").probe.timing.interval = 9.0  # type: ignore[misc]


def test_env_default_yields_to_environment(tmp_path: Path) -> None:
    """`${VAR:-default}` takes the environment's value when VAR is set."""
    config = load_config(write_config(tmp_path, textwrap.dedent(FULL)),
                         env={**ENV, "VHOST": "api.example.org"})
    spec = service_named(config, "web").probe.spec
    assert isinstance(spec, HttpSpec)
    assert spec.host == "api.example.org"


def test_defaults_only(tmp_path: Path) -> None:
    """A minimal service gets the documented defaults: tcp every 2s with a 1s timeout,
    nginx max_fails 1 / fail_timeout 10s, default 2xx/3xx, state next to the file."""
    config = load_config(write_config(tmp_path, "services: {a: {backends: [127.0.0.1:1]}}\n"))
    assert config.state_dir == str(tmp_path.resolve() / "state")
    assert config.api == ApiConfig()
    svc = service_named(config, "a")
    assert svc.probe == ProbeConfig("tcp", Timing(2.0, 2.0, 2.0, 1.0), TcpSpec())
    assert svc.breaker == NginxBreakerConfig()
    assert svc.min_up == MinUp()


def test_implicit_kind_in_defaults(tmp_path: Path) -> None:
    """Defaults without `type`/`kind` are tcp/nginx: their kind-specific keys do not leak
    into a service that picks another kind."""
    config = load_config(write_config(tmp_path, textwrap.dedent("""\
        defaults:
          probe: {send: PING, interval: 3s}
          breaker: {max_fails: 2}
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: http}
            breaker: {kind: threshold}
        """)))
    web = service_named(config, "web")
    assert web.probe == ProbeConfig("http", Timing(3.0, 3.0, 3.0, 1.0), HttpSpec())
    assert web.breaker == ThresholdBreakerConfig()


def test_x_keys_hold_anchors_that_services_merge(tmp_path: Path) -> None:
    """Top-level `x-` keys are free (Docker Compose's convention): anchors defined there are
    merged into services with `<<: *name`, the service's own keys winning."""
    path = tmp_path / "sentinel.yaml"
    path.write_text(textwrap.dedent("""\
        x-checks:
          http: &http {type: http, path: /healthz, interval: 1s, timeout: 500ms}
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {<<: *http, interval: 2s}
        """))
    probe = load_config(path).services[0].probe
    assert (probe.type, probe.timing.interval, probe.timing.timeout) == ("http", 2.0, 0.5)
    assert isinstance(probe.spec, HttpSpec)
    assert probe.spec.path == "/healthz"


def test_name_overrides_satisfy_the_balancers(tmp_path: Path) -> None:
    """A service or backend name nginx or HAProxy cannot take is fine when the binding
    names it for them (`upstream:`, `backend:`, `servers:`), and only sinks that write the
    name check it (a file sink takes any name)."""
    path = tmp_path / "sentinel.yaml"
    path.write_text(textwrap.dedent("""\
        sinks:
          edge: {type: nginx, file: ./up.conf, test: "true", reload: "true"}
          lb: {type: haproxy, socket: ./admin.sock}
          doc: {type: file, path: ./doc.json}
        services:
          "web site":
            backends: [{name: "web 1", address: "127.0.0.1:80"}]
            sinks: [{sink: edge, upstream: web}, doc,
                    {sink: lb, backend: web_be, servers: {"web 1": web1}}]
        """))
    assert [b.sink for b in load_config(path).services[0].sinks] == ["edge", "doc", "lb"]


def test_percentages_are_exact(tmp_path: Path) -> None:
    """`failure_rate: 7.2%` is 0.072, not 0.07200000000000001 (which a breaker at exactly
    72 failures in 1,000 calls missed), and `min_up: 7.2%` of 1,000 backends is 72, not 73;
    a fraction (0.072) means the same."""
    path = tmp_path / "sentinel.yaml"
    for rate in ("7.2%", "0.072"):
        path.write_text(textwrap.dedent(f"""\
            services:
              web:
                backends: [127.0.0.1:80]
                breaker: {{kind: circuit, failure_rate: "{rate}", slow_rate: 7.2%}}
                probe: {{jitter: 7.2%}}
                min_up: 7.2%
            """))
        svc = load_config(path).services[0]
        assert isinstance(svc.breaker, CircuitBreakerConfig)
        assert (svc.breaker.failure_rate, svc.breaker.slow_rate) == (0.072, 0.072)
        assert svc.probe.timing.jitter == 0.072
        assert svc.min_up.required(1000) == 72


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("text", ["services:\n  web:\n    backends: [127.0.0.1:80]\n",
                                  "services: [\n"])
def test_loading_leaves_the_gc_as_it_found_it(tmp_path: Path, text: str,
                                              enabled: bool) -> None:
    """The cyclic GC, off while a config is built, is on again after a load or a refused
    one, unless the caller had it off."""
    path = write_config(tmp_path, text)
    (gc.enable if enabled else gc.disable)()
    try:
        with contextlib.suppress(ConfigErrors):
            load_config(path)
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
