"""Running checks through a real ProbeLoop: one-member probe groups, a host that records
each result, and `loop_checks`, which runs a set of checks once and returns their results."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from sentinel.breakers import make_breaker
from sentinel.config.model import (
    BackendConfig,
    NginxBreakerConfig,
    ProbeConfig,
    ServiceConfig,
    TcpSpec,
    Timing,
)
from sentinel.engine.backend import BackendRuntime
from sentinel.engine.probegroups import ProbeGroup
from sentinel.engine.probeloop import EpollPoller, Poller, ProbeLoop
from sentinel.engine.slots import Slots
from sentinel.model import ProbeResult
from sentinel.probes.http import LeanHttpProbe
from sentinel.probes.tcp import TcpProbe

TCP_CONFIG = ProbeConfig("tcp", Timing(timeout=0.5), TcpSpec())


def group(port: int, next_due: float, host: str = "127.0.0.1",
          probe: ProbeConfig = TCP_CONFIG) -> ProbeGroup:
    """A one-member group due at `next_due`, probed as `probe` says (plain tcp)."""
    config = BackendConfig(f"b{port}", f"{host}:{port}", host, port)
    svc = ServiceConfig("svc", (config,), probe)
    member = BackendRuntime(svc, config, make_breaker(NginxBreakerConfig()), since="")
    member.checks[0].next_due = next_due
    return ProbeGroup((probe, host, port, ""), [member.checks[0]])


class Host:
    """A LoopHost that records each result (with its start time) and probes each group once."""

    def __init__(self, expect: int) -> None:
        self.results: list[tuple[ProbeGroup, ProbeResult, float]] = []
        self.lateness: list[float] = []
        self.began: dict[int, float] = {}  # by port: when its check really started
        self.expect = expect
        self.done = trio.Event()

    def probes_started(self, lateness: Sequence[float]) -> None:
        """Record how late checks started."""
        self.lateness.extend(lateness)

    def probe_done(self, group: ProbeGroup, result: ProbeResult, started: float, now: float,
                   start_unix: float, anchor: float) -> None:
        """Record the result (with the time its interval counts from) and when the check
        really started; the group is not due again."""
        group.members[0].next_due = math.inf
        self.results.append((group, result, anchor))
        self.began[group.key[2]] = started
        if len(self.results) == self.expect:
            self.done.set()


class Recheck(Host):
    """A LoopHost that checks each group again `interval` seconds after each check began,
    until `expect` results came."""

    def __init__(self, expect: int, interval: float = 1.0) -> None:
        super().__init__(expect)
        self.interval = interval

    def probe_done(self, group: ProbeGroup, result: ProbeResult, started: float, now: float,
                   start_unix: float, anchor: float) -> None:
        """Record the result; the group is due again an interval on."""
        super().probe_done(group, result, started, now, start_unix, anchor)
        group.members[0].next_due = started + self.interval


async def loop_checks(checks: list[tuple[TcpProbe | LeanHttpProbe, int]], slots: int = 64,
                      due: float | None = None,
                      during: Callable[[], Awaitable[None]] | None = None,
                      poller: Callable[[], Poller] = EpollPoller, host: str = "127.0.0.1",
                      ) -> tuple[list[tuple[ProbeResult, float]], Host]:
    """Run one loop check per (probe, port) of `host`, all due at `due` (default now):
    each (result, time its interval counts from), in the order of `checks`, and the host
    that saw them. `during` runs beside the loop (to block it, say)."""
    seen = Host(len(checks))
    loop = ProbeLoop(seen, Slots(slots), time.time, poller)
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        now = trio.current_time() if due is None else due
        if during is not None:
            nursery.start_soon(during)
        groups = [group(port, now, host) for _, port in checks]
        for (probe, _), g in zip(checks, groups, strict=True):
            loop.add(g, probe)
        with trio.fail_after(30):
            await seen.done.wait()
        assert loop.in_flight == 0
        nursery.cancel_scope.cancel()
    by_group = {id(g): (result, started) for g, result, started in seen.results}
    return [by_group[id(g)] for g in groups], seen
