"""The engine in a cluster (SPEC 12): probe what is assigned, report, follow the agreed
view, and while leading turn the vote into published views and numbered events.

Every member:
- probes only the backends the assignment gives it (`probes`); a backend it
  takes over starts a fresh breaker from the agreed verdict, and its first
  probe result is reported even when it changes nothing;
- feeds its probes' results to its breakers and reports their verdicts to
  etcd (`observe`, the member's `decide`: written on change), and
  probes a backend at once when another of its probers reports it down;
- follows the agreed state (`agreed_changed`): the leader's events go into
  the journal as they are (the cluster's seq), each view to the member's
  `scope: local` sinks, built from the member's own configuration and the
  agreed states and weights, so every member hands its Maglev, nginx, IPVS
  and HAProxy sinks the same view. A member that does not lead also takes
  the agreed states into its runtimes (what /v1/state shows, and where it
  starts from should it lead);
- stores admin overrides in etcd instead of applying them itself;
- publishes in its member record whether it suspects itself (`suspect`, from
  its self-suspicion shell, which in a cluster only detects: SPEC 11); the
  leader's tally counts a suspect member's down votes as abstentions.

The leader (`lead`, one term) starts from what etcd holds, resumes the
deliveries of its `scope: leader` durable sinks (webhook) from the seq the
last leader recorded, then loops: vote on the backends whose observations,
probers or overrides changed (`ClusterNode.tally`); the agreed verdict takes
the place of a breaker's in the engine's own decision through decide's seam
(`Inputs.agreed`: flap damping, slow start, overrides and the panic guard
apply to it as to a local verdict; `Committer.stage`, once per service
however many of its backends moved); write the entries that changed with
their events in fenced transactions; hand the events to the leader-scope
sinks; record how far each durable one has delivered.
A write that fails ends the term: the journal and runtimes go back to what
etcd holds, and the node campaigns again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import trio

from sentinel import __version__
from sentinel.breakers import make_breaker
from sentinel.breakers.base import Change, Health, Transition
from sentinel.cluster.assign import probe_phase
from sentinel.cluster.config import ClusterConfig
from sentinel.cluster.leader import (
    AgreedChanges,
    AgreedState,
    Leader,
    ServiceChange,
)
from sentinel.cluster.node import ClusterNode
from sentinel.cluster.observations import BackendKey
from sentinel.engine.backend import BackendRuntime
from sentinel.engine.commit import Commit, Committer
from sentinel.engine.decide import Decision, Note, Published, dampen, feed
from sentinel.engine.service import ServiceRuntime
from sentinel.engine.slowstart import ramp
from sentinel.engine.suspect import Suspicion
from sentinel.model import Event, ProbeResult, ServiceView, State
from sentinel.observe import NullObserver
from sentinel.sinks.base import Update
from sentinel.sinks.runner import SinkRunner
from sentinel.timefmt import unix

if TYPE_CHECKING:
    from sentinel.engine.engine import Engine

log = logging.getLogger(__name__)
_CHANGED = Change.CHANGED
DELIVERY_MARK_EVERY = 1.0  # seconds between records of how far leader-scope sinks delivered
DAMPING_CHECK = 1.0  # seconds between looks at suppressed backends while leading
OVERRIDE_WAIT = 2.0  # lease_ttls an admin action waits to see its effect agreed


class ClusterMode:
    """The engine's side of a cluster member; see the module docstring."""

    def __init__(self, engine: Engine, config: ClusterConfig, api_url: str) -> None:
        self.engine = engine
        self.config = config
        self.node = ClusterNode(config, self, api_url=api_url, version=__version__,
                                wall=engine.wall)
        # The leader's decisions, staged (numbered by the journal at the cluster's seq) but
        # carried out here; counted when they come back agreed, like every member's
        self._stager = Committer(engine.journal, NullObserver(), engine.wall, engine.verdicts)
        self._probing: set[BackendKey] = set()
        self._assigned = False  # the first assignment keeps the breakers restored at start
        self._dirty: set[BackendKey] = set()
        self._all_dirty = True
        self._override_dirty: set[BackendKey] = set()
        self._queued: list[Commit] = []
        self._wake = trio.Event()
        # The agreed state this member follows: entries by service and backend, documents
        self._agreed: dict[str, dict[str, Any]] = {}
        self._headers: dict[str, Any] = {}
        # What this leader knows etcd holds (only what changed is written)
        self._written: dict[str, dict[str, Any]] = {}
        self._written_headers: dict[str, Any] = {}
        self._confirmed = 0  # the last seq etcd confirmed to this member
        self._handed = 0  # events up to here were handed to the leader-scope sinks
        # A leader-scope durable sink's events its outbox refused this term, by sink: taken
        # again from etcd, and its delivery mark stays below them until they are
        self._refused: dict[str, set[int]] = {}
        self._persist = trio.Event()
        self._agreed_seen = trio.Event()
        self._followed: dict[str, ServiceView] = {}  # the agreed views, as last seen here
        self._indexed: object = None  # the services dict `_index` was built from
        self._index: dict[BackendKey, tuple[ServiceRuntime, BackendRuntime]] = {}

    # -- probing and reporting ----------------------------------------------------

    def probes(self, backend: BackendRuntime) -> bool:
        """True when this member probes `backend` (the engine's probe groups ask)."""
        return self.node.probes(backend.service, backend.config.name)

    def observe(self, backend: BackendRuntime, result: ProbeResult, now: float,
                check: int | None) -> Decision:
        """A member's `decide`: the result (combined with the backend's other checks, as
        `decide` does) goes through the backend's breaker and a changed verdict (or the
        first one after taking the backend over) is reported; nothing is published here
        (the vote decides, and the leader publishes)."""
        fed = feed(backend, result, check)
        if isinstance(fed, Decision):  # a LOCAL failure, or checks still undecided
            return fed
        result = fed
        transition = backend.breaker.observe(result.ok, now, result.latency)
        # Runs for every check a member makes: the enum member is bound to a module name
        # and the Decision built positionally (as `decide` does).
        if transition.change is _CHANGED or not backend.reported:
            backend.reported = True
            state = State.UP if transition.health is Health.UP else State.DOWN
            reason = transition.reason
            if state is State.DOWN and result.error:
                reason = f"{reason}; last: {result.error}"
            self.node.report(backend.service, backend.config.name, state, reason)
        return Decision(transition, result, backend.published, False)

    def reassign(self) -> None:
        """Match what this member probes to the assignment: a backend taken over starts a
        fresh breaker from the agreed verdict; one handed over loses this member's
        verdict in etcd. Each backend probed gets this member's turn in its interval
        (`probe_phase` by its rank among the backend's probers)."""
        probing: set[BackendKey] = set()
        for name, svc in self.engine.services.items():
            for b in svc.backends:
                key = (name, b.config.name)
                b.probers = self.node.probers(*key)
                if self.node.node not in b.probers:
                    for slot in b.checks:
                        slot.phase = None
                    b.reported = False
                    continue
                probing.add(key)
                turn = probe_phase(f"{name}/{b.config.name}", b.probers.index(self.node.node),
                                   len(b.probers))
                for slot in b.checks:
                    slot.phase = turn * slot.timing.interval
                if self._assigned and key not in self._probing:
                    b.breaker = make_breaker(svc.config.breaker, b.health)
                    b.reported = False
        for key in self._probing - probing:
            self.node.forget(*key)
        self._probing = probing
        self._assigned = True

    def reload(self, new: ClusterConfig | None) -> None:
        """A reload: the new file's hash goes to the cluster (the member record, future
        campaigns; a term led under the old hash ends, and who follows and leads is
        judged again). The rest of `cluster:` is kept as it was started
        (`reload.restart_only` warns of it)."""
        if new is not None:
            self.node.rehash(new.config_sha256)

    def suspect(self, suspicion: Suspicion | None) -> None:
        """This member suspects itself, or no longer does (SPEC 11): its record says so,
        and the leader stops counting its down votes, or counts them again."""
        self.node.suspect(suspicion.reason if suspicion is not None else None)

    # -- ClusterHost: what the node reports ------------------------------------------

    def members_changed(self) -> None:
        """Reassign and regroup the probes, and have the leader vote on everything again."""
        if self.engine.running:
            self.engine.regroup()  # reassigns first
        else:
            self.reassign()
        self._all_dirty = True
        self._wake.set()

    def observations_changed(self, touched: set[BackendKey]) -> None:
        """Show who says what; the leader votes on these backends again. Another prober's
        down makes this member probe the backend at once (one prober's view triggers,
        the others confirm): agreement then waits for the first prober to see a death
        plus one probe, not for the slowest prober's schedule."""
        for key in touched:
            b = self._backend(key)
            if b is None:
                continue
            seen = self.node.observed(*key)
            b.observers = tuple(sorted((node, o.state.value) for node, o in seen.items()))
            if (key in self._probing and self.engine.running
                    and any(o.state is State.DOWN for node, o in seen.items()
                            if node != self.node.node)):
                self.engine.probe_now(b)  # nothing when this member's verdict is down
        self._dirty |= touched
        self._wake.set()

    def overrides_changed(self, touched: set[BackendKey]) -> None:
        """Take the overrides in; the leader publishes their effect."""
        for key in touched:
            b = self._backend(key)
            if b is not None:
                b.override = self.node.override(*key)
        self._override_dirty |= touched
        self._wake.set()

    def agreed_changed(self, changes: AgreedChanges) -> None:
        """The leader published: events into the journal, views to the local sinks (and,
        unless this member leads, into its runtimes)."""
        leading = self.node.leading is not None
        if changes.events or (changes.seq is not None and not leading):
            self.engine.journal.adopt(changes.events, None if leading else changes.seq)
            self._confirmed = max(self._confirmed, self.engine.journal.seq if not leading
                                  else changes.events[-1].seq)
        by_service: dict[str, list[Event]] = {}
        for event in changes.events:
            by_service.setdefault(event.service, []).append(event)
            self.engine.observer.event_emitted(event)
            if not leading:
                log.info("%s/%s %s -> %s (weight %d): %s [seq %d]", event.service,
                         event.backend, event.from_state, event.to_state, event.weight,
                         event.reason, event.seq)
        for name in sorted(changes.touched):
            entries = changes.backends.get(name, {})
            self._agreed.setdefault(name, {}).update(entries)
            if name in changes.services:
                self._headers[name] = changes.services[name]
            svc = self.engine.services.get(name)
            if svc is None:
                continue  # not in this member's configuration (yet: a reload in progress)
            try:
                view = self._follow(svc, entries if not leading else {})
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("cluster: ignoring the agreed view of %s: %r", name, exc)
                continue
            events = tuple(by_service.get(name, ()))
            for runner, options in self._bindings(svc, "local"):
                runner.publish(Update(view, events, options))
        self.engine.hub.published(changes.events)
        self._agreed_seen.set()
        self._persist.set()

    def term_ended(self) -> None:
        """Back to what etcd holds: numbering, runtimes, waiting callers."""
        self.engine.journal.reset(self._confirmed)
        for name, entries in self._agreed.items():
            svc = self.engine.services.get(name)
            if svc is not None:
                try:
                    self._follow(svc, entries)
                except (KeyError, TypeError, ValueError):
                    continue
        for commit in self._queued:
            commit.events = ()
            commit.done.set()
        self._queued.clear()

    # -- leading -------------------------------------------------------------------

    async def lead(self, leader: Leader, state: AgreedState) -> None:
        """One term: resume deliveries, then vote and publish until a write fails."""
        self.engine.journal.reset(state.seq)
        self._confirmed = self._handed = state.seq
        self._refused = {}
        self._agreed = {name: dict(entries) for name, entries in state.backends.items()}
        self._headers = dict(state.services)
        self._written = {name: dict(entries) for name, entries in state.backends.items()}
        self._written_headers = {name: _without_time(doc)
                                 for name, doc in state.services.items()}
        for name in self._agreed.keys() | self._headers.keys():
            svc = self.engine.services.get(name)
            if svc is not None:
                self._follow(svc, self._agreed.get(name, {}))
        for name, svc in self.engine.services.items():
            for unvoted in svc.backends:  # no verdict in etcd (a new or wiped store)
                if unvoted.config.name not in state.backends.get(name, {}):
                    unvoted.inputs = replace(unvoted.inputs, agreed=None)  # vote anew
        for key, override in self.node.overrides.overrides.items():
            b = self._backend(key)
            if b is not None:
                b.override = override
        self._resume_ramps()
        await self._resume_deliveries(leader, state)
        self._all_dirty = True
        log.info("cluster: %s leads from seq %d (%d services agreed)", self.node.node,
                 state.seq, len(state.services))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._record_deliveries, leader, dict(state.delivered))
            while True:
                commits = self._decide_round()
                if commits:
                    await self._publish(leader, commits)
                    continue
                self._wake = trio.Event()
                with trio.move_on_after(DAMPING_CHECK):
                    await self._wake.wait()

    def _decide_round(self) -> list[Commit]:
        """Everything that changed since the last round, decided now (sync: nothing moves
        meanwhile)."""
        now = trio.current_time()
        commits: list[Commit] = []
        overridden, self._override_dirty = self._override_dirty, set()
        for key in sorted(overridden):
            found = self._runtime(key)
            if found is not None:
                svc, b = found
                action = b.override.value if b.override else "ready"
                commits.append(self._stager.stage(svc, b, f"admin: {action}"))
        keys: Sequence[BackendKey] = (
            [(n, b.config.name) for n, s in self.engine.services.items() for b in s.backends]
            if self._all_dirty else sorted(self._dirty))
        self._all_dirty, self._dirty = False, set()
        votes: dict[str, dict[str, str]] = {}  # service -> backend -> why it moved
        for key in keys:
            found = self._runtime(key)
            if found is None:
                continue
            svc, b = found
            current = State.UP if b.health is Health.UP else State.DOWN
            ballot = self.node.tally(*key, current)
            agreed = Health.UP if ballot.state is State.UP else Health.DOWN
            if b.inputs.agreed is agreed:
                continue
            fresh = b.inputs.agreed is None
            b.inputs = replace(b.inputs, agreed=agreed)  # decide's seam: the vote's verdict
            b.verdict = ballot.reason
            if agreed is Health.DOWN and not fresh:
                # up until now, as far as the cluster knows: the panic guard holds up the
                # backends that passed most recently, and this member may not probe it
                b.last_ok = self.engine.wall()
            if b.damper is not None:
                self._log(key, dampen(b.damper, Transition(Change.CHANGED, agreed), now))
            if agreed is Health.UP and svc.config.slow_start > 0 and not fresh:
                steps = ramp(b.config.weight, svc.config.slow_start)
                if len(steps) > 1:
                    self.engine.start_ramp(b, tuple(steps))
            votes.setdefault(key[0], {})[key[1]] = ballot.reason
        for name, reasons in votes.items():  # one decision per service, however many moved
            commits.append(self._stager.stage(self.engine.services[name], None, "",
                                                 reasons=reasons))
        for svc in self.engine.services.values():
            for b in svc.backends:
                if b.damper is not None and b.damper.suppressed:
                    notes = dampen(b.damper, Transition(Change.UNCHANGED, b.health), now)
                    if notes:  # released
                        self._log((svc.config.name, b.config.name), notes)
                        commits.append(self._stager.stage(
                            svc, b, f"flap damping released: {b.damper.describe()}"))
        commits.extend(self._queued)
        self._queued.clear()
        return commits

    async def _publish(self, leader: Leader, commits: list[Commit]) -> None:
        """Write what these commits moved (fenced): per service the entries that changed
        and its document; then tell the leader-scope sinks. On failure every waiting
        caller is released and the term ends."""
        order: dict[str, ServiceRuntime] = {}
        for commit in commits:
            order[commit.service.config.name] = commit.service
        changes: list[ServiceChange] = []
        written: list[tuple[str, dict[str, dict[str, Any]], dict[str, Any]]] = []
        for name, svc in order.items():
            events = tuple(e for c in commits if c.service is svc for e in c.events)
            view = svc.decided.view
            known = self._written.get(name, {})
            moved = {b.config.name: entry for b, v in zip(svc.backends, view.backends,
                                                          strict=True)
                     if known.get(b.config.name) != (entry := _entry(b, v.state, v.weight))}
            header = {"panic": view.panic, "held_up": list(svc.decided.held_up)}
            if events or moved or header != self._written_headers.get(name):
                changes.append(ServiceChange(name, moved, {**header,
                                                           "time": self.engine.wall()},
                                             events))
                written.append((name, moved, header))
        # staged events are held for local durable sinks; here etcd keeps them instead
        self.engine.journal.ack(e for c in commits for e in c.events)
        try:
            numbered = await leader.publish(changes) if changes else ()
        except BaseException:
            for commit in commits:
                commit.events = ()
                commit.done.set()
            raise
        for name, moved, header in written:
            self._written.setdefault(name, {}).update(moved)
            self._written_headers[name] = header
        if numbered:
            self.engine.journal.adopt(numbered)
            self._confirmed = numbered[-1].seq
        by_id = {e.id: e for e in numbered}
        for commit in commits:
            commit.events = tuple(by_id[e.id] for e in commit.events if e.id in by_id)
        await self._hand_to_leader_sinks(numbered)
        for commit in commits:
            commit.done.set()

    async def _hand_to_leader_sinks(self, events: Sequence[Event]) -> None:
        """Give numbered events (and their views) to the leader-scope sinks: durable ones
        take them into their outbox before anything else."""
        by_service: dict[str, list[Event]] = {}
        for event in events:
            by_service.setdefault(event.service, []).append(event)
        for name, mine in by_service.items():
            svc = self.engine.services.get(name)
            if svc is None:
                continue
            for runner, options in self._bindings(svc, "leader"):
                if runner.can.durable is not None:
                    try:
                        await runner.can.durable.accept(mine)
                    except Exception:
                        self._refused.setdefault(runner.sink.name, set()).update(
                            e.seq for e in mine)
                        log.exception("sink %s could not take %d events; they are taken "
                                      "again from etcd", runner.sink.name, len(mine))
                        continue
                runner.publish(Update(svc.decided.view, tuple(mine), options))
        if events:
            self._handed = events[-1].seq

    async def _resume_deliveries(self, leader: Leader, state: AgreedState) -> None:
        """Hand the leader-scope sinks what the last leader may not have delivered (at
        least once: an outbox drops ids it still holds; an exec sink runs them again).
        A sink no leader has marked yet starts from now: no earlier leader delivered
        through it."""
        for runner in self._leader_runners():
            name = runner.sink.name
            mark = state.delivered.get(name)
            if mark is None:
                await leader.record_delivered(name, state.seq)
                continue
            owed = [e for e in await leader.events_after(mark)
                    if name in self._sinks_of(e.service)]
            if not owed:
                continue
            log.info("cluster: %s resumes %d deliveries of sink %s after seq %d",
                     self.node.node, len(owed), name, mark)
            if runner.can.durable is not None:
                await runner.can.durable.accept(owed)
                continue
            by_service: dict[str, list[Event]] = {}
            for event in owed:
                by_service.setdefault(event.service, []).append(event)
            for service, events in by_service.items():
                svc = self.engine.services[service]
                for bound, options in self._bindings(svc, "leader"):
                    if bound is runner:
                        runner.publish(Update(svc.decided.view, tuple(events), options))

    async def _record_deliveries(self, leader: Leader, recorded: dict[str, int]) -> None:
        """Record, fenced, how far each leader-scope sink has delivered (a durable one's
        outbox, another's runner: what it still holds is owed), so the next leader
        resumes there; a mark only grows (`recorded`: the marks in etcd; this outbox may
        still hold older events of an earlier term)."""
        while True:
            await trio.sleep(DELIVERY_MARK_EVERY)
            for runner in self._leader_runners():
                if runner.sink.name in self._refused:
                    await self._retake(leader, runner)
                progress = runner.can.progress if runner.can.durable is not None else runner
                owed = progress.owed_seq() if progress is not None else None
                through = self._handed if owed is None else min(owed - 1, self._handed)
                refused = self._refused.get(runner.sink.name)
                if refused:  # not delivered, and maybe never taken: a later leader's to do
                    through = min(through, min(refused) - 1)
                if through > recorded.get(runner.sink.name, -1):
                    await leader.record_delivered(runner.sink.name, through)
                    recorded[runner.sink.name] = through

    async def _retake(self, leader: Leader, runner: SinkRunner) -> None:
        """Hand a leader-scope durable sink again, from etcd, the events its outbox refused
        (a full disk, say); until it takes them, its delivery mark stays below them."""
        name = runner.sink.name
        refused = set(self._refused[name])  # more may be refused meanwhile: kept
        owed = [e for e in await leader.events_after(min(refused) - 1) if e.seq in refused
                and name in self._sinks_of(e.service)]
        assert runner.can.durable is not None
        try:
            await runner.can.durable.accept(owed)
        except Exception as exc:
            log.warning("sink %s still cannot take %d events: %s", name, len(owed), exc)
            return
        log.info("sink %s took %d events it had refused", name, len(owed))
        left = self._refused.get(name, set()) - refused
        if left:
            self._refused[name] = left
        else:
            self._refused.pop(name, None)

    def _resume_ramps(self) -> None:
        """Go on with the slow starts the last leader was climbing: a backend agreed up at
        less than its full weight within `slow_start` of its recovery climbs on from the
        step that time has reached (one that should have ended gets its full weight).
        Without this a new leader would leave it at the ramp's weight: nothing it votes
        on moves it again."""
        wall = self.engine.wall()
        for name, svc in self.engine.services.items():
            duration = svc.config.slow_start
            if duration <= 0:
                continue
            for b in svc.backends:
                state, weight = b.published
                if (b.ramp_weight is not None or state is not State.UP
                        or b.config.name not in self._agreed.get(name, {})):
                    continue
                full = b.desired()[1]
                recovered = unix(b.since)
                if weight >= full or recovered is None:
                    continue
                elapsed = max(0.0, wall - recovered)
                steps = ramp(b.config.weight, duration)
                reached = max((w for offset, w in steps if offset <= elapsed), default=1)
                rest = tuple((offset - elapsed, w) for offset, w in steps if offset > elapsed)
                if rest:
                    self.engine.start_ramp(b, ((0.0, reached), *rest))
                log.info("cluster: %s/%s: slow start goes on at weight %d of %d", name,
                         b.config.name, reached, b.config.weight)
                self._queued.append(self._stager.stage(
                    svc, b, f"slow start: weight {reached} of {b.config.weight}"))

    # -- what the engine routes here ------------------------------------------------

    async def commit(self, svc: ServiceRuntime, backend: BackendRuntime | None,
                     reason: str) -> tuple[Event, ...]:
        """A decision outside the vote (a slow-start step, a reload): the leader publishes
        it; another member has nothing to decide. Either way the local sinks are handed
        the agreed view as this member's configuration now reads it (a reload may have
        added backends, or sinks that have heard nothing yet)."""
        view = self._follow(svc, {})
        for runner, options in self._bindings(svc, "local"):
            runner.publish(Update(view, (), options))
        if self.node.leading is None:
            return ()
        commit = self._stager.stage(svc, backend, reason)
        self._queued.append(commit)
        self._wake.set()
        await commit.done.wait()
        return commit.events

    async def set_override(self, service: str, backend: str, action: str
                           ) -> tuple[Event, ...]:
        """Store an admin override in etcd and wait (bounded) until the agreed view shows
        it here; returns the events it brought. EtcdError when etcd cannot take it."""
        svc = self.engine.services[service]
        target = next((b for b in svc.backends if b.config.name == backend), None)
        if target is None:
            raise KeyError(backend)
        after = self.engine.journal.seq
        await self.node.set_override(service, backend, action)
        log.info("%s/%s: admin %s (stored for every member)", service, backend, action)
        wanted = None if action == "ready" else State(action)
        with trio.move_on_after(OVERRIDE_WAIT * self.config.lease_ttl):
            while not self._shows(service, backend, wanted):
                self._agreed_seen = trio.Event()
                await self._agreed_seen.wait()
        return tuple(e for e in self.engine.journal.events_after(after)
                     if e.service == service and e.backend == backend)

    def _shows(self, service: str, backend: str, wanted: State | None) -> bool:
        """True once the agreed view this member follows has `backend` in `wanted` (None:
        up or down, no override)."""
        view = self._followed.get(service)
        state = next((b.state for b in view.backends if b.name == backend),
                     None) if view else None
        return state is wanted if wanted is not None else state in (State.UP, State.DOWN)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The node, and the follower's state writes, until cancelled."""
        self.node.knew_seq(self.engine.journal.seq)  # from state.json, if restarted
        async with trio.open_nursery() as nursery:
            await nursery.start(self.node.run)
            nursery.start_soon(self._persist_agreed)
            task_status.started()

    async def _persist_agreed(self) -> None:
        """state.json follows the agreed state (the seq, and each backend's agreed verdict:
        a restarted member starts from them, fail static)."""
        while True:
            await self._persist.wait()
            self._persist = trio.Event()
            await self.engine.journal.persist(self.engine.verdicts())

    # -- state document ----------------------------------------------------------------

    def status_json(self) -> dict[str, object]:
        """The `cluster` object of /v1/state."""
        return self.node.statistics().to_json()

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _log(key: BackendKey, notes: Sequence[Note]) -> None:
        for note in notes:
            log.log(note.level, "%s/%s: %s", key[0], key[1], note.text)

    def _backend(self, key: BackendKey) -> BackendRuntime | None:
        found = self._runtime(key)
        return found[1] if found else None

    def _runtime(self, key: BackendKey) -> tuple[ServiceRuntime, BackendRuntime] | None:
        """The runtimes of service/backend, through an index rebuilt when the engine's
        services are replaced (a reload): a vote on every backend must not search."""
        if self._indexed is not self.engine.services:
            self._indexed = self.engine.services
            self._index = {(name, b.config.name): (svc, b)
                           for name, svc in self.engine.services.items() for b in svc.backends}
        return self._index.get(key)

    def _scope(self, runner: SinkRunner) -> str:
        sink = next((s for s in self.engine.config.sinks if s.name == runner.sink.name), None)
        return sink.scope if sink is not None else "local"

    def _bindings(self, svc: ServiceRuntime, scope: str) -> list[tuple[SinkRunner, object]]:
        return [(r, o) for r, o in svc.bindings if self._scope(r) == scope]

    def _sinks_of(self, service: str) -> set[str]:
        svc = self.engine.services.get(service)
        return {r.sink.name for r, _ in svc.bindings} if svc is not None else set()

    def _leader_runners(self) -> list[SinkRunner]:
        return [r for r in self.engine.runners.values() if self._scope(r) == "leader"]

    def _follow(self, svc: ServiceRuntime, entries: dict[str, Any]) -> ServiceView:
        """The sinks' view of `svc` from the agreed state this member follows (its own
        configuration, the agreed states and weights); the runtimes take `entries` (the
        ones that changed, or all) and the service's document."""
        agreed = self._agreed.get(svc.config.name, {})
        header = self._headers.get(svc.config.name, {})
        views = []
        for b in svc.backends:
            entry = agreed.get(b.config.name)
            if entry is None:  # not in the leader's configuration: as it was
                views.append(b.view(*b.published))
                continue
            state, weight = State(entry["state"]), int(entry["weight"])
            views.append(b.view(state, weight))
            if b.config.name in entries:
                b.published = (state, weight)
                b.since = str(entry.get("since") or b.since)
                b.inputs = replace(b.inputs, agreed=Health(entry["health"]))
        view = ServiceView(svc.config.name, tuple(views), panic=bool(header.get("panic")))
        if entries:
            svc.panic = view.panic
            svc.decided = Published(view, tuple(header.get("held_up", ())))
        self._followed[svc.config.name] = view
        return view


def _entry(b: BackendRuntime, state: State, weight: int) -> dict[str, Any]:
    """A backend's agreed entry as the leader writes it."""
    return {"state": state.value, "weight": weight, "health": b.health.value,
            "since": b.since}


def _without_time(doc: dict[str, Any]) -> dict[str, Any]:
    """A view document without its write time: what says whether it changed."""
    return {k: v for k, v in doc.items() if k != "time"}

