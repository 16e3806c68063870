"""Passive signal latency: from an nginx error-log line being written to sentinel's
follower reporting it.

    .venv/bin/python bench/passive_bench.py [--lines 300]

A writer process appends nginx-format `upstream timed out` lines to a log file
(O_APPEND, one write per line, as nginx does) at random gaps of 20-200 ms and
records CLOCK_MONOTONIC just before each write; the follower
(`sentinel.passive.nginx_log.follow`, polling every 50 ms) runs in this process
and records the same clock when it reports. Halfway through, the writer rotates
the file (rename, then a new file) to include the rotation path. Prints a
Markdown table of latency percentiles; no process outlives the run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from sentinel.config.model import BackendConfig, ServiceConfig
from sentinel.passive.base import BackendIndex, Signal
from sentinel.passive.nginx_log import POLL, follow

LINE = ('2026/11/24 16:00:00 [error] 812#812: *{n} upstream timed out (110: Connection '
        'timed out) while reading response header from upstream, client: 127.0.0.1, '
        'server: , request: "GET / HTTP/1.1", upstream: "http://127.0.0.1:8081/"\n')


def write(path: str, lines: int, times: str) -> None:
    """The writer process: append `lines` lines, rotating halfway; write times to `times`."""
    stamps = []
    for n in range(lines):
        time.sleep(random.uniform(0.02, 0.2))
        if n == lines // 2:
            os.rename(path, path + ".1")
        with open(path, "a", encoding="utf-8") as log:
            stamps.append(time.monotonic())
            log.write(LINE.format(n=n))
    Path(times).write_text("\n".join(map(str, stamps)))


async def measure(lines: int, directory: Path) -> list[float]:
    """Latencies (s) of `lines` lines, in order."""
    path, times = directory / "error.log", directory / "times"
    path.write_text("")
    index = BackendIndex([ServiceConfig("web", (
        BackendConfig("b1", "127.0.0.1:8081", "127.0.0.1", 8081),))])
    seen: list[float] = []

    def report(_signal: Signal) -> None:
        seen.append(time.monotonic())

    async with trio.open_nursery() as nursery:
        await nursery.start(follow, str(path), index, report)
        # run_process kills the writer if this is cancelled
        await trio.run_process([sys.executable, __file__, "--write", str(path), str(lines),
                                str(times)])
        with trio.fail_after(5):
            while len(seen) < lines:  # noqa: ASYNC110  (the follower's own pace)
                await trio.sleep(POLL)
        nursery.cancel_scope.cancel()
    written = [float(t) for t in times.read_text().split()]
    return [got - at for got, at in zip(seen, written, strict=True)]


def main() -> None:
    """Run the writer, or measure and print the table."""
    if len(sys.argv) > 1 and sys.argv[1] == "--write":
        write(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        latencies = sorted(trio.run(measure, args.lines, Path(directory)))
    ms = [x * 1000 for x in latencies]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"nginx error log -> passive signal, poll {POLL * 1000:g} ms, {len(ms)} lines "
          "(one rename rotation)")
    print()
    print("| lines | p50 ms | p99 ms | max ms |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| {len(ms)} | {statistics.median(ms):.1f} | {p99:.1f} | {max(ms):.1f} |")


if __name__ == "__main__":
    main()
