"""Events reach durable sinks (outboxes) even across a crash between the state file
and the outbox: they are held in state.json until the sink has taken them."""

from __future__ import annotations

import json
from pathlib import Path

import trio
import trio.testing

from sentinel.engine.engine import Engine
from sentinel.sinks.base import DurableSink
from tests.engine.drive import run_for
from tests.engine.fakes import FakeProbe, Outboxish, config, run_inline, service


def held(state_dir: Path) -> list[int]:
    """Seqs of the events state.json still holds for durable sinks."""
    doc = json.loads((state_dir / "state.json").read_text())
    return [e["seq"] for e in doc["unacked"]]


async def test_durable_sink_gets_events_before_the_runner_and_they_are_released(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A down event is accepted by the durable sink, and state.json stops holding it by
    the end of a clean stop (else the next start hands it over again: a duplicate)."""
    sink = Outboxish()
    assert isinstance(sink, DurableSink)
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    engine = Engine(config(tmp_path, service("s", [9001])), sinks={"rec": sink},
                    probe_factory=probe.factory(), poller=probe.poller, run_blocking=run_inline)
    await run_for(engine, 1.5)
    assert [e.seq for e in sink.accepted] == [1]
    assert held(tmp_path) == []


async def test_events_a_durable_sink_missed_are_handed_over_at_the_next_start(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """accept fails (as a crash would interrupt it): the event stays in state.json and a
    new engine on the same state_dir hands it over, same id, and releases it."""
    first = Outboxish()
    first.broken = True
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    cfg = config(tmp_path, service("s", [9001]))
    engine = Engine(cfg, sinks={"rec": first}, probe_factory=probe.factory(), poller=probe.poller,
                    run_blocking=run_inline)
    await run_for(engine, 1.5)
    assert first.accepted == []
    assert held(tmp_path) == [1]
    lost_id = json.loads((tmp_path / "state.json").read_text())["unacked"][0]["id"]

    second = Outboxish()
    restarted = Engine(cfg, sinks={"rec": second}, probe_factory=probe.factory(),
                       poller=probe.poller,
                       run_blocking=run_inline)
    await run_for(restarted, 0.5)
    assert [(e.seq, e.id, e.to_state) for e in second.accepted] == [(1, lost_id, "down")]
    assert held(tmp_path) == []
    assert restarted.journal.seq == 1  # no new event: the backend was already down
