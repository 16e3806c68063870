"""Election and fenced writes on a real etcd: one leader, numbered events, deposed
leaders refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from sentinel.cluster.etcd import EtcdClient
from sentinel.cluster.leader import (
    AgreedChanges,
    Election,
    Leader,
    LeaderKey,
    ServiceChange,
    Term,
    agreed_prefix,
    read_agreed,
)
from sentinel.cluster.membership import Lease
from sentinel.cluster.mirror import PrefixMirror
from sentinel.errors import EtcdError, NotLeader
from tests.cluster.etcd_server import EtcdServer
from tests.e2e.balancers import eventually
from tests.sinks.webhook.conftest import event

pytestmark = pytest.mark.e2e


async def lease(client: EtcdClient, ttl: int = 10) -> Lease:
    """A fresh lease (not kept alive: it ends after `ttl` unless revoked first)."""
    return Lease(*await client.lease_grant(ttl))


async def elect(client: EtcdClient, prefix: str, node: str, ttl: int = 10
                ) -> tuple[Lease, Term]:
    """`node` campaigns under a new lease and (the key being free) wins at once."""
    granted = await lease(client, ttl)
    with trio.fail_after(5):
        return granted, await Election(client, prefix, node).campaign(granted)


def change(service: str, state: str, *backends: str) -> ServiceChange:
    """`backends` of `service` now in `state` (and the service's document saying so),
    with one event per backend."""
    return ServiceChange(service, {b: {"state": state} for b in backends}, {"changed": state},
                         tuple(event(backend=b, to=state, service=service) for b in backends))


async def test_one_leader_and_succession(client: EtcdClient, prefix: str) -> None:
    """The first campaign wins; the second waits and wins once the first one's lease
    is revoked, with a later fence."""
    first_lease, first = await elect(client, prefix, "n1")
    assert first == Term("n1", first_lease.id, first.revision)
    second_lease = await lease(client)
    won: list[Term] = []
    elected = trio.Event()
    async with trio.open_nursery() as nursery:

        async def campaign() -> None:
            won.append(await Election(client, prefix, "n2", recheck=30).campaign(second_lease))
            elected.set()

        nursery.start_soon(campaign)
        with trio.move_on_after(0.3):  # while n1 holds the key, n2 must not win
            await elected.wait()
        assert won == []
        await client.lease_revoke(first_lease.id)
        with trio.fail_after(5):
            await elected.wait()
    assert won[0].node == "n2"
    assert won[0].revision > first.revision
    kv = await client.get(prefix + "leader")
    assert kv is not None
    assert (LeaderKey.decode(kv.value), kv.lease) == (LeaderKey("n2", ""), second_lease.id)


async def test_campaign_again_under_own_lease(client: EtcdClient, prefix: str) -> None:
    """A campaign that finds its own lease on the key (an answer lost) leads at once."""
    granted, term = await elect(client, prefix, "n1")
    with trio.fail_after(5):
        again = await Election(client, prefix, "n1").campaign(granted)
    assert again == term


async def test_publish_numbers_events(client: EtcdClient, prefix: str) -> None:
    """Entries, documents and their events land together; seq counts every event once,
    across publications, and is what load() reads back."""
    _, term = await elect(client, prefix, "n1")
    leader = Leader(client, prefix, term)
    state = await leader.load()
    assert (state.seq, state.services, state.backends) == (0, {}, {})
    first = await leader.publish([change("web", "down", "web1", "web2"),
                                  change("api", "down", "api1")])
    assert [e.seq for e in first] == [1, 2, 3]
    assert [(e.service, e.backend) for e in first] == [("web", "web1"), ("web", "web2"),
                                                       ("api", "api1")]
    second = await leader.publish([change("web", "up", "web1")])
    assert [e.seq for e in second] == [4]
    state = await leader.load()
    assert state.seq == 4
    assert state.services == {"api": {"changed": "down"}, "web": {"changed": "up"}}
    assert state.backends == {"api": {"api1": {"state": "down"}},
                              "web": {"web1": {"state": "up"}, "web2": {"state": "down"}}}
    assert [e.seq for e in await leader.events_after(2)] == [3, 4]
    assert [e.to_json() for e in await leader.events_after(0)] == \
        [e.to_json() for e in first + second]


async def test_successor_continues_seq(client: EtcdClient, prefix: str) -> None:
    """A new leader reads the last seq and numbers on from it: none lost, none twice."""
    _, first = await elect(client, prefix, "n1")
    old = Leader(client, prefix, first)
    await old.load()
    await old.publish([change("web", "down", "web1", "web2")])
    await Election(client, prefix, "n1").resign(first)
    _, second = await elect(client, prefix, "n2")
    new = Leader(client, prefix, second)
    assert (await new.load()).seq == 2
    assert [e.seq for e in await new.publish([change("web", "up", "web1")])] == [3]
    with pytest.raises(NotLeader, match="n1 no longer leads"):
        await old.publish([change("web", "up", "web2")])
    assert (await new.load()).seq == 3


async def test_lapsed_leader_is_fenced(client: EtcdClient, prefix: str) -> None:
    """A leader whose keepalives stopped loses its lease; the successor leads, and the
    old leader's write fails atomically: no view, no event, no seq of it lands."""
    _, old_term = await elect(client, prefix, "n1", ttl=1)  # never renewed
    old = Leader(client, prefix, old_term)
    await old.load()
    new_lease = await lease(client)
    with trio.fail_after(10):
        new_term = await Election(client, prefix, "n2", recheck=0.5).campaign(new_lease)
    new = Leader(client, prefix, new_term)
    await new.load()
    await new.publish([change("web", "up", "web1")])
    with pytest.raises(NotLeader):
        await old.publish([change("web", "down", "web1"), change("api", "down", "api1")])
    state = await new.load()
    assert state.seq == 1
    assert (state.services, state.backends) == ({"web": {"changed": "up"}},
                                                {"web": {"web1": {"state": "up"}}})
    with pytest.raises(NotLeader):
        await old.record_delivered("ops", 1)


async def test_unknown_seq_blocks_until_load(client: EtcdClient, prefix: str) -> None:
    """When seq moved under the leader (a write of its own whose answer it lost), the
    publication is refused, and so is the next, until load() reads the truth."""
    _, term = await elect(client, prefix, "n1")
    leader = Leader(client, prefix, term)
    twin = Leader(client, prefix, term)  # the same term's write that "got lost"
    await leader.load()
    await twin.load()
    await twin.publish([change("web", "down", "web1")])
    with pytest.raises(EtcdError, match="the cluster seq is 1, not 0"):
        await leader.publish([change("web", "down", "web1")])
    assert leader.seq is None
    with pytest.raises(EtcdError, match="load"):
        await leader.publish([change("web", "up", "web1")])
    assert (await leader.load()).seq == 1
    assert [e.seq for e in await leader.publish([change("web", "up", "web1")])] == [2]


async def test_many_services_split_into_transactions(client: EtcdClient, prefix: str) -> None:
    """A publication over 250 services (beyond etcd's 128 operations per transaction)
    is written in parts with consecutive seqs."""
    _, term = await elect(client, prefix, "n1")
    leader = Leader(client, prefix, term)
    await leader.load()
    published = await leader.publish([change(f"svc{i}", "down", "b1") for i in range(250)])
    assert [e.seq for e in published] == list(range(1, 251))
    state = await leader.load()
    assert (state.seq, len(state.services), len(state.backends)) == (250, 250, 250)


async def test_old_events_trimmed_but_not_undelivered(client: EtcdClient, prefix: str) -> None:
    """Events beyond the last `keep_events` are dropped, except those a leader-scope
    sink has not delivered yet; delivered marks are fenced and read back."""
    _, term = await elect(client, prefix, "n1")
    leader = Leader(client, prefix, term, keep_events=3)
    await leader.load()
    await leader.record_delivered("ops", 2)
    for _ in range(8):
        await leader.publish([change("web", "down", "web1")])
    assert [e.seq for e in await leader.events_after(0)] == [3, 4, 5, 6, 7, 8]
    await leader.record_delivered("ops", 8)
    await leader.publish([change("web", "down", "web1")])
    assert [e.seq for e in await leader.events_after(0)] == [7, 8, 9]
    assert (await leader.load()).delivered == {"ops": 8}
    raw = await client.get(prefix + "agreed/events/00000000000000000009")
    assert raw is not None
    assert json.loads(raw.value)[0]["seq"] == 9


async def test_one_large_service_is_split_below_the_operation_limit(
        client: EtcdClient, prefix: str) -> None:
    """A service whose 300 backends all change is written in transactions under etcd's
    128 operations, each backend's event with its entry, numbered in order."""
    _, term = await elect(client, prefix, "n1")
    leader = Leader(client, prefix, term)
    await leader.load()
    names = [f"b{i:03d}" for i in range(300)]
    published = await leader.publish([change("big", "down", *names)])
    assert [e.seq for e in published] == list(range(1, 301))
    state = await leader.load()
    assert (state.seq, len(state.backends["big"])) == (300, 300)


def test_a_large_change_is_split_with_each_event_beside_its_entry() -> None:
    """Each part of a change too large for one transaction holds at most `most` keys and
    the events of its own backends; the document and the service's own events (a
    panic's, no backend) go with the first part."""
    names = [f"b{i}" for i in range(7)]
    panic = event(backend="", to="panic", service="big")
    whole = ServiceChange("big", {n: {"state": "down"} for n in names}, {"panic": True},
                          (panic, *(event(backend=n, service="big") for n in names)))
    parts = list(whole.parts(3))
    assert [list(p.backends) for p in parts] == [["b0", "b1"], ["b2", "b3", "b4"],
                                                 ["b5", "b6"]]
    assert [p.header for p in parts] == [{"panic": True}, None, None]
    assert [[e.backend for e in p.events] for p in parts] == [
        ["", "b0", "b1"], ["b2", "b3", "b4"], ["b5", "b6"]]
    assert all(p.keys <= 3 for p in parts)


class FailingTxn(EtcdClient):
    """A client whose transactions fail as a timeout would (etcd may or may not have
    applied them: here it has not) once `passing` more have gone through."""

    passing: int | None = None  # None: none fails

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        if self.passing == 0:
            raise EtcdError("/v3/kv/txn: no answer within 1s", maybe_applied=True)
        if self.passing is not None:
            self.passing -= 1
        return await super().txn(*args, **kwargs)


async def test_a_publish_that_fails_between_parts_leaves_no_entry_without_its_event(
        etcd: EtcdServer, prefix: str) -> None:
    """A change split over transactions whose second one fails: what landed is whole
    (every backend written down has its down event in etcd), what did not land left
    its backends as they were (before, the events went with the last part only, and
    the downs written first were never told by any event)."""
    client = FailingTxn([etcd.url], timeout=5.0)
    try:
        _, term = await elect(client, prefix, "n1")
        leader = Leader(client, prefix, term)
        await leader.load()
        client.passing = 1
        names = [f"b{i:03d}" for i in range(200)]
        with pytest.raises(EtcdError):
            await leader.publish([change("big", "down", *names)])
        held = read_agreed(prefix, {kv.key: kv for kv in (
            await client.get_prefix(agreed_prefix(prefix))).kvs})
        written = set(held.backends.get("big", {}))
        told = {e.backend for e in held.events}
        assert written  # the first part landed
        assert written < set(names)  # the second did not
        assert told == written
        assert held.seq == len(written)
    finally:
        await client.aclose()


async def test_members_follow_entries_and_events_together(client: EtcdClient,
                                                          prefix: str) -> None:
    """A mirror of agreed/ reports each publication's entries, documents, seq and events
    (however the watch batches them), sorted by read_agreed, names with a / included;
    a stray value is skipped."""
    reports: list[AgreedChanges] = []
    mirror = PrefixMirror(client, agreed_prefix(prefix),
                          on_change=lambda changes: reports.append(read_agreed(prefix, changes)))
    _, term = await elect(client, prefix, "n1")
    leader = Leader(client, prefix, term)
    await leader.load()
    async with trio.open_nursery() as nursery:
        await nursery.start(mirror.run)
        await leader.publish([change("web", "down", "web1", "a/b"), change("api", "up")])
        await client.put(agreed_prefix(prefix) + "views/bad", b"{not json")
        await leader.publish([change("web", "up", "web1")])
        await eventually(lambda: sum(len(r.events) for r in reports) == 3,
                         what="three events")
        nursery.cancel_scope.cancel()
    assert [(e.seq, e.backend, e.to_state) for r in reports for e in r.events] == [
        (1, "web1", "down"), (2, "a/b", "down"), (3, "web1", "up")]
    assert [r.seq for r in reports if r.seq is not None][-1] == 3
    services: dict[str, object] = {}
    backends: dict[str, dict[str, object]] = {}
    for r in reports:
        services.update(r.services)
        for name, entries in r.backends.items():
            backends.setdefault(name, {}).update(entries)
    assert services == {"web": {"changed": "up"}, "api": {"changed": "up"}}
    assert backends == {"web": {"web1": {"state": "up"}, "a/b": {"state": "down"}}}


async def test_a_losing_campaign_writes_nothing(own_etcd: EtcdServer, prefix: str) -> None:
    """While another member leads, a campaign re-reads the leader key every `recheck`
    but proposes no write to etcd (a put-if-absent that fails still goes through raft),
    and still wins once the key goes. (Its own etcd: on the shared one, leases other
    tests left to lapse are revoked through raft too, and the count is exact.)"""
    client = EtcdClient([own_etcd.url], timeout=5.0)
    try:
        await _losing_campaign(client, own_etcd, prefix)
    finally:
        await client.aclose()


async def _losing_campaign(client: EtcdClient, etcd: EtcdServer, prefix: str) -> None:
    first_lease, _ = await elect(client, prefix, "n1")
    second_lease = await lease(client)
    won = trio.Event()

    async def campaign() -> None:
        await Election(client, prefix, "n2", recheck=0.1).campaign(second_lease)
        won.set()

    async with trio.open_nursery() as nursery:
        start = etcd.proposals()
        assert start is not None
        nursery.start_soon(campaign)
        # its first put-if-absent, failing, is one proposal
        before = await eventually(lambda: etcd.proposals() == start + 1 and start + 1,
                                  what="the first attempt")
        with trio.move_on_after(1.0):  # about ten re-checks
            await won.wait()
        assert not won.is_set()
        assert etcd.proposals() == before
        await client.lease_revoke(first_lease.id)
        with trio.fail_after(5):
            await won.wait()


async def test_a_wiped_store_reusing_the_fence_revision_refuses_the_old_term(
        own_etcd: EtcdServer) -> None:
    """A store wiped and started again reuses revisions: a new leader key created at the
    very revision of an old term's key does not let that term write (the fence compares
    the lease too), and the old term learns it no longer leads."""
    client = EtcdClient([own_etcd.url], timeout=5.0)
    try:
        for i in range(3):  # the old term's key at a revision the new store reaches
            await client.put(f"/filler/{i}", b"x")
        _, old = await elect(client, "/p/", "n1")
        own_etcd.stop()
        own_etcd.wipe()
        own_etcd.start()
        while (await client.put("/filler/next", b"x")) < old.revision - 1:
            pass
        _, new = await elect(client, "/p/", "n2")
        assert new.revision == old.revision
        stale = Leader(client, "/p/", old)
        await stale.load()
        with pytest.raises(NotLeader, match="the leader key is n2's"):
            await stale.publish([change("web", "down", "b1")])
        assert await client.get(f"{agreed_prefix('/p/')}seq") is None
    finally:
        await client.aclose()
