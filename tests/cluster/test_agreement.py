"""The cluster's parts composed as the engine will compose them, on a real etcd.

Three members in one Trio run, each with its membership, observation writer,
a campaign, and a follower of the agreed views. Verdicts are set by the
test (what each member "sees" of each backend); the leader turns the
observations of each backend's probers into the agreed view with `tally`
and publishes it fenced. This pins that the pieces fit: agreement on a real
failure, no down for a member cut off from one backend, a leader change
that neither loses nor repeats a seq, and reassignment when a member leaves.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import trio

from sentinel.cluster.assign import Member, probers_for
from sentinel.cluster.leader import (
    Election,
    Leader,
    ServiceChange,
    agreed_prefix,
    read_agreed,
)
from sentinel.cluster.membership import Lease, MemberInfo, Membership
from sentinel.cluster.mirror import PrefixMirror
from sentinel.cluster.observations import ObservationTable, ObservationWriter
from sentinel.cluster.vote import tally
from sentinel.model import Event, State
from tests.cluster.etcd_server import EtcdServer
from tests.cluster.helpers import client_for, cluster_config
from tests.e2e.balancers import eventually

pytestmark = pytest.mark.e2e
BACKENDS = [f"web{i}" for i in range(1, 7)]
UP, DOWN = State.UP, State.DOWN


class Node:
    """One member: probes (the test sets its verdicts), votes when it leads, follows."""

    def __init__(self, etcd: EtcdServer, prefix: str, name: str) -> None:
        self.config = cluster_config(etcd, prefix, name, probers=2, quorum=2, lease_ttl=3)
        self.client = client_for(self.config)
        self.name = name
        self.membership = Membership(self.client, self.config, api_url=f"http://{name}",
                                     version="0.1.0", on_members=self._members_changed)
        self.writer = ObservationWriter(self.client, prefix, name)
        self.sees = dict.fromkeys(BACKENDS, UP)  # what this member's probes say
        self.views = PrefixMirror(self.client, agreed_prefix(prefix), check_every=2.0)
        self.leading = False
        self.events: list[Event] = []  # published while this member led
        self.rounds = 0  # votes completed while leading
        self.table = ObservationTable(self.client, prefix,
                                      on_change=lambda _: self._dirty.set(), check_every=2.0)
        self._dirty = trio.Event()

    def mine(self) -> set[str]:
        """The backends this member probes under the current member list."""
        live = [Member(m.node, m.zone) for m in self.membership.members.values()]
        return {b for b in BACKENDS if self.name in probers_for(b, live, 2)}

    def see(self, backend: str, state: State) -> None:
        """This member's probes of `backend` now say `state`."""
        self.sees[backend] = state
        self._report()

    def agreed(self) -> dict[str, str]:
        """The agreed view as this member follows it."""
        held = read_agreed(self.config.prefix, dict(self.views.items))
        return {b: entry["state"] for b, entry in held.backends.get("web", {}).items()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The member until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.views.run)
            await nursery.start(self.membership.run, self._session)
            task_status.started()

    async def _session(self, lease: Lease) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.writer.run, lease)
            nursery.start_soon(self._lead, lease)

    async def _lead(self, lease: Lease) -> None:
        term = await Election(self.client, self.config.prefix, self.name,
                              recheck=1.0).campaign(lease)
        leader = Leader(self.client, self.config.prefix, term)
        state = await leader.load()
        current = {b: State(e["state"]) for b, e in state.backends.get("web", {}).items()}
        written = bool(current)
        table = self.table
        self.leading = True
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(table.run)
                while True:
                    live = [Member(m.node, m.zone) for m in self.membership.members.values()]
                    new = {b: tally({n: o.state for n, o in table.of("web", b).items()},
                                    probers_for(b, live, 2), 2, current.get(b, UP)).state
                           for b in BACKENDS}
                    events = tuple(Event(id=f"{b}-{new[b]}", seq=0, time="", service="web",
                                         backend=b, address="", from_state=current.get(b, UP),
                                         to_state=new[b], weight=0, reason="vote")
                                   for b in BACKENDS if new[b] != current.get(b, UP))
                    if events or not written:
                        moved = {b: {"state": s.value} for b, s in new.items()
                                 if not written or s != current.get(b, UP)}
                        self.events.extend(await leader.publish(
                            [ServiceChange("web", moved, None, events)]))
                        current, written = new, True
                    self.rounds += 1
                    self._dirty = trio.Event()
                    await self._dirty.wait()
        finally:
            self.leading = False

    def vote_again(self) -> None:
        """Make the leader tally every backend once more."""
        self._dirty.set()

    def _members_changed(self, members: Mapping[str, MemberInfo]) -> None:
        self._report()
        self._dirty.set()

    def _report(self) -> None:
        mine = self.mine()
        for b in BACKENDS:
            if b in mine:
                self.writer.report("web", b, self.sees[b])
            else:
                self.writer.forget("web", b)


async def test_three_members_agree(etcd: EtcdServer, prefix: str) -> None:
    """A real failure seen by its probers goes down on every member at one seq; a member
    cut off from one backend takes nothing down; after the leader leaves, the next
    one numbers on without a gap or a repeat; a member's departure reassigns its
    backends without a false down."""
    nodes = {name: Node(etcd, prefix, name) for name in ("n1", "n2", "n3")}
    async with trio.open_nursery() as nursery:
        scopes = {}
        for name, node in nodes.items():
            scopes[name] = trio.CancelScope()

            async def run(node: Node = node, scope: trio.CancelScope = scopes[name],
                          *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
                with scope:
                    await node.run(task_status=task_status)

            await nursery.start(run)

        def all_agree(expected: dict[str, str]) -> bool:
            return all(n.agreed() == expected for n in nodes.values())

        everyone_up = dict.fromkeys(BACKENDS, "up")
        await eventually(lambda: all_agree(everyone_up) and all(
            len(n.membership.members) == 3 for n in nodes.values()), what="all up, 3 members")

        for node in nodes.values():  # web1 really dies: every member's probes see it
            node.see("web1", DOWN)
        await eventually(lambda: all_agree({**everyone_up, "web1": "down"}), what="web1 down")

        partitioned = next(n for n in nodes.values() if "web2" in n.mine())
        partitioned.see("web2", DOWN)  # only this member is cut off from web2
        await eventually(lambda: partitioned.writer.statistics().pending == 0
                         and partitioned.writer.statistics().writes > 0, what="its report")
        leader = next(n for n in nodes.values() if n.leading)
        await eventually(lambda: leader.table.of("web", "web2").get(partitioned.name),
                         what="the leader to hold that report")
        done = leader.rounds
        leader.vote_again()
        await eventually(lambda: leader.rounds > done, what="a vote with that report")
        assert [e.backend for e in leader.events] == ["web1"]  # web2 not voted down
        assert all_agree({**everyone_up, "web1": "down"})
        partitioned.see("web2", UP)

        scopes[leader.name].cancel()  # the leader leaves (its lease revoked)
        await eventually(lambda: any(n.leading for n in nodes.values() if n is not leader),
                         what="a new leader")
        successor = next(n for n in nodes.values() if n.leading)
        for node in nodes.values():
            if node is not leader:
                node.see("web1", UP)
        await eventually(lambda: all(n.agreed() == everyone_up
                                     for n in nodes.values() if n is not leader),
                         what="web1 up again")
        seqs = [e.seq for e in leader.events + successor.events]
        assert seqs == list(range(1, len(seqs) + 1))  # none lost, none twice
        assert [(e.backend, e.to_state) for e in leader.events + successor.events] == [
            ("web1", "down"), ("web1", "up")]
        nursery.cancel_scope.cancel()
