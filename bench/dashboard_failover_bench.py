"""Failover on the dashboard: from a backend's SIGKILL to its row showing down with the reason,
in headless chromium against a real `sentinel run` over real backend processes.

    .venv/bin/python bench/dashboard_failover_bench.py [--trials 10] [--backends 3]

`--backends` HTTP backends on loopback (tests/e2e/backend_server.py, each its own process)
are probed by one `sentinel run` as two services over the same backends: `plain` (http
probe every 1s, fast_interval 200ms, timeout 500ms, nginx breaker max_fails 2: the issue-15
baseline) and `watched` (the same with `watch: true`). The dashboard is open in Debian's
chromium (headless, chromium-driver by path, fresh profile). Each trial, at a random phase of
the probe cycle, SIGKILLs one backend (in turn), waits until both of its rows show down with
the down event's reason, restarts it and waits until both rows show up again.

Clocks, stated per column:
- kill -> down event: the event's `time` as the API reports it (sentinel's wall clock)
  minus the kill's (this process's wall clock; same host, same clock).
- stream -> row: both ends in the page, on performance.now(): a wrapper around the page's
  own fetch of /v1/stream stamps each down event as its bytes reach the page's script, and
  a MutationObserver stamps the first DOM change that shows the row down with that reason
  (the dashboard patches rows in a requestAnimationFrame callback: the frame that paints it).
- event -> stream and kill -> row cross from one clock to the other: the page's stamps are
  moved to this process's clock by an offset measured after each trial (the best of 5
  WebDriver round trips); its half round trip, the worst over the run, is printed as the
  error of those two columns.

The page must never reload (a mark set in it is checked at the end). Every process is
killed by PID when the run ends. Prints the settings and a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from failover_bench import sentinel_yaml  # also puts the repository on sys.path
from selenium import webdriver

from tests.e2e.browser import open_browser
from tests.e2e.helpers import (
    LOOPBACK,
    Processes,
    SentinelApi,
    free_port,
    start_backend,
    start_sentinel,
    wait_until,
)

PROBE = {"type": "http", "path": "/healthz", "interval": "1s", "fast_interval": "200ms",
         "timeout": "500ms"}
BREAKER = {"kind": "nginx", "max_fails": 2, "fail_timeout": "2s"}
SERVICES = {"plain": False, "watched": True}  # service -> watch
PATIENCE = 30.0  # seconds any one wait may take before the run fails
# Runs before the dashboard's own script on every document (CDP), so it sees the page's
# stream from its first byte. The wrapper passes every chunk on unchanged.
INSTRUMENT = """
window.benchArrive = {};
window.benchRows = [];
const realFetch = window.fetch;
window.fetch = async function (input, init) {
  const response = await realFetch.call(this, input, init);
  if (!String(input).startsWith('/v1/stream') || !response.ok) return response;
  const decoder = new TextDecoder();
  let text = '';
  const tap = new TransformStream({transform(chunk, out) {
    const now = performance.now();
    text += decoder.decode(chunk, {stream: true});
    let end;
    while ((end = text.indexOf('\\n\\n')) >= 0) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      const kind = /^event: (.*)$/m.exec(block), data = /^data: (.*)$/m.exec(block);
      if (kind && kind[1] === 'event' && data) {
        const ev = JSON.parse(data[1]);
        if (ev.to === 'down' && !(ev.seq in window.benchArrive)) window.benchArrive[ev.seq] = now;
      }
    }
    out.enqueue(chunk);
  }});
  return new Response(response.body.pipeThrough(tap), {
    status: response.status, statusText: response.statusText, headers: response.headers});
};
const shown = new Map();
new MutationObserver(() => {
  const now = performance.now();
  for (const row of document.querySelectorAll('.row.be')) {
    const word = row.querySelector('.c-state .state'), reason = row.querySelector('.c-reason');
    if (!word || !reason) continue;
    const key = row.dataset.service + '/' + row.dataset.backend;
    const seen = word.textContent + '\\n' + reason.textContent;
    if (shown.get(key) !== seen) {
      shown.set(key, seen);
      window.benchRows.push([now, key, word.textContent, reason.textContent]);
    }
  }
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""
ROW_STATES = ("return Object.fromEntries([...document.querySelectorAll('.row.be')].map(r => "
              "[r.dataset.service + '/' + r.dataset.backend, "
              "(r.querySelector('.c-state .state') || {}).textContent]))")


@dataclass
class Times:
    """Per service, one list per column (seconds)."""

    verdict: dict[str, list[float]] = field(default_factory=dict)  # kill -> down event
    stream: dict[str, list[float]] = field(default_factory=dict)  # event -> in the page
    row: dict[str, list[float]] = field(default_factory=dict)  # in the page -> row down
    total: dict[str, list[float]] = field(default_factory=dict)  # kill -> row down
    clock_error: float = 0.0  # the worst half round trip of the page-clock offsets

    def add(self, column: dict[str, list[float]], service: str, seconds: float) -> None:
        """Record one measurement."""
        column.setdefault(service, []).append(seconds)


def page_offset(driver: webdriver.Chrome) -> tuple[float, float]:
    """(the page's clock minus this process's wall clock, its error), both in seconds: the
    WebDriver round trip of 5 with the shortest, the page's reading taken as its middle."""
    samples = []
    for _ in range(5):
        before = time.time()
        page = driver.execute_script("return performance.timeOrigin + performance.now()")
        after = time.time()
        samples.append((page / 1000 - (before + after) / 2, (after - before) / 2))
    return min(samples, key=lambda s: s[1])


def event_time(event: dict[str, Any]) -> float:
    """An event's `time` as seconds of the Unix epoch."""
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


@dataclass
class Fleet:
    """The backends, sentinel and browser of one run."""

    procs: Processes
    ports: dict[str, int]
    backends: dict[str, subprocess.Popen[bytes]]
    api: SentinelApi
    driver: webdriver.Chrome

    def all_up(self) -> None:
        """Wait until every backend is up in the API and its rows show up in the page."""
        keys = {f"{s}/{b}" for s in SERVICES for b in self.ports}
        wait_until(lambda: all(b["state"] == "up" for s in self.api.state()["services"].values()
                               for b in s["backends"]), timeout=PATIENCE, what="all up")
        wait_until(lambda: {k: v for k, v in self.driver.execute_script(ROW_STATES).items()
                            if k in keys} == dict.fromkeys(keys, "up"),
                   timeout=PATIENCE, what="every row up in the page")

    def trial(self, victim: str, times: Times) -> None:
        """Kill `victim`, time its rows going down, restart it and wait until it is up."""
        self.all_up()
        time.sleep(random.uniform(0.0, 1.0))  # a random phase of the 1 s probe cycle
        after = max((e["seq"] for e in self.api.events()), default=0)
        marks = int(self.driver.execute_script("return window.benchRows.length"))
        killed = time.time()
        self.procs.kill(self.backends[victim])
        downs = wait_until(lambda: self._downs(victim, after), timeout=PATIENCE,
                           what=f"{victim} down in every service")
        rows = wait_until(lambda: self._rows(victim, downs, marks), timeout=PATIENCE,
                          what=f"{victim}'s rows down with the reason")
        offset, error = page_offset(self.driver)
        origin, arrived = self.driver.execute_script(
            "return [performance.timeOrigin, window.benchArrive]")
        times.clock_error = max(times.clock_error, error)
        for service, event in downs.items():
            seen = arrived[str(event["seq"])]
            times.add(times.verdict, service, event_time(event) - killed)
            times.add(times.stream, service, (origin + seen) / 1000 - offset - event_time(event))
            times.add(times.row, service, (rows[service] - seen) / 1000)
            times.add(times.total, service, (origin + rows[service]) / 1000 - offset - killed)
        self.backends[victim] = start_backend(self.procs, self.ports[victim], victim)

    def _downs(self, victim: str, after: int) -> dict[str, dict[str, Any]] | None:
        """service -> `victim`'s down event after seq `after`, once every service has one."""
        found = {e["service"]: e for e in reversed(self.api.events(after))
                 if e["backend"] == victim and e["to"] == "down"}
        return found if found.keys() == SERVICES.keys() else None

    def _rows(self, victim: str, downs: dict[str, dict[str, Any]], marks: int
              ) -> dict[str, float] | None:
        """service -> the page time its row first showed down with the event's reason (after
        the first `marks` row changes), once every service's has."""
        found: dict[str, float] = {}
        for at, key, word, reason in self.driver.execute_script(
                "return window.benchRows.slice(arguments[0])", marks):
            service, _, backend = key.partition("/")
            if (backend == victim and service in downs and service not in found
                    and word == "down" and reason == downs[service]["reason"]):
                found[service] = float(at)
        return found if found.keys() == downs.keys() else None


def run(trials: int, backends: int, workdir: Path) -> Times:
    """Start the fleet, sentinel and the page; kill and restart backends `trials` times."""
    (workdir / "logs").mkdir()
    procs = Processes(workdir / "logs")
    times = Times()
    try:
        names = [f"web{i + 1}" for i in range(backends)]
        ports = {name: free_port() for name in names}
        started = {name: start_backend(procs, port, name) for name, port in ports.items()}
        listed = [{"name": n, "address": f"{LOOPBACK}:{p}"} for n, p in ports.items()]
        state = workdir / "state"
        config = workdir / "sentinel.yaml"
        config.write_text(sentinel_yaml(state, {"doc": {"type": "file",
                                                        "path": str(workdir / "doc.json")}}, {
            name: {"probe": {**PROBE, "watch": watch}, "breaker": BREAKER, "backends": listed,
                   "sinks": ["doc"]} for name, watch in SERVICES.items()}))
        api = SentinelApi(start_sentinel(procs, config, state)[1])
        with open_browser(procs, workdir / "profile") as driver:
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                   {"source": INSTRUMENT})
            driver.get(api.url + "/")
            wait_until(lambda: driver.execute_script("return document.body.dataset.live")
                       == "live", timeout=PATIENCE, what="the page's stream live")
            driver.execute_script("window.benchNoReload = 1")
            fleet = Fleet(procs, ports, started, api, driver)
            for trial in range(trials):
                victim = names[trial % len(names)]
                fleet.trial(victim, times)
                print(f"trial {trial + 1}/{trials}: {victim} done", file=sys.stderr)
            fleet.all_up()
            if driver.execute_script("return window.benchNoReload") != 1:
                raise RuntimeError("the page reloaded during the run")
    finally:
        procs.close()
    return times


def cell(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """`p50 / max`, scaled (1000 for ms)."""
    return f"{statistics.median(values) * scale:.{digits}f} / {max(values) * scale:.{digits}f}"


def table(times: Times, trials: int) -> str:
    """The settings and the Markdown table of one run."""
    lines = [f"sentinel: probe {PROBE}, breaker {BREAKER}; {trials} SIGKILLs, "
             "each seen by both services", "",
             "| service | kill -> down event, s | event -> stream in the page, ms | "
             "stream -> row down with the reason, ms | kill -> row down, s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for service, watch in SERVICES.items():
        lines.append(f"| {service}{' (`watch: true`)' if watch else ''} | "
                     f"{cell(times.verdict[service])} | {cell(times.stream[service], 1000, 0)} | "
                     f"{cell(times.row[service], 1000, 0)} | {cell(times.total[service])} |")
    worst = max(max(v) for v in times.total.values())
    lines.append(f"\np50 / max over the trials; the page-clock offset's error is at most "
                 f"{times.clock_error * 1000:.1f} ms. The worst kill -> row down: {worst:.2f} s "
                 f"({'within' if worst <= 2.0 else 'over'} the 2 s target).")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--backends", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.trials <= 50 or not 1 <= args.backends <= 20:
        parser.error("--trials must be 1..50 and --backends 1..20")
    with tempfile.TemporaryDirectory(prefix="dashboard-failover-bench-") as tmp:
        times = run(args.trials, args.backends, Path(tmp))
    print(table(times, args.trials))


if __name__ == "__main__":
    main()
