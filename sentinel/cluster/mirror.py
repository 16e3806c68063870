"""A prefix of etcd kept as a local dict: one range read, then a watch.

The one way the cluster follows etcd (members, observations, agreed views):
read every key under the prefix, then watch from the revision after that
read, so no change falls between the two. Each change reaches `on_change`
as {key: KeyValue, or None when deleted}, synchronously, in revision order.

When the watch breaks (etcd restarted, unreachable) the mirror watches
again from the revision after the last it applied: etcd replays what
changed meanwhile, nothing is read twice, and a member cut off for a moment
costs etcd one watch instead of a range read of the whole prefix. Only when
that revision is gone (compacted, or etcd came back with less history than
the mirror has seen: restored from an older snapshot) does the mirror read
the prefix afresh and report the difference between what it had and what
it found. Either way a consumer sees every net change exactly once however
long it was cut off. While etcd cannot be reached the dict stays as it was
(fail static) and `ok` is false.

When the client finds the store wiped or replaced (`EtcdClient.resets`),
the copy is of keys that no longer exist and its revision means nothing in
the new store: the mirror stops watching and reads the prefix afresh (the
difference reported as above), and until it has `read_at_least` does not
take the old revision for a new one.

A watch can fall silent without failing: a stateful firewall or NAT on
the way forgets the connection (a watch idles for hours while agreed views
do not change) and drops what etcd sends on it, no FIN, no RST, while new
connections to the same endpoint work and the member's other calls (its
lease renewals) are answered. Nothing about connections tells (TCP
keepalive, `EtcdClient`, keeps such flows alive and limits how long a dead
one lingers, no more), so while watching the mirror asks etcd itself, every
`check_every` seconds, whether it holds changes under the prefix that the
mirror has not applied: one read-only transaction that compares every key
under the prefix with the mirror's revision (one modified after it: a put
not seen) and counts them (other than the dict holds: a delete not seen),
both at one revision. A difference alone is normal watch latency. It is a
silent watch when by the next check the mirror has applied nothing since
(a live watch delivers etcd's changes in revision order, so it would have
delivered at least the first one it was behind by): then the mirror says
that the watch fell silent, counts it (`silences`) and watches again at
once from the revision after the last it applied, which replays what it
missed; `ok` is false from then until the new watch is created, as after a
failed watch. A change made after the watch fell silent is applied within
about two `check_every`s.

The check is asked of the endpoint the watch streams from, alone: with
several, the client's other calls move on to another endpoint when the
watch's one goes silent, and a check allowed to do the same would be
answered there while the watch waits; asked there, a check that gets no
answer (that endpoint cut off, or etcd hung) fails, and restarts the watch
like a failed watch, so it is the liveness check as well.

What the checks cost etcd: one linearizable read-only transaction per
mirror every `check_every` seconds (no raft write, nothing on disk): a
member's five mirrors check every `lease_ttl`, so at the default 5 s one a
second per member, beside its lease renewals (three per `lease_ttl`). Each
reads the prefix's keys from etcd's memory-mapped store for the compare
and counts them from its in-memory index; the answer is a few hundred bytes.
(Two counts, one of them limited by `min_mod_revision`, would not do: etcd
counts every key in the range whatever the revision filters say,
etcd-io/etcd#18267, a behaviour it keeps and documents.)

A copy can be behind etcd without knowing it: its watch broke and waits
out its backoff, or has not delivered yet. Where that matters (a new leader
must not vote on observations older than the agreed state it starts from)
`read_at_least(revision)` returns once the dict reflects etcd at that
revision or later, by one fresh range read when it does not yet (asked of
the mirror's own task, which stops a watch or a backoff for it; a failed
read goes back to the backoff and is tried again when it ends).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping

import trio

from sentinel.backoff import Backoff
from sentinel.cluster.etcd import Compare, EtcdClient, Get, KeyValue, WatchEvent, prefix_end
from sentinel.errors import EtcdCompacted, EtcdError

log = logging.getLogger(__name__)
Changes = Mapping[str, KeyValue | None]


class PrefixMirror:
    """The keys under `prefix`, kept current; see the module docstring."""

    def __init__(self, client: EtcdClient, prefix: str, *,
                 on_change: Callable[[Changes], None] | None = None,
                 check_every: float = 5.0, backoff: Backoff | None = None,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.items: dict[str, KeyValue] = {}
        self.revision = 0  # the store revision the dict reflects
        self.ok = False
        self.error = "not synced yet"
        self.resyncs = 0  # range reads after the first because history was lost
        self.silences = 0  # watches started again because they fell silent
        self._on_change = on_change
        self._check_every = check_every
        self._backoff = backoff or Backoff(initial=0.2, maximum=check_every)
        self._rng = rng or random.Random()
        self._synced = trio.Event()
        self._warned = False  # a failure was logged; its end will be too
        self._attempt = 0  # failures in a row (the backoff's)
        self._wanted = 0  # the revision callers of `read_at_least` wait for
        self._reread = trio.Event()  # set: such a caller is waiting (wakes the run task)
        self._advanced = trio.Event()  # set (and replaced) whenever `revision` moves
        self.store_resets = 0  # the client's `resets` when the dict was last read

    @property
    def current(self) -> bool:
        """False while the dict is a copy of a store since found wiped or replaced."""
        return self.store_resets == self.client.resets

    async def wait_synced(self) -> None:
        """Return once the dict holds a complete read of the prefix."""
        await self._synced.wait()

    async def read_at_least(self, revision: int) -> None:
        """Return once the dict reflects etcd at `revision` or later (a fresh range read
        when it does not yet; waits while etcd cannot answer)."""
        self._wanted = max(self._wanted, revision)
        while self.revision < revision or not self.current:
            self._reread.set()
            await self._advanced.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Read and follow the prefix until cancelled. Reports started after the first
        read was tried, whether etcd answered or not (a member starts fail-static)."""
        stale = True  # the dict needs a range read: the first, or history was lost
        while True:
            self._reread = trio.Event()
            if not self.current:
                stale = True  # the store was wiped or replaced: nothing to resume
            ready = not stale
            if stale or self.revision < self._wanted:
                try:
                    await self._read()
                except EtcdError as exc:
                    self._failed(exc)
                    ready = False
                else:
                    if stale and self._synced.is_set():
                        self.resyncs += 1
                    stale, ready = False, True
                    self._attempt = 0
                    self._synced.set()
            if task_status is not trio.TASK_STATUS_IGNORED:
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
            if ready:
                try:
                    asked = await self._follow()
                except EtcdCompacted:
                    log.info("etcd no longer holds the history of %s after revision %d "
                             "(compacted, or restored from an older snapshot); reading it "
                             "afresh", self.prefix, self.revision)
                    stale = True
                    continue
                except EtcdError as exc:
                    self._failed(exc)
                else:
                    if asked:
                        continue
            self._attempt += 1
            with trio.move_on_after(self._backoff.delay(self._attempt, self._rng)):
                await self._reread.wait()  # a new caller waits: one try at once

    async def _read(self) -> None:
        found = await self.client.get_prefix(self.prefix)
        self.store_resets = self.client.resets  # the answer is of the store as it is now
        fresh = {kv.key: kv for kv in found.kvs}
        changes: dict[str, KeyValue | None] = {
            key: kv for key, kv in fresh.items()
            if self.items.get(key) != kv}  # whole: a reset store reuses revisions
        changes.update((key, None) for key in self.items.keys() - fresh.keys())
        self.items = fresh
        self.revision = found.revision
        self._following("read")
        if changes and self._on_change is not None:
            self._on_change(changes)
        self._moved()

    def _following(self, how: str) -> None:
        """etcd answered: ok again (said once, when it was not)."""
        if self._warned:
            log.warning("etcd reachable again: %s %s at revision %d", self.prefix, how,
                        self.revision)
            self._warned = False
        self.ok, self.error = True, ""

    def _moved(self) -> None:
        """`revision` moved: wake the callers of `read_at_least`."""
        self._advanced.set()
        self._advanced = trio.Event()

    async def _follow(self) -> bool:
        """Apply watch batches until the watch or a check fails (raised), the watch ends
        (False), falls silent or a fresh read is asked for (True: go on at once)."""
        failure: EtcdError | None = None
        asked = False
        silent: int | None = None  # the revision the mirror was stuck at, once found silent
        watched_on: str | None = None  # the endpoint the watch streams from, once created
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal failure, watched_on
                try:
                    async with self.client.watch(self.prefix, prefix_end(self.prefix),
                                                 start_revision=self.revision + 1) as stream:
                        if stream.created_revision < self.revision:  # etcd lost history
                            raise EtcdCompacted(stream.created_revision)
                        watched_on = stream.endpoint
                        self._attempt = 0
                        self._following("watched")
                        async for batch in stream:
                            self._apply(batch.events, batch.next_revision - 1)
                except EtcdError as exc:
                    failure = exc
                nursery.cancel_scope.cancel()

            async def check() -> None:
                nonlocal failure, silent
                behind: int | None = None  # the revision a check found etcd ahead of
                while True:
                    await trio.sleep(self._check_every)
                    if watched_on is None:
                        continue  # not watching yet
                    if behind is not None and self.revision <= behind:
                        silent = behind  # etcd was ahead, and nothing arrived since
                        nursery.cancel_scope.cancel()
                        return
                    try:
                        behind = await self._behind(watched_on)
                    except EtcdError as exc:
                        failure = exc
                        nursery.cancel_scope.cancel()
                        return

            async def reread() -> None:
                nonlocal asked
                await self._reread.wait()
                asked = True
                nursery.cancel_scope.cancel()

            async def reset() -> None:
                nonlocal asked
                await self.client.wait_reset(self.store_resets)
                asked = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(check)
            nursery.start_soon(reread)
            nursery.start_soon(reset)
        if failure is not None:
            raise failure
        if silent is not None:
            self._fell_silent(silent)
            return True
        return asked

    async def _behind(self, endpoint: str) -> int | None:
        """Ask `endpoint` whether etcd holds changes under the prefix that the dict does
        not: the dict's revision then (so the caller can tell whether the watch
        delivered anything since), None when not."""
        revision, count = self.revision, len(self.items)
        end = prefix_end(self.prefix)
        counted = Get(self.prefix, end, count_only=True)
        found = await self.client.txn(
            [Compare(self.prefix, "MOD", revision + 1, "LESS", range_end=end)],
            [counted], [counted], at=endpoint)
        if found.succeeded and found.ranges and found.ranges[0].count == count:
            return None  # nothing put after `revision`, nothing deleted
        return revision

    def _fell_silent(self, revision: int) -> None:
        """The watch delivered nothing for a check interval while etcd held changes after
        `revision`: said, counted, and not ok until the watch is created again."""
        self.silences += 1
        error = (f"the watch of {self.prefix} fell silent: etcd holds changes after "
                 f"revision {revision} that it did not deliver within "
                 f"{self._check_every:g}s (its connection dropped on the way?)")
        log.warning("etcd: %s; watching again from revision %d", error, self.revision + 1)
        self.ok, self.error = False, error

    def _apply(self, events: tuple[WatchEvent, ...], revision: int) -> None:
        changes: dict[str, KeyValue | None] = {}
        for event in events:
            if event.type == "delete":
                self.items.pop(event.kv.key, None)
                changes[event.kv.key] = None
            else:
                self.items[event.kv.key] = event.kv
                changes[event.kv.key] = event.kv
        self.revision = max(self.revision, revision)
        if changes and self._on_change is not None:
            self._on_change(changes)
        self._moved()

    def _failed(self, exc: EtcdError) -> None:
        if not self._warned:
            log.warning("etcd: cannot follow %s (%s); keeping the last copy, retrying",
                        self.prefix, exc)
            self._warned = True
        self.ok, self.error = False, str(exc)
