"""Engines as cluster members on a real etcd, in one Trio run (SPEC 12).

Each member is a real `Engine` with `cluster:` in its config, its own state
dir, a probe whose answers the test sets per member (so one member can see
a backend fail that the others see up), a local recording sink and a
leader-scope one. This pins the engine's part: who probes what, the vote
taking the breaker's place, every member's local sinks on the same view at
the same seq, leader-scope sinks told once, overrides from any member, a
suspect member's down votes abstaining (SPEC 11).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sentinel.cluster.etcd import b64
from sentinel.config.model import (
    CanaryConfig,
    Config,
    DampenConfig,
    ProbeConfig,
    ServiceConfig,
    SinkConfig,
    ThresholdBreakerConfig,
    Timing,
)
from sentinel.engine.engine import Engine
from sentinel.model import ServiceView, State
from sentinel.sinks.memory import RecordingSink
from sentinel.telemetry.metrics import Metrics
from tests.cluster.etcd_server import EtcdServer
from tests.cluster.helpers import SilentRelay, client_for, cluster_config
from tests.e2e.balancers import eventually
from tests.e2e.helpers import free_port
from tests.engine.fakes import (
    BreakableSink,
    FakeProbe,
    Outboxish,
    config,
    run_inline,
    service,
)
from tests.telemetry.helpers import Samples, parse_metrics, sample

pytestmark = pytest.mark.e2e
PORTS = [9001, 9002, 9003, 9004, 9005, 9006]
CANARY_PORT = 9099
GW = CanaryConfig(name="gw", address=f"127.0.0.1:{CANARY_PORT}", host="127.0.0.1",
                  port=CANARY_PORT, probe=ProbeConfig("tcp", Timing(
                      interval=0.2, fast_interval=0.1, down_interval=0.2, timeout=0.05)))


class Member:
    """One engine of the cluster, with what its sinks heard."""

    def __init__(self, name: str, cfg: Config, notes: RecordingSink | None = None) -> None:
        self.name = name
        self.probe = FakeProbe()
        self.local = RecordingSink("rec")
        self.notes = notes if notes is not None else RecordingSink("note")
        self.engine = Engine(cfg, sinks={"rec": self.local, "note": self.notes},
                             probe_factory=self.probe.factory(), poller=self.probe.poller,
                             run_blocking=run_inline, api_url=f"http://{name}")
        self.scope = trio.CancelScope()
        self.stopped = False

    def stop(self) -> None:
        """Stop this member (a clean stop: its lease is revoked)."""
        self.stopped = True
        self.scope.cancel()

    def sees(self, port: int, alive: bool) -> None:
        """This member's probes of the backend on `port` now pass or fail."""
        self.probe.alive[("127.0.0.1", port)] = alive

    def view(self) -> ServiceView | None:
        """The last view of `web` its local sink got."""
        return self.local.latest("web")

    def states(self) -> dict[str, str]:
        """{backend: state} in that view."""
        view = self.view()
        return {b.name: b.state.value for b in view.backends} if view else {}

    def cluster(self) -> dict[str, object]:
        """The `cluster` object of its /v1/state."""
        doc = self.engine.status_document()["cluster"]
        assert isinstance(doc, dict)
        return doc

    def entry(self, backend: str) -> dict[str, Any]:
        """The backend's entry in its /v1/state."""
        services: Any = self.engine.state_document()["services"]
        return dict(next(b for b in services["web"]["backends"] if b["name"] == backend))

    def probed(self) -> set[int]:
        """Ports this member has probed."""
        return {target.port for _, target in self.probe.calls}


def start_member(nursery: trio.Nursery, etcd: EtcdServer, prefix: str, tmp_path: Path,
                 name: str, svc: ServiceConfig, config_sha256: str = "c0ffee", *,
                 probers: int | None = 2, canaries: tuple[CanaryConfig, ...] = (),
                 alive: tuple[int, ...] = (), notes: RecordingSink | None = None,
                 endpoints: tuple[str, ...] | None = None) -> Member:
    """A member `name` of `svc` (with a local and a leader-scope sink, `notes` if given)
    running in `nursery`, its configuration file's hash `config_sha256`, `probers` per
    backend (None: all), quorum 2, with `canaries`; it sees the ports in `alive` refuse
    from the start; it reaches etcd at `endpoints` (default: etcd's own)."""
    base = config(tmp_path / name, svc, sinks=("rec",))
    cfg = replace(base, sinks=(*base.sinks, SinkConfig("note", "exec", None, scope="leader")),
                  canaries=canaries,
                  cluster=cluster_config(etcd, prefix, name, probers=probers, quorum=2,
                                         lease_ttl=1, config_sha256=config_sha256,
                                         endpoints=endpoints or (etcd.url,)))
    member = Member(name, cfg, notes)
    for port in alive:
        member.sees(port, alive=False)

    async def run() -> None:
        with member.scope:
            await member.engine.run()

    nursery.start_soon(run)
    return member


@asynccontextmanager
async def members(etcd: EtcdServer, prefix: str, tmp_path: Path, names: tuple[str, ...],
                  *, interval: float = 0.1, fast: float | None = None, min_up: int = 0,
                  dampen: DampenConfig | None = None, probers: int | None = 2,
                  canaries: tuple[CanaryConfig, ...] = (),
                  refused: dict[str, tuple[int, ...]] | None = None,
                  endpoints: dict[str, tuple[str, ...]] | None = None
                  ) -> AsyncIterator[dict[str, Member]]:
    """Members `names` running until the block ends, once all are registered and one
    leads (`refused`: the ports each member sees refuse from the start; `endpoints`:
    where a member reaches etcd, if not at etcd's own)."""
    svc = replace(service("web", PORTS, interval=interval, fast=fast, timeout=0.05,
                          sinks=("rec", "note"), breaker=ThresholdBreakerConfig(fall=2, rise=2),
                          min_up=min_up), dampen=dampen)
    out: dict[str, Member] = {}
    async with trio.open_nursery() as nursery:
        for name in names:
            out[name] = start_member(nursery, etcd, prefix, tmp_path, name, svc,
                                     probers=probers, canaries=canaries,
                                     alive=(refused or {}).get(name, ()),
                                     endpoints=(endpoints or {}).get(name))
        await eventually(lambda: all(len(m.cluster()["members"]) == len(names)  # type: ignore[arg-type]
                                     and m.cluster()["leader"] for m in out.values()),
                         what="every member registered, a leader elected")
        yield out
        nursery.cancel_scope.cancel()


def agreed(nodes: dict[str, Member], expected: dict[str, str]) -> bool:
    """Every running member's local sink shows `expected` (names b<port>)."""
    return all(m.states() == expected for m in nodes.values() if not m.stopped)


async def b9001_down(nodes: dict[str, Member]) -> dict[str, str]:
    """Once all are up everywhere, every member sees b9001 fail: waits until it is agreed
    down everywhere and returns that view ({backend: state})."""
    await eventually(lambda: agreed(nodes, {f"b{p}": "up" for p in PORTS}), what="all up")
    for m in nodes.values():
        m.sees(9001, alive=False)
    expected = {**{f"b{p}": "up" for p in PORTS}, "b9001": "down"}
    await eventually(lambda: agreed(nodes, expected), what="b9001 down everywhere")
    return expected


async def test_each_backend_probed_by_two_and_a_real_failure_agreed(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """With probers: 2 each backend is probed by two members only; a failure both of its
    probers see goes down on every member's local sink at one seq, and the leader-scope
    sink hears of it once, on the leader alone."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3")) as nodes:
        everyone_up = {f"b{p}": "up" for p in PORTS}
        await eventually(lambda: agreed(nodes, everyone_up), what="all up")
        for m in nodes.values():
            m.probe.calls.clear()

        def probers(port: int) -> int:
            return sum(port in m.probed() for m in nodes.values())

        await eventually(lambda: all(probers(p) >= 2 for p in PORTS),
                         what="every backend probed by two since")
        await trio.sleep(0.3)  # a few more rounds: no third prober
        assert all(probers(p) == 2 for p in PORTS)
        for m in nodes.values():
            m.sees(9001, alive=False)
        await eventually(lambda: agreed(nodes, {**everyone_up, "b9001": "down"}),
                         what="b9001 down everywhere")
        assert {m.engine.journal.seq for m in nodes.values()} == {1}
        assert len({m.view() for m in nodes.values()}) == 1  # the same view, field by field
        leader = await leader_of(nodes)

        def told() -> list[tuple[str, int, str, str]]:
            return [(m.name, e.seq, e.backend, e.to_state) for m in nodes.values()
                    for u in m.notes.updates for e in u.events]

        # the leader-scope sink hears of it after the commit: wait for that, then give a
        # duplicate from another member (were one sent) as long to show up
        await eventually(lambda: told() or None, what="the leader-scope sink told")
        await trio.sleep(0.3)
        assert told() == [(leader.name, 1, "b9001", "down")]


async def test_a_member_cut_off_from_one_backend_takes_nothing_down(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """One prober sees a backend fail, the other does not: below quorum, it stays up on
    every member, and /v1/state shows who said what."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3")) as nodes:
        everyone_up = {f"b{p}": "up" for p in PORTS}
        await eventually(lambda: agreed(nodes, everyone_up), what="all up")
        probers = nodes["n1"].entry("b9002")["probers"]
        cut_off = nodes[probers[0]]
        cut_off.sees(9002, alive=False)

        def observers() -> dict[str, str] | None:
            seen: dict[str, str] = cut_off.entry("b9002")["observers"]
            return seen if seen.get(cut_off.name) == "down" else None

        seen = await eventually(observers, what="its down observation")
        assert sorted(seen.values()) == ["down", "up"]
        await trio.sleep(0.5)  # the leader has voted on it meanwhile
        assert agreed(nodes, everyone_up)
        assert all(m.engine.journal.seq == 0 for m in nodes.values())


async def test_one_probers_down_makes_the_others_probe_at_once(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """When one prober reports a backend down, its other prober probes it right away
    instead of at its next interval (4 s here), so agreeing on a death does not wait
    for the slowest prober's schedule."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3"), interval=4.0,
                       fast=0.05) as nodes:
        first, second = (nodes[n] for n in nodes["n1"].entry("b9005")["probers"])
        await eventually(lambda: 9005 in second.probed(), what="its first probe")
        runtime = next(b for b in second.engine.services["web"].backends
                       if b.config.name == "b9005")
        due = runtime.checks[0].next_due
        assert due is not None
        probes = len(second.probe.times(9005))
        first.sees(9005, alive=False)
        second.sees(9005, alive=False)
        mine = next(b for b in first.engine.services["web"].backends
                    if b.config.name == "b9005")
        first.engine.probe_now(mine)
        await eventually(lambda: len(second.probe.times(9005)) > probes,
                         what="the second prober's probe")
        assert second.probe.times(9005)[probes] < due
        await eventually(lambda: agreed(nodes, {**{f"b{p}": "up" for p in PORTS},
                                                "b9005": "down"}), what="agreed down")


async def test_the_panic_guard_applies_to_the_agreed_view(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """With min_up 5 of 6, two backends agreed down leave the one that last passed a
    probe published up: panic on every member, the same view and seq everywhere."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3"), min_up=5) as nodes:
        down = await b9001_down(nodes)
        for m in nodes.values():
            m.sees(9006, alive=False)
        await eventually(lambda: all(m.view() is not None and m.view().panic  # type: ignore[union-attr]
                                     for m in nodes.values()), what="panic everywhere")
        assert agreed(nodes, down)  # b9006 held up
        assert len({m.view() for m in nodes.values()}) == 1
        seq = {m.engine.journal.seq for m in nodes.values()}
        assert seq == {2}  # b9001 down, then panic starting (b9006 held up: no move)
        assert [(e.backend, e.to_state) for e in nodes["n1"].engine.events_after(0)] == [
            ("b9001", "down"), ("", "panic")]


async def test_a_backend_added_by_reload_is_assigned_and_agreed(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """Every member reloads a configuration with one more backend: two of them probe
    it, every local sink gets it, and its death is agreed like any other's."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3")) as nodes:
        everyone_up = {f"b{p}": "up" for p in PORTS}
        await eventually(lambda: agreed(nodes, everyone_up), what="all up")
        for m in nodes.values():
            old = m.engine.config
            web = old.services[0]
            grown = service("web", [*PORTS, 9007], interval=0.1, timeout=0.05,
                            sinks=("rec", "note"),
                            breaker=ThresholdBreakerConfig(fall=2, rise=2))
            await m.engine.reload(replace(old, services=(replace(
                web, backends=grown.backends),)))
        more = {**everyone_up, "b9007": "up"}
        await eventually(lambda: agreed(nodes, more), what="b9007 on every sink")
        assert len(nodes["n1"].entry("b9007")["probers"]) == 2
        for m in nodes.values():
            m.sees(9007, alive=False)
        await eventually(lambda: agreed(nodes, {**more, "b9007": "down"}),
                         what="b9007 down everywhere")


async def test_drain_through_any_member_applies_everywhere_and_lasts(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """An admin drain sent to a member that does not lead is stored in etcd, published by
    the leader and applied by every member; a member started afterwards starts with it."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3")) as nodes:
        follower = next(m for m in nodes.values() if not m.cluster()["leading"])
        events = await follower.engine.set_override("web", "b9003", "drain")
        assert [(e.backend, e.to_state) for e in events] == [("b9003", "drain")]
        await eventually(lambda: all(m.states().get("b9003") == "drain"
                                     for m in nodes.values()), what="drained everywhere")
    async with members(etcd, prefix, tmp_path, ("n4",)) as late:
        await eventually(lambda: late["n4"].states().get("b9003") == "drain",
                         what="the drain at a fresh member")
        assert (await late["n4"].engine.set_override("web", "b9003", "ready"))[0].to_state \
            == "up"


async def test_leader_lost_a_successor_numbers_on(etcd: EtcdServer, prefix: str,
                                                  tmp_path: Path) -> None:
    """When the leader stops, another member leads within the lease, takes over the
    probing, and numbers the next event right after the last one: no gap, no repeat."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3")) as nodes:
        for m in nodes.values():
            m.sees(9004, alive=False)
        await eventually(lambda: all(m.states().get("b9004") == "down"
                                     for m in nodes.values()), what="b9004 down")
        leader = await leader_of(nodes)
        leader.stop()
        rest = [m for m in nodes.values() if m is not leader]
        await eventually(lambda: any(m.cluster()["leading"] for m in rest)
                         and all(len(m.cluster()["members"]) == 2 for m in rest),  # type: ignore[arg-type]
                         what="a new leader of two members")
        for m in rest:
            m.probe.calls.clear()
            m.sees(9004, alive=True)
        await eventually(lambda: all(m.states().get("b9004") == "up" for m in rest),
                         what="b9004 up again")
        assert [m.engine.journal.seq for m in rest] == [2, 2]
        assert [(e.seq, e.to_state) for e in rest[0].engine.events_after(0)] == [
            (1, "down"), (2, "up")]
        await eventually(lambda: all(m.probed() == set(PORTS) for m in rest),
                         what="the two left probing every backend")


async def test_flap_damping_holds_the_agreed_view_down_on_every_member(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """Damping applies to the agreed verdict: the second agreed down within the half-life
    (penalty past `suppress`) holds the backend down on every member's sinks though the
    vote says up again, until the penalty decays below `reuse`; then one event,
    "flap damping released", on every member at the same seq."""
    # Generous for a loaded machine: the second down suppresses if it comes within 23 s
    # of the first (penalty 1000 * 2^(-t/10) + 1000 > 1200), and the hold lasts 10 s
    # from it when 2 s apart (1870 decays to 900), the reads below all happening in it.
    damping = DampenConfig(half_life=10.0, suppress=1200.0, reuse=900.0, max_suppress=30.0)
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3"), dampen=damping) as nodes:
        everyone_up = {f"b{p}": "up" for p in PORTS}
        await eventually(lambda: agreed(nodes, everyone_up), what="all up")
        for alive, state in ((False, "down"), (True, "up"), (False, "down")):
            for m in nodes.values():
                m.sees(9003, alive=alive)
            await eventually(lambda s=state: agreed(nodes, {**everyone_up, "b9003": s}),  # type: ignore[misc]
                             what=f"b9003 {state}")
        for m in nodes.values():
            m.sees(9003, alive=True)
        leader = await leader_of(nodes)
        await eventually(lambda: leader.entry("b9003")["health"] == "up",
                         what="the vote says up again")
        assert "(suppressed;" in str(leader.entry("b9003")["damping"])
        assert agreed(nodes, {**everyone_up, "b9003": "down"})  # held down everywhere
        assert {m.engine.journal.seq for m in nodes.values()} == {3}
        await eventually(lambda: agreed(nodes, everyone_up), what="released", within=30)
        assert {m.engine.journal.seq for m in nodes.values()} == {4}
        released = [e for m in nodes.values() for e in m.engine.events_after(3)]
        assert len(released) == 3
        assert len({e.id for e in released}) == 1
        assert released[0].reason.startswith("flap damping released")


async def test_a_member_of_another_configuration_neither_leads_nor_follows(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """A member whose configuration hash differs from the leader's does not campaign,
    not even when the leader goes, and takes none of its agreed state: its sinks stay as
    they were, /v1/state and the log say why; the others agree as before."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3")) as nodes:
        everyone_up = {f"b{p}": "up" for p in PORTS}
        await eventually(lambda: agreed(nodes, everyone_up), what="all up")
        async with trio.open_nursery() as nursery:
            svc = nodes["n1"].engine.config.services[0]
            odd = start_member(nursery, etcd, prefix, tmp_path, "n4", svc, "deadbeef")

            def held() -> bool:
                doc = odd.cluster()
                return (doc.get("following") is False and doc["ok"] is False
                        and "another configuration" in str(doc["error"]))

            await eventually(held, what="n4 not following the leader")
            for m in (*nodes.values(), odd):
                m.sees(9001, alive=False)
            await eventually(lambda: agreed(nodes, {**everyone_up, "b9001": "down"}),
                             what="b9001 down on n1..n3")
            old = await leader_of(nodes)
            old.stop()
            rest = [m for m in nodes.values() if m is not old]
            await eventually(lambda: any(m.cluster()["leading"] for m in rest),
                             what="a new leader of the first configuration")
            for m in (*rest, odd):
                m.sees(9002, alive=False)
            await eventually(lambda: all(m.states().get("b9002") == "down" for m in rest),
                             what="b9002 down on the two left")
            assert held()
            assert odd.cluster()["terms"] == 0
            assert odd.states().get("b9001") != "down"  # nothing agreed reached its sinks
            assert odd.engine.journal.seq == 0
            assert [e for u in (*odd.notes.updates, *odd.local.updates) for e in u.events] == []
            assert odd.cluster()["mismatched"] == sorted(m.name for m in rest)
            odd.stop()


async def metrics_of(member: Member) -> Samples:
    """The member's Prometheus metrics as scraped now."""
    metrics = Metrics()
    metrics.watch(member.engine)
    return parse_metrics((await metrics.render())[0].decode())


async def leader_of(nodes: dict[str, Member]) -> Member:
    """The member that leads, once one does (under load a term may be starting: a new
    leader reads etcd afresh before it leads)."""
    return await eventually(lambda: next((m for m in nodes.values() if m.cluster()["leading"]),
                                         None), what="a leader")


async def test_two_of_three_down_votes_take_a_backend_down(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """Every member probes every backend, quorum 2: two members seeing b9001 fail while
    the third sees it up is a quorum, and it goes down everywhere (the baseline of the
    suspicion test below)."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3"), probers=None) as nodes:
        everyone_up = {f"b{p}": "up" for p in PORTS}
        await eventually(lambda: agreed(nodes, everyone_up), what="all up")
        for name in ("n1", "n2"):
            nodes[name].sees(9001, alive=False)
        await eventually(lambda: agreed(nodes, {**everyone_up, "b9001": "down"}),
                         what="b9001 down everywhere")
        assert nodes["n1"].entry("b9001")["observers"] == {"n1": "down", "n2": "down",
                                                           "n3": "up"}


async def test_a_member_whose_watches_a_middlebox_dropped_catches_up_and_counts_them(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """n3 reaches etcd through a firewall that forgets the flows of its watches (nothing
    passes on them any more, nothing closes them; new connections pass, so its lease
    renewals are answered): a backend that goes down afterwards is agreed down on n3's
    sink too, and n3 counts the watches it found fallen silent in /v1/state and in its
    metrics (before, n3's sink stayed on the old view for good)."""
    relay = SilentRelay(etcd)
    async with trio.open_nursery() as outer:
        await outer.start(relay.run)
        async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3"),
                           endpoints={"n3": (relay.url,)}) as nodes:
            await eventually(lambda: agreed(nodes, {f"b{p}": "up" for p in PORTS}),
                             what="all up")
            assert relay.forget(b"/v3/watch") >= 1
            await b9001_down(nodes)
            etcd_stats = nodes["n3"].cluster()["etcd"]
            assert isinstance(etcd_stats, dict)
            assert etcd_stats["silent_watches"] >= 1
            scraped = await metrics_of(nodes["n3"])
            assert (sample(scraped, "sentinel_cluster_silent_watches_total") or 0) >= 1
            assert nodes["n1"].cluster()["etcd"]["silent_watches"] == 0  # type: ignore[index]
        outer.cancel_scope.cancel()


async def test_a_suspect_members_down_vote_abstains_until_its_canary_passes(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """n1's canary is refused, so n1 suspects itself and says so in its member record:
    with n1 and n2 seeing b9001 fail and n3 seeing it up, n1's down abstains, one vote is
    below quorum 2 and b9001 stays up everywhere; once n1's canary passes its down
    counts again and b9001 goes down."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3"), probers=None,
                       canaries=(GW,), refused={"n1": (CANARY_PORT,)}) as nodes:
        everyone_up = {f"b{p}": "up" for p in PORTS}
        await eventually(lambda: agreed(nodes, everyone_up), what="all up")
        await eventually(lambda: all(m.cluster()["suspects"] == ["n1"]
                                     for m in nodes.values()), what="n1 suspect everywhere")
        suspect = nodes["n1"].engine.status_document()["suspect"]
        assert isinstance(suspect, dict)
        assert "every canary fails" in suspect["reason"]
        assert nodes["n2"].engine.status_document()["suspect"] is None
        shown = {m["node"]: m["suspect"] for m in nodes["n3"].cluster()["members"]}  # type: ignore[attr-defined]
        own, other = await metrics_of(nodes["n1"]), await metrics_of(nodes["n3"])
        assert sample(own, "sentinel_suspect", cause="canaries") == 1
        assert sample(other, "sentinel_suspect", cause="canaries") == 0
        assert sample(other, "sentinel_cluster_suspect_members") == 1
        assert shown["n2"] is None
        assert "every canary fails" in shown["n1"]
        for name in ("n1", "n2"):
            nodes[name].sees(9001, alive=False)
        leader = await leader_of(nodes)
        await eventually(lambda: leader.entry("b9001")["observers"] == {
            "n1": "down", "n2": "down", "n3": "up"}, what="both downs at the leader")
        ballot = leader.engine.cluster.node.tally("web", "b9001", State.UP)  # type: ignore[union-attr]
        assert (ballot.state, ballot.down, ballot.abstained) == (State.UP, ("n2",), ("n1",))
        assert "n1 suspects itself, not counted" in ballot.reason
        await trio.sleep(0.5)  # the leader has voted on it meanwhile
        assert agreed(nodes, everyone_up)
        assert all(m.engine.journal.seq == 0 for m in nodes.values())
        nodes["n1"].sees(CANARY_PORT, alive=True)
        await eventually(lambda: agreed(nodes, {**everyone_up, "b9001": "down"}),
                         what="b9001 down once n1 counts again")
        assert all(m.cluster()["suspects"] == [] for m in nodes.values())
        assert nodes["n1"].engine.status_document()["suspect"] is None
        event = nodes["n3"].engine.events_after(0)[-1]
        assert event.reason.startswith("2 of 3 probers say down (")
        assert "n1" in event.reason


async def reload_file(member: Member, config_sha256: str) -> None:
    """Reload `member` with its configuration as a file whose hash is `config_sha256`."""
    old = member.engine.config
    assert old.cluster is not None
    await member.engine.reload(replace(old, cluster=replace(old.cluster,
                                                            config_sha256=config_sha256)))


def registered(nodes: dict[str, Member], name: str, config_sha256: str) -> bool:
    """Every member lists `name` with `config_sha256`, and only the members whose file
    differs from it list `name` as mismatched."""
    for m in nodes.values():
        doc = m.cluster()
        hashes = {e["node"]: e["config_sha256"] for e in doc["members"]}  # type: ignore[attr-defined]
        mine = hashes[m.name]
        if hashes.get(name) != config_sha256 or (name in doc["mismatched"]) != (  # type: ignore[operator]
                m.name != name and mine != config_sha256):
            return False
    return True


async def test_a_reload_to_another_file_carries_its_hash_and_moves_the_lead(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """A member reloaded with a changed file registers its new hash (the others list it
    as mismatched); the leader so reloaded gives up its key, a member of the majority's
    file leads and the odd one holds; a reloaded follower holds too; once all three run
    the new file they agree again under one leader."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3")) as nodes:
        everyone_up = {f"b{p}": "up" for p in PORTS}
        await eventually(lambda: agreed(nodes, everyone_up), what="all up")
        first = await leader_of(nodes)
        terms = first.cluster()["terms"]
        await reload_file(first, "beef")
        await eventually(lambda: registered(nodes, first.name, "beef"),
                         what="the leader's new hash in every member list")
        rest = [m for m in nodes.values() if m is not first]
        await eventually(lambda: any(m.cluster()["leading"] for m in rest)
                         and all(m.cluster()["leader"] != first.name for m in nodes.values()),
                         what="a member of the old file leads")
        assert not first.cluster()["leading"]
        assert first.cluster()["terms"] == terms  # stepped down, not elected again
        await eventually(lambda: first.cluster()["following"] is False,
                         what="the reloaded member holds")
        for m in nodes.values():
            m.sees(9001, alive=False)
        await eventually(lambda: all(m.states().get("b9001") == "down" for m in rest),
                         what="b9001 down on the old file's members")
        assert first.states().get("b9001") == "up"  # held: nothing agreed reached it
        second = next(m for m in rest if not m.cluster()["leading"])
        await reload_file(second, "beef")
        await eventually(lambda: registered(nodes, second.name, "beef"),
                         what="the follower's new hash in every member list")
        await eventually(lambda: second.cluster()["following"] is False,
                         what="the reloaded follower holds")
        last = await leader_of(nodes)
        assert last not in (first, second)
        await reload_file(last, "beef")
        await eventually(lambda: all(m.cluster()["ok"] and m.cluster()["following"]
                                     and m.cluster()["mismatched"] == [] for m in nodes.values())
                         and sum(bool(m.cluster()["leading"]) for m in nodes.values()) == 1
                         and len({m.cluster()["leader"] for m in nodes.values()}) == 1,
                         what="one leader of the new file, followed by all")
        await eventually(lambda: agreed(nodes, {**everyone_up, "b9001": "down"}),
                         what="the agreed state on every member again")
        for m in nodes.values():
            m.sees(9002, alive=False)
        await eventually(lambda: agreed(nodes, {**everyone_up, "b9001": "down",
                                                "b9002": "down"}),
                         what="b9002 agreed down on all three")
        assert len({m.engine.journal.seq for m in nodes.values()}) == 1


def store_revision(url: str) -> int:
    """The revision of the store etcd at `url` holds."""
    head = httpx.post(f"{url}/v3/kv/range", json={"key": b64("/")}, timeout=5)
    return int(head.json()["header"]["revision"])


def write_past(url: str, revision: int) -> None:
    """Put keys outside every prefix until the store's revision is past `revision`."""
    n = 0
    while store_revision(url) <= revision:
        for _ in range(50):
            httpx.post(f"{url}/v3/kv/put", json={"key": b64(f"/filler/{n}"), "value": b64("x")},
                       timeout=5).raise_for_status()
            n += 1


async def drained_then_etcd_gone(nodes: dict[str, Member], etcd: EtcdServer
                                 ) -> tuple[dict[str, str], int, dict[str, int], int]:
    """b9001 agreed down, then b9003 drained through a follower (the drain lives only in
    this store), then etcd stopped, once every member saw it go: (the view without the
    drain, the seq every member had, how many updates each had heard, the store's
    revision when it stopped)."""
    after = await b9001_down(nodes)
    follower = next(m for m in nodes.values() if not m.cluster()["leading"])
    await follower.engine.set_override("web", "b9003", "drain")
    await eventually(lambda: agreed(nodes, {**after, "b9003": "drain"}),
                     what="b9003 drained everywhere")
    seq = {m.engine.journal.seq for m in nodes.values()}
    assert len(seq) == 1
    heard = {name: len(m.local.updates) for name, m in nodes.items()}
    revision = store_revision(etcd.url)
    etcd.stop()
    await eventually(lambda: all(m.cluster()["ok"] is False for m in nodes.values()),
                     what="every member sees etcd gone")
    return after, seq.pop(), heard, revision


async def resynced(nodes: dict[str, Member], etcd: EtcdServer, prefix: str,
                   after: dict[str, str], seq: int, heard: dict[str, int]) -> None:
    """Wait until every member is back on the new store with the drain gone, then check
    how: each noticed the reset once and registered again; the drain's lifting is the one
    event since, numbered on from `seq` (not from 1 again); b9001 never flapped (fail
    static); the new store holds every member, the whole agreed view and the seq."""
    await eventually(lambda: agreed(nodes, after)
                     and all(m.cluster()["ok"] for m in nodes.values()),
                     what="the cluster resynced on the new store")
    for name, m in nodes.items():
        assert m.cluster()["etcd"]["resets"] == 1  # type: ignore[index]
        assert m.cluster()["lapses"] >= 1  # type: ignore[operator]
        later = [e for u in m.local.updates[heard[name]:] for e in u.events]
        assert [(e.backend, e.to_state) for e in later] == [("b9003", "up")]
        assert later[0].seq == seq + 1
        shown = [{b.name: b.state.value for b in u.view.backends}
                 for u in m.local.updates[heard[name]:]]
        assert all(s["b9001"] == "down" for s in shown)
    reader = client_for(cluster_config(etcd, prefix, "reader"))
    try:
        held = await reader.get_prefix(f"{prefix}agreed/backends/")
        assert len(held.kvs) == len(PORTS)
        assert len((await reader.get_prefix(f"{prefix}members/")).kvs) == len(nodes)
        assert int((await reader.get(f"{prefix}agreed/seq")).value) == seq + 1  # type: ignore[union-attr]
    finally:
        await reader.aclose()


@pytest.mark.parametrize(("written_past", "notice"), [
    (False, "is below"),  # the revision back near 1 gives it away
    (True, "its marker"),  # written past it: the store marker does
])
async def test_a_wiped_etcd_is_noticed_and_the_cluster_resyncs(
        own_etcd: EtcdServer, prefix: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, written_past: bool, notice: str) -> None:
    """etcd stopped, its data wiped, started again on the same port (the same cluster
    id): each member notices once, registers again, reads everything afresh, a leader
    writes the whole agreed view into the new store and numbers on from the seq the
    members know; the drain that lived only in the old store is gone, and no backend
    flaps meanwhile (fail static). Its revision back near 1 gives the wipe away; when
    another client has written the new store past every revision the members saw
    before they reach it (`written_past`), the registration after each member's lost
    lease finds the store's marker changed. (Without the marker the cluster healed
    from that too, through the mirrors' periodic checks, but unnoticed: no log line,
    no count in /v1/state.)"""
    caplog.set_level(logging.WARNING, logger="sentinel.cluster.etcd")
    async with members(own_etcd, prefix, tmp_path, ("n1", "n2")) as nodes:
        after, seq, heard, revision = await drained_then_etcd_gone(nodes, own_etcd)
        own_etcd.wipe()
        if written_past:
            port, own_etcd.client_port = own_etcd.client_port, free_port()  # unseen
            own_etcd.start()
            await trio.to_thread.run_sync(write_past, own_etcd.url, revision + 10)
            own_etcd.stop()
            own_etcd.client_port = port
        own_etcd.start()
        await resynced(nodes, own_etcd, prefix, after, seq, heard)
        assert caplog.text.count("etcd was wiped or replaced") == len(nodes)
        assert caplog.text.count(notice) == len(nodes)


async def test_a_leader_between_terms_after_an_unclear_error_reloaded_steps_down(
        etcd: EtcdServer, prefix: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A leader whose write fails with an etcd error (the seq it expected is not what
    etcd holds: the outcome of its last write unknown) stops leading, and while it keeps
    failing to start a term again, a reload brings another file: it does not lead again
    under the old file's key but gives the key up, its record carries the new hash, and
    a member of the old file leads once etcd's state is sound again."""
    async with members(etcd, prefix, tmp_path, ("n1", "n2", "n3")) as nodes:
        await eventually(lambda: agreed(nodes, {f"b{p}": "up" for p in PORTS}),
                         what="all up")
        first = await leader_of(nodes)
        rest = [m for m in nodes.values() if m is not first]
        writer = client_for(cluster_config(etcd, prefix, "writer"))
        try:
            seq = await writer.get(f"{prefix}agreed/seq")
            await writer.put(f"{prefix}agreed/seq", b"garbled")
            for m in nodes.values():
                m.sees(9001, alive=False)
            await eventually(lambda: "stops leading for now" in caplog.text
                             and not first.cluster()["leading"],
                             what="the leader's term ended by the error")
            terms = first.cluster()["terms"]
            await reload_file(first, "beef")
            await eventually(lambda: registered(nodes, first.name, "beef"),
                             what="the new hash in every member list")
            await eventually(lambda: f"{first.name} steps down" in caplog.text
                             and all(m.cluster()["leader"] != first.name
                                     for m in nodes.values()),
                             what="the old file's leader key given up")
            if seq is None:  # sound again: as it was
                await writer.delete(f"{prefix}agreed/seq")
            else:
                await writer.put(f"{prefix}agreed/seq", seq.value)
            await eventually(lambda: all(m.states().get("b9001") == "down" for m in rest),
                             what="a leader of the old file publishes b9001 down")
            assert any(m.cluster()["leading"] for m in rest)
            assert not first.cluster()["leading"]
            assert first.cluster()["terms"] == terms  # never led again under the old key
            assert first.cluster()["following"] is False
            assert first.states().get("b9001") == "up"  # held: nothing agreed reached it
        finally:
            await writer.aclose()


def weight_of(member: Member, backend: str) -> tuple[str, int] | None:
    """(state, weight) of `backend` in the last view the member's local sink got."""
    view = member.view()
    return next(((b.state.value, b.weight) for b in view.backends if b.name == backend),
                None) if view else None


async def test_a_slow_start_goes_on_under_a_new_leader(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """A backend recovering with slow start reaches its full weight on every member even
    when the leader climbing its ramp stops part way: the next leader goes on from the
    step the time since the recovery has reached (before, it left the backend at the
    ramp's weight, as nothing it voted on moved it again)."""
    svc = service("web", PORTS, interval=0.1, timeout=0.05, sinks=("rec", "note"),
                  breaker=ThresholdBreakerConfig(fall=2, rise=2), slow_start=8.0, weight=10)
    async with trio.open_nursery() as nursery:
        nodes = {n: start_member(nursery, etcd, prefix, tmp_path, n, svc, probers=None)
                 for n in ("n1", "n2", "n3")}
        await eventually(lambda: all(weight_of(m, "b9001") == ("up", 10)
                                     and m.cluster()["leader"] for m in nodes.values()),
                         what="b9001 up at its full weight, a leader elected")
        for m in nodes.values():
            m.sees(9001, alive=False)
        await eventually(lambda: all((weight_of(m, "b9001") or ("",))[0] == "down"
                                     for m in nodes.values()), what="b9001 down everywhere")
        for m in nodes.values():
            m.sees(9001, alive=True)
        leader = await leader_of(nodes)
        await eventually(lambda: (weight_of(leader, "b9001") or ("",))[0] == "up",
                         what="b9001 up again, ramping")
        climbing = weight_of(leader, "b9001")
        leader.stop()
        assert climbing is not None
        assert climbing[1] < 10, "the leader stopped after the ramp, not during it"
        rest = [m for m in nodes.values() if m is not leader]
        await eventually(lambda: all(weight_of(m, "b9001") == ("up", 10) for m in rest),
                         what="b9001 at its full weight under the new leader", within=30)
        reasons = [e.reason for e in rest[0].engine.events_after(0) if e.backend == "b9001"]
        assert reasons[-1] == "slow start: weight 10 of 10"
        nursery.cancel_scope.cancel()


def delivered_mark(etcd: EtcdServer, prefix: str, sink: str) -> int | None:
    """How far the leaders recorded that leader-scope sink `sink` delivered."""
    answer = httpx.post(f"{etcd.url}/v3/kv/range",
                        json={"key": b64(f"{prefix}delivered/{sink}")}, timeout=5).json()
    kvs = answer.get("kvs")
    return int(base64.b64decode(kvs[0]["value"])) if kvs else None


@asynccontextmanager
async def noting_members(etcd: EtcdServer, prefix: str, tmp_path: Path,
                         notes: Mapping[str, RecordingSink]) -> AsyncIterator[dict[str, Member]]:
    """A member per entry of `notes`, whose leader-scope sink it is (one the test can
    break), once all are up and one leads."""
    svc = service("web", PORTS, interval=0.1, timeout=0.05, sinks=("rec", "note"),
                  breaker=ThresholdBreakerConfig(fall=2, rise=2))
    async with trio.open_nursery() as nursery:
        nodes = {n: start_member(nursery, etcd, prefix, tmp_path, n, svc, notes=note)
                 for n, note in notes.items()}
        await eventually(lambda: agreed(nodes, {f"b{p}": "up" for p in PORTS})
                         and all(m.cluster()["leader"] for m in nodes.values()),
                         what="all up, a leader elected")
        yield nodes
        nursery.cancel_scope.cancel()


async def test_events_an_outbox_refused_are_taken_again_by_the_same_leader(
        etcd: EtcdServer, prefix: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The leader's outbox fails to take an event (a full disk): once it works again it
    is handed the event from etcd, and the delivery mark passes the event only then
    (before, the event was lost: the mark moved past it at once)."""
    caplog.set_level(logging.INFO, logger="sentinel.engine.cluster")
    outboxes = {n: Outboxish("note") for n in ("n1", "n2", "n3")}
    async with noting_members(etcd, prefix, tmp_path, outboxes) as nodes:
        leader = await leader_of(nodes)
        outboxes[leader.name].broken = True
        await b9001_down(nodes)
        event = next(e for e in leader.engine.events_after(0) if e.backend == "b9001")
        await eventually(lambda: "still cannot take" in caplog.text,
                         what="the refused event tried again")
        assert (delivered_mark(etcd, prefix, "note") or 0) < event.seq
        outboxes[leader.name].broken = False
        await eventually(lambda: event.id in {e.id for e in outboxes[leader.name].accepted},
                         what="the refused event taken once the outbox works")
        await eventually(lambda: (delivered_mark(etcd, prefix, "note") or 0) >= event.seq,
                         what="the delivery mark past it")
        assert all(not outboxes[n].accepted for n in outboxes if n != leader.name)


async def test_events_an_outbox_refused_are_delivered_by_the_next_leader(
        etcd: EtcdServer, prefix: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The leader's outbox cannot take an event and the leader stops: the next leader
    resumes from a delivery mark below the event and delivers it, once in the cluster."""
    caplog.set_level(logging.INFO, logger="sentinel.engine.cluster")
    outboxes = {n: Outboxish("note") for n in ("n1", "n2", "n3")}
    async with noting_members(etcd, prefix, tmp_path, outboxes) as nodes:
        leader = await leader_of(nodes)
        outboxes[leader.name].broken = True
        await b9001_down(nodes)
        event = next(e for e in leader.engine.events_after(0) if e.backend == "b9001")
        await eventually(lambda: "still cannot take" in caplog.text,
                         what="the refused event tried again")
        assert (delivered_mark(etcd, prefix, "note") or 0) < event.seq
        leader.stop()
        await eventually(lambda: sum(e.id == event.id for box in outboxes.values()
                                     for e in box.accepted) == 1,
                         what="the event delivered by the next leader")
        assert not outboxes[leader.name].accepted


async def test_an_exec_sink_is_resumed_by_the_next_leader(
        etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """SPEC 12: a new leader resumes every notification sink, exec as well as webhook. The
    leader's exec sink cannot run the down event (its command fails) and the leader
    stops: the next leader's exec sink gets the event (before, an exec sink had no
    delivery mark: the next leader started from its own start and the event was lost)."""
    notes = {n: BreakableSink("note") for n in ("n1", "n2", "n3")}
    async with noting_members(etcd, prefix, tmp_path, notes) as nodes:
        leader = await leader_of(nodes)
        notes[leader.name].broken = True
        await b9001_down(nodes)
        event = next(e for e in leader.engine.events_after(0) if e.backend == "b9001")
        await eventually(lambda: notes[leader.name].failures >= 2,
                         what="the leader's exec sink failing the event, retried")
        leader.stop()
        rest = [n for n in notes if n != leader.name]
        await eventually(lambda: any(event.id in {e.id for u in notes[n].updates
                                                  for e in u.events} for n in rest),
                         what="the event run by the next leader's exec sink", within=30)


async def test_members_restarted_on_a_wiped_etcd_number_on_from_their_own_seq(
        own_etcd: EtcdServer, prefix: str, tmp_path: Path) -> None:
    """Every member stopped, etcd wiped (or restored from an older snapshot), the members
    started again on their state dirs: the new leader numbers on from the seq the members
    persisted, so no seq names two events (before, with every member restarted, nothing
    remembered it and numbering began at 1 again)."""
    async with members(own_etcd, prefix, tmp_path, ("n1", "n2")) as nodes:
        await b9001_down(nodes)
        seq = nodes["n1"].engine.journal.seq
        assert seq >= 1
        await eventually(lambda: all(
            json.loads((tmp_path / n / "state.json").read_text()).get("seq") == seq
            for n in nodes), what="the seq persisted by both members")
    own_etcd.stop()
    own_etcd.wipe()
    own_etcd.start()
    async with members(own_etcd, prefix, tmp_path, ("n1", "n2")) as nodes:
        await eventually(lambda: agreed(nodes, {f"b{p}": "up" for p in PORTS}),
                         what="b9001 up again after the restart")
        ups = [e for e in nodes["n1"].engine.events_after(seq) if e.backend == "b9001"]
        assert [(e.seq, e.to_state) for e in ups] == [(seq + 1, "up")]
