"""PrefixMirror: a prefix of a real etcd followed by range + watch, through faults."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
    """A paused etcd (the watch just idles) is noticed by the mirror's check, which gets
    no answer, and the mirror follows again after it thaws, by watching on (no range
    read)."""
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


@asynccontextmanager
async def mirror_through(relay: SilentRelay, etcd: EtcdServer, prefix: str, *,
                         calls_within: float = 0.5, check_every: float = 0.5,
                         direct: bool = False
                         ) -> AsyncIterator[tuple[PrefixMirror, EtcdClient, trio.Nursery]]:
    """`relay` running; a mirror of `prefix` whose client reaches etcd through it (and
    then directly, when `direct`: a second endpoint), its calls timing out after
    `calls_within`; a writer straight to etcd; and a nursery to run them in, cancelled at the
    end of the block (the mirror is not started: the test starts it when it wants)."""
    async with trio.open_nursery() as outer:
        await outer.start(relay.run)
        client = EtcdClient([relay.url, *([etcd.url] if direct else [])],
                            timeout=calls_within)
        writer = EtcdClient([etcd.url], timeout=5.0)
        mirror = PrefixMirror(client, prefix, check_every=check_every)
        try:
            async with trio.open_nursery() as nursery:
                yield mirror, writer, nursery
                nursery.cancel_scope.cancel()
        finally:
            await writer.aclose()
            await client.aclose()
        outer.cancel_scope.cancel()


async def renew_forever(client: EtcdClient, key: str) -> None:
    """Call etcd through `client` every 0.1 s, as a member's lease renewals do (so the
    endpoint keeps answering the client), failures ignored."""
    while True:
        with contextlib.suppress(EtcdError):
            await client.range(key)
        await trio.sleep(0.1)


async def test_a_watch_whose_endpoint_went_silent_is_noticed_while_another_answers(
        etcd: EtcdServer, prefix: str) -> None:
    """With two endpoints, the one the watch streams from goes silent while the client's
    other calls (a member's lease renewals) move on to the other: the check asks the
    watch's own endpoint, fails, and the watch starts again on the live one; a change
    made meanwhile arrives (before, the read was answered by the live endpoint, the
    mirror said ok and never saw another change)."""
    relay = SilentRelay(etcd)
    async with mirror_through(relay, etcd, prefix, direct=True) as (mirror, writer, nursery):
        await nursery.start(mirror.run)
        await writer.put(prefix + "before", b"1")
        await eventually(lambda: prefix + "before" in mirror.items, what="the watch")
        relay.silence()
        nursery.start_soon(renew_forever, mirror.client, prefix + "other")
        await writer.put(prefix + "after", b"1")
        await eventually(lambda: prefix + "after" in mirror.items,
                         what="a change made after the watch's endpoint went silent")
        await eventually(lambda: mirror.ok, what="the mirror ok on the live endpoint")


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


async def test_a_watch_whose_connection_was_dropped_on_the_way_is_noticed(
        etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """A firewall or NAT that forgets the watch's connection (nothing passes on it any
    more, nothing closes it) while new connections pass and the client's other calls
    are answered: the mirror's check finds etcd ahead of it with nothing arriving, says
    the watch fell silent and watches again, so a put made after the drop arrives, and
    after a second drop a delete (before, an endpoint answering the client was taken
    for a live watch, and no change arrived again)."""
    relay = SilentRelay(etcd)
    async with mirror_through(relay, etcd, prefix) as (mirror, writer, nursery):
        nursery.start_soon(renew_forever, mirror.client, prefix[:-1] + "-lease")
        await nursery.start(mirror.run)
        await writer.put(prefix + "a", b"1")
        await eventually(lambda: prefix + "a" in mirror.items, what="the watch")
        # the watch's flow alone: the client's pooled connections are busy (a NAT
        # forgets idle flows), and a check timing out on one would restart the
        # watch as a failed call, not as a silent watch
        assert relay.forget(b"/v3/watch") == 1
        await writer.put(prefix + "b", b"1")
        await eventually(lambda: prefix + "b" in mirror.items,
                         what="a put made after the watch's connection was dropped")
        assert mirror.silences >= 1
        assert "fell silent" in caplog.text
        await eventually(lambda: mirror.ok, what="the mirror ok again")
        silences = mirror.silences
        assert relay.forget(b"/v3/watch") == 1
        await writer.delete(prefix + "a")
        await eventually(lambda: prefix + "a" not in mirror.items,
                         what="a delete made after the next watch was dropped")
        assert mirror.silences > silences
        assert values(mirror) == {prefix + "b": b"1"}
        await eventually(lambda: mirror.ok, what="the mirror ok again")


async def test_watch_latency_is_not_taken_for_a_silent_watch(
        etcd: EtcdServer, prefix: str) -> None:
    """A watch whose changes arrive 0.4 s late while the checks are answered at once: a
    check made meanwhile finds etcd ahead of the mirror (a put under the prefix) and the
    store's revision further ahead (a put elsewhere after it); once the watch delivers
    the put the mirror is on track, though its revision stays below the one that check
    was answered at (nothing under the prefix reaches that), and the watch is not
    restarted; five times over."""
    relay = SilentRelay(etcd, delay=0.4, delayed=b"/v3/watch")
    async with mirror_through(relay, etcd, prefix, calls_within=5.0, check_every=1.0) as (
            mirror, writer, nursery):
        def checks() -> list[float]:  # when each check reached the relay
            return [t for t, path in relay.requests if path == b"/v3/kv/txn"]

        async def put_before_a_check(n: int) -> None:
            await eventually(checks, what="a check")
            made, value = len(checks()), str(n).encode()
            # the put 0.2 s before the next check (one interval after the last), so that
            # check is made while the watch still carries the put
            await trio.sleep_until(checks()[-1] + 0.8)
            await writer.put(prefix + "k", value)
            await writer.put(prefix[:-1] + "-elsewhere", value)
            await eventually(lambda: len(checks()) >= made + 2,
                             what="the check after the put, and the next one")
            await eventually(lambda: mirror.items[prefix + "k"].value == value,
                             what="the put")

        await nursery.start(mirror.run)
        for n in range(5):
            await put_before_a_check(n)
        assert (mirror.silences, mirror.ok) == (0, True)


async def test_checks_cost_one_read_per_interval(own_etcd: EtcdServer) -> None:
    """A mirror checks once every check interval, also while etcd answers its client for
    other calls (a member's lease renewals), and does nothing more while nothing
    changes: three mirrors checking every second, their client used every 0.1 s by
    something else, make at most five checks each in 4.5 s, at least one each, and
    etcd commits nothing for them (read-only: no raft proposal)."""
    client = EtcdClient([own_etcd.url], timeout=0.5)
    mirrors = [PrefixMirror(client, f"/p{i}/", check_every=1.0) for i in range(3)]
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
            start, proposals = mirrors_calls(), own_etcd.proposals()
            await trio.sleep(4.5)
            checks = mirrors_calls() - start
            assert 3 <= checks <= 3 * 5
            assert own_etcd.proposals() == proposals
            assert all(mirror.ok and mirror.silences == 0 for mirror in mirrors)
            assert client.statistics().errors == 0
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
