"""Dashboard at scale: first paint and live updates in headless chromium over N backends.

    .venv/bin/python bench/dashboard_bench.py [--backends 5000] [--services 50 1]
                                              [--loads 5] [--window 10]

For each case one fleet process serves N loopback ports (probe_bench's fleet),
and a real `sentinel run` probes them over TCP every 2 s, split into the given
number of services. Once every backend has been probed, Debian's chromium
(headless, driven through chromium-driver by path, fresh profile) loads the
dashboard `--loads` times and reports:

- first paint: from navigation start to the first frame that laid out rows
  (the page's `data-painted` mark, performance.now() in that frame), and when
  the /v1/state response ended (its size too);
- live: with the page open for `--window` seconds, the main thread's long
  tasks (PerformanceObserver `longtask`, over 50 ms) and the JS heap;
- sentinel's CPU seconds per second over `--window` without and then with the
  page's stream open (the stream hub's cost).

Every process is killed by PID when a case ends. Prints a Markdown table.
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
from probe_bench import ROOT, cpu_seconds, kill, launch_sentinel, wait_for
from selenium import webdriver

sys.path.insert(0, str(ROOT))
from tests.e2e.browser import open_browser
from tests.e2e.helpers import Processes

CONFIG_HEAD = """\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
defaults:
  probe: {{type: tcp, interval: 2s, timeout: 500ms}}
  breaker: {{kind: nginx, max_fails: 1, fail_timeout: 5s}}
services:
"""
OBSERVE = """
window.benchLong = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.benchLong.push(e.duration);
}).observe({type: 'longtask', buffered: true});
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One measured case."""

    services: int
    backends: int
    state_kib: float
    paint_ms: list[float]
    state_end_ms: list[float]
    long_tasks: int
    longest_ms: float
    heap_mib: float
    cpu_idle: float
    cpu_streaming: float


def config(state: Path, ports: list[int], services: int) -> str:
    """N backends split evenly into `services` services."""
    lines = [CONFIG_HEAD.format(state=state)]
    per = -(-len(ports) // services)
    for s in range(services):
        chunk = ports[s * per:(s + 1) * per]
        lines.append(f"  svc{s:03d}:\n    backends:")
        lines += [f'      - {{name: b{s * per + i}, address: "127.0.0.1:{p}"}}'
                  for i, p in enumerate(chunk)]
    return "\n".join(lines) + "\n"


def load(driver: webdriver.Chrome, url: str) -> tuple[float, float]:
    """Load the page; (first paint ms, /v1/state response end ms) after navigation start."""
    driver.get(url)
    deadline = time.monotonic() + 60
    while not (painted := driver.execute_script("return document.body.dataset.painted")):
        if time.monotonic() > deadline:
            raise RuntimeError("the page never painted its rows")
        time.sleep(0.05)
    end = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.endsWith('/v1/state'))[0].responseEnd")
    return float(painted), float(end)


def cpu_over(pid: int, window: float) -> float:
    """CPU seconds per second of `pid` over `window`."""
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    return (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def measure(n: int, services: int, loads: int, window: float, workdir: Path) -> Row:
    """Run the fleet, sentinel and the browser for one case."""
    procs: list[subprocess.Popen[Any]] = []
    browsers = Processes(workdir)  # the browser's driver, killed by PID at the end
    try:
        fleet = subprocess.Popen([sys.executable, str(Path(__file__).with_name("probe_bench.py")),
                                  "--serve-fleet", str(n)], stdout=subprocess.PIPE,
                                 start_new_session=True)
        procs.append(fleet)
        assert fleet.stdout is not None
        ports = json.loads(fleet.stdout.readline())
        state = workdir / f"s{services}"
        path = workdir / f"s{services}.yaml"
        path.write_text(config(state, ports, services))
        sentinel = launch_sentinel(path, workdir / f"s{services}.log")
        procs.append(sentinel)
        url = wait_for(state / "api.url", sentinel, timeout=60)
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while client.get("/v1/state").json()["engine"]["probes"] < 2 * n:
                if time.monotonic() > deadline:
                    raise RuntimeError("sentinel did not probe every backend twice in 60 s")
                time.sleep(0.5)
            size = len(client.get("/v1/state").content) / 1024
        cpu_idle = cpu_over(sentinel.pid, window)
        with open_browser(browsers, workdir / f"profile-{services}", (1366, 900)) as driver:
            timings = [load(driver, url + "/") for _ in range(loads)]
            driver.execute_script(OBSERVE)
            cpu_streaming = cpu_over(sentinel.pid, window)
            long = driver.execute_script("return window.benchLong")
            heap = driver.execute_script("return performance.memory.usedJSHeapSize") / 2**20
        return Row(services, n, size, [t[0] for t in timings], [t[1] for t in timings],
                   len(long), max(long, default=0.0), heap, cpu_idle, cpu_streaming)
    finally:
        browsers.close()
        for proc in reversed(procs):
            if proc.poll() is None:
                kill(proc)


def table(rows: list[Row], window: float) -> str:
    """The Markdown table docs/performance.md carries."""
    lines = ["| services x backends | /v1/state KiB | first paint ms, median (max) | "
             "/v1/state received ms | long tasks live | longest ms | JS heap MiB | "
             "sentinel CPU s/s, no page | with the page |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r.services} x {r.backends // r.services} | {r.state_kib:.0f} | "
            f"{statistics.median(r.paint_ms):.0f} ({max(r.paint_ms):.0f}) | "
            f"{statistics.median(r.state_end_ms):.0f} | {r.long_tasks} | {r.longest_ms:.0f} | "
            f"{r.heap_mib:.1f} | {r.cpu_idle:.3f} | {r.cpu_streaming:.3f} |")
    return "\n".join(lines) + f"\n\n(live columns over a {window:g} s window)"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every case, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=int, default=5000)
    parser.add_argument("--services", type=int, nargs="+", default=[50, 1])
    parser.add_argument("--loads", type=int, default=5, help="page loads per case")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured live")
    args = parser.parse_args(argv)
    if not 1 <= args.backends <= 20000 or not 1 <= args.loads <= 50:
        parser.error("--backends must be 1..20000 and --loads 1..50")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sentinel-dashboard-bench-") as tmp:
        for services in args.services:
            row = measure(args.backends, services, args.loads, args.window, Path(tmp))
            print(f"{services} services: {row}", file=sys.stderr)
            rows.append(row)
    print(table(rows, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
