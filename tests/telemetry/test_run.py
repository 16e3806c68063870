"""`sentinel run` as a subprocess with telemetry on: a real OTLP/HTTP receiver on loopback
gets the probe spans and the transition of a killed backend, /metrics follows it, and a
collector that hangs holds up no probe."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import (
    Processes,
    free_port,
    refused_ports,
    start_backend,
    start_sentinel,
    wait_until,
)
from tests.telemetry.helpers import Samples, parse_metrics, sample
from tests.telemetry.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.e2e
TOKEN = "s3cret-token"

CONFIG = """\
version: 1
state_dir: {state}
shutdown_timeout: 2s
api: {{listen: "127.0.0.1:0", token: {token}}}
telemetry:
  service_name: edge-sentinel
  resource: {{deployment.environment: test}}
  traces: {{exporter: otlp, endpoint: "{endpoint}", headers: {{x-api-key: k3y}}, timeout: 1s,
            sample_ok: {sample_ok}}}
sinks:
  doc: {{type: file, path: {state}/doc.json}}
services:
  web:
    probe: {{type: http, path: /healthz, interval: 200ms, fast_interval: 100ms,
             down_interval: 200ms, timeout: 150ms}}
    breaker: {{kind: nginx, max_fails: 1, fail_timeout: 1s}}
    backends:
      - {{name: web1, address: "127.0.0.1:{web1}"}}
      - {{name: web2, address: "127.0.0.1:{web2}"}}
    sinks: [doc]
"""


def write_config(tmp_path: Path, endpoint: str, sample_ok: float, web1: int, web2: int
                 ) -> tuple[Path, Path]:
    """The config file and its state_dir."""
    state = tmp_path / "state"
    config = tmp_path / "sentinel.yaml"
    config.write_text(CONFIG.format(state=state, token=TOKEN, endpoint=endpoint,
                                    sample_ok=sample_ok, web1=web1, web2=web2))
    return config, state


def start_json_sentinel(procs: Processes, config: Path, state: Path
                        ) -> tuple[subprocess.Popen[bytes], str]:
    """`sentinel --log-format json run -c CONFIG`; the process and its API URL."""
    proc = procs.start([sys.executable, "-m", "sentinel", "--log-format", "json", "run", "-c",
                        str(config)], "sentinel")
    url = wait_until(lambda: (state / "api.url").exists() and (state / "api.url").read_text(),
                     timeout=15, what="sentinel's api.url")
    assert proc.poll() is None, procs.log("sentinel").read_text()
    return proc, url.strip()


def events(url: str, backend: str) -> list[dict[str, object]]:
    """The backend's events from GET /v1/events."""
    answer = httpx.get(f"{url}/v1/events", params={"after": 0}, timeout=2,
                       headers={"authorization": f"Bearer {TOKEN}"})
    return [e for e in answer.json()["events"] if e["backend"] == backend]


def test_receiver_gets_probe_spans_and_the_transition_of_a_killed_backend(
        processes: Processes, tmp_path: Path) -> None:
    """Probe spans with the SPEC attributes and resource reach a real OTLP/HTTP receiver
    with the configured header; killing a backend yields an event whose trace_id is the
    trace of a span carrying `sentinel.transition` (up -> down); the JSON log line of
    that transition names the same trace; sink applies are spans; SIGTERM exports what
    is still queued (every probe run is received)."""
    with OtlpReceiver() as receiver:
        web1, web2 = free_port(), free_port()
        backend = start_backend(processes, web1, "web1")
        start_backend(processes, web2, "web2")
        config, state = write_config(tmp_path, receiver.url, 1.0, web1, web2)
        sentinel, url = start_json_sentinel(processes, config, state)
        wait_until(lambda: receiver.spans("sentinel.probe"), timeout=10, what="probe spans")
        processes.kill(backend)
        (event,) = wait_until(lambda: events(url, "web1"), timeout=10, what="web1 down event")
        assert event["to"] == "down"
        trace_id = event["trace_id"]
        assert isinstance(trace_id, str)
        assert len(trace_id) == 32
        span = wait_until(lambda: next((s for s in receiver.spans() if s.trace_id == trace_id),
                                       None), timeout=10, what="the transition's span")
        time.sleep(1.0)  # spans queue up between two exports (every 2 s): SIGTERM must flush
        probes = receiver.spans("sentinel.probe")
        probes_run = sample(parse_metrics(httpx.get(f"{url}/metrics", timeout=2).text),
                            "sentinel_probes_total")
        assert processes.kill(sentinel, signal.SIGTERM) == 0
        received = len(receiver.spans("sentinel.probe"))
        headers = receiver.headers[0]
        sinks = receiver.spans("sentinel.sink.apply")
    assert span.name == "sentinel.probe"
    assert span.status_code == 2  # error
    assert span.attributes["error.type"] in ("connect", "reset")
    assert [(name, attrs["from"], attrs["to"]) for name, _, attrs in span.events] == [
        ("sentinel.transition", "up", "down")]
    ok = next(s for s in probes if s.attributes["sentinel.probe.ok"])
    assert {k: ok.attributes[k] for k in ("sentinel.service", "server.address",
                                          "sentinel.probe.type")} == {
        "sentinel.service": "web", "server.address": "127.0.0.1", "sentinel.probe.type": "http"}
    assert ok.attributes["server.port"] in (web1, web2)
    assert ok.resource["service.name"] == "edge-sentinel"
    assert ok.resource["deployment.environment"] == "test"
    assert {"service.instance.id", "host.name", "service.version"} <= set(ok.resource)
    assert headers["x-api-key"] == "k3y"
    assert headers["content-type"] == "application/x-protobuf"
    assert any(s.attributes["sentinel.sink"] == "doc" for s in sinks)
    assert probes_run is not None
    assert received >= probes_run  # nothing left in the queue at a clean stop
    lines = [json.loads(line) for line in processes.log("sentinel").read_text().splitlines()
             if line.startswith("{")]
    (logged,) = [line for line in lines if "web1 up -> down" in line["message"]]
    assert logged["trace_id"] == trace_id


def test_metrics_after_a_real_backend_goes_down(processes: Processes, tmp_path: Path,
                                                refused_port: int) -> None:
    """GET /metrics (no token needed) parsed with prometheus_client's parser: the killed
    backend is up 0 with weight 0 and one transition to down, refused probes are in
    the histogram, the file sink's applies are counted with a last-success time."""
    web1, web2 = free_port(), free_port()
    backend = start_backend(processes, web1, "web1")
    start_backend(processes, web2, "web2")
    config, state = write_config(tmp_path, f"http://127.0.0.1:{refused_port}", 0.0, web1,
                                 web2)
    _, url = start_sentinel(processes, config, state)

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        answer = httpx.get(f"{url}/metrics", timeout=2)
        assert answer.status_code == 200
        return parse_metrics(answer.text)

    wait_until(lambda: sample(scrape(), "sentinel_backend_up", service="web", backend="web1"),
               timeout=10, what="web1 up in /metrics")
    processes.kill(backend)

    def applied_down() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        """The scrape once web1's transition is counted and the file sink has applied the
        view it led to (the first apply is the start's, the second one this)."""
        m = scrape()
        moved = sample(m, "sentinel_transitions_total", service="web", backend="web1",
                       to="down")
        return m if moved and (sample(m, "sentinel_sink_apply_total", sink="doc",
                                      result="ok") or 0) >= 2 else None

    m = wait_until(applied_down, timeout=10, what="web1's transition and its apply")
    assert sample(m, "sentinel_backend_up", service="web", backend="web1") == 0
    assert sample(m, "sentinel_backend_weight", service="web", backend="web1") == 0
    assert sample(m, "sentinel_backend_up", service="web", backend="web2") == 1
    assert sample(m, "sentinel_transitions_total", service="web", backend="web1",
                  to="down") == 1
    refused = [v for (name, labels), v in m.items()
               if name == "sentinel_probe_duration_seconds_count"
               and ("backend", "web1") in labels and ("result", "ok") not in labels]
    assert sum(refused) >= 1
    assert (sample(m, "sentinel_sink_last_success_timestamp_seconds", sink="doc") or 0
            ) > time.time() - 60
    assert sample(m, "sentinel_panic", service="web") == 0


HANG_CONFIG = """\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
telemetry:
  traces: {{exporter: otlp, endpoint: "{endpoint}", timeout: 5s, sample_ok: 1.0}}
services:
  dead:
    probe: {{type: tcp, interval: 100ms, fast_interval: 100ms, down_interval: 100ms,
             timeout: 100ms}}
    breaker: {{kind: threshold, fall: 1, rise: 1}}
    backends:
{backends}
"""


def test_a_hanging_collector_does_not_delay_probes(processes: Processes, tmp_path: Path
                                                   ) -> None:
    """A collector that holds every export past its 5 s timeout: while the first export is
    held, 20 refused backends probed every 100 ms (every probe a kept span) go on being
    probed, round after round; then the failed export is counted. (The probe rate and
    lateness with such a collector are measured by bench/telemetry_bench.py.)"""
    with OtlpReceiver(delay=60.0) as hanging, refused_ports(20) as dead:
        state = tmp_path / "state"
        backends = "\n".join(f"      - {{name: d{i}, address: \"127.0.0.1:{port}\"}}"
                             for i, port in enumerate(dead))
        config = tmp_path / "sentinel.yaml"
        config.write_text(HANG_CONFIG.format(state=state, endpoint=hanging.url,
                                             backends=backends))
        _, url = start_sentinel(processes, config, state)

        def scrape() -> Samples:
            return parse_metrics(httpx.get(f"{url}/metrics", timeout=5).text)

        def spans(m: Samples, result: str) -> float:
            return sample(m, "sentinel_trace_spans_total", result=result) or 0

        wait_until(lambda: hanging.requests, timeout=30, what="an export in the collector")
        before = sample(scrape(), "sentinel_probes_total") or 0
        # Two more rounds of every backend, each probe a span for the stuck exporter:
        m = wait_until(lambda: (m := scrape()) and (sample(m, "sentinel_probes_total") or 0)
                       >= before + 40 and m, timeout=30, what="two more rounds of probes")
        # ... and they ran while the first export was still in flight: none has ended.
        assert (spans(m, "failed"), spans(m, "exported")) == (0, 0)
        m = wait_until(lambda: (m := scrape()) and spans(m, "failed") > 0 and m, timeout=30,
                       what="the failed export counted")
    assert spans(m, "exported") == 0
