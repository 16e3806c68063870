"""Self-suspicion in the engine (SPEC 11), on a virtual clock: held downs stay published
up, canaries release them, the mass-failure rule restores what it let through, service
events, /v1/state and precedence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trio
import trio.testing

from sentinel.config.model import CanaryConfig, Config, ProbeConfig, SuspectConfig, Timing
from sentinel.engine.engine import Engine
from tests.engine.drive import WALL_BASE, run_for, states, toggles
from tests.engine.fakes import FakeProbe, config, run_inline, service
from tests.sinks.fakes import TimedSink

CANARY_PORT = 9999
GW = CanaryConfig(name="gw", address=f"127.0.0.1:{CANARY_PORT}", host="127.0.0.1",
                  port=CANARY_PORT, probe=ProbeConfig("tcp", Timing(
                      interval=5.0, fast_interval=1.0, down_interval=5.0, timeout=0.5)))
PORTS = (9001, 9002, 9003, 9004)  # one backend in each of four services


def engine_for(tmp_path: Path, probe: FakeProbe, rec: TimedSink, *,
               canaries: tuple[CanaryConfig, ...] = (GW,),
               suspect: SuspectConfig | None = None, per_service: int = 1,
               min_up: int = 0) -> Engine:
    """Four services s9001.. with `per_service` backends each (b9001, b9101, ...), probed
    every second, max_fails 1, `min_up`; with the given canaries and suspect rule."""
    services = [service(f"s{p}", [p + 100 * i for i in range(per_service)], min_up=min_up)
                for p in PORTS]
    cfg: Config = replace(config(tmp_path, *services), canaries=canaries, suspect=suspect)
    return Engine(cfg, sinks={"rec": rec}, probe_factory=probe.factory(),
                  poller=probe.poller, run_blocking=run_inline,
                  wall=lambda: WALL_BASE + trio.current_time())


def down_events(rec: TimedSink) -> list[tuple[float, str]]:
    """(time applied, backend) of each published down."""
    return [(t, e.backend) for t, u in rec.applied for e in u.events if e.to_state == "down"]


def service_events(rec: TimedSink) -> list[tuple[str, str, str]]:
    """(service, from, to) of each service-level event, in order."""
    return [(e.service, e.from_state, e.to_state) for e in rec.events() if not e.backend]


def kill(*ports: int) -> list[tuple[int, bool]]:
    """Steps for `toggles`: these ports stop answering."""
    return [(p, False) for p in ports]


async def test_four_services_fail_at_once_nothing_drains_until_a_canary_passes(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """The checker's network fails at 2.1 (canary and all four backends): the first down
    asks the canary, which fails: suspect, every down held (published up), a `suspect`
    event per service. At 10.1 the canary answers again but the backends stay dead: the
    suspicion ends at the canary's next probe (fast_interval: 10.25), the held downs are
    re-probed and, once one more canary probe vouches for those failures, published
    (zero latencies here: all at 10.25)."""
    probe, rec = FakeProbe(), TimedSink()
    engine = engine_for(tmp_path, probe, rec)
    seen: dict[str, object] = {}

    async def look() -> None:
        await trio.sleep(9.0)
        seen["suspect"] = engine.state_document()["suspect"]
        seen["states"] = {p: states(engine, f"s{p}") for p in PORTS}

    steps = [(2.1, p, alive) for p, alive in kill(CANARY_PORT, *PORTS)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(look)
        await run_for(engine, 14.0, toggles(*steps, (10.1, CANARY_PORT, True)), probe)
    assert seen["suspect"] == {"since": "2023-11-14T22:13:22.250Z",
                               "reason": "every canary fails: gw (connection refused)"}
    assert seen["states"] == {p: {f"b{p}": ("up", 1)} for p in PORTS}
    events = service_events(rec)
    assert sorted(events[:4]) == [(f"s{p}", "normal", "suspect") for p in PORTS]
    assert sorted(events[4:]) == [(f"s{p}", "suspect", "normal") for p in PORTS]
    downs = down_events(rec)
    assert sorted(b for _, b in downs) == [f"b{p}" for p in PORTS]
    assert {t for t, _ in downs} == {10.25}
    assert all(e.reason == "1 failure within 10s; last: connection refused"
               for e in rec.events() if e.to_state == "down")
    assert engine.state_document()["suspect"] is None


async def test_network_back_with_backends_alive_publishes_nothing(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Blackholed from 2.1 to 6.1, then everything answers: the breakers came back, the
    held downs are dropped; the only events are the services' suspect and back."""
    probe, rec = FakeProbe(), TimedSink()
    engine = engine_for(tmp_path, probe, rec)
    steps = [(at, p, alive) for at, alive in ((2.1, False), (6.1, True))
             for p in (CANARY_PORT, *PORTS)]
    await run_for(engine, 12.0, toggles(*steps), probe)
    assert [e for e in rec.events() if e.backend] == []
    assert [to for _, _, to in service_events(rec)] == ["suspect"] * 4 + ["normal"] * 4
    assert {p: states(engine, f"s{p}") for p in PORTS} == {
        p: {f"b{p}": ("up", 1)} for p in PORTS}


async def test_a_single_down_waits_one_canary_round_trip(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """One backend dies (its probe at 2.25 fails after 0.1 s): the canary is asked at
    once and passes, so the down is published at 2.35, not at the canary's interval."""
    probe, rec = FakeProbe(fail_latency=0.1), TimedSink()
    engine = engine_for(tmp_path, probe, rec)
    await run_for(engine, 4.0, toggles((2.1, 9002, False)), probe)
    assert down_events(rec) == [(2.35, "b9002")]
    assert service_events(rec) == []
    canary_probes = [t for t, target in probe.calls if target.port == CANARY_PORT]
    assert canary_probes == [0.0, 2.35]


async def test_mass_failure_restores_what_it_let_through(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """No canaries, mass_failure 50%: the first two downs (2 of 4, at 2.25 and 2.5) are
    published; the third (2.75) makes sentinel suspect, the two come back up (`suspect:
    ...; restored`), and no down follows until max_suspect (5 s) ran out and the
    re-probes fail again."""
    probe, rec = FakeProbe(), TimedSink()
    rule = SuspectConfig(mass_failure=0.5, window=2.0, max_suspect=5.0)
    engine = engine_for(tmp_path, probe, rec, canaries=(), suspect=rule)
    await run_for(engine, 9.0, toggles(*((2.1, p, False) for p in PORTS)), probe)
    backend_events = [(t, e.backend, e.to_state, e.reason) for t, u in rec.applied
                      for e in u.events if e.backend]
    restored = "suspect: 3 of 4 backends in 3 services turned down within 2s; restored"
    assert backend_events[:4] == [
        (2.25, "b9002", "down", "1 failure within 10s; last: connection refused"),
        (2.5, "b9003", "down", "1 failure within 10s; last: connection refused"),
        (2.75, "b9002", "up", restored), (2.75, "b9003", "up", restored)]
    later = backend_events[4:]
    assert sorted(b for _, b, _, _ in later) == [f"b{p}" for p in PORTS]
    assert all(to == "down" and t == 7.75 for t, _, to, _ in later), later
    assert service_events(rec) == [
        *((f"s{p}", "normal", "suspect") for p in (9002, 9003, 9004, 9001)),
        *((f"s{p}", "suspect", "normal") for p in PORTS)]


async def test_no_panic_while_downs_are_held(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """min_up 1 on a service whose backends all fail while suspect: held downs count as
    healthy, so the panic guard has nothing to do (no panic event)."""
    probe, rec = FakeProbe(), TimedSink()
    engine = engine_for(tmp_path, probe, rec, per_service=2, min_up=1)
    steps = [(2.1, p, False) for p in (CANARY_PORT, *PORTS, *(p + 100 for p in PORTS))]
    await run_for(engine, 6.0, toggles(*steps), probe)
    assert {to for _, _, to in service_events(rec)} == {"suspect"}
    assert states(engine, "s9001") == {"b9001": ("up", 1), "b9101": ("up", 1)}


async def test_a_service_losing_all_its_backends_panics_and_nothing_is_held(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Canaries pass; both backends of s9002 (min_up 1) die at 2.1: the first down
    (2.25) is vouched for by the canary and published; the second (2.375) would leave
    none up, so the panic guard keeps it published up and says so. Sentinel does not
    suspect itself: no `suspect` event, nothing held."""
    probe, rec = FakeProbe(), TimedSink()
    engine = engine_for(tmp_path, probe, rec, per_service=2, min_up=1)
    await run_for(engine, 4.0, toggles((2.1, 9002, False), (2.1, 9102, False)), probe)
    assert [(t, e.service, e.backend, e.from_state, e.to_state) for t, u in rec.applied
            for e in u.events] == [(2.25, "s9002", "b9002", "up", "down"),
                                   (2.375, "s9002", "", "normal", "panic")]
    assert states(engine, "s9002") == {"b9002": ("down", 0), "b9102": ("up", 1)}
    assert engine.state_document()["suspect"] is None
    assert [b.config.name for svc in engine.services.values() for b in svc.backends
            if b.inputs.held] == []
    assert [t for t, target in probe.calls if target.port == CANARY_PORT] == [0.0, 2.25,
                                                                               2.375]


async def test_an_admin_override_wins_over_a_held_down(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """While suspect, a held backend an operator drains is published `drain`; `ready`
    brings back the hold (published up), not its breaker's down."""
    probe, rec = FakeProbe(), TimedSink()
    engine = engine_for(tmp_path, probe, rec)
    seen: list[dict[str, tuple[str, int]]] = []

    async def operator() -> None:
        await trio.sleep(4.0)
        await engine.set_override("s9001", "b9001", "drain")
        seen.append(states(engine, "s9001"))
        await engine.set_override("s9001", "b9001", "ready")
        seen.append(states(engine, "s9001"))

    steps = [(2.1, p, False) for p in (CANARY_PORT, *PORTS)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator)
        await run_for(engine, 5.0, toggles(*steps), probe)
    assert seen == [{"b9001": ("drain", 0)}, {"b9001": ("up", 1)}]


async def test_state_shows_suspect_only_when_configured(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """`suspect` is null in /v1/state while configured and calm, absent when neither
    canaries nor suspect is configured."""
    probe = FakeProbe()
    calm = engine_for(tmp_path / "a", probe, TimedSink())
    plain = engine_for(tmp_path / "b", probe, TimedSink(), canaries=())
    await run_for(calm, 0.5)
    await run_for(plain, 0.5)
    assert calm.state_document()["suspect"] is None
    assert "suspect" not in plain.state_document()



async def test_a_reload_keeps_the_suspicion_or_releases_what_it_held(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Reloaded while suspect with the same settings: still suspect, still held. Reloaded
    without canaries or suspect: nothing is held any more, the breakers' downs are
    published (reason `reload`), and /v1/state has no `suspect`."""
    probe, rec = FakeProbe(), TimedSink()
    engine = engine_for(tmp_path, probe, rec)
    seen: list[object] = []

    async def operator() -> None:
        await trio.sleep(4.0)
        await engine.reload(replace(engine.config))
        seen.append((engine.state_document()["suspect"] is not None,
                     states(engine, "s9001")))
        await engine.reload(replace(engine.config, canaries=()))
        seen.append(("suspect" in engine.state_document(), states(engine, "s9001")))

    steps = [(2.1, p, False) for p in (CANARY_PORT, *PORTS)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator)
        await run_for(engine, 5.0, toggles(*steps), probe)
    assert seen == [(True, {"b9001": ("up", 1)}), (False, {"b9001": ("down", 0)})]
    assert {e.reason for e in rec.events() if e.to_state == "down"} == {"reload"}
