"""Maglev table benchmark: build time, balance and disruption for both modes.

    .venv/bin/python bench/maglev_bench.py [--repeat 5]

Build time is `sentinel.sinks.maglev.table.build` end to end (key hashing, population, and
in stable mode the reassignment) with every backend up. Balance is over the up
backends: max and min slots over the ideal M / up. Disruption is the share of
slots whose backend changed against the all-up table; the minimum possible is
the failed backends' share, and `extra` is what moved between survivors.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import numpy as np

from sentinel.sinks.maglev.table import Member, Mode, Table, build

BUILDS = [(10, 65537), (100, 65537), (1000, 65537), (1000, 655373), (5000, 655373)]
FAILURES = [(100, 65537), (1000, 65537), (5000, 655373)]


def members(n: int, down: frozenset[int] = frozenset()) -> list[Member]:
    """n backends 10.x.y.z:8080, the indices in `down` not up."""
    out = []
    for i in range(n):
        key = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8080"
        out.append(Member(name=key, key=key, weight=0 if i in down else 1,
                          configured_weight=1, up=i not in down))
    return out


def build_ms(n: int, size: int, repeat: int) -> tuple[float, float]:
    """(best, median) milliseconds to build the all-up table."""
    pool = members(n)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        build(pool, size, Mode.FRESH)
        times.append((time.perf_counter() - started) * 1000)
    return min(times), statistics.median(times)


def outcome(before: Table, after: Table) -> tuple[float, float, float, float, float]:
    """(moved %, minimum %, extra %, max/ideal, min/ideal) of a failure."""
    up = np.array([m.eligible for m in after.members])
    lost = np.isin(before.slots, np.flatnonzero(~up))
    moved = before.slots != after.slots
    counts = np.array(after.counts())[up]
    ideal = after.size / up.sum()
    size = after.size
    return (100 * moved.sum() / size, 100 * lost.sum() / size,
            100 * (moved & ~lost).sum() / size, counts.max() / ideal, counts.min() / ideal)


def main() -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    print(f"Maglev benchmark, {date.today()}, {platform.python_implementation()} "
          f"{platform.python_version()}, NumPy {np.__version__}, best and median of {repeat}")
    print()
    print("| backends N | table M | build best | build median |")
    print("| ---: | ---: | ---: | ---: |")
    for n, size in BUILDS:
        best, median = build_ms(n, size, repeat)
        print(f"| {n:,} | {size:,} | {best:.1f} ms | {median:.1f} ms |")
    print()
    print("| N | M | failed | mode | moved | minimum | extra | max/ideal | min/ideal |")
    print("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(2016)
    for n, size in FAILURES:
        for failed in (1, n // 10):
            down = frozenset(int(i) for i in rng.choice(n, failed, replace=False))
            for mode in Mode:
                before = build(members(n), size, mode)
                after = build(members(n, down), size, mode)
                moved, minimum, extra, top, bottom = outcome(before, after)
                print(f"| {n:,} | {size:,} | {failed} | {mode.value} | {moved:.2f}% | "
                      f"{minimum:.2f}% | {extra:.2f}% | {top:.4f} | {bottom:.4f} |")


if __name__ == "__main__":
    main()
