"""Passive signals in the engine: a signal brings the backend's next probe forward (on
the per-task path on a virtual clock, in the probe loop against a real socket); with
`count: true` it is a failure for the breaker too, its source named in the reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import trio
import trio.testing

from sentinel.config.model import NginxBreakerConfig, PassiveConfig
from sentinel.engine.engine import Engine
from sentinel.passive.base import Signal
from sentinel.sinks.memory import RecordingSink
from tests.engine.drive import make_engine, run_for
from tests.engine.fakes import FakeProbe, config, service
from tests.probes.conftest import Serve, until
from tests.sinks.fakes import TimedSink

TIMED_OUT = Signal("s", "b9001", "nginx error log", "upstream timed out")


def signal_at(at: float, engine_box: list[Engine], *signals: Signal
              ) -> Callable[[FakeProbe], Awaitable[None]]:
    """A script sending `signals` to the engine at virtual time `at`."""
    async def script(probe: FakeProbe) -> None:
        await trio.sleep(at)
        engine_box[0].passive(signals)
    return script


async def test_a_signal_probes_at_once_then_the_cadence_resumes(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """interval 10s: a signal at 2.5 brings a probe at 2.5; the one after is due 10s
    later; a signal for a backend already due, unknown or down changes nothing."""
    probe = FakeProbe()
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()},
                         service("s", [9001, 9002], interval=10.0))
    unknown = Signal("s", "nope", "report", "x")
    await run_for(engine, 14.0, signal_at(2.5, [engine], TIMED_OUT, unknown), probe)
    assert probe.times(9001) == [0.0, 2.5, 12.5]
    assert probe.times(9002) == [5.0]


async def test_count_feeds_the_breaker_and_names_the_source(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """passive: {count: true}, max_fails 2: a passive failure and the failing probe it
    triggers take the backend down; the reason names the last, the probe's error."""
    probe, rec = FakeProbe(), TimedSink()
    probe.alive[("127.0.0.1", 9001)] = False
    svc = replace(service("s", [9001], interval=10.0,
                          breaker=NginxBreakerConfig(max_fails=2, fail_timeout=10.0)),
                  passive=PassiveConfig(count=True))
    (tmp_path / "state.json").write_text(  # saved up: the dead backend's probe at 0 fails
        '{"seq": 0, "backends": {"s": {"b9001": {"state": "up", "since": "x"}}}}')
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)
    await run_for(engine, 3.0, signal_at(0.5, [engine], TIMED_OUT), probe)
    [down] = rec.events()
    assert down.reason == "2 failures within 10s; last: passive: nginx error log: upstream " \
                          "timed out"
    assert rec.event_times() == [(0.5, 1)]


async def test_without_count_a_signal_alone_changes_no_verdict(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Default (count false): passive triggers, active confirms: a healthy backend's
    triggered probe passes, nothing is published."""
    probe, rec = FakeProbe(), TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec},
                         service("s", [9001], interval=10.0,
                                 breaker=NginxBreakerConfig(max_fails=1)))
    await run_for(engine, 3.0, signal_at(0.5, [engine], TIMED_OUT, TIMED_OUT), probe)
    assert probe.times(9001) == [0.0, 0.5]
    assert rec.events() == []


async def test_the_probe_loop_is_hurried_too(tmp_path: Path, serve: Serve) -> None:
    """A real tcp check in the probe loop (interval 30s) runs again at once on a signal."""
    async def accept(stream: trio.abc.Stream) -> None:
        await stream.aclose()

    port = await serve(accept)
    engine = Engine(config(tmp_path, service("s", [port], interval=30.0)),
                    sinks={"rec": RecordingSink()})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        [backend] = engine.services["s"].backends
        await until(lambda: backend.last_probe is not None)
        first = backend.last_probe
        engine.passive([Signal("s", f"b{port}", "report", "502")])
        await until(lambda: backend.last_probe is not first)
        assert backend.last_probe is not None
        assert backend.last_probe.ok
        engine.stop()
