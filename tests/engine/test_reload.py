"""Reloading a running engine (virtual clock): what is kept, what changes, what is refused;
and a real `sentinel run` that survives every file the loader can be handed."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.cluster.config import ClusterConfig
from sentinel.config.model import Config, ThresholdBreakerConfig
from sentinel.engine import reload
from sentinel.engine.engine import Engine
from sentinel.model import State
from sentinel.sinks.memory import RecordingSink
from tests.e2e.helpers import Processes, run_cli, wait_until
from tests.e2e.site import Site, make_site, start_backends
from tests.e2e.site import states as api_states
from tests.engine.drive import make_engine, run_for, states, toggles
from tests.engine.fakes import FakeProbe, config, service
from tests.sinks.fakes import TimedSink

GOOD = """\
version: 1
state_dir: {state}
sinks:
  rec: {{type: file, path: {state}/doc.json}}
defaults:
  probe: {{type: tcp, interval: 1s}}
services:
  s:
    backends: [{{name: b9001, address: "127.0.0.1:9001"}}]
    sinks: [rec]
  t:
    backends: ["127.0.0.1:9004"]
    sinks: [rec]
"""
BAD = """\
version: 1
services:
  s:
    backends: ["127.0.0.1:70000"]
    probe: {type: tcp, interval: soon}
"""


async def test_unchanged_backends_keep_state_and_schedule_new_ones_are_spread(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """s [9001, 9002] -> s [9002, 9003] + t [9004] at 2.25: b9002 (down) is the same runtime,
    keeps `since` and its next probe at fail_timeout's end (11.5), no event; b9001 stops;
    b9003 and b9004 start at 2.25 and 2.75; t's view reaches the sink at once."""
    probe, rec = FakeProbe(), TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, service("s", [9001, 9002]))
    kept: list[object] = []

    async def script(probe: FakeProbe) -> None:
        await toggles((0.75, 9002, False))(probe)
        await trio.sleep(1.5)  # to 2.25
        kept.append(engine.services["s"].backends[1])
        kept.append(engine.services["s"].backends[1].since)
        await engine.reload(config(tmp_path, service("s", [9002, 9003]),
                                          service("t", [9004])))

    await run_for(engine, 11.9, script, probe)
    b9002 = engine.services["s"].backends[0]
    assert (b9002, b9002.since) == tuple(kept)
    assert probe.times(9001) == [0.0, 1.0, 2.0]
    assert probe.times(9002) == [0.5, 1.5, 11.5]
    assert probe.times(9003)[:2] == [2.25, 3.25]
    assert probe.times(9004)[:2] == [2.75, 3.75]
    assert [(e.seq, e.backend, e.to_state) for e in rec.events()] == [(1, "b9002", "down")]
    assert next(t for t, u in rec.applied if u.view.service == "t") == 2.25
    assert states(engine, "s") == {"b9002": ("down", 0), "b9003": ("up", 1)}
    assert list(engine.services) == ["s", "t"]


async def test_changed_breaker_and_probe_settings_take_effect_from_the_current_verdict(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """threshold fall 3 -> fall 1 and interval 1s -> 0.5s at 1.5: the next probe keeps its
    time (2.0), then every 0.5s; a death at 3.2 is down at the first failure (3.5)."""
    probe, rec = FakeProbe(), TimedSink()
    old = service("s", [9001], interval=1.0, breaker=ThresholdBreakerConfig(rise=2, fall=3))
    new = service("s", [9001], interval=0.5, breaker=ThresholdBreakerConfig(rise=1, fall=1))
    engine = make_engine(tmp_path, probe, {"rec": rec}, old)

    async def script(probe: FakeProbe) -> None:
        await trio.sleep(1.5)
        await engine.reload(config(tmp_path, new))
        await toggles((1.7, 9001, False))(probe)  # at 3.2

    await run_for(engine, 3.9, script, probe)
    assert probe.times(9001)[:6] == [0.0, 1.0, 2.0, 2.5, 3.0, 3.5]
    assert [(t, e.to_state) for t, u in rec.applied for e in u.events] == [(3.5, "down")]


async def test_a_backend_given_a_new_address_starts_afresh_and_any_change_is_an_event(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """state.json from a previous run has b9001 down; this run finds it up (event 2). A reload
    moving b9001 to :9005 does not bring back that stale verdict (no view shows it down);
    b9002, down now, moved to a live :9006 is published up at once with a `reload` event."""
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9001)] = False
    svc = service("s", [9001, 9002])
    await run_for(make_engine(tmp_path, probe, {"rec": TimedSink()}, svc), 0.4)
    probe.alive.update({("127.0.0.1", 9001): True, ("127.0.0.1", 9002): False})
    rec = TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)
    moved = replace(svc, backends=tuple(
        replace(b, address=f"127.0.0.1:{b.port + 4}", port=b.port + 4) for b in svc.backends))

    async def script(_probe: FakeProbe) -> None:
        await trio.sleep(1.75)
        await engine.reload(config(tmp_path, moved))

    start = trio.current_time()
    await run_for(engine, 2.9, script, probe)
    assert [(round(t - start, 2), e.seq, e.backend, e.from_state, e.to_state, e.reason)
            for t, u in rec.applied for e in u.events] == [
        (0.0, 2, "b9001", "down", "up", "1/1 trial probes passed"),
        (0.5, 3, "b9002", "up", "down", "1 failure within 10s; last: connection refused"),
        (1.75, 4, "b9002", "down", "up", "reload")]
    assert [u.view.backends[0].state for _, u in rec.applied[1:]] == [State.UP] * 3
    assert states(engine, "s") == {"b9001": ("up", 1), "b9002": ("up", 1)}


async def test_an_override_stays_when_its_backend_gets_a_new_address(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """b9001 in maint, moved to :9005 by a reload: still maint, no event."""
    probe, rec = FakeProbe(), TimedSink()
    svc = service("s", [9001])
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)
    moved = replace(svc, backends=(replace(svc.backends[0], address="127.0.0.1:9005",
                                           port=9005),))

    async def script(_probe: FakeProbe) -> None:
        await trio.sleep(0.5)
        await engine.set_override("s", "b9001", "maint")
        await trio.sleep(1.0)
        await engine.reload(config(tmp_path, moved))

    await run_for(engine, 2.9, script, probe)
    assert [(e.seq, e.to_state) for e in rec.events()] == [(1, "maint")]
    assert states(engine, "s") == {"b9001": ("maint", 0)}
    assert probe.times(9005) == [1.5, 2.5]


async def test_reload_from_a_good_file_applies_it(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """reload_from_file with a valid file returns no errors; the kept backend keeps its
    schedule, the new service's backend starts at once. (The file is read in a worker
    thread; the virtual clock is held still meanwhile, or it would jump ahead.)"""
    path = tmp_path / "sentinel.yaml"
    path.write_text(GOOD.format(state=tmp_path))
    probe, rec = FakeProbe(), TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, service("s", [9001]))
    errors: list[list[str]] = []

    async def script(_probe: FakeProbe) -> None:
        await trio.sleep(1.5)
        autojump_clock.autojump_threshold = math.inf
        errors.append(await engine.reload_from_file(str(path)))
        autojump_clock.autojump_threshold = 0

    await run_for(engine, 2.9, script, probe)
    assert errors == [[]]
    assert engine.config.path == str(path)
    assert list(engine.services) == ["s", "t"]
    assert probe.times(9001) == [0.0, 1.0, 2.0]  # b9001 kept its place in the schedule
    assert probe.times(9004) == [1.5, 2.5]


@pytest.mark.parametrize(("text", "expected"), [
    (BAD, ["{path}:4:16: services.s.backends[0]: port must be 1..65535, got 70000",
           "{path}:5:34: services.s.probe.interval: expected a duration such as 250ms, 2s, "
           "1m, 1h or a number of seconds, got 'soon'"]),
    (None, ["{path}: cannot read: No such file or directory"]),
])
async def test_invalid_or_missing_file_is_refused_with_its_errors_and_changes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str | None,
        expected: list[str]) -> None:
    """reload_from_file returns file:line:col errors (as `sentinel check` prints them), logs
    each, and leaves the engine's config and services as they were."""
    path = tmp_path / "new.yaml"
    if text is not None:
        path.write_text(text)
    cfg = config(tmp_path, service("s", [9001]))
    probe = FakeProbe()
    engine = Engine(cfg, sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                    poller=probe.poller)
    services = dict(engine.services)
    with caplog.at_level(logging.ERROR, logger="sentinel.engine.reload"):
        errors = await engine.reload_from_file(str(path))
    assert errors == [e.format(path=path) for e in expected]
    assert [r.getMessage() for r in caplog.records] == [
        f"reload refused, keeping the running config: {e}" for e in errors]
    assert engine.config is cfg
    assert engine.services == services
    assert engine.services["s"].backends[0].published == (State.UP, 1)


def release(fifo: Path) -> None:
    """Wake whoever is blocked opening `fifo` to read (and let them read its end): open and
    close its write end. Nothing to do when nobody has it open."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def release_after(fifo: Path, seconds: float) -> None:
    """`release(fifo)` after `seconds`, and again every half second until cancelled: a
    reload that never gives up fails its test, and does not hang it."""
    await trio.sleep(seconds)
    while True:
        release(fifo)
        await trio.sleep(0.5)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
async def test_a_path_that_is_not_a_regular_file_is_refused_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    """A FIFO (opening it would block until written to), a directory or a device where the
    config was: refused with why, the running config kept."""
    path, what = {"fifo": (tmp_path / "live.yaml", "a FIFO"),
                  "directory": (tmp_path / "live.yaml", "a directory"),
                  "device": (Path("/dev/null"), "a character device")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    cfg = config(tmp_path, service("s", [9001]))
    probe = FakeProbe()
    engine = Engine(cfg, sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                    poller=probe.poller)
    errors: list[str] = []
    with caplog.at_level(logging.ERROR, logger="sentinel.engine.reload"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(release_after, path, 30.0)
            errors = await engine.reload_from_file(str(path))
            nursery.cancel_scope.cancel()
    error = f"{path}: not a regular file ({what}); a reload reads only regular files"
    assert errors == [error]
    assert [r.getMessage() for r in caplog.records] == [
        f"reload refused, keeping the running config: {error}"]
    assert engine.config is cfg


async def test_a_load_stuck_in_a_fifo_is_given_up_and_later_reloads_work(
        tmp_path: Path, autojump_clock: trio.testing.MockClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A load blocked reading a FIFO (as for a token_file that is one) is given up after
    LOAD_TIMEOUT and the next reload applies; stuck threads past MAX_STUCK_LOADS make a
    reload refused at once, until they end. (Virtual time runs at the real rate meanwhile:
    the timeout is the thing tested.)"""
    fifo, stuck, good = tmp_path / "token", tmp_path / "stuck.yaml", tmp_path / "good.yaml"
    os.mkfifo(fifo)
    stuck.write_text(GOOD.format(state=tmp_path))
    good.write_text(GOOD.format(state=tmp_path))
    real = reload.load_config

    def load_config(path: str) -> Config:
        if path == str(stuck):
            fifo.read_bytes()  # blocks until something opens the FIFO to write
        return real(path)

    monkeypatch.setattr(reload, "load_config", load_config)
    monkeypatch.setattr(reload, "LOAD_TIMEOUT", 1.0)
    monkeypatch.setattr(reload, "MAX_STUCK_LOADS", 1)
    probe = FakeProbe()
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()}, service("s", [9001]))
    results: list[list[str]] = []
    services: list[list[str]] = []

    async def script(_probe: FakeProbe) -> None:
        await trio.sleep(1.5)
        autojump_clock.autojump_threshold = math.inf
        autojump_clock.rate = 1.0
        async with trio.open_nursery() as watchdog:
            watchdog.start_soon(release_after, fifo, 30.0)
            results.append(await engine.reload_from_file(str(stuck)))
            results.append(await engine.reload_from_file(str(good)))
            services.append(list(engine.services))
            results.append(await engine.reload_from_file(str(stuck)))
            began = trio.current_time()
            results.append(await engine.reload_from_file(str(good)))  # both threads stuck
            results.append([f"{trio.current_time() - began < 0.5}"])
            release(fifo)
            for _ in range(400):  # once the stuck threads are gone (20s at most), it works
                errors = await engine.reload_from_file(str(good))
                if not errors:
                    break
                await trio.sleep(0.05)
            results.append(errors)
            watchdog.cancel_scope.cancel()
        autojump_clock.rate = 0.0
        autojump_clock.autojump_threshold = 0

    try:
        await run_for(engine, 600.0, script, probe)
    finally:
        release(fifo)
    timed_out = (f"{stuck}: not loaded within 1s: reading it, or a file it names "
                 f"(token_file), blocked (a FIFO? a hung file system?)")
    refused = (f"{good}: not read: earlier reloads are still blocked reading files (1 at "
               f"most); restart sentinel to free them")
    assert results == [[timed_out], [], [timed_out], [refused], ["True"], []]
    assert services == [["s", "t"]]


async def test_a_file_read_while_stopping_is_not_applied(tmp_path: Path) -> None:
    """A reload whose file was read once `stop()` had come changes nothing: sinks are
    draining and probing is over."""
    path = tmp_path / "sentinel.yaml"
    path.write_text(GOOD.format(state=tmp_path))
    cfg = config(tmp_path, service("s", [9001]))
    probe = FakeProbe()
    engine = Engine(cfg, sinks={"rec": RecordingSink()}, probe_factory=probe.factory(),
                    poller=probe.poller)
    services = dict(engine.services)
    engine.stop()
    assert await engine.reload_from_file(str(path)) == [
        f"{path}: not applied: sentinel is stopping"]
    assert (engine.config, engine.services) == (cfg, services)


def test_cluster_settings_but_the_hash_are_restart_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Of `cluster:` a reload applies the file's hash alone: a new hash is no warning; new
    endpoints, lease, probers (or a section added or removed) warn that they wait for a
    restart."""
    base = config(tmp_path, service("s", [9001]))
    member = ClusterConfig(endpoints=("http://127.0.0.1:2379",), node="n1",
                           config_sha256="c0ffee")
    old = replace(base, cluster=member)
    changed = [replace(member, config_sha256="beef"),
               replace(member, config_sha256="beef", lease_ttl=9),
               replace(member, endpoints=("http://127.0.0.2:2379",)),
               replace(member, probers=2), None]
    warned = []
    for cluster in changed:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sentinel.engine.reload"):
            reload.restart_only(old, replace(base, cluster=cluster))
        warned.append([r.getMessage() for r in caplog.records])
    restart = ("cluster changes (other than the file's hash) take effect after a restart: "
               "this member keeps its cluster settings until then")
    assert warned == [[], [restart], [restart], [restart], [restart]]


# Mostly appended under an `x-` key (free for anchors), so each file's only fault is its own.
HOSTILE: dict[str, bytes | tuple[bytes, bytes]] = {
    "not-utf8": b'x-junk: "caf\xe9"\n',
    "control-character": b'x-junk: "a\x07b"\n',
    "merge-of-a-scalar": b"x-junk: {<<: 5}\n",
    "bad-tag": b"x-junk: !!int one\n",
    "invalid-date": (b"shutdown_timeout: 5s", b"shutdown_timeout: 2024-13-45"),
    "recursive-alias": b"x-junk: &a [*a]\n",
    "deep-nesting": b"x-junk: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "alias-bomb": b"x-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + b"".join(
        f"x-{i}: &x{i} [{', '.join(['*a' if i == 0 else f'*x{i - 1}'] * 10)}]\n".encode()
        for i in range(9)),
    "huge-integer": b"x-junk: 1" + b"0" * 5000 + b"\n",
}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Processes started by the test, killed and reaped by PID when it ends."""
    (tmp_path / "logs").mkdir()
    procs = Processes(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.close()


@pytest.mark.e2e
def test_a_running_instance_survives_every_hostile_reload(
        processes: Processes, tmp_path: Path) -> None:
    """For each hostile file: POST /v1/reload answers 400 with exactly `sentinel check`'s
    errors (exit 2) and SIGHUP logs them; the process lives on, keeps its config and still
    takes a death and a good reload afterwards."""
    site: Site = make_site(tmp_path)
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    proc, api = site.start(processes)
    wait_until(lambda: api_states(api, "web") == {"web1": "up", "web2": "up"}, what="both up")
    good = site.config.read_bytes()
    log = processes.log("sentinel")
    for name, junk in HOSTILE.items():
        site.config.write_bytes(good.replace(*junk) if isinstance(junk, tuple) else good + junk)
        answer = api.post("/v1/reload")
        check = run_cli("check", "-c", str(site.config))
        assert (answer.status_code, check.returncode) == (400, 2), (name, answer.text)
        assert answer.json()["errors"] == check.stderr.splitlines(), name
        [error] = answer.json()["errors"]
        assert error.startswith(f"{site.config}:"), error
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda e=error: log.read_text().count(e) >= 2,  # type: ignore[misc]
                   what=f"the SIGHUP reload of {name} to be refused")
        assert proc.poll() is None, name
    assert "Traceback" not in log.read_text()
    processes.kill(backends["web2"])
    wait_until(lambda: api_states(api, "web") == {"web1": "up", "web2": "down"},
               what="the old config to act on a death")
    site.write({"web": ["web1"]})
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: api_states(api, "web") == {"web1": "up"}, what="a good reload")


class BindingSink(TimedSink):
    """A TimedSink that keeps views across services: records every `bind`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.bound: list[frozenset[str]] = []

    def bind(self, services: frozenset[str]) -> None:
        """Record the services the engine bound to this sink."""
        self.bound.append(services)


async def test_sinks_are_told_their_services_when_bound_and_at_each_reload(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A sink that keeps views across services (nginx, HAProxy) hears which services are
    bound to it when the engine is built, and again after a reload moves `t` to another
    sink: the engine tells it, the sink renders nothing to find out."""
    edge, other, probe = BindingSink("edge"), BindingSink("other"), FakeProbe()
    sinks = {"edge": edge, "other": other}
    engine = make_engine(tmp_path, probe, sinks, service("s", [9001], sinks=("edge",)),
                         service("t", [9002], sinks=("edge",)))
    assert (edge.bound, other.bound) == ([frozenset({"s", "t"})], [frozenset()])

    async def script(probe: FakeProbe) -> None:
        await engine.reload(config(tmp_path, service("s", [9001], sinks=("edge",)),
                                   service("t", [9002], sinks=("other",)),
                                   sinks=("edge", "other")))

    await run_for(engine, 1.0, script, probe)
    assert edge.bound[-1] == frozenset({"s"})
    assert other.bound[-1] == frozenset({"t"})
