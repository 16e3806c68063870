"""An engine running its lean probes in the probe loop publishes what an engine running
every probe as its own task (the test helper `PerTask`) publishes, against the same real
loopback servers; a reload moves the loop's checks as it moves probe tasks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from sentinel.config.model import BackendConfig, HttpSpec, ProbeConfig, Timing
from sentinel.engine.engine import Engine
from sentinel.model import ProbeResult
from sentinel.probes.base import Probe, Target
from sentinel.probes.exchange import Exchange, LeanProbe
from sentinel.probes.registry import make_probe
from sentinel.sinks.memory import RecordingSink
from tests.engine.fakes import PerTask, config, service
from tests.probes.conftest import HttpServer, Serve, silent, until

FAST = Timing(interval=0.1, fast_interval=0.1, down_interval=0.1, timeout=0.1)


class Counting:
    """A real lean probe that records the hosts checked through `check` (the loop follows
    `exchange` instead, so only checks run by tasks are counted)."""

    def __init__(self, inner: LeanProbe, checked: list[str]) -> None:
        self.inner = inner
        self.lean = inner.lean
        self.timeout = inner.timeout
        self.resolver = inner.resolver
        self.checked = checked

    def exchange(self, target: Target) -> Exchange:
        """The inner probe's exchange."""
        return self.inner.exchange(target)

    async def check(self, target: Target) -> ProbeResult:
        """The inner probe's check, counted."""
        self.checked.append(target.host)
        return await self.inner.check(target)

    async def aclose(self) -> None:
        """Close the inner probe."""
        await self.inner.aclose()


def wrapped(loop: bool, checked: list[str]) -> Callable[[ProbeConfig], Probe]:
    """A probe factory: real probes, counted, in the loop (`loop`) or each as a task."""
    def make(config: ProbeConfig) -> Probe:
        probe = make_probe(config)
        assert isinstance(probe, LeanProbe)
        return Counting(probe, checked) if loop else PerTask(probe, checked)
    return make


async def run_engine(state_dir: Path, loop: bool, web_ports: list[int], db_port: int,
                     refused: int) -> tuple[dict[str, tuple[str, bool, str]], list[str], list[str]]:
    """Run an engine for 0.6 s: each backend's (state, last ok, last error), the events
    as text, and the hosts checked through tasks."""
    web = replace(service("web", [*web_ports, refused]),
                  probe=ProbeConfig("http", FAST, HttpSpec(path="/healthz")))
    db = service("db", [db_port, refused], interval=0.1, timeout=0.1)
    named = BackendConfig("named", f"localhost:{db_port}", "localhost", db_port)
    db = replace(db, backends=(*db.backends, named))
    checked: list[str] = []
    rec = RecordingSink()
    engine = Engine(config(state_dir, web, db), sinks={"rec": rec},
                    probe_factory=wrapped(loop, checked))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await trio.sleep(0.6)
        engine.stop()
    states = {}
    for name, svc in engine.services.items():
        for b in svc.backends:
            assert b.last_probe is not None
            states[f"{name}/{b.config.name}"] = (b.published[0].value, b.last_probe.ok,
                                                b.last_probe.error)
    events = sorted(f"{e.service}/{e.backend} {e.from_state}->{e.to_state}: {e.reason}"
                    for update in rec.updates for e in update.events)
    return states, events, checked


async def test_engine_publishes_the_same_with_and_without_the_loop(
        serve: Serve, http_server: Callable[..., Awaitable[HttpServer]], refused_port: int,
        tmp_path: Path) -> None:
    """Same states, last results and events on both paths; the loop engine checks every
    backend in the loop, the host-name one too."""
    ok, busy = await http_server(), await http_server(status=503)
    db_port = await serve(silent)
    ports = [ok.port, busy.port]
    in_loop = await run_engine(tmp_path / "loop", True, ports, db_port, refused_port)
    by_task = await run_engine(tmp_path / "tasks", False, ports, db_port, refused_port)
    assert in_loop[:2] == by_task[:2]
    states, events, _ = in_loop
    assert {k: v[0] for k, v in states.items()} == {
        f"web/b{ok.port}": "up", f"web/b{busy.port}": "down", f"web/b{refused_port}": "down",
        f"db/b{db_port}": "up", f"db/b{refused_port}": "down", "db/named": "up"}
    assert f"db/b{refused_port} up->down: 1 failure within 10s; last: connection refused" in events
    assert in_loop[2] == []  # no check ran as a task
    assert {"127.0.0.1", "localhost"} <= set(by_task[2])


async def test_reload_moves_groups_in_the_loop(serve: Serve, tmp_path: Path) -> None:
    """A reload stops the loop's checks of a removed backend, starts the added one's,
    and leaves a kept backend's place in the schedule alone."""
    kept_port, gone_port, new_port = [await serve(silent) for _ in range(3)]
    before = config(tmp_path, service("db", [kept_port, gone_port], interval=0.1, timeout=0.1))
    after = config(tmp_path, service("db", [kept_port, new_port], interval=0.1, timeout=0.1))
    engine = Engine(before, sinks={"rec": RecordingSink()})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await trio.sleep(0.3)
        kept, gone = engine.services["db"].backends
        group = next(g for g in engine.groups.values() if g.members == [kept.checks[0]])
        await engine.reload(after)
        assert engine.services["db"].backends[0] is kept
        # the same group, never re-added: it keeps its place in the schedule
        assert next(g for g in engine.groups.values() if kept.checks[0] in g.members) is group
        assert gone.last_probe is not None
        last_gone = gone.last_probe.time
        await trio.sleep(0.3)
        engine.stop()
    added = engine.services["db"].backends[1]
    assert added.config.port == new_port
    assert added.last_probe is not None
    assert added.last_probe.ok
    assert kept.last_probe is not None
    assert kept.last_probe.time > last_gone
    assert gone.last_probe.time == last_gone  # no check of it since the reload



@pytest.mark.parametrize("loop", [True, False])
async def test_a_probe_that_raises_fails_its_backend_only(
        http_server: Callable[..., Awaitable[HttpServer]], tmp_path: Path, loop: bool) -> None:
    """An http probe whose header cannot be encoded (built past config validation) fails
    its backend with an ERROR, in the loop and in a task, while the engine goes on
    probing the other service."""
    ok = await http_server()
    bad = replace(service("bad", [ok.port]),
                  probe=ProbeConfig("http", FAST, HttpSpec(headers=(("X-Price", "10 \u20ac"),))))
    good = service("good", [ok.port], interval=0.1, timeout=0.1)
    engine = Engine(config(tmp_path, bad, good), sinks={"rec": RecordingSink()},
                    probe_factory=wrapped(loop, []))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        broken, fine = (engine.services[name].backends[0] for name in ("bad", "good"))
        await until(lambda: broken.last_probe and fine.last_probe and not fine.fails)
        checks = engine.statistics().probes
        await until(lambda: engine.statistics().probes >= checks + 4)  # probing goes on
        engine.stop()
    assert broken.last_probe is not None
    assert broken.last_probe.error.startswith("probe error: UnicodeEncodeError")
    assert fine.last_probe is not None
    assert fine.last_probe.ok
