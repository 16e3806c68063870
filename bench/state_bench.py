"""GET /v1/state at scale: how long the handler takes and how long it holds the event loop.

    .venv/bin/python bench/state_bench.py [--n 5000 10000] [--per-service 100] [--rounds 20]

For each N, an Engine (not probing) over N backends in services of `--per-service`
backends answers `GET /v1/state` through the API's own route handler, `--rounds` times
per case, in two cases:

- `all changed`: before each request every backend's `last_probe` is replaced, as if
  each had been probed since the last request (a dashboard polling every interval);
- `none changed`: nothing happened since the last request.

It reports the handler's CPU time (p50 and max, ms: its cost; a client waits at least
that long) and the longest the event loop was held in one go during the handler (CPU ms:
a task that does nothing but yield measures the longest gap between its turns; this is
what delays probes). CPU time of the thread, not wall time, so that other processes on a
shared machine do not count. The response body is built in both, JSON included. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sentinel.api.app import Api  # noqa: E402
from sentinel.engine.engine import Engine  # noqa: E402
from sentinel.model import ProbeResult  # noqa: E402
from sentinel.sinks.memory import RecordingSink  # noqa: E402
from tests.engine.fakes import FakeProbe, config, service  # noqa: E402


class Ticker:
    """A task that only yields: the most CPU time spent elsewhere between two of its turns
    while `armed` (the longest the event loop was held by others)."""

    def __init__(self) -> None:
        self.armed = False
        self.longest = 0.0
        self.last = time.thread_time()

    async def run(self) -> None:
        """Yield forever, timing each gap."""
        while True:
            await trio.lowlevel.checkpoint()
            now = time.thread_time()
            if self.armed:
                self.longest = max(self.longest, now - self.last)
            self.last = now

    def hold(self) -> float:
        """The longest gap, counting the one still open (a handler that never yields)."""
        return max(self.longest, time.thread_time() - self.last)


async def measure(n: int, per_service: int, rounds: int, changed: bool
                  ) -> tuple[float, float, float, int]:
    """Handler p50 and max, longest loop hold (ms), and the body size."""
    ports = list(range(10_000, 10_000 + n))
    services = [service(f"svc{i}", ports[i:i + per_service])
                for i in range(0, n, per_service)]
    with tempfile.TemporaryDirectory() as state:
        engine = Engine(config(Path(state), *services), sinks={"rec": RecordingSink()},
                        probe_factory=FakeProbe().factory())
        api = Api(engine)
        backends = [b for svc in engine.services.values() for b in svc.backends]
        gc.collect()
        gc.freeze()  # as `sentinel run` does once started: no full GC passes over the config
        ticker = Ticker()
        times, holds = [], []
        size = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker.run)
            for round_ in range(rounds + 1):  # the first one warms the caches up
                if changed or round_ == 0:
                    now, result = time.time(), ProbeResult(ok=True, latency=0.0003)
                    for b in backends:
                        b.last_result, b.last_time = result, now
                await trio.sleep(0.01)
                ticker.longest, ticker.armed = 0.0, True
                began = time.thread_time()
                response = await api.route("GET", "/v1/state", "", {})
                took = time.thread_time() - began
                hold = ticker.hold()
                ticker.armed = False
                assert response.status == 200
                size = len(response.body)
                if round_:
                    times.append(took * 1000)
                    holds.append(hold * 1000)
            nursery.cancel_scope.cancel()
    return statistics.median(times), max(times), max(holds), size


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--per-service", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    print("| backends | case | handler p50 ms | handler max ms | longest loop hold ms "
          "| body KiB |")  # CPU ms
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for n in args.n:
        for changed in (True, False):
            p50, worst, hold, size = trio.run(measure, n, args.per_service, args.rounds,
                                              changed)
            case = "all changed" if changed else "none changed"
            print(f"| {n:,} | {case} | {p50:.1f} | {worst:.1f} | {hold:.1f} | "
                  f"{size / 1024:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
