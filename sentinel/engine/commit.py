"""The commit path: a change in a service's view -> numbered events -> the journal on
disk -> durable sinks -> every sink of the service. One path for every decision: the
probe loop's results, the per-task probes', passive signals, admin actions, slow-start
steps and reloads.

Two steps, so that each event carries the transition that caused it however far
the disk lags behind the probes:

- `stage` (sync, run at the moment of the change: a probe result, an admin
  action, a slow-start step, a reload) numbers an event per change that
  `sentinel.engine.decide.changes` finds (the service's view after the panic
  guard, diffed against what was last decided), with the reason, probe and
  trace of that very change;
- `carry_out` (async, one commit at a time, in order) gets the state file on disk
  (and durable sinks' outboxes fed) before any sink hears of the events, then
  hands the view to the service's sink runners. When the state dir refuses the
  write, the sinks are told anyway (see `sentinel.engine.journal`).

Every staged commit is carried out by the committer's own task (`run`), in the
order staged: a later view never reaches a sink before an earlier one, a burst
shares one state write, and a probe result's hand-in (`submit`) never waits for
the disk or a sink. Callers that must know the outcome (an admin action, a
reload) `commit` and wait for theirs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from sentinel.engine.backend import BackendRuntime
from sentinel.engine.decide import Panic, changes
from sentinel.engine.journal import Journal
from sentinel.engine.service import ServiceRuntime
from sentinel.engine.statefile import Verdicts
from sentinel.model import Event, ProbeSummary, ServiceView
from sentinel.observe import Observer
from sentinel.timefmt import rfc3339

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceNote:
    """A service-level change beside the panic guard's, numbered with a commit's events
    (self-suspicion: `normal` -> `suspect` and back, SPEC 11). Entering a state comes
    before the commit's backend events, leaving it after them, as for panic."""

    from_state: str
    to_state: str
    reason: str


@dataclass(eq=False, slots=True)
class Commit:
    """What one decision asks to persist and publish: the service's view as decided and
    the events numbered for it; `done` is set once sinks have been handed the view."""

    service: ServiceRuntime
    view: ServiceView
    events: tuple[Event, ...]
    done: trio.Event = field(default_factory=trio.Event)


class Committer:
    """Turns view changes into numbered, persisted events and sink updates, in order."""

    def __init__(self, journal: Journal, observer: Observer, wall: Callable[[], float],
                 verdicts: Callable[[], Verdicts],
                 on_published: Callable[[Sequence[Event]], None] = lambda events: None
                 ) -> None:
        """`verdicts` are every backend's, for the journal to write with the events;
        `on_published` hears each commit's events once sinks have the view (sync)."""
        self._journal = journal
        self._verdicts = verdicts
        self._observer = observer
        self._wall = wall
        self._on_published = on_published
        self._send, self._receive = trio.open_memory_channel[Commit](math.inf)
        self._running = False

    def stage(self, svc: ServiceRuntime, backend: BackendRuntime | None, reason: str,
              probe: ProbeSummary | None = None, trace_id: str | None = None,
              note: ServiceNote | None = None, *,
              reasons: Mapping[str, str] | None = None) -> Commit:
        """Number what changed, now: one event per backend whose published state or weight
        moved (`reason`, `probe` and `trace_id` belong to `backend`; `reasons` gives
        several backends theirs), one when panic starts or ends
        (`sentinel.engine.decide.changes` says what and why), and `note`'s."""
        outcome = changes(svc.config, svc.backends, svc.panic, backend, reason, reasons)
        events: list[Event] = []
        entering = note is not None and note.from_state == "normal"
        if note is not None and entering:
            events.append(self._service_event(svc, note))
        if outcome.panic is not None and outcome.panic.starts:
            svc.panic = True
            events.append(self._panic_event(svc, outcome.panic))
        for move in outcome.moves:
            b = svc.backends[move.index]
            if move.state != move.old:
                b.since = rfc3339(self._wall())
            b.published = (move.state, move.weight)
            mine = move.mine  # the event of the deciding backend carries its probe and trace
            events.append(self._journal.new_event(
                service=svc.config.name, backend=b.config.name, address=b.config.address,
                from_state=move.old.value, to_state=move.state.value, weight=move.weight,
                reason=move.reason, probe=probe if mine else None,
                trace_id=trace_id if mine else None))
            log.info("%s/%s %s -> %s (weight %d): %s", svc.config.name, b.config.name,
                     move.old.value, move.state.value, move.weight, move.reason,
                     extra={"trace_id": trace_id} if mine and trace_id else None)
        if outcome.panic is not None and not outcome.panic.starts:
            svc.panic = False
            events.append(self._panic_event(svc, outcome.panic))
        if note is not None and not entering:
            events.append(self._service_event(svc, note))
        for event in events:
            self._observer.event_emitted(event)
        self._journal.hold(events)
        svc.decided = outcome.published
        return Commit(svc, outcome.published.view, tuple(events))

    def submit(self, commit: Commit) -> None:
        """Queue `commit` for the committer's task (never blocks: the probe loop calls it)."""
        self._send.send_nowait(commit)

    async def commit(self, commit: Commit) -> None:
        """Carry `commit` out behind the ones staged before it, and return once sinks have
        its view. When the task is not running (yet, or any more) nothing is queued to
        keep order with: it is carried out here."""
        if self._running:
            self.submit(commit)
            await commit.done.wait()
        else:
            await self.carry_out(commit)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Carry out submitted commits until cancelled; those already queued still are."""
        self._running = True
        task_status.started()
        try:
            async for commit in self._receive:
                with trio.CancelScope(shield=True):  # a stop must not cut a commit in half
                    await self.carry_out(commit)
        finally:
            with trio.CancelScope(shield=True):
                while True:
                    try:
                        commit = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    await self.carry_out(commit)
            self._running = False

    async def carry_out(self, commit: Commit) -> None:
        """Persist, feed durable sinks, publish: the second half of a decision. A verdict
        that flipped without changing what is published is persisted too."""
        events = commit.events
        seq = events[-1].seq if events else None
        if seq is None or not self._journal.on_disk(seq):
            await self._journal.persist(self._verdicts(), seq)
        if events:
            await self._hand_to_durable(commit.service, events)
        commit.service.publish(commit.view, events)
        self._on_published(events)
        commit.done.set()

    async def _hand_to_durable(self, svc: ServiceRuntime, events: Sequence[Event]) -> None:
        """Give events to the service's durable sinks (outboxes) right after they are on
        disk; until every one has them they stay held in the state file."""
        for runner, _ in svc.bindings:
            if runner.can.durable is not None:
                try:
                    await runner.can.durable.accept(events)
                except Exception:
                    log.exception("sink %s could not take %d events; they stay in the state "
                                  "file and are handed over again at the next start",
                                  runner.sink.name, len(events))
                    return
        self._journal.ack(events)

    async def redeliver(self, unacked: Sequence[Event],
                        services: Mapping[str, ServiceRuntime]) -> None:
        """Events persisted before a crash that durable sinks may not have taken."""
        pending: dict[str, list[Event]] = {}
        for event in unacked:
            pending.setdefault(event.service, []).append(event)
        for name, events in pending.items():
            self._journal.hold(events)
            svc = services.get(name)
            if svc is None:
                self._journal.ack(events)  # the service is gone from the config
                continue
            log.info("%s: handing %d events from before the last stop to durable sinks",
                     name, len(events))
            await self._hand_to_durable(svc, events)
        if pending:
            await self._journal.persist(self._verdicts())

    def _panic_event(self, svc: ServiceRuntime, panic: Panic) -> Event:
        from_state, to_state = ("normal", "panic") if panic.starts else ("panic", "normal")
        return self._service_event(svc, ServiceNote(from_state, to_state, panic.reason))

    def _service_event(self, svc: ServiceRuntime, note: ServiceNote) -> Event:
        """A service-level event (`"backend": ""`, SPEC 4), logged as a warning."""
        name = svc.config.name
        log.warning("%s: %s -> %s: %s", name, note.from_state, note.to_state, note.reason)
        return self._journal.new_event(service=name, backend="", address="",
                                      from_state=note.from_state, to_state=note.to_state,
                                      weight=0, reason=note.reason)
