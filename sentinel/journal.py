"""The event journal: numbers events, keeps the recent ones, persists the sequence.

`seq` grows by one per event across the instance's life. Before an event is
handed to sinks the journal has written a state snapshot holding its seq
(group commit: a burst of events shares one fsync), so a crash never
reuses a number.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import trio

from sentinel.model import Event, ProbeSummary
from sentinel.statefile import SavedState, save_state

RunBlocking = Callable[[Callable[[Path, SavedState], None], Path, SavedState], Awaitable[None]]
KEEP = 4096  # events held for GET /v1/events (SPEC: at least the last 1,000)


def uuid7(unix_ms: int) -> str:
    """A time-ordered UUID (RFC 9562 version 7): sorts by creation time."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 66 & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def rfc3339(unix: float) -> str:
    """UTC timestamp with milliseconds, e.g. 2026-11-24T16:00:00.123Z."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Journal:
    """Creates events, keeps the last KEEP, and persists state snapshots."""

    def __init__(self, state_dir: Path, seq: int, snapshot: Callable[[], SavedState],
                 wall: Callable[[], float] = time.time,
                 run_blocking: RunBlocking = trio.to_thread.run_sync) -> None:
        """`run_blocking` runs the fsyncing write off the event loop (tests under a
        MockClock pass an inline runner so virtual time cannot outrun the disk)."""
        self._run_blocking = run_blocking
        self._state_dir = state_dir
        self._seq = seq
        self._snapshot = snapshot
        self._wall = wall
        self._events: deque[Event] = deque(maxlen=KEEP)
        self._saved_seq = seq
        self._lock = trio.Lock()
        self._unacked: dict[str, Event] = {}  # by id: not yet taken by durable sinks

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
        """Held events with a seq greater than `seq`, oldest first."""
        return [e for e in self._events if e.seq > seq]

    async def wait_persisted(self, seq: int | None = None) -> None:
        """Return once a snapshot holding `seq` (default: the latest) is on disk."""
        target = self._seq if seq is None else seq
        while self._saved_seq < target:
            async with self._lock:
                if self._saved_seq >= target:
                    return
                snapshot = self._snapshot()
                await self._run_blocking(save_state, self._state_dir, snapshot)
                self._saved_seq = max(self._saved_seq, snapshot.seq)

    async def save_now(self) -> None:
        """Persist the current snapshot even without new events (verdict-only changes)."""
        async with self._lock:
            snapshot = self._snapshot()
            await self._run_blocking(save_state, self._state_dir, snapshot)
            self._saved_seq = max(self._saved_seq, snapshot.seq)
