"""The etcd v3 JSON-gateway client against a real etcd on loopback."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import trio
import trustme

from sentinel.cluster.config import EtcdTls
from sentinel.cluster.etcd import (
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_PROBES,
    Compare,
    Delete,
    EtcdClient,
    Get,
    Put,
    b64,
    prefix_end,
)
from sentinel.errors import EtcdCompacted, EtcdError
from tests.cluster.etcd_server import EtcdServer, running_etcd
from tests.cluster.helpers import Blackhole, SilentRelay
from tests.e2e.helpers import Processes, free_port

pytestmark = pytest.mark.e2e



def test_prefix_end() -> None:
    """A prefix's range end increments its last byte below 0xff (clientv3's rule)."""
    assert prefix_end("/a/") == "/a0"
    assert b64(prefix_end("/a\x7f")) == b64(b"/a\x80")  # not UTF-8: sent as the bytes


async def test_put_get_range_delete(client: EtcdClient, prefix: str) -> None:
    """Keys and values round-trip (base64), revisions grow, a prefix reads and deletes."""
    first = await client.put(prefix + "a", b"\x00one")
    second = await client.put(prefix + "b", "two é".encode())
    assert second > first
    kv = await client.get(prefix + "a")
    assert kv is not None
    assert (kv.key, kv.value, kv.mod_revision) == (prefix + "a", b"\x00one", first)
    assert await client.get(prefix + "missing") is None
    found = await client.get_prefix(prefix)
    assert [k.value.decode() for k in found.kvs] == ["\x00one", "two é"]
    assert found.revision >= second
    old = await client.range(prefix + "a", revision=first - 1)
    assert old.kvs == ()
    await client.delete(prefix, prefix_end(prefix))
    assert (await client.get_prefix(prefix)).kvs == ()


async def test_txn_put_if_absent(client: EtcdClient, prefix: str) -> None:
    """A txn comparing create_revision with 0 puts once; the second sees the holder."""
    key = prefix + "leader"
    won = await client.txn([Compare(key, "CREATE", 0)], [Put(key, b"n1")], [Get(key)])
    assert won.succeeded
    assert won.ranges == ()
    lost = await client.txn([Compare(key, "CREATE", 0)], [Put(key, b"n2")], [Get(key)])
    assert not lost.succeeded
    assert lost.ranges[0].kvs[0].value == b"n1"
    assert lost.ranges[0].kvs[0].create_revision == won.revision
    by_value = await client.txn([Compare(key, "VALUE", b"n1")],
                                [Delete(key), Put(prefix + "next", b"x")])
    assert by_value.succeeded
    assert await client.get(key) is None


async def test_create_puts_once_and_names_the_holder(client: EtcdClient, prefix: str) -> None:
    """`create` (put-if-absent) puts a key that does not exist and reports the revision;
    for one that does it puts nothing and returns the key as found, under its lease."""
    key = prefix + "leader"
    lease, _ = await client.lease_grant(30)
    put, revision, holder = await client.create(key, b"n1", lease=lease)
    assert (put, holder) == (True, None)
    put, after, holder = await client.create(key, b"n2")
    assert not put
    assert after == revision  # nothing written
    assert holder is not None
    assert (holder.value, holder.lease, holder.create_revision) == (b"n1", lease, revision)
    assert (await client.get(key)) == holder


async def test_txn_compares_a_range_and_counts(client: EtcdClient, prefix: str) -> None:
    """A compare over a range holds when every key in it passes (or none is there); a
    count-only read counts the keys without reading them; a read-only txn may be asked
    of one endpoint."""
    end = prefix_end(prefix)
    counted = Get(prefix, end, count_only=True)

    async def unseen_after(revision: int) -> tuple[bool, int]:
        done = await client.txn([Compare(prefix, "MOD", revision + 1, "LESS", range_end=end)],
                                [counted], [counted], at=client.endpoints[0])
        assert done.ranges[0].kvs == ()
        return not done.succeeded, done.ranges[0].count

    assert await unseen_after(0) == (False, 0)
    first = await client.put(prefix + "a", b"1")
    second = await client.put(prefix + "b", b"2")
    assert await unseen_after(first) == (True, 2)
    assert await unseen_after(second) == (False, 2)
    deleted = await client.delete(prefix + "a")
    assert await unseen_after(deleted) == (False, 1)


async def test_connections_have_tcp_keepalive(client: EtcdClient, etcd: EtcdServer,
                                              prefix: str) -> None:
    """The client's connections to etcd, a watch's as well as a call's, have TCP
    keepalive on with its timings (a probe after 30 s idle, then every 10 s, given up
    after 3), so an idle watch keeps a firewall's or NAT's flow and a dead path fails."""
    http = client._http  # the one HTTP client every call and watch goes through
    async with http.stream("POST", f"{etcd.url}/v3/watch",
                           json={"create_request": {"key": b64(prefix)}}) as watch:
        assert watch.status_code == 200
        call = await http.post(f"{etcd.url}/v3/kv/range", json={"key": b64(prefix)})
        assert call.status_code == 200
        sockets = [answer.extensions["network_stream"].get_extra_info("socket")
                   for answer in (watch, call)]
        assert sockets[0] is not sockets[1]
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
            assert (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)) == (
                        KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES) == (30, 10, 3)


async def test_lease_keys_vanish_on_revoke(client: EtcdClient, prefix: str) -> None:
    """A key under a lease lives while it is renewed and goes when it is revoked."""
    lease, ttl = await client.lease_grant(5)
    assert ttl == 5
    await client.put(prefix + "member", b"x", lease=lease)
    assert await client.lease_keepalive(lease) == 5
    kv = await client.get(prefix + "member")
    assert kv is not None
    assert kv.lease == lease
    await client.lease_revoke(lease)
    assert await client.get(prefix + "member") is None
    assert await client.lease_keepalive(lease) == 0
    await client.lease_revoke(lease)  # already gone: not an error


async def test_watch_from_revision(client: EtcdClient, prefix: str) -> None:
    """A watch from a past revision replays what happened since, then follows live."""
    start = await client.put(prefix + "a", b"1")
    await client.delete(prefix + "a")
    async with client.watch(prefix, prefix_end(prefix), start_revision=start) as stream:
        seen = []
        async for batch in stream:
            seen.extend((e.type, e.kv.key, e.kv.value) for e in batch.events)
            if len(seen) == 2:
                await client.put(prefix + "b", b"2")
            if len(seen) == 3:
                break
    assert seen == [("put", prefix + "a", b"1"), ("delete", prefix + "a", b""),
                    ("put", prefix + "b", b"2")]
    assert batch.next_revision == batch.events[-1].kv.mod_revision + 1


async def test_watch_compacted(client: EtcdClient, etcd: EtcdServer, prefix: str) -> None:
    """A watch from a compacted revision raises EtcdCompacted with the compaction point."""
    start = await client.put(prefix + "a", b"1")
    await client.put(prefix + "a", b"2")
    compacted = etcd.compact()
    async with client.watch(prefix + "a", start_revision=start) as stream:
        with pytest.raises(EtcdCompacted) as caught:
            await stream.__anext__()
    assert caught.value.compact_revision == compacted


async def test_error_answer_is_etcd_error(client: EtcdClient, prefix: str) -> None:
    """etcd's own refusal (a future revision) comes back as EtcdError with its code."""
    with pytest.raises(EtcdError, match="future revision") as caught:
        await client.range(prefix, revision=2**62)
    assert caught.value.code == 11


async def test_failover_to_the_next_endpoint(etcd: EtcdServer, prefix: str) -> None:
    """A dead first endpoint is skipped and the live one remembered for later calls."""
    dead = f"http://127.0.0.1:{free_port()}"
    c = EtcdClient([dead, etcd.url], timeout=5.0)
    try:
        await c.put(prefix + "k", b"v")
        assert c.endpoints[c._current] == etcd.url
        async with c.watch(prefix + "k") as stream:
            await c.put(prefix + "k", b"w")
            batch = await stream.__anext__()
        assert batch.events[0].kv.value == b"w"
    finally:
        await c.aclose()


async def test_an_endpoint_that_drops_connects_is_passed_over_within_the_call(
        etcd: EtcdServer, prefix: str) -> None:
    """A first endpoint whose connects get no answer (cut off) costs a connect its share
    of the deadline, not all of it: the call is answered by the next endpoint within its
    deadline, and later calls start there."""
    cut_off = Blackhole()
    c = EtcdClient([cut_off.url, etcd.url], timeout=1.0)
    try:
        await c.put(prefix + "k", b"v")
        assert c.endpoints[c._current] == etcd.url
    finally:
        await c.aclose()
        cut_off.close()


async def test_after_a_call_ran_out_of_time_the_next_starts_elsewhere(
        etcd: EtcdServer, prefix: str) -> None:
    """An endpoint that goes silent on a connection in use (a partition mid-stream) fails
    the call at its deadline; the next call starts from the next endpoint and is
    answered."""
    relay = SilentRelay(etcd)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        c = EtcdClient([relay.url, etcd.url], timeout=1.0)
        try:
            await c.put(prefix + "k", b"v")
            assert c.endpoints[c._current] == relay.url
            relay.silence()
            with pytest.raises(EtcdError, match=r"no answer within 1s \(last tried "
                               + re.escape(relay.url)):
                await c.get(prefix + "k")
            kv = await c.get(prefix + "k")
            assert kv is not None
            assert kv.value == b"v"
        finally:
            await c.aclose()
        nursery.cancel_scope.cancel()


async def test_no_endpoint(prefix: str) -> None:
    """With every endpoint refusing connections a call fails at once with both named."""
    ports = [free_port(), free_port()]
    c = EtcdClient([f"http://127.0.0.1:{p}" for p in ports], timeout=5.0)
    try:
        with trio.fail_after(4), pytest.raises(EtcdError) as caught:
            await c.get(prefix)
        assert all(str(p) in str(caught.value) for p in ports)
        assert not caught.value.maybe_applied
    finally:
        await c.aclose()


async def test_hung_etcd_times_out(own_etcd: EtcdServer) -> None:
    """A paused etcd (accepts connections, never answers) fails each call at its
    timeout; a txn is reported as maybe applied, a watch as not created; the client's
    statistics count the calls, the failures and their time."""
    c = EtcdClient([own_etcd.url], timeout=0.5)
    try:
        await c.put("/k", b"v")
        own_etcd.pause()
        try:
            with trio.fail_after(3):
                with pytest.raises(EtcdError, match=r"no answer within 0\.5s"):
                    await c.get("/k")
                with pytest.raises(EtcdError) as caught:
                    await c.txn([], [Put("/k", b"w")])
                assert caught.value.maybe_applied
                with pytest.raises(EtcdError, match=r"within 0\.5s"):
                    async with c.watch("/k"):
                        pass
        finally:
            own_etcd.resume()
        with trio.fail_after(10):
            kv = await c.get("/k")
        assert kv is not None
        stats = c.statistics()
        assert (stats.calls, stats.errors) == (5, 3)
        assert "within 0.5s" in stats.last_error
        assert stats.latency_sum >= 1.5
        assert stats.latency_max_ms >= 500
    finally:
        await c.aclose()


async def test_watch_fails_when_etcd_stops(own_etcd: EtcdServer) -> None:
    """A watch whose etcd goes away raises EtcdError instead of idling forever."""
    c = EtcdClient([own_etcd.url], timeout=2.0)
    try:
        async with c.watch("/k") as stream:
            own_etcd.stop()
            with trio.fail_after(10), pytest.raises(EtcdError):
                await stream.__anext__()
    finally:
        await c.aclose()


async def test_auth(own_etcd: EtcdServer) -> None:
    """With user/password the client authenticates and its calls pass; without, etcd
    refuses them."""
    admin = EtcdClient([own_etcd.url], timeout=5.0)
    try:
        own_etcd.enable_auth("root", "s3cret")
        user = EtcdClient([own_etcd.url], timeout=5.0, user="root", password="s3cret")
        try:
            await user.put("/k", b"v")
            kv = await user.get("/k")
            assert kv is not None
            assert kv.value == b"v"
        finally:
            await user.aclose()
        with pytest.raises(EtcdError, match=r"user name is empty|token"):
            await admin.get("/k")
    finally:
        await admin.aclose()



async def test_tls_with_client_certificate(tmp_path: Path) -> None:
    """Over https with a client certificate (etcd's --client-cert-auth) the client works
    with the context its config builds, and etcd refuses a client without one."""
    ca = trustme.CA()
    with running_etcd(tmp_path / "etcd", ca=ca) as server:
        tls = tmp_path / "etcd" / "tls"
        good = EtcdClient([server.url], timeout=5.0, ssl_context=EtcdTls(
            ca=str(tls / "ca.pem"), cert=str(tls / "client.pem"),
            key=str(tls / "client.pem")).context())
        anonymous = EtcdClient([server.url], timeout=5.0,
                               ssl_context=EtcdTls(ca=str(tls / "ca.pem")).context())
        try:
            await good.put("/k", b"v")
            kv = await good.get("/k")
            assert kv is not None
            assert kv.value == b"v"
            with pytest.raises(EtcdError):
                await anonymous.get("/k")
        finally:
            await good.aclose()
            await anonymous.aclose()


async def test_another_etcd_behind_the_endpoint_is_noticed_once(
        own_etcd: EtcdServer, tmp_path: Path) -> None:
    """Another etcd (another cluster ID) answering on the endpoint is a reset even when
    its store is ahead of the revision the client saw: counted and said once, and the
    waiters of `wait_reset` wake."""
    client = EtcdClient([own_etcd.url], timeout=5.0)
    (tmp_path / "other-logs").mkdir()
    procs = Processes(tmp_path / "other-logs")
    try:
        await client.put("/k", b"1")
        own_etcd.stop()
        # the cluster ID derives from the peer URLs and the cluster token, not the name
        other = EtcdServer(procs, tmp_path / "other", flags=["--initial-cluster-token=other"],
                           ports=(own_etcd.client_port, own_etcd.peer_port))
        other.start()
        writer = EtcdClient([other.url], timeout=5.0)
        try:
            for _ in range(5):  # ahead of the revision the client saw
                await writer.put("/elsewhere", b"x")
        finally:
            await writer.aclose()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.wait_reset, 0)
                assert await client.get("/k") is None
        assert await client.get("/k") is None
        stats = client.statistics()
        assert (stats.resets, client.resets) == (1, 1)
        assert "cluster id" in stats.last_reset
    finally:
        procs.close()
        await client.aclose()
