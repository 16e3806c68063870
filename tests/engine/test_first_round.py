"""The engine's first probe round (what systemd's READY=1 waits for), on a virtual clock."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from tests.engine.drive import make_engine
from tests.engine.fakes import FakeProbe, config, service
from tests.sinks.fakes import TimedSink


async def test_first_round_ends_with_the_last_backends_first_result(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Backends start at 0, 0.5, 1 and 1.5 of a 2s interval; the last one's probe hangs
    0.3s, so the round is done at 1.8, not when its probe starts."""
    probe = FakeProbe(fail_latency=0.3)
    probe.alive[("127.0.0.1", 9004)] = False
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()},
                         service("s", [9001, 9002, 9003, 9004], interval=2.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with trio.fail_after(60):
            await engine.wait_first_round()
        assert trio.current_time() == 1.8
        engine.stop()


async def test_a_reload_that_removes_an_unprobed_backend_ends_the_round(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A backend removed before its first probe is no longer waited for; one added before
    the round ends is."""
    probe = FakeProbe()
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()},
                         service("s", [9001, 9002], interval=10.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await trio.sleep(1.0)  # 9001 probed at 0; 9002 due at 5
        await engine.reload(config(tmp_path, service("s", [9001, 9003], interval=10.0),
                                          sinks=("rec",)))
        with trio.fail_after(60):
            await engine.wait_first_round()
        assert [t.port for _, t in probe.calls] == [9001, 9003]
        engine.stop()
