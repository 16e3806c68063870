"""The Trio shell: one task per backend (probe -> breaker -> event -> sinks),
one task per sink behind a coalescing hand-off.

`sentinel.engine.decide` decides (breakers, damping, slow start, the panic
guard, every reason); this module carries it out: it schedules probes,
records results, logs, and hands commits to the committer that numbers,
persists and publishes them. Nothing here blocks probing on a sink.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import trio
import trio.lowlevel

from sentinel.backoff import Backoff
from sentinel.breakers import make_breaker
from sentinel.breakers.base import Health
from sentinel.breakers.dampen import Damper
from sentinel.config.model import BackendConfig, Config, ProbeConfig, ServiceConfig, SinkConfig
from sentinel.engine import reload
from sentinel.engine.agents import Agents
from sentinel.engine.backend import BackendRuntime, CheckSlot, LastProbe, summary
from sentinel.engine.cluster import ClusterMode
from sentinel.engine.commit import Commit, Committer, ServiceNote
from sentinel.engine.decide import (
    Decision,
    Steps,
    admin,
    decide,
    ramp_step,
    reconsidered,
    starting,
    with_agent,
)
from sentinel.engine.doubting import SelfDoubt
from sentinel.engine.journal import Journal, RunBlocking
from sentinel.engine.pacing import EngineStatistics, Pacing
from sentinel.engine.probegroups import GroupKey, ProbeGroup, group_key
from sentinel.engine.probeloop import EpollPoller, Poller, ProbeLoop, accepts
from sentinel.engine.schedule import next_due, retry_due, start_offset
from sentinel.engine.service import ServiceRuntime
from sentinel.engine.slots import Slots
from sentinel.engine.statefile import SavedBackend, Verdicts, check_writable, load_state
from sentinel.engine.streamhub import StreamHub
from sentinel.model import Event, FailureKind, ProbeResult
from sentinel.observe import NullObserver, Observer, ProbeRecord
from sentinel.passive.base import BackendIndex, Signal
from sentinel.passive.sources import run_sources
from sentinel.probes.agent import AgentAnswer, describe
from sentinel.probes.base import Probe, guarded_check
from sentinel.probes.registry import make_probe
from sentinel.sinks.base import Sink, SinkContext
from sentinel.sinks.registry import SINK_KINDS
from sentinel.sinks.runner import SinkRunner
from sentinel.timefmt import rfc3339

log = logging.getLogger(__name__)
# A refused state write is cheap to try again; a few seconds between tries bound how long
# the state stays unsaved once space returns.
PERSIST_RETRY = Backoff(initial=0.25, maximum=5.0)
RENDER_SLICE = 0.003  # seconds GET /v1/state renders before letting other tasks run
CHUNK = 128  # backends rendered (and cached) as one piece of the state document


class Engine:
    """Runs probing and publishing for one validated Config."""

    def __init__(self, config: Config, *, sinks: Mapping[str, Sink] | None = None,
                 probe_factory: Callable[[ProbeConfig], Probe] = make_probe,
                 wall: Callable[[], float] = time.time, shutdown_timeout: float = 10.0,
                 observer: Observer | None = None,
                 run_blocking: RunBlocking | None = None,
                 poller: Callable[[], Poller] = EpollPoller, api_url: str = "") -> None:
        """`poller` is the probe loop's I/O (tests pass a virtual network). `api_url` is
        where this instance's API answers (a cluster member registers it)."""
        self.config = config
        self.observer = observer or NullObserver()
        self.shutdown_timeout = shutdown_timeout
        self.probe_factory = probe_factory
        self.wall = wall
        self.state_dir = Path(config.state_dir)
        check_writable(self.state_dir)
        self.saved = load_state(self.state_dir)
        self.journal = Journal(self.state_dir, self.saved.seq, PERSIST_RETRY, wall,
                               run_blocking)
        self._sink_overrides = sinks or {}
        self.runners = {s.name: self.make_runner(s) for s in config.sinks}
        self.services = {s.name: self.make_service(s) for s in config.services}
        self._bind()
        self.pacing = Pacing()
        self.hub = StreamHub(self)  # GET /v1/stream
        # Every decision is carried out by one task, in order (`sentinel.engine.commit`)
        self.committer = Committer(self.journal, self.observer, wall, self.verdicts,
                                   self.hub.published)
        self._in_flight = Slots(config.max_in_flight)
        self._agents = Agents(self._in_flight, self.agent_answered)
        self._rng = random.Random()
        # The wall clock's lead over trio's (a cluster member's turns are wall-clock
        # times), read together, again once it is a second old (`_wall_offset`).
        self._offset, self._offset_until = 0.0, -math.inf
        self.groups: dict[GroupKey, ProbeGroup] = {}
        self._loop = ProbeLoop(self, self._in_flight, wall, poller)
        self._probe_nursery: trio.Nursery | None = None
        self._stopped = False  # stop() was called, maybe before probing began
        self._sink_nursery: trio.Nursery | None = None
        self._unprobed: set[BackendRuntime] = set()  # until the first round is done
        self._first_round = trio.Event()
        self._index: tuple[Config, BackendIndex] | None = None
        self._passive: tuple[object, trio.CancelScope] | None = None  # what runs, its scope
        # Several sentinels agreeing through etcd (SPEC 12); None: this one decides alone
        self.cluster: ClusterMode | None = (
            ClusterMode(self, config.cluster, api_url) if config.cluster is not None else None)
        self.doubt: SelfDoubt | None = None  # self-suspicion, when configured (SPEC 11)

    def make_runner(self, sink: SinkConfig) -> SinkRunner:
        """A runner for a configured sink (or the override a test passed in)."""
        ctx = SinkContext(state_dir=self.state_dir, state_document=self.state_document,
                          config=lambda: self.config)
        impl = self._sink_overrides.get(sink.name) or SINK_KINDS[sink.type].create(
            sink.name, sink.options, ctx)
        return SinkRunner(impl, observer=self.observer)

    def _bind(self) -> None:
        """Tell each sink runner which services are bound to it (`BoundSink`)."""
        bound: dict[str, set[str]] = {name: set() for name in self.runners}
        for svc in self.config.services:
            for binding in svc.sinks:
                bound[binding.sink].add(svc.name)
        for name, runner in self.runners.items():
            runner.bind(frozenset(bound[name]))

    def make_service(self, svc: ServiceConfig) -> ServiceRuntime:
        """A service runtime; backends start from their persisted verdicts."""
        backends = [self.make_backend(svc, b) for b in svc.backends]
        bindings = [(self.runners[b.sink], b.options) for b in svc.sinks]
        probes = tuple(self.probe_factory(e.probe) for e in svc.entries)
        runtime = ServiceRuntime(svc, probes, backends, bindings)
        initial = runtime.decided.view  # as persisted: no event at start
        runtime.panic = initial.panic
        for b, view in zip(backends, initial.backends, strict=True):
            b.published = (view.state, view.weight)
        return runtime

    def make_backend(self, svc: ServiceConfig, config: BackendConfig) -> BackendRuntime:
        """A backend runtime of `svc` from its persisted verdict, else from `init_state`."""
        prior = self.saved.backends.get(svc.name, {}).get(config.name)
        initial, override = starting(prior, svc.init_state)
        backend = BackendRuntime(svc, config, make_breaker(svc.breaker, initial),
                                 prior.since if prior else rfc3339(self.wall()),
                                 prior.last_ok if prior else None)
        if svc.dampen is not None:
            backend.damper = Damper(svc.dampen)
        if override is not None:
            backend.override = override
            backend.published = backend.desired()
        return backend

    # -- running ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Probe and publish until `stop()`; then let sinks finish within shutdown_timeout."""
        try:
            async with trio.open_nursery() as sink_nursery:
                self._sink_nursery = sink_nursery
                await sink_nursery.start(self.journal.run)
                for runner in self.runners.values():
                    await self.start_runner(runner)
                if self.cluster is None:  # in a cluster the leader redelivers from etcd
                    await self.committer.redeliver(self.saved.unacked, self.services)
                for svc in self.services.values():  # at start the current view is applied once
                    svc.publish(svc.decided.view)
                async with trio.open_nursery() as probe_nursery:
                    self._probe_nursery = probe_nursery
                    if self.cluster is not None:
                        await probe_nursery.start(self.cluster.run)
                    await probe_nursery.start(self.committer.run)
                    await probe_nursery.start(self._loop.run)
                    self.regroup()
                    self.restart_passive()
                    self.restart_doubt()
                    probe_nursery.start_soon(self.pacing.watch_lag, self._in_flight)
                    probe_nursery.start_soon(self.hub.run)
                    task_status.started()
                    if self._stopped:  # stop() came while sinks were starting
                        probe_nursery.cancel_scope.cancel()
                # acks and verdicts since the last event: else a webhook event already
                # delivered would be handed over again at the next start
                await self.journal.flush(self.verdicts())
                await self._drain_sinks()
                sink_nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._close()

    @property
    def running(self) -> bool:
        """True once probing has started."""
        return self._probe_nursery is not None

    def stop(self) -> None:
        """Stop probing (or, before `run` has begun probing, never begin); `run` then
        drains sinks and returns."""
        self._stopped = True
        if self._probe_nursery is not None:
            self._probe_nursery.cancel_scope.cancel()

    async def start_runner(self, runner: SinkRunner) -> None:
        """Start a sink runner (and the sink's own background task, if it has one)."""
        assert self._sink_nursery is not None
        await self._sink_nursery.start(runner.run)

    def regroup(self) -> None:
        """Match probe tasks to the current services: one task per group of identical
        probes (lean ones go to the probe loop instead). Unchanged groups keep running;
        backends keep their place in the schedule (`next_due`); new ones are spread
        evenly over their interval."""
        assert self._probe_nursery is not None
        wanted: dict[GroupKey, list[CheckSlot]] = {}
        if self.cluster is not None:  # who probes what, for the services as they are now
            self.cluster.reassign()
        mine = self.cluster.probes if self.cluster is not None else None
        for svc in self.services.values():
            entries = svc.entries
            for b in svc.backends:
                if mine is not None and not mine(b):
                    continue  # another member probes it
                for slot in b.checks:
                    wanted.setdefault(group_key(entries[slot.index].probe, slot), []).append(slot)
        for key, group in list(self.groups.items()):
            if [id(m) for m in wanted.get(key, [])] != [id(m) for m in group.members]:
                group.stop()
                self._loop.drop(group)
                del self.groups[key]
        fresh = [(key, members) for key, members in wanted.items() if key not in self.groups]
        start = trio.current_time()
        newcomers = [m for _, members in fresh for m in members if m.next_due is None]
        for index, member in enumerate(newcomers):
            interval = member.timing.interval
            member.next_due = start + start_offset(index, len(newcomers), interval)
        for key, members in fresh:
            group = self.groups[key] = ProbeGroup(key, members)
            probe = self._probe(members[0])
            if accepts(probe):
                self._loop.add(group, probe)
            else:  # never a watched one: `watch` is for plain tcp and http, the loop's
                self._probe_nursery.start_soon(self._probe_loop, group)
        self._pace_loop(wanted.values())
        self._agents.match(((b, svc.config.agent) for svc in self.services.values()
                            for b in svc.backends if svc.config.agent is not None),
                           self._probe_nursery)
        if self.doubt is not None and mine is not None:  # the assignment may have moved
            self.doubt.resize(self._judged())
        if not self._first_round.is_set():  # a reload may add or remove backends to wait for
            self._unprobed = {b for svc in self.services.values() for b in svc.backends
                              if b.last_result is None and (mine is None or mine(b))}
            if not self._unprobed:
                self._first_round.set()

    def _pace_loop(self, groups: Iterable[list[CheckSlot]]) -> None:
        """Tell the probe loop how often its checks come due (it spaces its start passes
        for that): a check a (normal) interval per group, and the shortest interval."""
        rate, shortest = 0.0, math.inf
        for members in groups:
            if accepts(self._probe(members[0])):
                rate += 1 / min(m.timing.interval for m in members)
                shortest = min(shortest, *(min(m.timing.interval, m.timing.fast_interval,
                                               m.timing.down_interval) for m in members))
        self._loop.pace(rate, shortest)

    def _entry(self, slot: CheckSlot) -> ProbeConfig:
        """The config of the check `slot` runs."""
        return self.services[slot.backend.service].entries[slot.index].probe

    def _probe(self, slot: CheckSlot) -> Probe:
        """The probe that runs `slot`'s check (a reload may replace it: read it each time)."""
        return self.services[slot.backend.service].probes[slot.index]

    async def wait_first_round(self) -> None:
        """Return once every backend has a first probe result (systemd's READY=1)."""
        await self._first_round.wait()

    def start_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run a helper task (slow-start ramps) alongside the probes."""
        assert self._probe_nursery is not None
        self._probe_nursery.start_soon(fn)

    async def _drain_sinks(self) -> None:
        with trio.move_on_after(self.shutdown_timeout) as scope:
            for runner in self.runners.values():
                await runner.wait_idle()
            for runner in self.runners.values():  # a webhook sink flushes its outbox
                if runner.can.flushable is not None:
                    await runner.can.flushable.wait_flushed()
        if scope.cancelled_caught:
            log.warning("stopping with sink work still pending after %gs",
                        self.shutdown_timeout)

    async def _close(self) -> None:
        with trio.move_on_after(5):
            for svc in self.services.values():
                for probe in svc.probes:
                    await probe.aclose()
            for runner in self.runners.values():
                await runner.sink.aclose()

    async def _probe_loop(self, group: ProbeGroup) -> None:
        with group.scope:
            while True:
                due = group.due()
                with trio.move_on_at(due) as group.nap:  # `hurry` may bring it forward
                    await trio.sleep_forever()
                group.nap = None
                due = min(due, group.due())
                owner = group.members[0]
                probe = self._probe(owner)
                if not self._in_flight.take_nowait():  # the timeout starts once a slot is free
                    await self._in_flight.take()
                try:
                    started, start_unix = trio.current_time(), self.wall()
                    self.probes_started((started - due,))
                    result = await guarded_check(probe, owner.target)
                finally:
                    self._in_flight.give()
                self.probe_done(group, result, started, trio.current_time(), start_unix)

    def probes_started(self, lateness: Sequence[float]) -> None:
        """Count probes that started these many seconds after they were due."""
        self.pacing.probes_started(lateness)

    def probe_done(self, group: ProbeGroup, result: ProbeResult, started: float, now: float,
                   start_unix: float, anchor: float | None = None) -> None:
        """A result's hand-in (the probe loop's and the probe tasks'): decisions are made
        now; persisting and publishing them goes, in order, to the committer task. The
        next check counts its interval from `anchor` (the probe loop's: the due time of a
        check started a little early or late), by default from `started`, when it
        really started (what self-suspicion judges the result by)."""
        for slot in group.members:
            commit = self._observe(slot, result, started, now, start_unix,
                                   started if anchor is None else anchor)
            if commit is not None:
                self.committer.submit(commit)

    def _observe(self, slot: CheckSlot, result: ProbeResult, started: float,
                 now: float, start_unix: float, anchor: float) -> Commit | None:
        """Carry out what `decide` makes of one member check's result (combined with the
        backend's other checks), and schedule the check's next probe. A LOCAL failure (the
        checker's own trouble) is counted and retried soon. (Runs every check: what it
        reads of the config is kept on the slot and the backend, not found by name.)"""
        backend = slot.backend
        timing = slot.timing
        decision = self._decide(backend, result, now, slot.index)
        transition = decision.transition
        if transition is None:
            self.pacing.local_error(f"{backend.service}/{backend.config.name}", result.error)
            slot.next_due = retry_due(timing, backend.breaker.health,
                                      backend.breaker.retry_at(), now)
            return None
        slot.last_result, slot.last_time = result, start_unix
        counter = slot.counter
        if counter is None:  # asked once (again if its probe type changes), kept on the slot
            counter = slot.counter = self.observer.probe_counter(
                backend.service, backend.config.name, slot.probe_type)
        counter.observe(result)
        jitter = timing.jitter  # 0 unless configured: no random number to draw then
        spread = self._rng.uniform(-jitter, jitter) if jitter else 0.0
        # scheduled before the result is taken: self-suspicion may bring it forward
        phase = slot.phase  # a cluster member's turn
        offset = 0.0 if phase is None else self._wall_offset(now)
        slot.next_due = next_due(timing, transition, backend.breaker.retry_at(), anchor,
                                 now, spread, phase, offset)
        return self._take(backend, result, decision, started, start_unix, slot.probe_type)

    def _wall_offset(self, now: float) -> float:
        """How far the wall clock leads trio's: both read together (a pass's `now` and
        wall reading are milliseconds apart), at most once a second, as the lead moves
        only when the wall clock is set or slewed (by at most half a millisecond a
        second); every check of a cluster member reads it."""
        if now >= self._offset_until:
            at = trio.current_time()
            self._offset = self.wall() - at
            self._offset_until = at + 1.0
        return self._offset

    def _decide(self, backend: BackendRuntime, result: ProbeResult, now: float,
                check: int | None) -> Decision:
        """`decide` (`check`: which of the backend's checks answered; None for a passive
        signal); in a cluster the breaker's verdict is only reported (the vote decides:
        `ClusterMode.observe`)."""
        if self.cluster is not None:
            return self.cluster.observe(backend, result, now, check)
        return decide(backend, result, now, backend.slow_start, check)

    def _take(self, backend: BackendRuntime, result: ProbeResult, decision: Decision,
              started: float, start_unix: float, probe_type: str) -> Commit | None:
        """Record a result (of a probe that started at `started`) and carry out its
        decision; when it publishes (a change of verdict, state or weight), the commit
        that emits, persists and publishes it. The common case (nothing changed) stays
        cheap: it runs every probe. `result` is what was probed (its span); what the
        breaker was fed (`decision.fed`, for several checks their combination) is what
        the backend records, what self-suspicion judges and what the event carries."""
        assert decision.transition is not None
        fed = decision.fed
        if fed is not None:
            backend.record(fed, decision.transition, start_unix)
            if self._unprobed:
                self._unprobed.discard(backend)
                if not self._unprobed:
                    self._first_round.set()
        for note in decision.notes:
            log.log(note.level, "%s/%s: %s", backend.service, backend.config.name, note.text)
        if decision.publish:  # the common case (nothing changed) stays cheap: every probe
            if decision.ramp:
                self.start_ramp(backend, decision.ramp)
            if decision.changed:
                backend.verdict = decision.reason
        if self.doubt is not None and fed is not None:
            # it may hold the down just reached, or release one it held
            self.doubt.judge(backend, decision.transition, fed.ok, started,
                             trio.current_time())
            decision = reconsidered(backend, decision)
        publish, reason = decision.publish, decision.reason
        trace_id = None
        if self.observer.traced:  # else no span is recorded: no record is built
            target = backend.target
            record = ProbeRecord(target.service, target.backend, target.host, target.port,
                                 probe_type, result, start_unix,
                                 (backend.published[0].value, decision.desired[0].value,
                                  reason) if publish else None)
            trace_id = self.observer.probe_finished(record)
        if publish and fed is not None:
            svc = self.services.get(backend.service)
            if svc is not None and backend in svc.backends:  # else a reload removed it
                return self.committer.stage(svc, backend, reason, summary(probe_type, fed),
                                            trace_id)
        return None

    def start_ramp(self, backend: BackendRuntime, steps: Steps) -> None:
        """Publish the first weight of a slow start now and climb the rest in a task."""
        backend.ramp_weight = steps[0][1]
        began = trio.current_time()

        async def climb() -> None:
            for offset, weight in steps[1:]:
                await trio.sleep_until(began + offset)
                step = ramp_step(backend, weight)
                if step is None:
                    return
                backend.ramp_weight, reason = step
                svc = self.services.get(backend.service)
                if svc is None or backend not in svc.backends:
                    return
                await self.commit(svc, backend, reason)

        self.start_task(climb)

    async def commit(self, svc: ServiceRuntime, backend: BackendRuntime | None, reason: str
                     ) -> tuple[Event, ...]:
        """Decide what changed in `svc` now and return once it is persisted and handed to
        the sinks (see `sentinel.engine.commit`), behind the decisions made before it. In a
        cluster the leader publishes it (another member has nothing to decide)."""
        if self.cluster is not None:
            return await self.cluster.commit(svc, backend, reason)
        commit = self.committer.stage(svc, backend, reason)
        await self.committer.commit(commit)
        return commit.events

    async def set_override(self, service: str, backend: str, action: str
                           ) -> tuple[Event, ...]:
        """Admin override: `drain` or `maint` (persisted), `ready` lifts it and the probed
        state is published at once. KeyError for an unknown service or backend. In a
        cluster it is stored in etcd for every member (EtcdError when it cannot be)."""
        if self.cluster is not None:
            return await self.cluster.set_override(service, backend, action)
        svc = self.services[service]
        target = next((b for b in svc.backends if b.config.name == backend), None)
        if target is None:
            raise KeyError(backend)
        target.override, reason = admin(action)
        log.info("%s/%s: admin %s", service, backend, action)
        return await self.commit(svc, target, reason)


    # -- reloading (helpers in sentinel.engine.reload) ---------------------------------

    async def reload_from_file(self, path: str) -> list[str]:
        """Load `path` and apply it; return the errors (the running config is kept) or [].
        Never raises (but for cancellation): SIGHUP and POST /v1/reload call it."""
        loaded = await reload.load(path)
        if isinstance(loaded, list):
            return loaded
        if self._stopped:  # the stop came while the file was read: sinks are draining
            reload.log.warning("reload of %s not applied: stopping", path)
            return [f"{path}: not applied: sentinel is stopping"]
        try:
            await self.reload(loaded)
        except Exception as exc:
            reload.log.exception("reload of %s failed part way", path)
            return [f"{path}: reload failed: {type(exc).__name__}: {exc}"]
        reload.log.info("reloaded %s: %d services", path, len(loaded.services))
        return []

    async def reload(self, new: Config) -> None:
        """Move to `new` in place (see `sentinel.engine.reload`)."""
        reload.restart_only(self.config, new)
        # verdicts read from state_dir at startup are stale now: a backend new to the running
        # config starts up, as it would in a fresh state_dir
        self.saved = replace(self.saved, backends={})
        old_sinks = {s.name: s for s in self.config.sinks}
        for sink in new.sinks:
            if old_sinks.get(sink.name) != sink:
                if sink.name in self.runners:
                    self.runners.pop(sink.name).retire()
                self.runners[sink.name] = runner = self.make_runner(sink)
                await self.start_runner(runner)
        for name in set(old_sinks) - {s.name for s in new.sinks}:
            self.runners.pop(name).retire()
        services: dict[str, ServiceRuntime] = {}
        retired: list[Probe] = []
        for cfg in new.services:
            current = self.services.get(cfg.name)
            if current is None:
                services[cfg.name] = self.make_service(cfg)
                continue
            services[cfg.name], old_probes = reload.carry_over(
                current, cfg, self.runners, self.make_backend, self.probe_factory)
            retired.extend(old_probes)
        retired.extend(probe for name, svc in self.services.items() if name not in services
                       for probe in svc.probes)
        self.services = services
        self.config = new
        self._bind()
        if self.cluster is not None:  # before regrouping: the file may change who probes
            self.cluster.reload(new.cluster)
        self.regroup()
        self.restart_passive()
        self.restart_doubt()
        for svc in services.values():  # the panic guard may see it differently now
            await self.commit(svc, None, "reload")
        if retired:
            self.start_task(lambda: reload.close_later(retired))

    # -- agents (sentinel.engine.agents runs their tasks) -------------------------------

    async def agent_answered(self, backend: BackendRuntime, answer: AgentAnswer | None,
                             result: ProbeResult) -> None:
        """An agent check ended: fold the answer into the backend's AgentState and, when
        that changes what is published, commit it (reason `agent: ...`). No answer (the
        agent could not be reached, timed out, did not end its line) changes nothing, as
        in HAProxy: connectivity is the probe's job."""
        backend.agent_last = LastProbe(self.wall(), answer is not None, result.error,
                                       result.latency * 1000)
        svc = self.services.get(backend.service)
        if answer is None or backend.agent is None or svc is None \
                or backend not in svc.backends:
            return
        before = backend.desired()
        backend.agent = backend.agent.apply(answer)
        backend.inputs = with_agent(backend.inputs, backend.agent)
        if backend.desired() != before:
            await self.commit(svc, backend, describe(answer))

    # -- passive signals ----------------------------------------------------------

    def backend_index(self) -> BackendIndex:
        """The running config's backends by name and by address (kept per config)."""
        if self._index is None or self._index[0] is not self.config:
            self._index = (self.config, BackendIndex(self.config.services))
        return self._index[1]

    def restart_passive(self) -> None:
        """Run the passive sources (nginx error logs, HAProxy counters) the config names;
        after a reload, restarted only when what they read changed."""
        wanted = (tuple((s.name, s.passive, s.backends, s.sinks) for s in self.config.services
                        if s.passive is not None), self.config.sinks)
        if self._passive is not None:
            if self._passive[0] == wanted:
                return
            self._passive[1].cancel()
        scope = trio.CancelScope()
        self._passive = (wanted, scope)
        config = self.config

        async def run() -> None:
            with scope:
                await run_sources(config, lambda signal: self.passive((signal,)))

        self.start_task(run)

    def passive(self, signals: Iterable[Signal]) -> None:
        """Passive failures (SPEC 10): each triggers an immediate probe of its backend
        (passive triggers, active confirms); with `passive: {count: true}` it is also
        fed to the breaker as a failure, as nginx's max_fails counts real requests
        (through `decide`, as a probe's result is, so self-suspicion judges it too).
        A signal for a backend a reload has removed since it was read is dropped."""
        for signal in signals:
            svc = self.services.get(signal.service)
            backend = next((b for b in svc.backends if b.config.name == signal.backend),
                           None) if svc is not None else None
            if svc is None or backend is None:
                continue  # removed by a reload since the signal was read
            if svc.config.passive is not None and svc.config.passive.count:
                self._count_passive(svc, backend, signal)
            if self.probe_now(backend):  # logged once per probe it brings forward
                log.info("%s/%s: %s; probing now", signal.service, signal.backend,
                         signal.reason)

    def _count_passive(self, svc: ServiceRuntime, backend: BackendRuntime,
                       signal: Signal) -> None:
        result = ProbeResult(ok=False, latency=0.0, failure=FailureKind.PASSIVE,
                             detail=signal.reason)
        now = trio.current_time()
        decision = self._decide(backend, result, now, None)
        self.observer.probe_counter(svc.config.name, backend.config.name,
                                    svc.config.probe.type).observe(result)
        commit = self._take(backend, result, decision, now, self.wall(),
                            svc.config.probe.type)
        if commit is not None:
            self.committer.submit(commit)

    def watch_lost(self, group: ProbeGroup, hint: str) -> None:
        """A watched connection was lost (SPEC 9): probe the group's backends now (a hint:
        the probe decides); the breaker's fast_interval follows a failure."""
        for backend in dict.fromkeys(slot.backend for slot in group.members):
            if self.probe_now(backend):
                log.info("%s/%s: %s; probing now", backend.service, backend.config.name, hint)

    def probe_now(self, backend: BackendRuntime, *, down_too: bool = False) -> bool:
        """Probe `backend` at once instead of at its `next_due`; True when that brought
        a probe forward. Nothing when it is down (already out of rotation: its breaker's
        schedule decides) unless `down_too`, or already due (a check of it may be in
        flight: its result is the answer)."""
        now = trio.current_time()
        if backend.breaker.health is Health.DOWN and not down_too:
            return False
        hurried = False
        for slot in backend.checks:  # every check of it
            if slot.next_due is None or slot.next_due <= now:
                continue
            group = self.groups.get(group_key(self._entry(slot), slot))
            if group is None or slot not in group.members:
                continue
            slot.next_due = now
            probe = self._probe(slot)
            if accepts(probe):
                self._loop.hurry(group, probe)
            else:
                group.hurry()
            hurried = True
        return hurried

    # -- self-suspicion -----------------------------------------------------------

    def restart_doubt(self) -> None:
        """Run self-suspicion (SPEC 11) when `canaries:` or `suspect:` is configured; after
        a reload with the same settings only the backend count changes, with new ones
        the downs held so far are judged again, and without any they are released. A
        cluster member only detects: its suspicion goes to the cluster (its down votes
        abstain), the leader publishes."""
        wanted = (self.config.canaries, self.config.suspect)
        old = self.doubt
        if old is not None and old.settings == wanted:
            old.resize(self._judged())
            return
        held = [b for svc in self.services.values() for b in svc.backends if b.inputs.held]
        if old is not None:
            old.stop()
        for b in held:
            b.inputs = replace(b.inputs, held=False)
        self.doubt = None
        announce = self.cluster.suspect if self.cluster is not None else None
        if announce is not None:
            announce(None)  # new settings, or none: a fresh start
        if not self.config.canaries and self.config.suspect is None:
            return
        self.doubt = SelfDoubt(self.config, self, self.probe_factory, self.wall, announce)
        self.doubt.resize(self._judged())
        self.start_task(self.doubt.run)
        self.doubt.adopt(held)

    def _judged(self) -> list[BackendRuntime]:
        """The backends whose verdicts self-suspicion judges: every one, or in a cluster
        those this member probes (the mass-failure rule is over its own verdicts)."""
        mine = self.cluster.probes if self.cluster is not None else None
        return [b for svc in self.services.values() for b in svc.backends
                if mine is None or mine(b)]

    def recommit(self, svc: ServiceRuntime, backend: BackendRuntime | None, reason: str,
                 note: ServiceNote | None = None) -> None:
        """Decide `svc`'s view now (self-suspicion's holds, releases and service events)
        and carry it out in order with every other decision."""
        self.committer.submit(self.committer.stage(svc, backend, reason, note=note))

    def recheck(self, backend: BackendRuntime) -> None:
        """Probe `backend` now, even while its breaker is down (a down held while
        sentinel suspected itself is judged again once the suspicion ends)."""
        self.probe_now(backend, down_too=True)

    # -- looking in -------------------------------------------------------------

    def verdicts(self) -> Verdicts:
        """Every backend's verdict as the state file keeps it (handed to the journal)."""
        return {name: {b.config.name: SavedBackend(
                    # a held down is saved up: a restart must not drain what suspicion held
                    (Health.UP if b.inputs.held else b.health).value, b.since, b.last_ok,
                    b.override.value if b.override else None) for b in svc.backends}
                for name, svc in self.services.items()}

    def statistics(self) -> EngineStatistics:
        """Probe count, probes in flight, lateness and loop-lag percentiles, and the
        watched connections."""
        watch = self._loop.watch_statistics()
        return self.pacing.statistics(self._in_flight, watch)

    def events_after(self, seq: int) -> list[Event]:
        """Held events after `seq`, oldest first (GET /v1/events)."""
        return self.journal.events_after(seq)

    def maglev_table(self, service: str) -> tuple[dict[str, object], bytes] | None:
        """The Maglev table a sink published for `service` (GET /v1/maglev/SERVICE)."""
        for runner in self.runners.values():
            if runner.can.tables is not None:
                published = runner.can.tables.table_for(service)
                if published is not None:
                    return published
        return None

    def state_document(self) -> dict[str, object]:
        """The GET /v1/state document (as a value; the API serves `state_json`)."""
        services = {name: svc.to_json() for name, svc in self.services.items()}
        return {"services": services, **self.status_document()}

    async def state_json(self) -> bytes:
        """`state_document` as JSON, from fragments kept until what they show changes:
        each backend's entry (`BackendRuntime.shown`) and each run of CHUNK entries
        (`ServiceRuntime.chunk_json`). What changed since the last request may still take
        tens of milliseconds to render at 10,000 backends, so this yields to the event
        loop every RENDER_SLICE: probes never wait for it (SPEC 6: no stall)."""
        parts = [b'{"services":{']
        slice_end = time.perf_counter() + RENDER_SLICE
        for i, (name, svc) in enumerate(list(self.services.items())):
            pairs = list(zip(svc.backends, svc.decided.view.backends, strict=True))
            parts += [b"," if i else b"", json.dumps(name).encode(), b":",
                      json.dumps(svc.header()).encode()[:-1], b',"backends":[']
            for start in range(0, len(pairs), CHUNK):
                shown = tuple(b.shown(v.state, v.weight) for b, v in pairs[start:start + CHUNK])
                parts += [b"," if start else b"", svc.chunk_json(start // CHUNK, shown)]
                if time.perf_counter() > slice_end:
                    await trio.lowlevel.checkpoint()
                    slice_end = time.perf_counter() + RENDER_SLICE
            parts.append(b"]}")
        parts += [b"},", json.dumps(self.status_document()).encode()[1:]]
        return b"".join(parts)

    def status_document(self) -> dict[str, object]:
        """The state document without its services (sinks, engine, seq, persistence; the
        stream's `summary` message): every top-level key but `services` belongs here."""
        doc: dict[str, object] = {
            "sinks": {n: r.statistics().to_json() for n, r in self.runners.items()},
            "engine": self.statistics().to_json(), "seq": self.journal.seq,
            "persistence": self.journal.statistics().to_json()}
        if self.cluster is not None:
            doc["cluster"] = self.cluster.status_json()
        if self.doubt is not None:
            doc["suspect"] = self.doubt.statistics().to_json()
        return doc
