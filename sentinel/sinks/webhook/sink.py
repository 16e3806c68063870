"""`webhook` sink: each event POSTed as signed JSON, kept in a durable outbox until a 2xx.

Two halves. `apply()` (driven by the SinkRunner) commits the update's events
to the outbox and returns: from then on the event counts as published and
survives a crash. `run()` (started by its SinkRunner, stopped with it) is the
delivery task: it POSTs the head of each backend's queue, at most
`concurrency` at a time. Events of one backend go out in order, a head that
fails blocks only its own backend, and a retry re-signs the same id and
bytes with a fresh timestamp (Standard Webhooks, see `sentinel.sinks.webhook.signing`).

Outcomes follow `sentinel.sinks.webhook.signing.classify`: a 2xx is delivered, a
retryable failure waits out full-jitter backoff (or Retry-After), and an
event still failing `give_up_after` after it was enqueued, or refused with
a permanent 4xx, is dead-lettered with its reason for `sentinel outbox
list|retry|purge`. Delivered rows are deleted in batches (one fsync for
many); a crash before that only means a duplicate.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import trio

from sentinel.backoff import FULL_JITTER, Backoff
from sentinel.model import Event
from sentinel.sinks.base import SinkContext, SinkHealth, SinkKind, Update
from sentinel.sinks.webhook.options import (
    OPTIONS,
    WebhookOptions,
    parse_binding,
    parse_options,
)
from sentinel.sinks.webhook.outbox import Counts, Entry, NewEvent, Outbox
from sentinel.sinks.webhook.signing import (
    Outcome,
    Verdict,
    classify,
    decode_secret,
    headers,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryStatistics:
    """What the delivery task has done since start, plus the outbox's counts (kept in
    memory as deliveries happen)."""

    delivered: int
    failed_attempts: int
    dead_lettered: int
    in_flight: int
    last_error: str
    outbox: Counts

    def to_json(self) -> dict[str, object]:
        """The sink's entry of GET /v1/outbox, and `deliveries` in its /v1/state entry."""
        return {"delivered": self.delivered, "failed_attempts": self.failed_attempts,
                "dead_lettered": self.dead_lettered, "in_flight": self.in_flight,
                "last_error": self.last_error or None, "pending": self.outbox.pending,
                "dead": self.outbox.dead, "dropped": self.outbox.dropped}


def event_key(event: Event) -> str:
    """The ordering key: one FIFO per backend (a service's panic events have their own)."""
    return f"{event.service}/{event.backend}"


T = TypeVar("T")


class Offload(Protocol):
    """Runs a blocking function off the event loop: `in_thread` (tests on
    MockClock run it inline, since virtual time would jump while a worker thread is busy)."""

    def __call__(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run `fn(*args)` and return its result."""
        ...


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """The production Offload: a Trio worker thread."""
    return await trio.to_thread.run_sync(fn, *args)


class WebhookSink:
    """Enqueues in `apply`, delivers in `run`; see the module docstring."""

    def __init__(self, name: str, options: WebhookOptions, outbox: Outbox, *,
                 wall: Callable[[], float] = time.time, rng: random.Random | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 offload: Offload | None = None) -> None:
        self.name = name
        self.options = options
        self.outbox = outbox
        self._keys = [decode_secret(s) for s in options.secrets]
        self._wall = wall
        self._rng = rng or random.Random()
        self._backoff = Backoff(options.initial_delay, options.max_delay, FULL_JITTER)
        self._transport = transport
        self._offload: Offload = offload or in_thread
        self._queues: dict[str, deque[Entry]] = {}
        for entry in outbox.entries(dead=False):  # at creation: nothing else runs yet
            self._queues.setdefault(entry.key, deque()).append(entry)
        # The outbox's counts, kept in memory as deliveries happen, so statistics() never
        # reads SQLite (pending entries are those in the queues)
        self._dead_ids = set(outbox.dead_ids())
        self._dropped = outbox.counts().dropped
        self._in_flight: set[str] = set()
        self._wake = trio.Event()
        self._settled = trio.Event()
        self._db_lock = trio.Lock()
        self._updates: dict[int, Entry] = {}  # outcomes not yet committed
        self._deletes: set[int] = set()
        self._dirty = trio.Event()
        self._closed = False
        self._delivered = self._failed = self._dead = 0
        self._last_error = ""
        self._failing = False  # the latest attempt failed

    # -- the runner's side: enqueue ----------------------------------------------------

    async def apply(self, update: Update) -> None:
        """Commit the update's events to the outbox (returns once they are durable).

        The engine already handed them over through `accept` as soon as they were on
        disk; this is the runner's retrying path, and enqueueing is idempotent by id."""
        await self.accept(update.events)

    async def accept(self, events: Sequence[Event]) -> None:
        """Commit `events` to the outbox (idempotent by event id); see DurableSink."""
        rows = [NewEvent(event_key(e), e.id, e.seq,
                         json.dumps(e.to_json(), separators=(",", ":")).encode())
                for e in events]
        if not rows:
            return
        # Shielded: once the rows are committed, the in-memory queues must hear of them.
        with trio.CancelScope(shield=True):
            async with self._db_lock:
                fresh = await self._offload(self.outbox.enqueue, rows, self._wall())
                for entry in fresh:
                    self._queues.setdefault(entry.key, deque()).append(entry)
                if sum(map(len, self._queues.values())) > self.options.max_pending:
                    await self._enforce_locked()
        self._wake.set()

    # -- the delivery task ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Deliver forever (cancel to stop); committing outcomes and sweeping by age."""
        limits = httpx.Limits(max_connections=self.options.concurrency)
        async with httpx.AsyncClient(timeout=self.options.timeout, limits=limits,
                                     transport=self._transport) as client, \
                trio.open_nursery() as nursery:
            nursery.start_soon(self._committer)
            nursery.start_soon(self._sweeper)
            task_status.started()
            while True:
                now = self._wall()
                wait = math.inf
                for key, queue in list(self._queues.items()):
                    if key in self._in_flight:
                        continue
                    if len(self._in_flight) >= self.options.concurrency:
                        break
                    head = queue[0]
                    if head.next_attempt <= now:
                        self._in_flight.add(key)
                        nursery.start_soon(self._attempt, client, head)
                    else:
                        wait = min(wait, head.next_attempt - now)
                if not self._in_flight and not self._due(now):
                    self._settled.set()
                self._wake = trio.Event()
                with trio.move_on_after(wait):
                    await self._wake.wait()

    async def wait_flushed(self) -> None:
        """Return once nothing is in flight or due now (a graceful stop waits for this;
        entries waiting out a backoff stay in the outbox for the next start)."""
        while self._in_flight or self._due(self._wall()):
            self._settled = trio.Event()
            self._wake.set()
            await self._settled.wait()
        await self._commit()

    def owed_seq(self) -> int | None:
        """The lowest seq still waiting for delivery (dead letters are settled); None when
        the outbox owes nothing (see DeliveryProgress)."""
        return min((entry.seq for queue in self._queues.values() for entry in queue),
                   default=None)

    def _due(self, now: float) -> bool:
        return any(q[0].next_attempt <= now for q in self._queues.values())

    async def _attempt(self, client: httpx.AsyncClient, entry: Entry) -> None:
        outcome = await self._post(client, entry)
        self._in_flight.discard(entry.key)
        self._settle(entry, outcome)
        self._wake.set()

    async def _post(self, client: httpx.AsyncClient, entry: Entry) -> Outcome:
        now = self._wall()
        sent = headers(self._keys, entry.event_id, int(now), entry.body)
        with trio.move_on_after(self.options.timeout):
            try:
                response = await client.post(self.options.url, content=entry.body,
                                             headers=sent)
            except httpx.TimeoutException:
                return Outcome(Verdict.RETRY, f"timed out after {self.options.timeout:g}s")
            except httpx.HTTPError as exc:
                return Outcome(Verdict.RETRY, f"{type(exc).__name__}: {exc}".rstrip(": "))
            return classify(response.status_code, response.headers.get("retry-after"),
                            response.text, self._wall())
        return Outcome(Verdict.RETRY, f"timed out after {self.options.timeout:g}s")

    def _settle(self, entry: Entry, outcome: Outcome) -> None:
        queue = self._queues.get(entry.key)
        if not queue or queue[0].id != entry.id:
            return  # purged or dropped while in flight
        self._failing = outcome.verdict is not Verdict.DELIVERED
        if outcome.verdict is Verdict.DELIVERED:
            queue.popleft()
            self._delivered += 1
            self._deletes.add(entry.id)
            self._updates.pop(entry.id, None)
        else:
            self._failed += 1
            self._last_error = outcome.error
            now, attempts = self._wall(), entry.attempts + 1
            deadline = entry.created + self.options.give_up_after
            if outcome.verdict is Verdict.RETRY and now < deadline:
                delay = outcome.retry_after if outcome.retry_after is not None else \
                    self._backoff.delay(attempts, self._rng)
                queue[0] = replace(entry, attempts=attempts, last_error=outcome.error,
                                   next_attempt=min(now + delay, deadline))
                self._updates[entry.id] = queue[0]
                log.info("webhook %s: %s attempt %d failed, retry in %.1fs: %s", self.name,
                         entry.event_id, attempts, queue[0].next_attempt - now, outcome.error)
            else:
                reason = outcome.error if outcome.verdict is Verdict.DEAD else (
                    f"gave up after {attempts} attempts in {now - entry.created:.0f}s; "
                    f"last: {outcome.error}")
                queue.popleft()
                self._updates[entry.id] = replace(entry, attempts=attempts, dead=True,
                                                  last_error=reason)
                self._dead += 1
                self._dead_ids.add(entry.id)
                log.warning("webhook %s: event %s (%s) dead-lettered: %s", self.name,
                            entry.event_id, entry.key, reason)
        if not queue:
            del self._queues[entry.key]
        self._dirty.set()

    async def _committer(self) -> None:
        """Write attempt outcomes in batches: one transaction for whatever piled up."""
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            await self._commit()

    async def _commit(self) -> None:
        with trio.CancelScope(shield=True):
            async with self._db_lock:
                if self._closed:
                    return
                updates, deletes = list(self._updates.values()), list(self._deletes)
                self._updates, self._deletes = {}, set()
                if updates or deletes:
                    await self._offload(self.outbox.settle, updates, deletes)

    async def _sweeper(self) -> None:
        """Apply both bounds now and then: a few times per max_age, at least every minute
        (dead letters count towards max_pending but are not added by `apply`)."""
        while True:
            async with self._db_lock:
                await self._enforce_locked()
            await trio.sleep(min(60.0, self.options.max_age / 4))

    async def _enforce_locked(self) -> None:
        """Apply max_pending and max_age; every drop is counted, logged and forgotten."""
        dropped = await self._offload(
            self.outbox.enforce, self.options.max_pending, self.options.max_age, self._wall())
        if dropped:
            self._forget({e.id for e in dropped})
            self._dead_ids -= {e.id for e in dropped}
            self._dropped += len(dropped)
            log.warning("webhook %s: outbox over its bounds (max_pending %d, max_age %gs): "
                        "dropped %d events, oldest %s", self.name, self.options.max_pending,
                        self.options.max_age, len(dropped), dropped[0].event_id)

    def _forget(self, ids: set[int]) -> None:
        for key in list(self._queues):
            kept = deque(e for e in self._queues[key] if e.id not in ids)
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]

    # -- the operator's side (API and CLI) ----------------------------------------------

    def statistics(self) -> DeliveryStatistics:
        """Counters since start and the outbox's counts, from memory (no SQLite read)."""
        counts = Counts(sum(map(len, self._queues.values())), len(self._dead_ids),
                        self._dropped)
        return DeliveryStatistics(self._delivered, self._failed, self._dead,
                                  len(self._in_flight), self._last_error, counts)

    def outbox_counts(self) -> Counts:
        """The outbox's counts, from memory (`OutboxSink`: the metrics read them)."""
        return self.statistics().outbox

    def health(self) -> SinkHealth:
        """Failing while the latest delivery attempt failed (apply only enqueues, so the
        runner alone would call the sink ok); the deliveries' counts go along."""
        stats = self.statistics()
        return SinkHealth(not self._failing, self._last_error if self._failing else "",
                          {"deliveries": stats.to_json()})

    async def entries(self, *, dead: bool | None, limit: int) -> list[Entry]:
        """Entries as the outbox holds them, outcomes so far included."""
        await self._commit()
        return await self._offload(
            lambda: self.outbox.entries(dead=dead, limit=limit))

    async def retry(self, event_ids: Sequence[str] | None) -> list[Entry]:
        """Make entries (dead letters too) due now; returns them."""
        await self._commit()
        async with self._db_lock:
            entries = await self._offload(self.outbox.retry, event_ids, self._wall())
            self._forget({e.id for e in entries})
            self._dead_ids -= {e.id for e in entries}
            for entry in entries:
                queue = self._queues.setdefault(entry.key, deque())
                queue.append(entry)
                self._queues[entry.key] = deque(sorted(queue, key=lambda e: e.id))
        self._wake.set()
        return entries

    async def purge(self, event_ids: Sequence[str] | None, *, pending_too: bool
                    ) -> list[Entry]:
        """Delete entries (default: dead letters only); returns them."""
        await self._commit()
        async with self._db_lock:
            gone = await self._offload(
                lambda: self.outbox.purge(event_ids, pending_too=pending_too))
            self._forget({e.id for e in gone})
            self._dead_ids -= {e.id for e in gone}
        if gone:
            log.warning("webhook %s: purged %d events from the outbox", self.name, len(gone))
        self._wake.set()
        return gone

    async def aclose(self) -> None:
        """Commit the last outcomes and release the outbox file."""
        await self._commit()
        async with self._db_lock:
            self._closed = True
            await self._offload(self.outbox.close)


def outbox_path(state_dir: Path, sink: str) -> Path:
    """Where a webhook sink's outbox lives."""
    return state_dir / f"outbox-{sink}.sqlite3"


def _create(name: str, options: object, ctx: SinkContext) -> WebhookSink:
    assert isinstance(options, WebhookOptions)
    return WebhookSink(name, options, Outbox.open(outbox_path(ctx.state_dir, name)))


KIND = SinkKind(name="webhook", parse_options=parse_options, parse_binding=parse_binding,
                create=_create, options=OPTIONS, scope="leader")
