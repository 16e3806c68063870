"""The stream hub: live events and service state for GET /v1/stream (SPEC 6).

The engine feeds it at one point: `published(events)`, once a commit's events
are on disk and handed to the sinks. That call is synchronous and only appends
to queues: the engine never waits for a stream client.

Service state is not pushed by the engine. While anyone is subscribed, `run`
looks every `coalesce` seconds at which backends' entries moved (a probe
result, a verdict, an override, a reload) and sends one `state` message per
service that changed, holding only the backends that changed: a service probed
a thousand times a second costs a subscriber at most 1/`coalesce` messages a
second, and a stream over 5,000 backends carries what moved, not 5,000 entries
each time. Every `summary_every` seconds it sends the rest of the state
document (sinks, engine pacing, seq).

Each subscriber has a bounded queue. One that falls behind by more than
`max_queued_bytes` or `max_queued_messages` is dropped (its stream ends and the
client reconnects with Last-Event-ID), never waited for.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from sentinel.engine.backend import BackendRuntime
from sentinel.engine.service import ServiceRuntime
from sentinel.model import Event, State

log = logging.getLogger(__name__)
HEARTBEAT = b": heartbeat\n\n"
CHUNK = 500  # backends serialised between two checkpoints: a big service never stalls the loop


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How many streams, how far a client may fall behind, and the pace of messages."""

    max_streams: int = 32
    max_queued_bytes: int = 4 * 1024 * 1024
    max_queued_messages: int = 10_000
    coalesce: float = 0.5  # seconds between two `state` messages for one service
    summary_every: float = 2.0
    heartbeat: float = 15.0


class HubSource(Protocol):
    """What the hub reads from the engine."""

    services: dict[str, ServiceRuntime]

    def events_after(self, seq: int) -> list[Event]:
        """Held events after `seq`, oldest first."""
        ...

    def status_document(self) -> dict[str, object]:
        """The state document without its services."""
        ...


def sse(kind: str, data: object, seq: int | None = None) -> bytes:
    """One server-sent-events message (the JSON has no newline, so one `data:` line)."""
    head = f"id: {seq}\n" if seq is not None else ""
    body = json.dumps(data, separators=(",", ":"))
    return f"{head}event: {kind}\ndata: {body}\n\n".encode()


def event_message(event: Event) -> bytes:
    """An `event` message; its id is the event's seq, for Last-Event-ID."""
    return sse("event", event.to_json(), event.seq)


class Subscription:
    """One stream client's queue of messages, bounded; `next_batch` drains it."""

    def __init__(self, after: int, limits: StreamLimits, label: str) -> None:
        self.after = after  # events up to this seq were sent from the journal
        self.label = label
        self.closed = False
        self.dropped = False
        self._limits = limits
        self._queue: deque[bytes] = deque()
        self._bytes = 0
        self._wakeup = trio.Event()
        self._next_heartbeat = trio.current_time() + limits.heartbeat

    def offer(self, message: bytes) -> bool:
        """Queue `message`; False when that would pass the limits (then nothing is queued)."""
        if (len(self._queue) >= self._limits.max_queued_messages
                or self._bytes + len(message) > self._limits.max_queued_bytes):
            return False
        self._queue.append(message)
        self._bytes += len(message)
        self._wakeup.set()
        return True

    def close(self, *, dropped: bool = False) -> None:
        """End the stream: `next_batch` returns [] once the queue is empty (at once when
        dropped: what is queued is thrown away)."""
        self.closed = True
        self.dropped = dropped
        if dropped:
            self._queue.clear()
            self._bytes = 0
        self._wakeup.set()

    async def next_batch(self) -> list[bytes]:
        """Everything queued, waiting for something when empty; a heartbeat comment every
        `heartbeat` seconds; [] once closed and drained."""
        while not self._queue and not self.closed:
            if trio.current_time() >= self._next_heartbeat:
                break
            with trio.move_on_at(self._next_heartbeat):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
        batch = list(self._queue)
        self._queue.clear()
        self._bytes = 0
        now = trio.current_time()
        if now >= self._next_heartbeat:
            batch.append(HEARTBEAT)
            self._next_heartbeat = now + self._limits.heartbeat
        return batch


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the last `state` message of a service said, as compared signatures."""

    names: tuple[str, ...]
    marks: tuple[tuple[object, ...], ...]
    panic: bool


def _mark(b: BackendRuntime) -> tuple[object, ...]:
    """What a backend's state entry depends on; a new result object per probe makes this
    cheap to compare (identity first)."""
    return (b, b.config, b.last_time, b.last_result, b.published, b.override, b.since,
            b.progress,
            b.breaker.health, b.damper.suppressed if b.damper else None)


class StreamHub:
    """Fans events and coalesced service state out to stream subscribers."""

    def __init__(self, source: HubSource, limits: StreamLimits | None = None) -> None:
        self.limits = limits or StreamLimits()
        self._source = source
        self._subscribers: list[Subscription] = []
        self._seen: dict[str, _Seen] = {}
        self._someone = trio.Event()
        self._closed = False
        self.dropped = 0  # clients dropped for falling behind, since start

    @property
    def streams(self) -> int:
        """Open streams."""
        return len(self._subscribers)

    def published(self, events: Sequence[Event]) -> None:
        """The engine's hook: `events` are on disk and handed to sinks (sync, never
        waits for a client)."""
        if not self._subscribers or not events:
            return
        messages = [(e.seq, event_message(e)) for e in events]
        for sub in list(self._subscribers):
            for seq, message in messages:
                if seq > sub.after:  # not already sent from the journal
                    self._offer(sub, message)

    def subscribe(self, after: int | None, label: str = "") -> tuple[Subscription, list[Event]
                                                                      ] | None:
        """A new subscription and the held events after `after` (none when None), taken
        at the same moment so that none is missed or sent twice; None when `max_streams`
        are open or the hub is closed."""
        if self._closed or len(self._subscribers) >= self.limits.max_streams:
            return None
        if not self._subscribers:  # the marks are stale: the newcomer starts from a snapshot
            self._seen = {name: self._look(svc) for name, svc in self._source.services.items()}
            self._someone.set()
        backlog = self._source.events_after(after) if after is not None else []
        last = backlog[-1].seq if backlog else (after if after is not None else -1)
        sub = Subscription(last, self.limits, label)
        self._subscribers.append(sub)
        return sub, backlog

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget `sub` (its stream ended)."""
        if sub in self._subscribers:
            self._subscribers.remove(sub)
        if not self._subscribers:
            self._someone = trio.Event()

    async def snapshot(self) -> AsyncIterator[bytes]:
        """A full `state` message per service, then a summary: what a new stream starts
        from. Yields to other tasks between chunks of backends."""
        for name, svc in list(self._source.services.items()):
            yield await self._state_message(name, svc, svc.backends, full=True)
        yield self._summary_message()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Send coalesced `state` and periodic `summary` messages while anyone listens;
        ends every stream when cancelled (the engine stopped)."""
        task_status.started()
        try:
            next_summary = trio.current_time()
            while True:
                await self._someone.wait()
                await trio.sleep(self.limits.coalesce)
                await self._flush_states()
                if trio.current_time() >= next_summary:
                    self._broadcast(self._summary_message())
                    next_summary = trio.current_time() + self.limits.summary_every
        finally:
            self.close()

    def close(self) -> None:
        """End every stream; refuse new ones."""
        self._closed = True
        for sub in self._subscribers:
            sub.close()

    # -- inside -------------------------------------------------------------------

    def _offer(self, sub: Subscription, message: bytes) -> None:
        if not sub.closed and not sub.offer(message):
            self.dropped += 1
            self.unsubscribe(sub)
            sub.close(dropped=True)
            log.warning("stream client %s dropped: it fell behind by more than %d messages "
                        "or %d bytes", sub.label or "?", self.limits.max_queued_messages,
                        self.limits.max_queued_bytes)

    def _broadcast(self, message: bytes) -> None:
        for sub in list(self._subscribers):
            self._offer(sub, message)

    @staticmethod
    def _look(svc: ServiceRuntime) -> _Seen:
        return _Seen(tuple(b.config.name for b in svc.backends),
                     tuple(_mark(b) for b in svc.backends), svc.panic)

    async def _flush_states(self) -> None:
        """One `state` message per service whose entries moved since the last one."""
        services = dict(self._source.services)
        for name in [n for n in self._seen if n not in services]:
            del self._seen[name]
            self._broadcast(sse("state", {"service": name, "removed": True}))
        for name, svc in services.items():
            await trio.lowlevel.checkpoint()
            if not self._subscribers:
                return
            now, before = self._look(svc), self._seen.get(name)
            self._seen[name] = now
            if before is None or before.names != now.names:
                self._broadcast(await self._state_message(name, svc, svc.backends, full=True))
                continue
            changed = [b for b, new, old in zip(svc.backends, now.marks, before.marks,
                                                strict=True) if new != old]
            if changed or now.panic != before.panic:
                self._broadcast(await self._state_message(name, svc, changed, full=False))

    @staticmethod
    async def _state_message(name: str, svc: ServiceRuntime, backends: Iterable[BackendRuntime],
                             *, full: bool) -> bytes:
        """A `state` message: the service's entry of the state document, with all its
        backends (`full`) or only `backends`; states and weights as last published."""
        entries: list[dict[str, object]] = []
        for b in backends:
            entries.append(b.to_json(*b.published))
            if len(entries) % CHUNK == 0:
                await trio.lowlevel.checkpoint()
        up = sum(1 for b in svc.backends if b.published[0] is State.UP)
        return sse("state", {"service": name, "full": full, "panic": svc.panic, "up": up,
                             "total": len(svc.backends), "backends": entries})

    def _summary_message(self) -> bytes:
        return sse("summary", self._source.status_document())
