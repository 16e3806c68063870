"""Probers' verdicts in etcd, and the leader's table of them.

Each prober writes its verdict on each backend it probes as

    PREFIX/observations/SERVICE/BACKEND/NODE = {"state": "up"|"down", "reason": "...",
                                                "record": REVISION}

(SERVICE and BACKEND percent-encoded, so a "/" in a name cannot shift the
path) under its lease, so a member that dies takes its observations with
it. It writes only when its verdict changes: in steady state a cluster
writes nothing but lease renewals. The engine hands verdicts over without
waiting (`ObservationWriter.report` never blocks); the writer's task sends
what changed, latest verdict per backend, several per transaction, and
retries while etcd is away. A new lease starts with nothing in etcd, so the
writer then sends every current verdict again.

A down verdict waits while this member suspects itself and its member
record does not say so yet (SPEC 11: `OwnRecord`). The two are written by
two tasks; without the wait the leader could count a down of a member whose
suspicion (which makes it abstain) is still on its way, and publish one
false down and its restore. The record is written first, then the downs (a
failed write of either is retried in the same order). The leader follows
members and observations through two watches, which may deliver out of
etcd's order, so each verdict also carries the revision of its author's
record when it was written (`record`): the leader counts a down only once
its member list holds that record or a later one (`counted`).

The leader follows the whole prefix (`ObservationTable`, a PrefixMirror)
and is told which backends' observations changed, to vote on them again.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import quote, unquote

import trio

from sentinel.backoff import Backoff
from sentinel.cluster.etcd import Delete, EtcdClient, KeyValue, Op, Put
from sentinel.cluster.membership import Lease
from sentinel.cluster.mirror import Changes, PrefixMirror
from sentinel.errors import EtcdError
from sentinel.model import State

log = logging.getLogger(__name__)
MAX_OPS = 100  # per transaction (etcd's default limit is 128)
BackendKey = tuple[str, str]  # (service, backend)


@dataclass(frozen=True, slots=True)
class Observation:
    """One prober's verdict on one backend."""

    state: State
    reason: str = ""
    record: int = 0  # the revision of the author's member record when written (0: unknown)

    def encode(self) -> bytes:
        """The value stored in etcd."""
        return json.dumps({"state": self.state.value, "reason": self.reason,
                           "record": self.record}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Observation:
        """From the value stored in etcd (ValueError when it is not one)."""
        try:
            doc = json.loads(raw)
            return cls(State(doc["state"]), str(doc.get("reason", "")),
                       int(doc.get("record", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an observation: {exc!r}") from None

    def counted(self, record_seen: int) -> bool:
        """Whether a leader whose member list holds the author's record at revision
        `record_seen` may count this verdict: a down only once it holds the record it was
        written after (which may say the author suspects itself)."""
        return self.state is not State.DOWN or self.record <= record_seen


class OwnRecord(Protocol):
    """This member's record in etcd, as the writer needs it (`Membership`)."""

    @property
    def recorded_revision(self) -> int:
        """The revision at which etcd took the record last."""
        ...

    def suspicion_unrecorded(self) -> bool:
        """True while this member suspects itself and its record does not say so yet."""
        ...


def observation_key(prefix: str, service: str, backend: str, node: str) -> str:
    """Where `node`'s verdict on service/backend lives."""
    return f"{prefix}observations/{quote(service, safe='')}/{quote(backend, safe='')}/{node}"


def parse_key(prefix: str, key: str) -> tuple[str, str, str]:
    """(service, backend, node) of an observation key (ValueError for another key)."""
    parts = key[len(f"{prefix}observations/"):].split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not an observation key: {key!r}")
    return unquote(parts[0]), unquote(parts[1]), parts[2]


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    """What the writer has done, for /v1/state and the metrics."""

    writes: int  # keys written or deleted
    transactions: int
    failures: int
    pending: int
    last_error: str


class ObservationWriter:
    """This member's verdicts, written to etcd on change under its lease."""

    def __init__(self, client: EtcdClient, prefix: str, node: str, *,
                 record: OwnRecord | None = None,
                 backoff: Backoff | None = None, rng: random.Random | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.node = node
        self._record = record
        self._desired: dict[str, Observation] = {}  # key -> verdict; absent: none
        self._written: dict[str, Observation] = {}  # what etcd holds under this lease
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._backoff = backoff or Backoff(initial=0.2, maximum=5.0)
        self._rng = rng or random.Random()
        self._writes = self._transactions = self._failures = 0
        self._last_error = ""

    def report(self, service: str, backend: str, state: State, reason: str = "") -> None:
        """This member's verdict on a backend it probes (a same-state report is a no-op:
        only changes are written)."""
        key = observation_key(self.prefix, service, backend, self.node)
        known = self._desired.get(key)
        if known is not None and known.state is state:
            return
        self._desired[key] = Observation(state, reason)
        self._mark(key)

    def forget(self, service: str, backend: str) -> None:
        """This member no longer probes the backend: remove its verdict."""
        key = observation_key(self.prefix, service, backend, self.node)
        if self._desired.pop(key, None) is not None:
            self._mark(key)

    def wake(self) -> None:
        """The member record was written: look again at the held verdicts."""
        self._wake.set()

    def statistics(self) -> WriterStatistics:
        """A frozen snapshot."""
        return WriterStatistics(writes=self._writes, transactions=self._transactions,
                                failures=self._failures, pending=len(self._dirty),
                                last_error=self._last_error)

    async def run(self, lease: Lease) -> None:
        """Write changes under `lease` until cancelled (part of a membership session).
        Everything desired is written afresh: a new lease holds none of our keys."""
        self._written = {}
        self._dirty = set(self._desired)
        attempt = 0
        while True:
            ready = self._ready()
            if not ready:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            batch = ready[:MAX_OPS]
            sent = {key: self._desired.get(key) for key in batch}
            ops: list[Op] = []
            stamp = self._record.recorded_revision if self._record is not None else 0
            for key, want in sent.items():
                if want is None and key in self._written:
                    ops.append(Delete(key))
                elif want is not None and want != self._written.get(key):
                    ops.append(Put(key, replace(want, record=stamp).encode(), lease.id))
            try:
                if ops:
                    # idempotent steps: repeating them after an unclear answer is harmless
                    await self.client.txn([], ops)
            except EtcdError as exc:
                self._failures += 1
                self._last_error = str(exc)
                attempt += 1
                await trio.sleep(self._backoff.delay(attempt, self._rng))
                continue
            attempt = 0
            self._last_error = ""
            self._transactions += 1 if ops else 0
            self._writes += len(ops)
            for key, want in sent.items():
                if want is None:
                    self._written.pop(key, None)
                else:
                    self._written[key] = want
                if self._desired.get(key) == want:  # else reported again meanwhile
                    self._dirty.discard(key)

    def _ready(self) -> list[str]:
        """The changed keys to write now: all but the downs while this member's suspicion
        is not in its record yet (asked before every try, retries included)."""
        if self._record is None or not self._record.suspicion_unrecorded():
            return sorted(self._dirty)
        return sorted(key for key in self._dirty
                      if (want := self._desired.get(key)) is None or want.state is not State.DOWN)

    def _mark(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()


class ObservationTable:
    """Every prober's verdicts, followed from etcd (the leader's input to the vote)."""

    def __init__(self, client: EtcdClient, prefix: str, *,
                 on_change: Callable[[set[BackendKey]], None] | None = None,
                 check_every: float = 5.0) -> None:
        self.prefix = prefix
        self._by_backend: dict[BackendKey, dict[str, Observation]] = {}
        self._on_change = on_change
        self.mirror = PrefixMirror(client, f"{prefix}observations/", on_change=self._changed,
                                   check_every=check_every)

    def of(self, service: str, backend: str) -> dict[str, Observation]:
        """{node: its verdict} for one backend (empty when nobody reported)."""
        return dict(self._by_backend.get((service, backend), {}))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Follow the observations until cancelled (see PrefixMirror.run)."""
        await self.mirror.run(task_status=task_status)

    def _changed(self, changes: Changes) -> None:
        touched: set[BackendKey] = set()
        for key, kv in changes.items():
            try:
                service, backend, node = parse_key(self.prefix, key)
                seen = self._decode(kv)
            except ValueError as exc:
                log.warning("cluster: ignoring %s: %s", key, exc)
                continue
            nodes = self._by_backend.setdefault((service, backend), {})
            if seen is None:
                nodes.pop(node, None)
                if not nodes:
                    del self._by_backend[(service, backend)]
            else:
                nodes[node] = seen
            touched.add((service, backend))
        if touched and self._on_change is not None:
            self._on_change(touched)

    @staticmethod
    def _decode(kv: KeyValue | None) -> Observation | None:
        return None if kv is None else Observation.decode(kv.value)
