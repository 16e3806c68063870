"""How long `sentinel check`'s work takes: hostile YAML refused, detection budgets for the
settings that used to take a minute, configs of 1,000 services and of 10,000 backends.

    .venv/bin/python bench/check_bench.py [--repeat 5]

Each row runs in this process (no interpreter start-up): loading the file
(`load_config`) and computing every service's budget (`compute_budget`, its
cache cleared before each run). Prints a Markdown table of the median and the
worst of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probe_bench import CONFIG, backend_lines  # noqa: E402

from sentinel.engine.budget import _budget, compute_budget  # noqa: E402
from sentinel.errors import ConfigError  # noqa: E402
from sentinel.sinks.registry import load_config  # noqa: E402


def _bomb(levels: int) -> str:
    lines = ["x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x-a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
              for i in range(1, levels)]
    return "\n".join(lines) + f"\nservices: *a{levels - 1}\n"


def _service(name: str, probe: str, breaker: str, port: int = 80) -> str:
    return (f"  {name}:\n    backends: ['127.0.0.1:{port}']\n"
            f"    probe: {probe}\n    breaker: {breaker}\n")


def _composite(intervals: str, breaker: str) -> str:
    """One service checked by a tcp check every each of `intervals` (`1s 1300ms`)."""
    checks = ", ".join(f"{{name: c{i}, type: tcp, interval: {interval}, timeout: 500ms}}"
                       for i, interval in enumerate(intervals.split()))
    return (f"services:\n  a:\n    backends: ['127.0.0.1:80']\n    checks: [{checks}]\n"
            f"    breaker: {breaker}\n")


def _many(count: int, *, alike: bool) -> str:
    text = "services:\n"
    for i in range(count):
        interval = "1s" if alike else f"{1000 + i}ms"
        text += _service(f"s{i}", f"{{interval: {interval}, timeout: 500ms}}",
                         "{kind: threshold, fall: 3, rise: 2}", 1000 + i)
    return text


def _fleet(count: int) -> str:
    """probe_bench's config (one service of `count` backends), as loop_bench loads it."""
    return CONFIG.format(state="state", mode="tcp", extra="",
                         backends=backend_lines(list(range(20000, 20000 + count))))


CASES: dict[str, str] = {
    "alias bomb (10 levels of 9: 3.9e9 values)": _bomb(10),
    "nesting 100,000 levels deep": "services: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "nginx fail_timeout 1h, interval 100ms": "services:\n" + _service(
        "a", "{interval: 100ms, timeout: 50ms}", "{kind: nginx, max_fails: 3, fail_timeout: 1h}"),
    "fast_interval 200m (a typo for 200ms)": "services:\n" + _service(
        "a", "{interval: 1s, fast_interval: 200m}", "{kind: nginx}"),
    "circuit window 1h, interval 100ms": "services:\n" + _service(
        "a", "{interval: 100ms, timeout: 50ms}", "{kind: circuit, window: 1h}"),
    "checks at 1s, 1.3s, 1.7s, nginx fail_timeout 10 years": _composite(
        "1s 1300ms 1700ms", "{kind: nginx, max_fails: 3, fail_timeout: 87600h}"),
    "checks at 1s, 1.3s, 1.7s, 2.3s, 2.9s, nginx fail_timeout 1h": _composite(
        "1s 1300ms 1700ms 2300ms 2900ms", "{kind: nginx, max_fails: 3, fail_timeout: 1h}"),
    "checks at 1s, 1.3s, circuit window 10h": _composite(
        "1s 1300ms", "{kind: circuit, window: 10h}"),
    "1,000 services, alike": _many(1000, alike=True),
    "1,000 services, each its own interval": _many(1000, alike=False),
    "1,000 backends (probe_bench's config)": _fleet(1000),
    "10,000 backends (probe_bench's config)": _fleet(10_000),
}


def _check(path: Path) -> str:
    """What `sentinel check` computes: the config and every budget (or the error)."""
    _budget.cache_clear()
    try:
        config = load_config(path)
    except ConfigError as exc:
        return f"refused: {str(exc).splitlines()[0][len(str(path)) + 1:][:60]}"
    for svc in config.services:
        compute_budget(svc)
    return "ok"


def _time(run: Callable[[], str], repeat: int) -> tuple[float, float, str]:
    times, outcome = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        outcome = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times), outcome


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| config | median | worst | outcome |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in CASES.items():
            path = Path(tmp) / "sentinel.yaml"
            path.write_text(text)
            median, worst, outcome = _time(lambda p=path: _check(p), args.repeat)
            print(f"| {name} | {median * 1000:.0f} ms | {worst * 1000:.0f} ms | {outcome} |")


if __name__ == "__main__":
    main()
