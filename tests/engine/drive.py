"""Driving an Engine on the virtual clock: build one over a FakeProbe, run it for a
while beside a script that toggles backends, read what it published."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import trio

from sentinel.config.model import ServiceConfig
from sentinel.engine.engine import Engine
from sentinel.sinks.base import Sink
from tests.engine.fakes import FakeProbe, config, run_inline

Script = Callable[[FakeProbe], Awaitable[None]]
WALL_BASE = 1_700_000_000.0


def make_engine(state_dir: Path, probe: FakeProbe, sinks: Mapping[str, Sink],
                *services: ServiceConfig) -> Engine:
    """An Engine over FakeProbe whose wall clock follows the virtual clock."""
    cfg = config(state_dir, *services, sinks=tuple(sinks))
    return Engine(cfg, sinks=sinks, probe_factory=probe.factory(),
                  poller=probe.poller, run_blocking=run_inline,
                  wall=lambda: WALL_BASE + trio.current_time())


async def run_for(engine: Engine, seconds: float, script: Script | None = None,
                  probe: FakeProbe | None = None) -> None:
    """Run `engine` (and `script`, if any) for `seconds` of virtual time, then stop it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        if script is not None:
            assert probe is not None
            nursery.start_soon(script, probe)
        await trio.sleep(seconds)
        engine.stop()
        nursery.cancel_scope.deadline = trio.current_time() + 60  # drain, but not forever


def toggles(*steps: tuple[float, int, bool]) -> Script:
    """A script setting `alive[127.0.0.1:port]` at the given virtual times."""

    async def script(probe: FakeProbe) -> None:
        start = trio.current_time()
        for at, port, alive in steps:
            await trio.sleep_until(start + at)
            probe.alive[("127.0.0.1", port)] = alive

    return script


def states(engine: Engine, name: str) -> dict[str, tuple[str, int]]:
    """Published (state, weight) per backend from the state document."""
    doc = engine.state_document()["services"]
    assert isinstance(doc, dict)
    return {b["name"]: (b["state"], b["weight"]) for b in doc[name]["backends"]}
