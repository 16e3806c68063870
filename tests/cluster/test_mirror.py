"""PrefixMirror: a prefix of a real etcd followed by range + watch, through faults."""

from __future__ import annotations

import contextlib

import httpx
import pytest
import trio

from sentinel.backoff import Backoff
from sentinel.cluster.etcd import EtcdClient, KeyValue, b64
from sentinel.cluster.mirror import Changes, PrefixMirror
from sentinel.errors import EtcdError
from tests.cluster.etcd_server import EtcdServer
from tests.cluster.helpers import SilentRelay
from tests.e2e.balancers import eventually

pytestmark = pytest.mark.e2e


class Recorder:
    """The changes a mirror reported, flattened to (key, value or None)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes | None]] = []

    def __call__(self, changes: Changes) -> None:
        self.seen.extend((k, kv.value if kv else None) for k, kv in changes.items())



def values(mirror: PrefixMirror) -> dict[str, bytes]:
    """The mirror's keys and values."""
    return {k: kv.value for k, kv in mirror.items.items()}


async def test_reads_then_follows(client: EtcdClient, prefix: str) -> None:
    """Keys present at start arrive in the first read, later puts and deletes as they
    happen, each reported once, and nothing outside the prefix."""
    await client.put(prefix + "a", b"1")
    seen = Recorder()
    mirror = PrefixMirror(client, prefix, on_change=seen)
    async with trio.open_nursery() as nursery:
        await nursery.start(mirror.run)
        assert mirror.ok
        assert seen.seen == [(prefix + "a", b"1")]
        await client.put(prefix + "b", b"2")
        await client.put(prefix[:-1] + "x", b"outside")
        await client.delete(prefix + "a")
        await eventually(lambda: len(seen.seen) == 3, what="two changes, in revision order")
        assert seen.seen[1:] == [(prefix + "b", b"2"), (prefix + "a", None)]
        assert values(mirror) == {prefix + "b": b"2"}
        nursery.cancel_scope.cancel()


async def test_compacted_watch_reads_afresh(client: EtcdClient, etcd: EtcdServer,
                                            prefix: str) -> None:
    """When history after the mirror's read is compacted before its watch starts, the
    mirror reads the prefix again and reports what changed meanwhile."""
    await client.put(prefix + "a", b"1")
    seen = Recorder()

    def meddle(changes: Changes) -> None:
        seen(changes)
        if len(seen.seen) == 1:  # after the first read, before the watch: change, compact
            for key in (prefix + "a", "/elsewhere"):  # compaction keeps the newest revision
                httpx.post(f"{etcd.url}/v3/kv/put", json={"key": b64(key), "value": b64(b"2")},
                           timeout=5)
            etcd.compact()

    mirror = PrefixMirror(client, prefix, on_change=meddle)
    async with trio.open_nursery() as nursery:
        await nursery.start(mirror.run)
        await eventually(lambda: mirror.resyncs == 1 and mirror.ok, what="a second read")
        assert seen.seen == [(prefix + "a", b"1"), (prefix + "a", b"2")]
        await client.put(prefix + "b", b"3")
        await eventually(lambda: prefix + "b" in mirror.items, what="the watch after it")
        nursery.cancel_scope.cancel()


async def stop_then_write(etcd: EtcdServer, mirror: PrefixMirror, *, put: str,
                          delete: str | None = None, wipe: bool = False) -> None:
    """Stop etcd until `mirror` notices (its copy kept, the reason given), start it again
    (emptied first with `wipe`), then delete `delete` and put `put` (value 2)."""
    kept = dict(mirror.items)
    etcd.stop()
    await eventually(lambda: not mirror.ok, what="the mirror to notice")
    assert mirror.error
    assert mirror.items == kept
    if wipe:
        etcd.wipe()
    etcd.start()
    writer = EtcdClient([etcd.url], timeout=5.0)
    try:
        if delete is not None:
            await writer.delete(delete)
        await writer.put(put, b"2")
    finally:
        await writer.aclose()


async def test_etcd_restart_fail_static_then_catch_up(own_etcd: EtcdServer) -> None:
    """While etcd is down the mirror keeps its copy and says why; once etcd is back it
    resumes its watch where it stopped (no range read: nothing was compacted) and
    reports the changes made meanwhile in order, a deletion included."""
    client = EtcdClient([own_etcd.url], timeout=0.5)
    await client.put("/p/a", b"1")
    await client.put("/p/b", b"1")
    seen = Recorder()
    mirror = PrefixMirror(client, "/p/", on_change=seen, check_every=0.5)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(mirror.run)
            await stop_then_write(own_etcd, mirror, delete="/p/a", put="/p/c")
            await eventually(lambda: mirror.ok and "/p/c" in mirror.items, what="catch-up")
            assert values(mirror) == {"/p/b": b"1", "/p/c": b"2"}
            assert seen.seen[2:] == [("/p/a", None), ("/p/c", b"2")]
            assert mirror.resyncs == 0
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()


async def test_etcd_back_with_less_history_is_read_afresh(own_etcd: EtcdServer) -> None:
    """etcd back behind the revision the mirror applied (emptied here, as a restore from
    an older snapshot would be): the mirror does not wait on a future revision but reads
    the prefix again and reports what is gone and what is new."""
    client = EtcdClient([own_etcd.url], timeout=0.5)
    for key in ("/p/a", "/p/b", "/p/c"):
        await client.put(key, b"1")
    seen = Recorder()
    mirror = PrefixMirror(client, "/p/", on_change=seen, check_every=0.5)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(mirror.run)
            await stop_then_write(own_etcd, mirror, wipe=True, put="/p/d")
            await eventually(lambda: mirror.ok and "/p/d" in mirror.items, what="read afresh")
            assert mirror.resyncs == 1
            assert values(mirror) == {"/p/d": b"2"}
            assert sorted(seen.seen[3:], key=str) == [
                ("/p/a", None), ("/p/b", None), ("/p/c", None), ("/p/d", b"2")]
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()


async def test_hung_etcd_is_noticed(own_etcd: EtcdServer) -> None:
    """A paused etcd (the watch just idles) is noticed by the liveness read, and the
    mirror follows again after it thaws, by watching on (no range read)."""
    client = EtcdClient([own_etcd.url], timeout=0.5)
    mirror = PrefixMirror(client, "/p/", check_every=0.5)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(mirror.run)
            own_etcd.pause()
            try:
                await eventually(lambda: not mirror.ok, what="the mirror to notice")
            finally:
                own_etcd.resume()
            await eventually(lambda: mirror.ok, what="the mirror to recover")
            await client.put("/p/after", b"x")
            found: KeyValue | None = await eventually(lambda: mirror.items.get("/p/after"),
                                                     what="a change after the thaw")
            assert found.value == b"x"
            assert mirror.resyncs == 0
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()


async def test_a_watch_whose_endpoint_went_silent_is_noticed_while_another_answers(
        etcd: EtcdServer, prefix: str) -> None:
    """With two endpoints, the one the watch streams from goes silent while the client's
    other calls (a member's lease renewals) move on to the other: the liveness read asks
    the watch's own endpoint, fails, and the watch starts again on the live one; a
    change made meanwhile arrives (before, the read was answered by the live endpoint,
    the mirror said ok and never saw another change)."""
    relay = SilentRelay(etcd)
    async with trio.open_nursery() as outer:
        await outer.start(relay.run)
        client = EtcdClient([relay.url, etcd.url], timeout=0.5)
        writer = EtcdClient([etcd.url], timeout=5.0)
        mirror = PrefixMirror(client, prefix, check_every=0.5)

        async def renewals() -> None:  # as a member's lease renewals use the client
            while True:
                with contextlib.suppress(EtcdError):
                    await client.range(prefix + "other")
                await trio.sleep(0.1)

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(mirror.run)
                await writer.put(prefix + "before", b"1")
                await eventually(lambda: prefix + "before" in mirror.items, what="the watch")
                relay.silence()
                nursery.start_soon(renewals)
                await writer.put(prefix + "after", b"1")
                await eventually(lambda: prefix + "after" in mirror.items,
                                 what="a change made after the watch's endpoint went silent")
                await eventually(lambda: mirror.ok, what="the mirror ok on the live endpoint")
                nursery.cancel_scope.cancel()
        finally:
            await writer.aclose()
            await client.aclose()
        outer.cancel_scope.cancel()


async def test_read_at_least_does_not_wait_out_the_backoff(own_etcd: EtcdServer) -> None:
    """A copy whose watch broke and waits out a long backoff is read afresh at once when
    a caller needs it at least as new as a revision (a new leader: the agreed state it
    starts from), and follows on from that read; a copy already that new is not read."""
    client = EtcdClient([own_etcd.url], timeout=0.5)
    await client.put("/p/a", b"1")
    mirror = PrefixMirror(client, "/p/", check_every=0.5,
                          backoff=Backoff(initial=60, maximum=60))
    writer = EtcdClient([own_etcd.url], timeout=5.0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(mirror.run)
            own_etcd.stop()
            await eventually(lambda: not mirror.ok, what="the mirror to notice")
            own_etcd.start()
            written = await writer.put("/p/b", b"1")
            assert "/p/b" not in mirror.items  # a minute before the watch is tried again
            with trio.fail_after(10):
                await mirror.read_at_least(written)
            assert mirror.ok
            assert values(mirror) == {"/p/a": b"1", "/p/b": b"1"}
            await writer.put("/p/c", b"1")
            await eventually(lambda: "/p/c" in mirror.items, what="the watch after the read")
            head = mirror.revision
            with trio.fail_after(1):
                await mirror.read_at_least(head)
            assert mirror.revision == head
            nursery.cancel_scope.cancel()
    finally:
        await writer.aclose()
        await client.aclose()


async def test_no_liveness_read_while_etcd_answers_the_client(own_etcd: EtcdServer) -> None:
    """A mirror makes no liveness read of its own while etcd answered its client within
    the check interval (a member's lease renewals come every third of the lease's TTL):
    three mirrors checking every 2 s, their client used every 0.1 s by something else
    for 4.5 s, read nothing past their first reads and watches (each alone would have
    read twice more)."""
    client = EtcdClient([own_etcd.url], timeout=0.5)
    mirrors = [PrefixMirror(client, f"/p{i}/", check_every=2.0) for i in range(3)]
    others = 0

    async def other_user() -> None:  # a lease's renewals, say: from before the mirrors on
        nonlocal others
        while True:
            others += 1  # counted as the client counts its calls: as each starts
            await client.range("/other")
            await trio.sleep(0.1)

    def mirrors_calls() -> int:
        return client.statistics().calls - others

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_user)
            for mirror in mirrors:
                await nursery.start(mirror.run)
            # each mirror's first read and its watch (counted when opened, after the read)
            await eventually(lambda: mirrors_calls() >= 6, what="three reads and watches")
            await trio.sleep(4.5)
            assert mirrors_calls() == 6
            assert all(mirror.ok for mirror in mirrors)
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
