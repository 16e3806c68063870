"""Leadership: one member elected through etcd writes the cluster's agreed state.

Election is a put-if-absent of `PREFIX/leader` under the member's lease
(value: the node name and the SHA-256 of the configuration it leads by,
`LeaderKey`): whoever creates the key leads until its lease ends (a lapse,
SIGKILL plus `lease_ttl`, or a clean stop that revokes it). The others watch
the key and try again when it is deleted, once their caller says they may
(a member whose configuration differs from the leader's does not campaign:
`sentinel.cluster.node`).

A term is fenced by the leader key's create revision, which no later
leader can share, and its lease (a store wiped and started again reuses
revisions, never a lease): every write of the leader is a transaction that
first compares `create_revision(PREFIX/leader)` and its lease with its own,
so a deposed leader
(paused past its lease, partitioned) has its write refused atomically
instead of landing after a successor's (`NotLeader`).

What the leader writes (keys under PREFIX; SERVICE and BACKEND percent-encoded):

    agreed/seq                       the cluster's last event seq (decimal)
    agreed/services/SERVICE          the service's part of the agreed view (JSON: panic,
                                     ...; the caller's document)
    agreed/backends/SERVICE/BACKEND  one backend's agreed entry (JSON: state, weight, ...)
    agreed/events/SEQ                a batch of events, keyed by its last seq (20 digits,
                                     so keys sort by seq): a JSON list of SPEC 4 events
    delivered/SINK                   the last seq a leader-scope sink (webhook) delivered

One key per backend: a change writes what moved, not the whole service (a
service of 3,000 backends is 250 KB as one document; etcd keeps every
revision until compacted). Every member follows `agreed/` with one
PrefixMirror (`read_agreed` sorts what it reports): a publication's entries
and the events that led to them change in one revision, so they reach a
member in one watch answer.

Entries, their events and `seq` change in one transaction, which also
compares `seq` with the value the leader last wrote: events are numbered
once, none lost, none twice. A write whose answer was lost may or may not
have landed; the leader then knows nothing for sure until it reads again
(`load`), and refuses to publish before that, so the caller recomputes its
changes from what etcd really holds. etcd caps a transaction's operations
(`--max-txn-ops`, 128 by default), so a large publication is split into
several transactions of at most MAX_OPS keys each, a service's events going
with the last part of its entries.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote

import trio

from sentinel.backoff import Backoff
from sentinel.cluster.etcd import Compare, Delete, EtcdClient, Get, Op, Put, prefix_end
from sentinel.cluster.membership import Lease
from sentinel.cluster.mirror import Changes
from sentinel.errors import EtcdError, NotLeader
from sentinel.model import Event

log = logging.getLogger(__name__)
MAX_OPS = 120  # keys per transaction, + events, seq and trim: under etcd's default 128
KEEP_EVENTS = 1000  # SPEC 6: /v1/events holds at least the last 1,000


def _seq_key(seq: int) -> str:
    return f"{seq:020d}"


def agreed_prefix(prefix: str) -> str:
    """Where the agreed state lives: what every member follows."""
    return f"{prefix}agreed/"


def _doc(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Term:
    """One member's leadership: its lease and the fence (the leader key's create
    revision)."""

    node: str
    lease: int
    revision: int
    config_sha256: str = ""  # the configuration the leader key names


def _name(text: str) -> str:
    return quote(text, safe="")


@dataclass(frozen=True, slots=True)
class ServiceChange:
    """One service's part of a publication: its document when it changed, the entries of
    the backends that changed, and the events that lead there (seq to be given)."""

    service: str
    backends: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    header: Mapping[str, Any] | None = None
    events: tuple[Event, ...] = ()

    @property
    def keys(self) -> int:
        """How many keys it writes."""
        return len(self.backends) + (self.header is not None)

    def parts(self, most: int) -> Iterator[ServiceChange]:
        """This change in parts of at most `most` keys (each written in a transaction of
        its own), each with the events of its own backends; the document and the events
        of no backend here (the service's own: a panic) go with the first. A part that
        lands is whole, with its events: one that does not leaves its backends as they
        were in etcd, and the next leader votes on them again (were the events all in
        one part, a failure between parts would publish downs no event ever tells)."""
        names = list(self.backends)
        first = True
        while first or names:
            room = most - (self.header is not None) if first else most
            chunk, names = names[:room], names[room:]
            mine = set(chunk)
            events = tuple(e for e in self.events if e.backend in mine
                           or (first and e.backend not in self.backends))
            yield ServiceChange(self.service, {n: self.backends[n] for n in chunk},
                                self.header if first else None, events)
            first = False


@dataclass(frozen=True, slots=True)
class AgreedState:
    """What etcd holds: the last seq, every service's document and backend entries, the
    delivered seqs."""

    seq: int
    services: dict[str, Any]  # service -> its document
    backends: dict[str, dict[str, Any]]  # service -> backend -> its entry
    delivered: dict[str, int]
    revision: int


@dataclass(frozen=True, slots=True)
class AgreedChanges:
    """One report of a mirror of `agreed/`, sorted out (see `read_agreed`)."""

    seq: int | None  # the cluster's seq, when it changed
    services: dict[str, Any]  # service -> its new document
    backends: dict[str, dict[str, Any]]  # service -> backend -> its new entry
    events: tuple[Event, ...]  # events of the batches that appeared, oldest first

    @property
    def touched(self) -> set[str]:
        """The services whose document or entries changed."""
        return set(self.services) | set(self.backends)


def read_agreed(prefix: str, changes: Changes) -> AgreedChanges:
    """What changed under `agreed/` (a PrefixMirror's report, or its whole dict): the seq,
    the documents, the entries and the new events. Deletions (old event batches
    trimmed) carry nothing; a key or value that is not what a leader writes is logged
    and skipped."""
    agreed = agreed_prefix(prefix)
    seq: int | None = None
    services: dict[str, Any] = {}
    backends: dict[str, dict[str, Any]] = {}
    events: list[Event] = []
    for key, kv in changes.items():
        if kv is None:
            continue
        kind, _, rest = key[len(agreed):].partition("/")
        try:
            if kind == "seq" and not rest:
                seq = int(kv.value)
            elif kind == "services" and rest and "/" not in rest:
                services[unquote(rest)] = json.loads(kv.value)
            elif kind == "backends" and rest.count("/") == 1:
                service, backend = rest.split("/")
                backends.setdefault(unquote(service), {})[unquote(backend)] = \
                    json.loads(kv.value)
            elif kind == "events" and rest:
                events.extend(Event.from_json(doc) for doc in json.loads(kv.value))
            else:
                raise ValueError("not a key a leader writes")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cluster: ignoring %s: %r", key, exc)
    return AgreedChanges(seq, services, backends, tuple(sorted(events, key=lambda e: e.seq)))


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """The value of `PREFIX/leader`: who leads, and by which configuration."""

    node: str
    config_sha256: str

    def encode(self) -> bytes:
        """The key's value (JSON)."""
        return _doc({"node": self.node, "config_sha256": self.config_sha256})

    @classmethod
    def decode(cls, value: bytes) -> LeaderKey:
        """The holder a value names; one that is not such a document (written by hand)
        names its holder by its text, with no configuration hash."""
        try:
            doc = json.loads(value)
            return cls(str(doc["node"]), str(doc["config_sha256"]))
        except (ValueError, KeyError, TypeError):
            return cls(value.decode("utf-8", "replace"), "")


class Election:
    """Campaigns for `PREFIX/leader` under a lease."""

    def __init__(self, client: EtcdClient, prefix: str, node: str, *,
                 config_sha256: str = "", recheck: float = 5.0,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.key = f"{prefix}leader"
        self.node = node
        self.config_sha256 = config_sha256  # what the next campaign writes (a reload sets it)
        self._recheck = recheck
        self._rng = rng or random.Random()
        self._backoff = Backoff(initial=0.2, maximum=recheck)

    async def campaign(self, lease: Lease,
                       eligible: Callable[[], Awaitable[None]] | None = None) -> Term:
        """Return once this member leads under `lease` (cancel to give up). While
        another member leads, wait for its key to go, re-reading it every `recheck`
        seconds in case the watch's connection died silently (a read: a campaign that
        loses writes nothing while the leader lasts). Before each try, `eligible`
        returns once this member may lead."""
        attempt = 0
        while True:
            if eligible is not None:
                await eligible()
            try:
                term, holder_revision = await self._try(lease)
                if term is not None:
                    log.info("cluster: %s leads (term %d)", self.node, term.revision)
                    return term
                attempt = 0
                while True:
                    with trio.move_on_after(self._recheck):
                        await self._wait_deleted(holder_revision)
                        break
                    if await self.client.get(self.key) is None:
                        break
                continue
            except EtcdError as exc:
                log.debug("cluster: campaign: %s", exc)
            attempt += 1
            await trio.sleep(self._backoff.delay(attempt, self._rng))

    async def _try(self, lease: Lease) -> tuple[Term | None, int]:
        """One put-if-absent; (the term, 0) when won, else (None, the revision seen)."""
        value = LeaderKey(self.node, self.config_sha256)
        put, revision, holder = await self.client.create(self.key, value.encode(),
                                                         lease=lease.id)
        if put:
            return Term(self.node, lease.id, revision, value.config_sha256), 0
        if holder is not None and holder.lease == lease.id:  # ours: an answer was lost
            return Term(self.node, lease.id, holder.create_revision,
                        LeaderKey.decode(holder.value).config_sha256), 0
        return None, revision

    async def _wait_deleted(self, revision: int) -> None:
        async with self.client.watch(self.key, start_revision=revision + 1) as stream:
            async for batch in stream:
                if any(e.type == "delete" for e in batch.events):
                    return

    async def resign(self, term: Term) -> None:
        """Give up leadership now (only if the key is still this term's and under its
        lease: fenced, like every write of the term)."""
        await self.client.txn([Compare(self.key, "CREATE", term.revision),
                               Compare(self.key, "LEASE", term.lease)],
                              [Delete(self.key)])


class Leader:
    """The writes of one term, every one fenced by it. Call `load` first."""

    def __init__(self, client: EtcdClient, prefix: str, term: Term, *,
                 keep_events: int = KEEP_EVENTS) -> None:
        self.client = client
        self.prefix = prefix
        self.term = term
        self._keep = keep_events
        self._fence = (Compare(f"{prefix}leader", "CREATE", term.revision),
                       Compare(f"{prefix}leader", "LEASE", term.lease))
        self._agreed = agreed_prefix(prefix)
        self._seq: int | None = None  # None: unknown until load()
        self._delivered: dict[str, int] = {}

    @property
    def seq(self) -> int | None:
        """The last seq this term knows it wrote (None after an unclear write)."""
        return self._seq

    async def load(self) -> AgreedState:
        """Read seq, every document and entry and the delivered seqs, atomically (one
        read-only transaction)."""
        agreed, delivered = self._agreed, f"{self.prefix}delivered/"
        done = await self.client.txn([], [Get(f"{agreed}seq"),
                                          Get(f"{agreed}services/",
                                              prefix_end(f"{agreed}services/")),
                                          Get(f"{agreed}backends/",
                                              prefix_end(f"{agreed}backends/")),
                                          Get(delivered, prefix_end(delivered))])
        seq_kvs, service_kvs, backend_kvs, delivered_kvs = (r.kvs for r in done.ranges)
        try:
            seq = int(seq_kvs[0].value) if seq_kvs else 0
            marks = {kv.key[len(delivered):]: int(kv.value) for kv in delivered_kvs}
        except ValueError as exc:  # someone wrote there by hand
            raise EtcdError(f"malformed cluster state under {self.prefix}: {exc}") from None
        held = read_agreed(self.prefix, {kv.key: kv for kv in (*service_kvs, *backend_kvs)})
        self._seq, self._delivered = seq, marks
        return AgreedState(seq=seq, services=held.services, backends=held.backends,
                           delivered=dict(marks), revision=done.revision)

    async def publish(self, changes: Sequence[ServiceChange]) -> tuple[Event, ...]:
        """Write these services' documents and entries with their events numbered from
        seq + 1; returns the numbered events. Raises NotLeader when the term has ended
        (nothing was written), EtcdError when etcd failed (call `load` before publishing
        again)."""
        out: list[Event] = []
        batch: list[ServiceChange] = []
        for part in (p for c in changes for p in c.parts(MAX_OPS)):
            if batch and sum(c.keys for c in batch) + part.keys > MAX_OPS:
                out.extend(await self._publish(batch))
                batch = []
            batch.append(part)
        if batch:
            out.extend(await self._publish(batch))
        return tuple(out)

    async def _publish(self, changes: Sequence[ServiceChange]) -> list[Event]:
        seq = self._known_seq()
        numbered = [replace(e, seq=seq + i + 1)
                    for i, e in enumerate(e for c in changes for e in c.events)]
        last = seq + len(numbered)
        agreed = self._agreed
        ops: list[Op] = []
        for c in changes:
            service = _name(c.service)
            if c.header is not None:
                ops.append(Put(f"{agreed}services/{service}", _doc(c.header)))
            ops.extend(Put(f"{agreed}backends/{service}/{_name(name)}", _doc(entry))
                       for name, entry in c.backends.items())
        if numbered:
            ops.append(Put(f"{agreed}events/{_seq_key(last)}",
                           _doc([e.to_json() for e in numbered])))
            ops.append(Put(f"{agreed}seq", str(last).encode()))
            floor = min([last - self._keep, *self._delivered.values()])
            if floor > 0:  # drop batches wholly at or below the floor
                ops.append(Delete(f"{agreed}events/", f"{agreed}events/{_seq_key(floor + 1)}"))
        await self._fenced(ops, expect_seq=seq)
        self._seq = last
        return numbered

    async def number_on(self, seq: int) -> None:
        """Make the cluster's seq `seq` when etcd holds less (a store wiped or restored
        from an older snapshot forgot events the members have): events are numbered on
        from it, never twice. Call `load` again afterwards."""
        held = self._known_seq()
        if seq > held:
            log.warning("cluster: etcd holds seq %d, the members had %d (the store lost "
                        "data): numbering on from %d", held, seq, seq)
            await self._fenced([Put(f"{self._agreed}seq", str(seq).encode())],
                               expect_seq=held)
            self._seq = seq

    async def record_delivered(self, sink: str, seq: int) -> None:
        """Note that leader-scope sink `sink` delivered every event up to `seq`."""
        await self._fenced([Put(f"{self.prefix}delivered/{sink}", str(seq).encode())])
        self._delivered[sink] = seq

    async def events_after(self, seq: int) -> list[Event]:
        """The events with seq above `seq` still held, oldest first (for a new leader
        resuming deliveries, and for /v1/events)."""
        found = await self.client.range(f"{self._agreed}events/{_seq_key(seq + 1)}",
                                        prefix_end(f"{self._agreed}events/"))
        return [event for kv in found.kvs
                for event in (Event.from_json(doc) for doc in json.loads(kv.value))
                if event.seq > seq]

    def _known_seq(self) -> int:
        if self._seq is None:
            raise EtcdError("the last write's outcome is unknown: load() before publishing")
        return self._seq

    async def _fenced(self, ops: Sequence[Op], *, expect_seq: int | None = None) -> None:
        compare = list(self._fence)
        seq_key = f"{self._agreed}seq"
        if expect_seq is not None:
            compare.append(Compare(seq_key, "VALUE", str(expect_seq).encode())
                           if expect_seq else Compare(seq_key, "CREATE", 0))
        try:
            done = await self.client.txn(compare, ops, [Get(f"{self.prefix}leader"),
                                                        Get(seq_key)])
        except EtcdError as exc:
            if exc.maybe_applied and expect_seq is not None:
                self._seq = None
            raise
        if done.succeeded:
            return
        holder, seq_now = done.ranges[0].kvs, done.ranges[1].kvs
        if not holder or (holder[0].create_revision, holder[0].lease) != (
                self.term.revision, self.term.lease):
            who = LeaderKey.decode(holder[0].value).node if holder else "nobody"
            raise NotLeader(f"{self.term.node} no longer leads (term {self.term.revision}); "
                            f"the leader key is {who}'s")
        self._seq = None
        raise EtcdError(f"the cluster seq is {seq_now[0].value.decode() if seq_now else 0}, "
                        f"not {expect_seq} as this leader last wrote; load() again")
