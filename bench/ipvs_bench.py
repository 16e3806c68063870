"""IPVS sink cost against a real kernel's table (Debian's kernel under QEMU, TCG).

    .venv/bin/python bench/ipvs_bench.py [--flips 20] [--services 100] [--reals 10]

Boots the test VM of tests/sinks/ipvs (its ipvsadm reached through the forwarder, as in
the tests) and measures:

1. Verdict -> kernel: a backend flips (down, then up again); the new view is
   published to the sink runner, as the engine does on a verdict. Timed until
   the `ipvsadm -R` carrying the edit has returned (the kernel's table holds
   it) and until the sink has read it back and verified it.
2. Full resync of S services x R real servers: nothing to repair; every
   weight changed by hand (all repaired); and the pure CPU part (parsing the
   two listings and planning every service) without any ipvsadm call.

Under TCG every ipvsadm call costs tens of milliseconds inside the VM plus the
forwarder's process start; the per-call figure is printed so the numbers can
be scaled to a director running ipvsadm natively. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sentinel.model import BackendView, ServiceView, State  # noqa: E402
from sentinel.sinks.base import Update  # noqa: E402
from sentinel.sinks.ipvs.options import IpvsBinding, IpvsOptions  # noqa: E402
from sentinel.sinks.ipvs.sink import IpvsSink  # noqa: E402
from sentinel.sinks.ipvs.table import (  # noqa: E402
    DesiredService,
    RealServer,
    ServiceSpec,
    diff,
    parse_listing,
    parse_thresholds,
    parse_virtual,
)
from sentinel.sinks.runner import SinkRunner  # noqa: E402
from tests.sinks.ipvs.vm import Outcome, Vm  # noqa: E402


def backend(index: int, state: State, weight: int = 10) -> BackendView:
    """Backend `index` on 127.1.x.y:80 (dr: the kernel keeps the service's port)."""
    host = f"127.1.{index // 250}.{index % 250 + 1}"
    return BackendView(f"b{index}", f"{host}:80", host, 80, state,
                       weight if state is State.UP else 0, weight)


def service_view(name: str, reals: int, down: frozenset[int] = frozenset()) -> ServiceView:
    """A service of `reals` backends, those in `down` down."""
    return ServiceView(name, tuple(backend(i, State.DOWN if i in down else State.UP)
                                   for i in range(reals)))


def binding(index: int) -> IpvsBinding:
    """tcp:10.2.X.Y:80 with wrr."""
    return IpvsBinding(parse_virtual(f"tcp:10.2.{index // 250}.{index % 250 + 1}:80"),
                       ServiceSpec("wrr"))


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` percentile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    """Seconds `fn()` took."""
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def verdict_to_kernel(vm: Vm, flips: int) -> list[str]:
    """Part 1: publish flips to a SinkRunner and time them into the kernel."""
    sink = IpvsSink("lvs", IpvsOptions(command=tuple(vm.command), resync=3600))
    runner = SinkRunner(sink)
    edit_done: list[float] = []
    apply = sink.driver.apply

    async def apply_and_note(edits: Sequence[Sequence[str]]) -> str:
        said = await apply(edits)
        edit_done.append(time.perf_counter())
        return said

    sink.driver.apply = apply_and_note  # type: ignore[method-assign]
    to_kernel, verified = [], []
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        runner.publish(Update(service_view("web", 10), (), binding(0)))
        await runner.wait_idle()
        for flip in range(flips):
            down = frozenset({flip % 10}) if flip % 2 == 0 else frozenset()
            edit_done.clear()
            start = time.perf_counter()
            runner.publish(Update(service_view("web", 10, down), (), binding(0)))
            await runner.wait_idle()
            verified.append(time.perf_counter() - start)
            to_kernel.append(edit_done[0] - start)
        if not runner.statistics().ok:
            raise SystemExit(f"the sink failed: {runner.statistics().last_error}")
        calls = sink.driver.calls
        per_call = await timed(lambda: sink.driver.read(binding(0).virtual)) / (
            sink.driver.calls - calls)
        nursery.cancel_scope.cancel()
    return [
        "| verdict -> | p50 | p95 | max |",
        "| --- | ---: | ---: | ---: |",
        f"| edit in the kernel's table (`ipvsadm -R` returned) | {_ms(to_kernel, 0.5)} | "
        f"{_ms(to_kernel, 0.95)} | {_ms(to_kernel, 1.0)} |",
        f"| read back and verified | {_ms(verified, 0.5)} | {_ms(verified, 0.95)} | "
        f"{_ms(verified, 1.0)} |",
        "",
        f"{flips} flips of one backend of a 10-backend service; one ipvsadm call through "
        f"the VM costs {per_call * 1000:.0f} ms (a flip is 5 calls: 2 reads, the edit, "
        f"2 reads back).",
    ]


async def full_resync(vm: Vm, services: int, reals: int) -> list[str]:
    """Part 2: a full resync of `services` x `reals`, clean and all drifted."""
    sink = IpvsSink("lvs", IpvsOptions(command=tuple(vm.command), resync=3600))
    edits = [edit for i in range(services) for edit in diff(_desired(i, reals), None)]
    built = await trio.to_thread.run_sync(_restore, vm, edits)
    assert built.returncode == 0, built.stderr
    for i in range(services):  # the sink learns each service (2 reads, nothing to edit)
        await sink.apply(Update(service_view(f"s{i}", reals), (), binding(i)))
    rows = ["| full resync, " + f"{services} services x {reals} real servers"
            + " | time | ipvsadm calls |", "| --- | ---: | ---: |"]
    calls = sink.driver.calls
    clean = await timed(sink.resync)
    rows.append(f"| nothing to repair | {clean * 1000:.0f} ms | {sink.driver.calls - calls} |")
    drifted = [("-e", *edit[1:6], "-w", "3") for edit in edits if edit[0] == "-a"]
    changed = await trio.to_thread.run_sync(_restore, vm, drifted)
    assert changed.returncode == 0, changed.stderr
    calls, conflicts = sink.driver.calls, sink.conflicts
    repaired = await timed(sink.resync)
    rows.append(f"| every weight changed by hand ({len(drifted)} repaired, "
                f"{sink.conflicts - conflicts} conflicts reported) | {repaired * 1000:.0f} ms "
                f"| {sink.driver.calls - calls} |")
    listing = await trio.to_thread.run_sync(vm.ipvsadm, "-L", "-n")
    limits = await trio.to_thread.run_sync(vm.ipvsadm, "-L", "-n", "--thresholds")
    start = time.perf_counter()
    table = parse_thresholds(limits.stdout, parse_listing(listing.stdout))
    left = [diff(_desired(i, reals), table.get(binding(i).virtual))
            for i in range(services)]
    cpu = time.perf_counter() - start
    assert not any(left)
    rows.append(f"| pure CPU: parse both listings ({len(listing.stdout.splitlines())} lines) "
                f"and plan every service | {cpu * 1000:.1f} ms | 0 |")
    return rows


def _desired(index: int, reals: int) -> DesiredService:
    """The desired entry of service `index` with every backend up."""
    wanted = {(b.host, 80): RealServer(b.host, 80, "dr", b.weight)
              for b in service_view("x", reals).backends}
    return DesiredService(binding(index).virtual, binding(index).spec, wanted)


def _restore(vm: Vm, edits: list[tuple[str, ...]]) -> Outcome:
    """Apply `edits` inside the VM with one `ipvsadm -R` (set-up and hand edits)."""
    lines = " ".join(f"'{' '.join(edit)}'" for edit in edits)
    return vm.run(f"printf '%s\\n' {lines} | ipvsadm -R", timeout=120)


def _ms(values: list[float], fraction: float) -> str:
    return f"{percentile(values, fraction) * 1000:.0f} ms"


def main() -> int:
    """Boot the VM, run both parts, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--reals", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the drift part makes 100 conflict warnings
    with tempfile.TemporaryDirectory() as tmp:
        vm = Vm(Path(tmp))
        started = time.perf_counter()
        vm.start()
        boot = time.perf_counter() - started
        try:
            part1 = trio.run(verdict_to_kernel, vm, args.flips)
            vm.ipvsadm("-C")
            part2 = trio.run(full_resync, vm, args.services, args.reals)
        finally:
            vm.close()
    print(f"VM boot to first answer: {boot:.1f} s\n")
    print("\n".join(part1))
    print()
    print("\n".join(part2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
