"""Telemetry cost: sentinel's CPU with N loopback TCP backends probed every second, with
tracing off and with OTLP export at two sampling ratios.

    .venv/bin/python bench/telemetry_bench.py [--n 1000] [--rounds 2] [--window 15]

Cases (Prometheus metrics are on in all but the first, as by default):

- `metrics off`: no traces, `metrics: {prometheus: false}` (the engine alone),
- `tracing off`: `exporter: none` (the baseline the target refers to),
- `otlp 0.1` and `otlp 1.0`: OTLP/HTTP export at `sample_ok` 0.1 and 1.0 to a
  receiver on 127.0.0.1 in this process (tests/telemetry/otlp_receiver.py, which
  decodes every request, so its CPU is not sentinel's),
- `otlp hanging`: `sample_ok` 1.0 to a second receiver that holds every export
  past the exporter's 1 s timeout (a collector that hangs: every export fails,
  the queue fills and spans are dropped); the probe rate and lateness show
  whether that slows the probes.

Per case, a fleet process serves N listening sockets (bench/probe_bench.py's) and a
real `sentinel run` probes them; after a warm-up, sentinel's CPU seconds per second
(utime + stime from /proc/PID/stat), peak RSS, probes/s, schedule lateness and spans
received per second are measured over a fixed window. Cases run in interleaved rounds
and the median CPU of each case is reported (the machine is shared). Every process is
killed by PID when its case ends. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from probe_bench import (
    backend_lines,
    cpu_seconds,
    kill,
    launch_sentinel,
    peak_rss_mib,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.telemetry.otlp_receiver import OtlpReceiver  # noqa: E402

FLEET = Path(__file__).with_name("probe_bench.py")
CASES = {"metrics off": "metrics: {{prometheus: false}}",
         "tracing off": "traces: {{exporter: none}}",
         "otlp 0.1": "traces: {{exporter: otlp, endpoint: \"{url}\", sample_ok: 0.1}}",
         "otlp 1.0": "traces: {{exporter: otlp, endpoint: \"{url}\", sample_ok: 1.0}}",
         "otlp hanging": "traces: {{exporter: otlp, endpoint: \"{hang}\", sample_ok: 1.0, "
                         "timeout: 1s}}"}
CONFIG = """\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
telemetry:
  {telemetry}
services:
  fleet:
    probe: {{type: tcp, interval: 1s, fast_interval: 1s, down_interval: 1s, timeout: 500ms}}
    breaker: {{kind: nginx, max_fails: 1, fail_timeout: 5s}}
    backends:
{backends}
"""


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run of one case."""

    case: str
    cpu_per_s: float
    probes_per_s: float
    spans_per_s: float
    peak_rss_mib: float
    p99_ms: float


def measure(case: str, n: int, warmup: float, window: float, workdir: Path,
            receiver: OtlpReceiver, hanging: OtlpReceiver) -> Sample:
    """Run the fleet and sentinel for one case and measure sentinel over `window`
    (spans count as exported when `receiver` got them; `hanging` answers none in time)."""
    procs: list[subprocess.Popen[Any]] = []
    try:
        fleet = subprocess.Popen([sys.executable, str(FLEET), "--serve-fleet", str(n)],
                                 stdout=subprocess.PIPE, start_new_session=True)
        procs.append(fleet)
        assert fleet.stdout is not None
        ports = json.loads(fleet.stdout.readline())
        tag = case.replace(" ", "-") + f"-{time.monotonic_ns()}"
        state = workdir / tag
        backends = backend_lines(ports)
        config = workdir / f"{tag}.yaml"
        config.write_text(CONFIG.format(state=state, backends=backends,
                                        telemetry=CASES[case].format(url=receiver.url,
                                                                     hang=hanging.url)))
        sentinel = launch_sentinel(config, workdir / f"{tag}.log")
        procs.append(sentinel)
        url = wait_for(state / "api.url", sentinel, timeout=30)
        time.sleep(warmup)
        with httpx.Client(base_url=url, timeout=10) as client:
            before = client.get("/v1/state").json()["engine"]["probes"]
            spans_before = receiver.count()
            cpu_before, t_before = cpu_seconds(sentinel.pid), time.monotonic()
            time.sleep(window)
            cpu_after, t_after = cpu_seconds(sentinel.pid), time.monotonic()
            spans_after = receiver.count()
            engine = client.get("/v1/state").json()["engine"]
        elapsed = t_after - t_before
        return Sample(case, (cpu_after - cpu_before) / elapsed,
                      (engine["probes"] - before) / elapsed,
                      (spans_after - spans_before) / elapsed, peak_rss_mib(sentinel.pid),
                      engine["lateness_ms"]["p99"])
    finally:
        for proc in reversed(procs):
            kill(proc)


def table(samples: list[Sample], n: int, window: float, rounds: int) -> str:
    """The Markdown table docs/performance.md carries: medians per case, CPU relative to tracing
    off."""
    cases = [c for c in CASES if any(s.case == c for s in samples)]
    median = {c: statistics.median(s.cpu_per_s for s in samples if s.case == c)
              for c in cases}
    base = median.get("tracing off")
    lines = ["| telemetry | backends | probes/s | spans/s exported | CPU s/s | vs tracing off "
             "| peak RSS MiB | lateness p99 ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in cases:
        mine = [s for s in samples if s.case == c]
        ratio = f"{median[c] / base:.2f}x" if base else "-"
        lines.append(
            f"| {c} | {n} | {statistics.median(s.probes_per_s for s in mine):.0f} | "
            f"{statistics.median(s.spans_per_s for s in mine):.0f} | {median[c]:.3f} | "
            f"{ratio} | {max(s.peak_rss_mib for s in mine):.1f} | "
            f"{statistics.median(s.p99_ms for s in mine):.2f} |")
    return "\n".join(lines) + (f"\n\n(median of {rounds} interleaved rounds, each measured "
                               f"over a {window:g} s window)")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every case in rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="backends (default 1000)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=15.0, help="seconds measured")
    args = parser.parse_args(argv)
    if not 1 <= args.window <= 120 or not 0 <= args.warmup <= 60 or not 1 <= args.rounds <= 10:
        parser.error("--window must be 1..120 s, --warmup 0..60 s, --rounds 1..10")
    samples = []
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp, OtlpReceiver() as rx, \
            OtlpReceiver(delay=3600.0) as hanging:
        for round_no in range(args.rounds):
            for case in args.cases:
                got = measure(case, args.n, args.warmup, args.window, Path(tmp), rx, hanging)
                print(f"round {round_no + 1}: {got}", file=sys.stderr)
                samples.append(got)
    print(table(samples, args.n, args.window, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
