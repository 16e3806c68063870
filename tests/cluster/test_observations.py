"""Observations on a real etcd: written on change under the lease, followed by the
leader's table, gone with the lease, rewritten under a new one."""

from __future__ import annotations

import json

import pytest
import trio

from sentinel.backoff import Backoff
from sentinel.cluster.etcd import EtcdClient, KeyValue, prefix_end
from sentinel.cluster.leader import AgreedChanges, AgreedState, Election, Leader, ServiceChange
from sentinel.cluster.membership import Lease, MemberInfo
from sentinel.cluster.node import ClusterNode
from sentinel.cluster.observations import (
    Observation,
    ObservationTable,
    ObservationWriter,
    observation_key,
    parse_key,
)
from sentinel.cluster.vote import Ballot
from sentinel.model import State
from tests.cluster.etcd_server import EtcdServer
from tests.cluster.helpers import cluster_config
from tests.e2e.balancers import eventually

pytestmark = pytest.mark.e2e
UP, DOWN = State.UP, State.DOWN


def test_keys_survive_awkward_names() -> None:
    """A '/' or '%' in a service or backend name cannot shift the key's parts."""
    key = observation_key("/s/", "a/b", "[::1]:80%x", "n1")
    assert key == "/s/observations/a%2Fb/%5B%3A%3A1%5D%3A80%25x/n1"
    assert parse_key("/s/", key) == ("a/b", "[::1]:80%x", "n1")


async def test_written_on_change_and_followed(client: EtcdClient, prefix: str) -> None:
    """Verdicts reach the table; a repeated verdict writes nothing; forget deletes; the
    table says which backends changed."""
    touched: list[set[tuple[str, str]]] = []
    table = ObservationTable(client, prefix, on_change=touched.append)
    n1 = ObservationWriter(client, prefix, "n1")
    n2 = ObservationWriter(client, prefix, "n2")
    lease1 = Lease(*await client.lease_grant(10))
    lease2 = Lease(*await client.lease_grant(10))
    async with trio.open_nursery() as nursery:
        await nursery.start(table.run)
        nursery.start_soon(n1.run, lease1)
        nursery.start_soon(n2.run, lease2)
        n1.report("web", "web1", DOWN, "connection refused")
        n2.report("web", "web1", UP)
        await eventually(lambda: len(table.of("web", "web1")) == 2, what="both verdicts")
        assert table.of("web", "web1") == {"n1": Observation(DOWN, "connection refused"),
                                           "n2": Observation(UP)}
        assert {("web", "web1")} in touched
        n1.report("web", "web1", DOWN, "timed out")  # same verdict: nothing to write
        n1.report("web", "web1", DOWN, "refused again")
        await eventually(lambda: n1.statistics().pending == 0, what="n1 idle")
        assert n1.statistics().writes == 1
        kv = await client.get(observation_key(prefix, "web", "web1", "n1"))
        assert kv is not None
        assert kv.lease == lease1.id
        n1.forget("web", "web1")
        await eventually(lambda: "n1" not in table.of("web", "web1"), what="forgotten")
        assert n1.statistics().writes == 2
        nursery.cancel_scope.cancel()


async def test_gone_with_the_lease_and_rewritten(client: EtcdClient, prefix: str) -> None:
    """When a prober's lease ends its verdicts leave the table; under a new lease the
    writer sends every current verdict again."""
    table = ObservationTable(client, prefix)
    writer = ObservationWriter(client, prefix, "n1")
    first = Lease(*await client.lease_grant(10))
    writer.report("web", "web1", DOWN)
    writer.report("web", "web2", UP)
    async with trio.open_nursery() as nursery:
        await nursery.start(table.run)
        async with trio.open_nursery() as term:
            term.start_soon(writer.run, first)
            await eventually(lambda: table.of("web", "web2"), what="the first term's writes")
            term.cancel_scope.cancel()
        await client.lease_revoke(first.id)
        await eventually(lambda: not table.of("web", "web1") and not table.of("web", "web2"),
                         what="verdicts gone with the lease")
        second = Lease(*await client.lease_grant(10))
        nursery.start_soon(writer.run, second)
        await eventually(lambda: table.of("web", "web1") == {"n1": Observation(DOWN)}
                         and table.of("web", "web2") == {"n1": Observation(UP)},
                         what="verdicts rewritten")
        nursery.cancel_scope.cancel()


async def test_retries_while_etcd_is_away(own_etcd: EtcdServer) -> None:
    """A verdict reported while etcd is down is written once etcd is back."""
    client = EtcdClient([own_etcd.url], timeout=0.5)
    writer = ObservationWriter(client, "/p/", "n1")
    try:
        lease = Lease(*await client.lease_grant(60))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, lease)
            own_etcd.stop()
            writer.report("web", "web1", DOWN, "refused")
            await eventually(lambda: writer.statistics().failures > 0, what="a failed write")
            assert writer.statistics().pending == 1
            own_etcd.start()
            await eventually(lambda: writer.statistics().pending == 0, what="the write")
            kv = await client.get(observation_key("/p/", "web", "web1", "n1"))
            assert kv is not None
            assert Observation.decode(kv.value) == Observation(DOWN, "refused")
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()


class QuietHost:
    """A ClusterHost that takes nothing in and leads by waiting."""

    def members_changed(self) -> None:
        """Nothing to regroup."""

    def observations_changed(self, touched: set[tuple[str, str]]) -> None:
        """Nothing to vote on."""

    def overrides_changed(self, touched: set[tuple[str, str]]) -> None:
        """No overrides here."""

    def agreed_changed(self, changes: AgreedChanges) -> None:
        """No sinks to follow it."""

    async def lead(self, leader: Leader, state: AgreedState) -> None:
        """A term that publishes nothing."""
        await trio.sleep_forever()

    def term_ended(self) -> None:
        """Nothing to go back to."""


async def test_no_down_before_the_suspect_record_even_while_etcd_refuses_it(
        client: EtcdClient, etcd: EtcdServer, prefix: str) -> None:
    """A member that starts suspecting itself writes no down observation until etcd
    holds its record saying so (SPEC 11: the leader would count the down, then restore
    it): while etcd refuses the record (its reason over etcd's request limit) the down
    waits, other verdicts go on; once the record is written (retried) the down follows,
    at a later revision."""
    node = ClusterNode(cluster_config(etcd, prefix, "n1"), QuietHost(),
                       api_url="http://n1", version="0")
    seen: list[KeyValue] = []

    async def follow(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        async with client.watch(prefix, prefix_end(prefix)) as stream:
            task_status.started()
            async for batch in stream:
                seen.extend(e.kv for e in batch.events)

    def written(backend: str, state: State) -> KeyValue | None:
        key = observation_key(prefix, "web", backend, "n1")
        return next((kv for kv in seen if kv.key == key
                     and Observation.decode(kv.value).state is state), None)

    async with trio.open_nursery() as nursery:
        await nursery.start(follow)
        await nursery.start(node.run)
        await eventually(lambda: node.membership.statistics().ok and node.leading,
                         what="n1 registered and leading")
        assert node.suspects() == frozenset()
        refused = node.client.statistics().errors
        node.suspect("x" * 2_000_000)
        node.report("web", "b1", DOWN, "refused")
        node.report("web", "b2", UP, "")
        await eventually(lambda: written("b2", UP) is not None
                         and node.client.statistics().errors > refused,
                         what="b2's verdict written, the record refused")
        assert written("b1", DOWN) is None
        assert node.writer.statistics().pending == 1
        node.suspect("every canary fails")  # a record etcd takes, on the next retry
        down = await eventually(lambda: written("b1", DOWN), what="b1's down written")
        records = [kv for kv in seen if kv.key == f"{prefix}members/n1"
                   and json.loads(kv.value)["suspect"] == "every canary fails"]
        assert records
        assert records[0].mod_revision < down.mod_revision
        assert Observation.decode(down.value).record == records[-1].mod_revision
        nursery.cancel_scope.cancel()


async def test_a_down_counts_once_its_authors_record_is_seen(
        client: EtcdClient, etcd: EtcdServer, prefix: str) -> None:
    """The leader follows members and observations through two watches: a down stamped
    with a record revision of its author's that the member list has not shown yet (the
    record, perhaps saying its author suspects itself, still on its way) is not counted,
    as if not reported, until that record or a later one arrives."""
    node = ClusterNode(cluster_config(etcd, prefix, "n1"), QuietHost(),
                       api_url="http://n1", version="0")
    lease = Lease(*await client.lease_grant(10))
    n2 = MemberInfo("n2", None, "http://n2", "0", "c0ffee")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        first = await client.put(f"{prefix}members/n2", n2.encode(), lease=lease.id)
        await eventually(lambda: "n2" in node.probers("web", "b1"), what="n2 a prober")
        key = observation_key(prefix, "web", "b1", "n2")
        ahead = Observation(DOWN, "refused", record=first + 1)  # a record not shown yet
        await client.put(key, ahead.encode(), lease=lease.id)
        await eventually(lambda: "n2" in node.observed("web", "b1"), what="n2's down")
        ballot = node.tally("web", "b1", UP)
        assert (ballot.down, "n2" in ballot.missing) == ((), True)
        await client.put(f"{prefix}members/n2", n2.encode(), lease=lease.id)
        await eventually(lambda: node.tally("web", "b1", UP).down == ("n2",),
                         what="n2's down counted once its record is seen")
        nursery.cancel_scope.cancel()
    await client.lease_revoke(lease.id)


class VotingHost(QuietHost):
    """A QuietHost whose term, as it starts, votes once on web/b1 from the agreed state."""

    def __init__(self) -> None:
        self.node: ClusterNode | None = None
        self.ballot: Ballot | None = None

    async def lead(self, leader: Leader, state: AgreedState) -> None:
        """Vote on b1 from its agreed state, then publish nothing."""
        assert self.node is not None
        current = State(state.backends["web"]["b1"]["state"])
        self.ballot = self.node.tally("web", "b1", current)
        await trio.sleep_forever()


async def test_a_new_leader_votes_on_observations_no_older_than_its_term(
        own_etcd: EtcdServer) -> None:
    """After an etcd outage a member's copy of the observations may still be the one from
    before it (its watch waiting out a backoff): elected then, it votes only once the copy
    holds what etcd held when its term read the agreed state, so a backend agreed down
    while its probers' old ups linger in that copy is not voted up (a false up, then down
    again)."""
    prefix = "/sentinel/flap/"
    client = EtcdClient([own_etcd.url], timeout=5.0)
    host = VotingHost()
    node = host.node = ClusterNode(cluster_config(own_etcd, prefix, "n1"), host,
                                   api_url="http://n1", version="0")
    held = Lease(*await client.lease_grant(60))  # the leader key of n0, another member
    term = await Election(client, prefix, "n0", config_sha256="c0ffee").campaign(held)
    n2 = Lease(*await client.lease_grant(60))  # a prober that outlives the outage
    await client.put(f"{prefix}members/n2",
                     MemberInfo("n2", None, "http://n2", "0", "c0ffee").encode(), lease=n2.id)
    key = observation_key(prefix, "web", "b1", "n2")
    await client.put(key, Observation(UP).encode(), lease=n2.id)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await eventually(lambda: node.probers("web", "b1") == ("n1", "n2")
                             and node.observed("web", "b1") == {"n2": Observation(UP)},
                             what="n1 following, n2 a prober saying up")
            # this copy's watch, broken by the outage, waits a minute before it retries
            node.observations.mirror._backoff = Backoff(initial=60, maximum=60)
            own_etcd.stop()
            await eventually(lambda: not node.observations.mirror.ok,
                             what="n1 to notice the outage")
            own_etcd.start()
            await client.put(key, Observation(DOWN, "refused").encode(), lease=n2.id)
            n0 = Leader(client, prefix, term)  # n0 publishes b1 down on that down
            await n0.load()
            await n0.publish([ServiceChange("web", {"b1": {"state": "down"}})])
            assert node.observed("web", "b1") == {"n2": Observation(UP)}  # stale
            await client.lease_revoke(held.id)  # n0 leaves: n1 is elected
            ballot = await eventually(lambda: host.ballot, what="n1's first vote")
            assert (ballot.state, ballot.down, ballot.missing) == (DOWN, ("n2",), ("n1",))
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
