"""The hand-off between the engine and one sink.

`publish()` never blocks: it stores the update in a per-service slot,
coalescing with anything still pending (the newest view wins, events
accumulate). The runner's own task applies pending updates one service at a
time, each bounded by `apply_timeout`; a failure (or a hang, cut off by the
timeout) puts the update back and schedules that service's retry with
exponential backoff and equal jitter (`sentinel.backoff`), while other
services of the same sink go on. Probing never waits for a sink.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from sentinel.backoff import Backoff
from sentinel.errors import SinkError
from sentinel.observe import NullObserver, Observer
from sentinel.sinks.base import Capabilities, Sink, Update

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SinkStatistics:
    """A snapshot of one sink's health for /v1/state."""

    name: str
    ok: bool
    pending: int
    applied: int
    failures: int
    last_error: str
    last_success: float | None  # Unix time
    details: Mapping[str, object] = field(default_factory=dict)  # from the sink's health

    def to_json(self) -> dict[str, object]:
        """The sink entry of the state document."""
        return {"ok": self.ok, "pending": self.pending, "applied": self.applied,
                "failures": self.failures, "last_error": self.last_error or None,
                "last_success": self.last_success, **self.details}


class SinkRunner:
    """Owns one sink: coalesces, applies, retries."""

    def __init__(self, sink: Sink, *, apply_timeout: float = 30.0,
                 backoff: Backoff | None = None, rng: random.Random | None = None,
                 observer: Observer | None = None) -> None:
        self.sink = sink
        self.can = Capabilities.of(sink)  # checked once, here
        self._observer = observer or NullObserver()
        self.apply_timeout = apply_timeout
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._pending: dict[str, Update] = {}
        self._applying: list[Update] = []  # taken from `_pending`, being applied
        self._not_before: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._applied = 0
        self._failures = 0
        self._last_error = ""
        self._last_success: float | None = None
        self._scope: trio.CancelScope | None = None

    def bind(self, services: frozenset[str]) -> None:
        """Tell the sink which services are bound to it (if it keeps views across them)."""
        if self.can.bound is not None:
            self.can.bound.bind(services)

    def publish(self, update: Update) -> None:
        """Hand over the newest view of a service; never blocks."""
        service = update.view.service
        previous = self._pending.get(service)
        self._pending[service] = previous.merge(update) if previous else update
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    def statistics(self) -> SinkStatistics:
        """A frozen snapshot of this sink's state: its applies, and the sink's own health
        when it reports one (a failing apply's error comes first)."""
        # ok only while no service is in a failing streak (another's success does not hide it)
        ok, error = not self._attempts, self._last_error
        details: Mapping[str, object] = {}
        if self.can.health is not None:
            health = self.can.health.health()
            ok, error, details = ok and health.ok, error or health.last_error, health.details
        return SinkStatistics(self.sink.name, ok, len(self._pending), self._applied,
                              self._failures, error, self._last_success, details)

    def owed_seq(self) -> int | None:
        """The lowest seq of an event handed over and not yet applied (pending, being
        applied, or waiting to be retried); None when there is none. A cluster's leader
        records how far a leader-scope sink has delivered by it."""
        return min((e.seq for u in (*self._pending.values(), *self._applying)
                    for e in u.events), default=None)

    async def wait_idle(self) -> None:
        """Return once nothing is pending (used for a graceful stop)."""
        await self._idle.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Apply pending updates until cancelled or `retire()`d.

        A sink with its own background work (`BackgroundSink`: HAProxy's drift repair)
        runs it here, so it stops with the runner.
        """
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                if self.can.background is not None:
                    await nursery.start(self.can.background.run)
                task_status.started()
                await self._loop()

    def retire(self) -> None:
        """Stop this runner's task (its sink was removed or replaced by a reload)."""
        if self._scope is not None:
            self._scope.cancel()

    async def _loop(self) -> None:
        while True:
            now = trio.current_time()
            ready = [s for s in self._pending if self._not_before.get(s, -math.inf) <= now]
            if not ready:
                if not self._pending:
                    self._idle.set()
                self._wake = trio.Event()
                wake_at = min(self._not_before.values(), default=math.inf)
                with trio.move_on_at(wake_at):
                    await self._wake.wait()
                continue
            if self.can.batch is not None and len(ready) > 1:
                batch = self._applying = [self._pending.pop(s) for s in ready]
                await self._apply(ready, batch, self.can.batch.apply_batch(batch))
            else:
                for service in ready:
                    update = self._pending.pop(service)
                    self._applying = [update]
                    await self._apply([service], [update], self.sink.apply(update))
            self._applying = []

    async def _apply(self, services: list[str], updates: list[Update],
                     call: Coroutine[Any, Any, None]) -> None:
        """Run one apply (of one service, or of a batch) and settle its outcome."""
        error = ""
        start_unix, started = time.time(), trio.current_time()
        label = ",".join(services)
        try:
            with trio.fail_after(self.apply_timeout):
                await call
        except trio.TooSlowError:
            error = f"apply timed out after {self.apply_timeout:g}s"
        except SinkError as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:  # a bug in a sink must not stop the others
            log.exception("sink %s crashed applying %s", self.sink.name, label)
            error = f"{type(exc).__name__}: {exc}"
        self._observer.sink_applied(self.sink.name, label, error or None, start_unix,
                                    trio.current_time() - started)
        for service, update in zip(services, updates, strict=True):
            self._settle(service, update, error)

    def _settle(self, service: str, update: Update, error: str) -> None:
        if not error:
            self._applied += 1
            self._last_success = time.time()
            self._attempts.pop(service, None)
            if not self._attempts:
                self._last_error = ""
            self._not_before.pop(service, None)
            return
        self._failures += 1
        self._last_error = error
        attempt = self._attempts.get(service, 0) + 1
        self._attempts[service] = attempt
        delay = self._backoff.delay(attempt, self._rng)
        self._not_before[service] = trio.current_time() + delay
        newer = self._pending.get(service)
        self._pending[service] = update.merge(newer) if newer else update
        log.warning("sink %s failed for service %s (attempt %d, retry in %.1fs): %s",
                    self.sink.name, service, attempt, delay, error)
