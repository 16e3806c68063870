"""GET /v1/state's rendering: the same document as `state_document`, following every
probe through per-backend fragments cached until the backend changes, and yielding to
the event loop while it renders; the timestamps it is full of, formatted fast and as
datetime formats them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from sentinel.engine import engine as engine_module
from sentinel.model import State
from sentinel.timefmt import rfc3339
from tests.engine.drive import make_engine
from tests.engine.fakes import FakeProbe, service
from tests.sinks.fakes import TimedSink


async def test_rendered_state_is_the_document_and_follows_each_probe(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """After each probe of a backend going down and of an admin drain, the rendered JSON
    equals `state_document()`; a backend nobody probed keeps its cached fragment."""
    probe = FakeProbe()
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()},
                         service("s", [9001, 9002], interval=1.0), service("t", [9003]))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        seen: list[str] = []
        for step in range(6):
            await trio.sleep(0.5)
            if step == 2:
                probe.alive[("127.0.0.1", 9001)] = False
            if step == 4:
                await engine.set_override("s", "b9002", "drain")
            rendered = json.loads(await engine.state_json())
            assert rendered == engine.state_document()
            seen.append(rendered["services"]["s"]["backends"][0]["state"])
        quiet = engine.services["t"].backends[0]
        fragment = quiet.rendered
        assert fragment is not None
        await engine.state_json()
        assert quiet.rendered is fragment  # not probed in between: not rendered again
        engine.stop()
    assert seen[0] == State.UP.value
    assert seen[-1] == State.DOWN.value


async def test_rendering_lets_other_tasks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              autojump_clock: trio.testing.MockClock) -> None:
    """With a render slice of 0 and chunks of one backend, rendering 50 backends yields
    to the event loop between backends: a task counting checkpoints runs meanwhile."""
    monkeypatch.setattr(engine_module, "RENDER_SLICE", 0.0)
    monkeypatch.setattr(engine_module, "CHUNK", 1)
    engine = make_engine(tmp_path, FakeProbe(), {"rec": TimedSink()},
                         service("s", list(range(9001, 9051))))
    turns = 0
    done = False

    async def count() -> None:
        nonlocal turns
        while not done:
            await trio.lowlevel.checkpoint()
            turns += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        await trio.lowlevel.checkpoint()
        await engine.state_json()
        done = True
    assert turns >= 49


@given(st.floats(min_value=0, max_value=4e9) | st.integers(0, 4_000_000_000).map(
    lambda s: s + 0.9999995))
def test_rfc3339_formats_as_datetime_does(unix: float) -> None:
    """The cached-second rfc3339 gives datetime's text for any time, the rounding to the
    microsecond (and into the next second) included."""
    expected = datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert rfc3339(unix) == expected
