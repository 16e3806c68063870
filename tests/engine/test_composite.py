"""Composite checks in the engine (virtual clock): each check on its own schedule, combined
into the breaker on each new result; reasons and /v1/state name the failing checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trio.testing

from sentinel.config.model import (
    CheckConfig,
    HttpSpec,
    ProbeConfig,
    ServiceConfig,
    TcpSpec,
    ThresholdBreakerConfig,
    Timing,
)
from sentinel.engine.engine import Engine
from sentinel.engine.probeloop import accepts
from sentinel.sinks.memory import RecordingSink
from tests.engine.drive import WALL_BASE, Script, run_for, states
from tests.engine.fakes import FakeProbe, config, run_inline, service
from tests.probes.conftest import HttpServer, until
from tests.sinks.fakes import TimedSink


def composite(require: int) -> ServiceConfig:
    """Backend b9001 checked by `tcp` every 1s and `web` (also tcp here) every 2.5s,
    threshold fall 1 / rise 1."""
    checks = (CheckConfig("tcp", ProbeConfig("tcp", Timing(1.0, 1.0, 1.0, 0.5), TcpSpec())),
              CheckConfig("web", ProbeConfig("tcp", Timing(2.5, 2.5, 2.5, 0.5),
                                             TcpSpec(send=b"GET"))))
    return dataclasses.replace(service("s", [9001], breaker=ThresholdBreakerConfig(1, 1)),
                               probe=checks[0].probe, checks=checks, require=require)


def engine_for(tmp_path: Path, svc: ServiceConfig, probes: dict[str, FakeProbe],
               rec: TimedSink) -> Engine:
    """An engine whose checks are answered by `probes`, by check name, each check run as
    a task (the probe loop has one virtual network, which cannot tell the probes apart)."""
    by_config = {c.probe: probes[c.name] for c in svc.checks}
    for probe in probes.values():
        probe.lean = False
    return Engine(config(tmp_path, svc), sinks={"rec": rec},
                  probe_factory=lambda probe_config: by_config[probe_config],
                  run_blocking=run_inline, wall=lambda: WALL_BASE + trio.current_time())


def kill_at(probe: FakeProbe, at: float, alive: bool = False) -> Script:
    """A script: at virtual time `at`, b9001 answers `alive` to `probe`."""

    async def script(_probe: FakeProbe) -> None:
        await trio.sleep_until(at)
        probe.alive[("127.0.0.1", 9001)] = alive

    return script


async def test_each_check_keeps_its_schedule_and_a_failure_names_it(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """`require: all`: tcp every 1s from 0, web every 2.5s from 1.25 (first probes spread
    over their intervals); web dies at 3, its probe at 3.75 fails and decides at once."""
    tcp, web, rec = FakeProbe(), FakeProbe(), TimedSink()
    engine = engine_for(tmp_path, composite(2), {"tcp": tcp, "web": web}, rec)
    await run_for(engine, 4.5, kill_at(web, 3.0), web)
    assert tcp.times(9001) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert web.times(9001) == [1.25, 3.75]
    assert [(t, e.to_state, e.reason) for t, u in rec.applied for e in u.events] == [
        (3.75, "down", "1 consecutive failure; last: web: connection refused "
                       "(1 of 2 passing, require all)")]
    backend = engine.state_document()["services"]["s"]["backends"][0]  # type: ignore[index]
    assert [(c["name"], c["ok"], c["error"]) for c in backend["checks"]] == [
        ("tcp", True, None), ("web", False, "connection refused")]


async def test_any_stays_up_while_one_check_passes(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """`require: any`: web dead from the start changes nothing while tcp passes; once tcp
    dies too, the first round of fresh failures takes the backend down."""
    tcp, web, rec = FakeProbe(), FakeProbe(), TimedSink()
    web.alive[("127.0.0.1", 9001)] = False
    engine = engine_for(tmp_path, composite(1), {"tcp": tcp, "web": web}, rec)
    await run_for(engine, 7.0, kill_at(tcp, 4.5), tcp)
    assert [(t, e.to_state) for t, u in rec.applied for e in u.events] == [(6.25, "down")]
    assert states(engine, "s") == {"b9001": ("down", 0)}


async def test_a_reload_to_one_probe_and_back(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A service moved from checks to its first check alone (and back) is probed by the new
    set at once: the kept check keeps its schedule, the other stops and starts again."""
    tcp, web, rec = FakeProbe(), FakeProbe(), TimedSink()
    svc = composite(2)
    single = dataclasses.replace(svc, checks=(), require=1)
    engine = engine_for(tmp_path, svc, {"tcp": tcp, "web": web}, rec)

    async def script(_probe: FakeProbe) -> None:
        await trio.sleep_until(2.5)
        await engine.reload(config(tmp_path, single))
        await trio.sleep_until(5.5)
        await engine.reload(config(tmp_path, svc))

    await run_for(engine, 7.9, script, tcp)
    assert tcp.times(9001) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert web.times(9001) == [1.25, 5.5]
    assert [e for _, u in rec.applied for e in u.events] == []


async def test_real_checks_in_the_probe_loop(
        http_server: Callable[..., Awaitable[HttpServer]], tmp_path: Path) -> None:
    """A tcp and an http check of one backend (answering 503) run in the probe loop:
    with `require: all` the backend goes down naming the http check, with `any` it stays
    up while /v1/state shows the http check failing."""
    busy = await http_server(status=503)
    checks = (CheckConfig("tcp", ProbeConfig("tcp", Timing(0.05, 0.05, 0.05, 0.05), TcpSpec())),
              CheckConfig("http", ProbeConfig("http", Timing(0.05, 0.05, 0.05, 0.05),
                                              HttpSpec())))
    base = service("all", [busy.port], breaker=ThresholdBreakerConfig(1, 1))
    every = dataclasses.replace(base, probe=checks[0].probe, checks=checks, require=2)
    anyone = dataclasses.replace(every, name="any", require=1)
    engine = Engine(config(tmp_path, every, anyone), sinks={"rec": RecordingSink()})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await until(lambda: len(engine.events_after(0)) >= 1 and all(
            b.checks[1].last is not None for svc in engine.services.values()
            for b in svc.backends))
        engine.stop()
    assert all(accepts(probe) for probe in engine.services["all"].probes)
    [event] = engine.events_after(0)
    assert (event.service, event.to_state) == ("all", "down")
    assert event.reason == ("1 consecutive failure; last: http: status 503 not in 2xx,3xx "
                            "(1 of 2 passing, require all)")
    backend = engine.state_document()["services"]["any"]["backends"][0]  # type: ignore[index]
    assert backend["state"] == "up"
    assert [(c["name"], c["ok"]) for c in backend["checks"]] == [("tcp", True), ("http", False)]
