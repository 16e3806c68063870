"""The stream hub on a MockClock: coalesced state messages, heartbeats, resume without gaps
or repeats, the cap, and clients that fall behind are dropped without slowing the engine."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import trio
import trio.testing

from sentinel.config.model import Config
from sentinel.engine.engine import Engine
from sentinel.engine.streamhub import HEARTBEAT, StreamLimits, Subscription
from sentinel.sinks.memory import RecordingSink
from tests.engine.fakes import FakeProbe, config, run_inline, service

Message = tuple[float, str, dict[str, object]]  # virtual time, kind, data


def parse(batch: list[bytes]) -> list[tuple[str, dict[str, object]]]:
    """(kind, data) per message of a batch; a heartbeat is ("heartbeat", {})."""
    out: list[tuple[str, dict[str, object]]] = []
    for raw in batch:
        if raw == HEARTBEAT:
            out.append(("heartbeat", {}))
            continue
        fields = dict(line.split(": ", 1) for line in raw.decode().strip().splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def engine_for(tmp_path: Path, cfg: Config, probe: FakeProbe | None = None) -> Engine:
    """An engine over `cfg` with a recording sink, disk writes inline (MockClock)."""
    probe = probe or FakeProbe()
    return Engine(cfg, sinks={"rec": RecordingSink()},
                  probe_factory=probe.factory(), poller=probe.poller, run_blocking=run_inline)


@asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[trio.Nursery]:
    """The engine (and so its hub) running until the block ends."""
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield nursery
        engine.stop()


async def collect(sub: Subscription, until: float) -> list[Message]:
    """Every message `sub` gets until virtual time `until`."""
    got: list[Message] = []
    with trio.move_on_at(until):
        while batch := await sub.next_batch():
            got += [(trio.current_time(), kind, data) for kind, data in parse(batch)]
    return got


def subscribe(engine: Engine, after: int | None = None) -> Subscription:
    """A subscription that must be granted."""
    opened = engine.hub.subscribe(after)
    assert opened is not None
    return opened[0]


async def test_state_messages_are_coalesced_and_carry_only_what_moved(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Probed ten times a second, a service gets a `state` message at most every 0.5 s;
    a service whose probes are an hour apart gets none until an override moves one
    backend, and then a message holding that backend alone."""
    engine = engine_for(tmp_path, config(tmp_path, service("busy", [9001, 9002], interval=0.1),
                                         service("quiet", [9101, 9102], interval=3600)))
    async with running(engine):
        await trio.sleep(1)
        sub = subscribe(engine)
        start = trio.current_time()
        got = await collect(sub, start + 3)
        await engine.set_override("quiet", "b9102", "drain")
        later = await collect(sub, trio.current_time() + 1)
    busy = [t for t, kind, data in got if kind == "state" and data["service"] == "busy"]
    assert 5 <= len(busy) <= 6
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(busy))
    assert not [d for _, kind, d in got if kind == "state" and d["service"] == "quiet"]
    quiet = [d for _, kind, d in later if kind == "state" and d["service"] == "quiet"]
    assert len(quiet) == 1
    assert (quiet[0]["full"], quiet[0]["up"], quiet[0]["total"]) == (False, 1, 2)
    assert [(b["name"], b["state"]) for b in quiet[0]["backends"]] == [  # type: ignore[attr-defined]
        ("b9102", "drain")]
    assert [d["seq"] for _, kind, d in later if kind == "event"] == [1]


async def test_a_heartbeat_comment_comes_every_15_seconds(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """With nothing to say, `next_batch` answers a heartbeat at 15 s and 30 s exactly."""
    engine = engine_for(tmp_path, config(tmp_path, service("web", [9001])))
    sub = subscribe(engine)
    start = trio.current_time()
    beats = []
    for _ in range(2):
        assert await sub.next_batch() == [HEARTBEAT]
        beats.append(trio.current_time() - start)
    assert beats == [15.0, 30.0]


async def test_resume_sends_held_events_once_then_live_ones(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """subscribe(after=1) hands over events 2 and 3 from the journal; a late publish of 3
    is not sent again; event 4 arrives live; after=None hands over nothing."""
    engine = engine_for(tmp_path, config(tmp_path, service("web", [9001, 9002])))
    for action in ("drain", "ready", "maint"):
        await engine.set_override("web", "b9001", action)
    opened = engine.hub.subscribe(1)
    assert opened is not None
    sub, backlog = opened
    assert [e.seq for e in backlog] == [2, 3]
    live = engine.hub.subscribe(None)
    assert live is not None
    assert live[1] == []
    engine.hub.published(engine.events_after(2))  # 3 again, as a commit still in flight would
    await engine.set_override("web", "b9002", "drain")
    assert [d["seq"] for kind, d in parse(await sub.next_batch()) if kind == "event"] == [4]
    assert [d["seq"] for kind, d in parse(await live[0].next_batch()) if kind == "event"] == [
        3, 4]


async def test_streams_are_capped(tmp_path: Path, autojump_clock: trio.testing.MockClock
                                  ) -> None:
    """Past max_streams subscribe says no; a slot comes back when a stream ends."""
    engine = engine_for(tmp_path, config(tmp_path, service("web", [9001])))
    engine.hub.limits = StreamLimits(max_streams=2)
    first, _ = subscribe(engine), subscribe(engine)
    assert engine.hub.subscribe(None) is None
    engine.hub.unsubscribe(first)
    assert engine.hub.subscribe(None) is not None


async def test_a_client_that_falls_behind_is_dropped_and_nobody_waits(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A subscriber that reads nothing is dropped at its queue limit (what it had queued
    is thrown away, its stream ends); every override still commits at once and a
    subscriber that reads gets every event."""
    engine = engine_for(tmp_path, config(tmp_path, service("web", [9001])))
    engine.hub.limits = StreamLimits(max_queued_messages=5)
    stuck, reader = subscribe(engine), subscribe(engine)
    seen: list[object] = []
    start = trio.current_time()
    for i in range(20):
        await engine.set_override("web", "b9001", "drain" if i % 2 == 0 else "ready")
        seen += [d["seq"] for kind, d in parse(await reader.next_batch()) if kind == "event"]
    assert trio.current_time() == start  # nothing waited on the stuck client
    assert seen == list(range(1, 21))
    assert (stuck.dropped, stuck.closed, engine.hub.dropped, engine.hub.streams) == (
        True, True, 1, 1)
    assert await stuck.next_batch() == []


async def test_stopping_the_engine_ends_every_stream_and_refuses_new_ones(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """When the engine stops its hub closes: a stream gets what was queued, then ends."""
    engine = engine_for(tmp_path, config(tmp_path, service("web", [9001])))
    async with running(engine):
        sub = subscribe(engine)
        await engine.set_override("web", "b9001", "drain")
    assert [kind for kind, _ in parse(await sub.next_batch())][:1] == ["event"]
    while await sub.next_batch():
        pass
    assert engine.hub.subscribe(None) is None


async def test_reload_sends_removed_services_and_full_entries_for_changed_membership(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A reload that drops a service and adds a backend to another: a `removed` message for
    the first, a `full` message listing every backend of the second."""
    cfg = config(tmp_path, service("web", [9001]), service("old", [9201]))
    engine = engine_for(tmp_path, cfg)
    async with running(engine):
        sub = subscribe(engine)
        await engine.reload(replace(cfg, services=(service("web", [9001, 9002]),)))
        got = await collect(sub, trio.current_time() + 1)
    states = [d for _, kind, d in got if kind == "state"]
    assert {"service": "old", "removed": True} in states
    web = next(d for d in states if d["service"] == "web" and d["full"])
    assert [b["name"] for b in web["backends"]] == ["b9001", "b9002"]  # type: ignore[attr-defined]
