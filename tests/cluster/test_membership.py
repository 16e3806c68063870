"""Membership on a real etcd: registration, renewals, lapses, duplicates, mismatches."""

from __future__ import annotations

import json
import time

import pytest
import trio

from sentinel.cluster.etcd import EtcdClient
from sentinel.cluster.membership import Lease
from tests.cluster.etcd_server import EtcdServer
from tests.cluster.helpers import Sessions, SilentRelay, member
from tests.e2e.balancers import eventually

pytestmark = pytest.mark.e2e


async def test_register_list_and_leave(etcd: EtcdServer, prefix: str) -> None:
    """Two members register their documents under their leases and list each other; one
    that stops revokes its lease, so its key is gone at once."""
    m1 = member(etcd, prefix, "n1", zone="a")
    m2 = member(etcd, prefix, "n2", zone="b")
    reader = EtcdClient([etcd.url], timeout=5)
    try:
        async with trio.open_nursery() as outer:
            await outer.start(m1.run)
            async with trio.open_nursery() as inner:
                await inner.start(m2.run)
                await eventually(lambda: set(m1.members) == set(m2.members) == {"n1", "n2"},
                                 what="both members listed")
                kv = await reader.get(prefix + "members/n2")
                assert kv is not None
                assert m2.lease is not None
                assert kv.lease == m2.lease.id
                assert json.loads(kv.value) == {
                    "node": "n2", "zone": "b", "api": "http://127.0.0.1:99/n2",
                    "version": "0.1.0", "config_sha256": "c0ffee", "suspect": None}
                assert m1.members["n2"].zone == "b"
                inner.cancel_scope.cancel()
            assert await reader.get(prefix + "members/n2") is None
            await eventually(lambda: set(m1.members) == {"n1"}, what="n2 gone from n1's list")
            stats = m1.statistics()
            assert stats.ok
            assert (stats.registrations, stats.lapses, stats.mismatched) == (1, 0, ())
            outer.cancel_scope.cancel()
    finally:
        await reader.aclose()


async def test_suspicion_rewrites_the_record_under_the_lease(
        etcd: EtcdServer, prefix: str) -> None:
    """A member that suspects itself rewrites its record in place, under the same lease,
    and the other member's list shows it; when it no longer does, the record says so
    again (SPEC 11 in a cluster)."""
    m1 = member(etcd, prefix, "n1")
    m2 = member(etcd, prefix, "n2")
    reader = EtcdClient([etcd.url], timeout=5)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(m1.run)
            await nursery.start(m2.run)
            await eventually(lambda: set(m1.members) == {"n1", "n2"}, what="both listed")
            m2.suspect("every canary fails: gw (connection refused)")
            await eventually(lambda: m1.members["n2"].suspect is not None,
                             what="n2 suspect in n1's list")
            kv = await reader.get(prefix + "members/n2")
            assert kv is not None
            assert m2.lease is not None
            assert kv.lease == m2.lease.id
            assert json.loads(kv.value)["suspect"] == "every canary fails: gw (connection " \
                "refused)"
            m2.suspect(None)
            await eventually(lambda: m1.members["n2"].suspect is None,
                             what="n2 no longer suspect in n1's list")
            assert m2.statistics().registrations == 1
            nursery.cancel_scope.cancel()
    finally:
        await reader.aclose()
        for m in (m1, m2):
            await m.client.aclose()


async def test_renews_at_a_third_of_the_ttl(etcd: EtcdServer, prefix: str) -> None:
    """The lease is renewed every third of its TTL and so outlives it many times over."""
    m = member(etcd, prefix, "n1", lease_ttl=3)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(m.run)
        await eventually(lambda: m.statistics().renewals >= 9, what="nine renewals")
        assert trio.current_time() - start >= 9 * 1.0 * 0.95  # never faster than TTL/3
        stats = m.statistics()
        assert (stats.ok, stats.lapses, stats.registrations) == (True, 0, 1)
        nursery.cancel_scope.cancel()


async def test_paused_member_lapses_and_registers_again(
        etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """A member that was paused past its TTL ends its term (stops leading and probing),
    says so, and registers again under a new lease."""
    m = member(etcd, prefix, "n1", lease_ttl=2)
    sessions = Sessions()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, sessions)
        await eventually(lambda: len(sessions.started) == 1, what="the first term")
        first = sessions.started[0]
        # the whole event loop stalls, as under a long GC pause or SIGSTOP
        time.sleep(3.5)  # noqa: ASYNC251
        await eventually(lambda: len(sessions.started) == 2, what="a second term")
        assert sessions.ended == [first]
        stats = m.statistics()
        assert (stats.lapses, stats.registrations) == (1, 2)
        assert stats.lease == sessions.started[1] != first
        assert "lost its lease" in caplog.text
        assert "stopped acting as leader and prober" in caplog.text
        assert "this member was paused" in caplog.text
        nursery.cancel_scope.cancel()


async def test_revoked_lease_lapses(etcd: EtcdServer, prefix: str,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """A lease etcd no longer has (revoked by an operator) ends the term at the next
    renewal; the member registers again."""
    m = member(etcd, prefix, "n1")
    sessions = Sessions()
    admin = EtcdClient([etcd.url], timeout=5)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(m.run, sessions)
            await eventually(lambda: len(sessions.started) == 1, what="the first term")
            await admin.lease_revoke(sessions.started[0])
            await eventually(lambda: len(sessions.started) == 2, what="a second term")
            assert sessions.ended == sessions.started[:1]
            assert "etcd says it expired" in caplog.text
            nursery.cancel_scope.cancel()
    finally:
        await admin.aclose()


async def test_the_first_deadline_counts_from_the_grant(etcd: EtcdServer, prefix: str) -> None:
    """On a slow etcd (every answer 0.6 s late) the registration writes after the grant
    take a good share of the TTL; the member counts its lease from when it sent the
    grant (etcd counts from when it got it), not from when it had registered: with no
    renewal answered, its term ends one TTL after the grant left, not later."""
    ttl, delay = 4, 0.6  # each call's deadline is ttl / 3: well above the delay
    relay = SilentRelay(etcd, delay=delay)
    terms: list[tuple[float, float]] = []  # (started, ended)

    async def session(lease: Lease) -> None:
        started = trio.current_time()
        relay.silence()  # from now on no renewal is answered
        try:
            await trio.sleep_forever()
        finally:
            terms.append((started, trio.current_time()))

    async with trio.open_nursery() as outer:
        await outer.start(relay.run)
        m = member(etcd, prefix, "n1", lease_ttl=ttl, endpoints=(relay.url,))
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(m.run, session)
                await eventually(lambda: terms, what="the term to end", within=30)
                nursery.cancel_scope.cancel()
        finally:
            await m.client.aclose()
        outer.cancel_scope.cancel()
    started, ended = terms[0]
    granted = max(t for t, path in relay.requests
                  if path == b"/v3/lease/grant" and t <= started)
    assert started - granted >= 3 * delay  # the grant's answer and two writes' answers
    assert m.statistics().lapses == 1
    # the grant left before it reached the relay; the slack is for waking up
    assert ended - granted <= ttl + delay


async def test_etcd_hung_past_the_ttl(own_etcd: EtcdServer, prefix: str) -> None:
    """With etcd frozen longer than the TTL the member ends its term by its own clock
    and reports why; when etcd thaws it registers again."""
    m = member(own_etcd, prefix, "n1", lease_ttl=2)
    sessions = Sessions()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, sessions)
        await eventually(lambda: len(sessions.started) == 1, what="the first term")
        own_etcd.pause()
        try:
            await eventually(lambda: sessions.ended, what="the term to end")
            stats = m.statistics()
            assert not stats.ok
            assert stats.lapses == 1
            assert "lease lapsed" in stats.error or "cannot register" in stats.error
        finally:
            own_etcd.resume()
        await eventually(lambda: len(sessions.started) == 2 and m.statistics().ok,
                         what="registered again")
        nursery.cancel_scope.cancel()


async def test_duplicate_node_name_waits(etcd: EtcdServer, prefix: str) -> None:
    """A second member with a live member's node name is refused and says so; it
    registers once the first one has left."""
    first = member(etcd, prefix, "n1")
    second = member(etcd, prefix, "n1")
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as inner:
            await inner.start(first.run)
            await eventually(lambda: first.statistics().ok, what="the first registered")
            await outer.start(second.run)
            await eventually(lambda: "held by another live member" in
                             second.statistics().error, what="the refusal")
            assert second.lease is None
            inner.cancel_scope.cancel()
        await eventually(lambda: second.statistics().ok, what="the second registered")
        outer.cancel_scope.cancel()


async def test_other_configuration_reported(etcd: EtcdServer, prefix: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A member whose configuration hash differs is listed as mismatched and logged."""
    m1 = member(etcd, prefix, "n1")
    m2 = member(etcd, prefix, "n2", config_sha256="deadbeef")
    async with trio.open_nursery() as nursery:
        await nursery.start(m1.run)
        await nursery.start(m2.run)
        await eventually(lambda: m1.statistics().mismatched == ("n2",)
                         and m2.statistics().mismatched == ("n1",), what="mismatch both ways")
        assert "member n2 runs another configuration" in caplog.text
        assert m1.statistics().to_json()["mismatched"] == ["n2"]
        nursery.cancel_scope.cancel()
