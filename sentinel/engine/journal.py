"""The event journal: numbers events, keeps the recent ones, persists the state.

`seq` grows by one per event across the instance's life. Before an event is
handed to sinks the journal has written a state snapshot holding its seq
(group commit: a burst of events shares one fsync), so a crash never reuses a
number. A snapshot is the journal's own part (seq, events not yet acked) and
the backends' verdicts, which the committer hands in with each write it asks
for: the journal never reads the engine. `events_after` serves only events
that are on disk: one shown before its write could, after a kill -9, come
back under the same seq with another id.

When the state dir refuses a write (full, read-only, out of file descriptors),
sentinel goes on without it rather than stop failing over: `persist` returns
False at once, the commit path goes on to the sinks, `statistics()` says the
state is not persisted (in /v1/state and as a metric; one log line when it
starts and one when it ends), and `run` retries with backoff until a write
succeeds. Until then new events are published but not served by
`events_after`, and a crash would hand their numbers out again.

Writes run in worker threads under the journal's own CapacityLimiter, never
Trio's shared default one: a save must not queue behind threads stuck in a
host-name lookup or a sink.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from sentinel.engine.statefile import FILENAME, SavedState, Verdicts, save_state
from sentinel.model import Event, ProbeSummary
from sentinel.timefmt import rfc3339, uuid7

if TYPE_CHECKING:  # at run time the engine hands one in: sinks import this module
    from sentinel.backoff import Backoff

log = logging.getLogger(__name__)
RunBlocking = Callable[[Callable[[Path, SavedState], None], Path, SavedState], Awaitable[None]]
KEEP = 4096  # events held for GET /v1/events (SPEC: at least the last 1,000)


@dataclass(frozen=True, slots=True)
class PersistStatistics:
    """Whether the state is on disk, for /v1/state and the metrics."""

    ok: bool  # the last write succeeded
    saved_seq: int  # the last event on disk
    failures: int  # refused writes since start
    last_error: str  # of the current failing streak; "" when ok
    failing_since: float | None  # Unix time the streak began

    def to_json(self) -> dict[str, object]:
        """The `persistence` entry of the state document."""
        return {"ok": self.ok, "saved_seq": self.saved_seq, "failures": self.failures,
                "last_error": self.last_error or None,
                "failing_since": rfc3339(self.failing_since) if self.failing_since else None}


class Journal:
    """Creates events, keeps the last KEEP, and persists state snapshots."""

    def __init__(self, state_dir: Path, seq: int, retry: Backoff,
                 wall: Callable[[], float] = time.time,
                 run_blocking: RunBlocking | None = None) -> None:
        """`retry` paces the retries of refused writes. `run_blocking` runs the fsyncing
        write off the event loop (default: a worker thread under the journal's own
        limiter; tests under a MockClock pass an inline runner so virtual time cannot
        outrun the disk)."""
        self._retry = retry
        self._limiter = trio.CapacityLimiter(1)
        self._run_blocking = run_blocking or self._in_thread
        self._state_dir = state_dir
        self._seq = seq
        self._verdicts: Verdicts = {}  # as last handed in: what a retried write holds
        self._wall = wall
        self._events: deque[Event] = deque(maxlen=KEEP)
        self._saved_seq = seq
        self._lock = trio.Lock()
        self._unacked: dict[str, Event] = {}  # by id: not yet taken by durable sinks
        self._failures = 0
        self._error = ""
        self._failing_since: float | None = None
        self._refused = trio.Event()  # set when a write fails: wakes `run`
        self._rng = random.Random()

    async def _in_thread(self, fn: Callable[[Path, SavedState], None], state_dir: Path,
                         state: SavedState) -> None:
        await trio.to_thread.run_sync(fn, state_dir, state, limiter=self._limiter)

    @property
    def seq(self) -> int:
        """The last sequence number handed out."""
        return self._seq

    def new_event(self, *, service: str, backend: str, address: str, from_state: str,
                  to_state: str, weight: int, reason: str,
                  probe: ProbeSummary | None = None, trace_id: str | None = None) -> Event:
        """Number and keep a new event (sync: seq order is creation order)."""
        self._seq += 1
        now = self._wall()
        event = Event(id=uuid7(int(now * 1000)), seq=self._seq, time=rfc3339(now),
                      service=service, backend=backend, address=address,
                      from_state=from_state, to_state=to_state, weight=weight,
                      reason=reason, probe=probe, trace_id=trace_id)
        self._events.append(event)
        return event

    def adopt(self, events: Sequence[Event], seq: int | None = None) -> None:
        """Events numbered by a cluster's leader (SPEC 12), oldest first, and stored in etcd:
        served at once. A held event at or past the first of them is replaced (the leader's
        own numbering before etcd confirmed it). `seq`, when given, becomes this journal's
        (a follower takes the cluster's); else it only grows."""
        if events:
            first = events[0].seq
            while self._events and self._events[-1].seq >= first:
                self._events.pop()
            self._events.extend(events)
            self._saved_seq = max(self._saved_seq, events[-1].seq)
        self._seq = seq if seq is not None else max(self._seq, events[-1].seq if events else 0)

    def reset(self, seq: int) -> None:
        """Forget held events past `seq` and number on from it (a cluster leader whose
        write did not land, or a new term starting from what etcd holds)."""
        while self._events and self._events[-1].seq > seq:
            self._events.pop()
        self._seq = seq
        self._saved_seq = min(self._saved_seq, seq)

    def hold(self, events: Iterable[Event]) -> None:
        """Keep `events` in every snapshot until `ack`: a crash before durable sinks have
        taken them redelivers them at the next start (at least once, same ids)."""
        for event in events:
            self._unacked[event.id] = event

    def ack(self, events: Iterable[Event]) -> None:
        """Durable sinks have `events`; the next snapshot drops them."""
        for event in events:
            self._unacked.pop(event.id, None)

    def unacked(self) -> tuple[Event, ...]:
        """Held events, oldest first, for the state snapshot."""
        return tuple(sorted(self._unacked.values(), key=lambda e: e.seq))

    def events_after(self, seq: int) -> list[Event]:
        """Held events with a seq greater than `seq` that are on disk, oldest first."""
        return [e for e in self._events if seq < e.seq <= self._saved_seq]

    @property
    def persisted(self) -> bool:
        """False while the state dir refuses writes."""
        return self._failing_since is None

    def statistics(self) -> PersistStatistics:
        """A frozen snapshot of the persistence state."""
        return PersistStatistics(self.persisted, self._saved_seq, self._failures,
                                 self._error, self._failing_since)

    def on_disk(self, seq: int) -> bool:
        """Whether a write already holds event `seq` (the caller need not build verdicts)."""
        return self._saved_seq >= seq

    async def persist(self, verdicts: Verdicts, seq: int | None = None) -> bool:
        """Get a snapshot holding event `seq` (None: the current state, even without a new
        event: a verdict or an ack changed) and `verdicts` on disk. True once it is there;
        False at once while the state dir refuses writes: `run` retries (with the latest
        verdicts handed in), the caller goes on."""
        self._verdicts = verdicts
        async with self._lock:
            if seq is not None and self._saved_seq >= seq:
                return True  # an earlier write of the same burst took it
            if not self.persisted:
                return False
            return await self._write()

    async def flush(self, verdicts: Verdicts) -> bool:
        """Write the current snapshot now, even while writes are being refused (a clean
        stop: acks and verdicts since the last event)."""
        self._verdicts = verdicts
        async with self._lock:
            return await self._write()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Retry refused writes with backoff until one succeeds, for as long as it runs."""
        task_status.started()
        while True:
            await self._refused.wait()
            self._refused = trio.Event()
            attempt = 0
            while not self.persisted:
                attempt += 1
                await trio.sleep(self._retry.delay(attempt, self._rng))
                async with self._lock:
                    await self._write()

    async def _write(self) -> bool:
        """One attempt (the lock held); an OSError is the state dir's refusal, recorded."""
        snapshot = SavedState(self._seq, self._verdicts, self.unacked())
        try:
            await self._run_blocking(save_state, self._state_dir, snapshot)
        except OSError as exc:
            self._failures += 1
            self._error = exc.strerror or str(exc)
            if self._failing_since is None:
                self._failing_since = self._wall()
                self._refused.set()
                log.error("cannot write %s: %s; probing and publishing go on, but events "
                          "and verdicts are not persisted until it can (retrying)",
                          self._state_dir / FILENAME, self._error)
            return False
        self._saved_seq = max(self._saved_seq, snapshot.seq)
        if self._failing_since is not None:
            log.warning("state written to %s again after %.1fs; persisted up to seq %d",
                        self._state_dir / FILENAME, self._wall() - self._failing_since,
                        self._saved_seq)
            self._failing_since, self._error = None, ""
        return True
