"""The Trio shell: one task per backend (probe -> breaker -> event -> sinks),
one task per sink behind a coalescing hand-off.

The breakers decide; this module does the side effects: it schedules
probes, records results, numbers and persists events, and publishes each
service's full view to its sinks. Nothing here blocks probing on a sink.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from sentinel.backend import BackendRuntime, summary
from sentinel.breakers import make_breaker
from sentinel.breakers.base import Change, Health, Transition
from sentinel.config import Config, ProbeConfig, ServiceConfig
from sentinel.journal import Journal, rfc3339
from sentinel.model import Event, ProbeResult, State
from sentinel.observe import NullObserver, Observer, ProbeRecord
from sentinel.probes import make_probe
from sentinel.probes.base import Probe
from sentinel.schedule import next_due, start_offset
from sentinel.service import ServiceRuntime
from sentinel.sinks import SINK_KINDS
from sentinel.sinks.base import Sink, SinkContext
from sentinel.sinks.runner import SinkRunner
from sentinel.statefile import SavedBackend, SavedState, load_state

log = logging.getLogger("sentinel.engine")
LATENESS_SAMPLES = 8192


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """A snapshot of the probe scheduler's health."""

    probes: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float

    def to_json(self) -> dict[str, object]:
        """The `engine` object of the state document."""
        return {"probes": self.probes, "lateness_ms": {
            "p50": round(self.lateness_p50_ms, 3), "p99": round(self.lateness_p99_ms, 3),
            "max": round(self.lateness_max_ms, 3)}}


class Engine:
    """Runs probing and publishing for one validated Config."""

    def __init__(self, config: Config, *, sinks: Mapping[str, Sink] | None = None,
                 probe_factory: Callable[[ProbeConfig], Probe] = make_probe,
                 wall: Callable[[], float] = time.time, shutdown_timeout: float = 10.0,
                 observer: Observer | None = None) -> None:
        self.config = config
        self.observer = observer or NullObserver()
        self.shutdown_timeout = shutdown_timeout
        self._wall = wall
        self._state_dir = Path(config.state_dir)
        self._state_dir.mkdir(parents=True, exist_ok=True)
        saved = load_state(self._state_dir)
        self.journal = Journal(self._state_dir, saved.seq, self._snapshot, wall)
        ctx = SinkContext(state_dir=self._state_dir, state_document=self.state_document)
        overrides = sinks or {}
        self.runners = {
            s.name: SinkRunner(overrides.get(s.name) or SINK_KINDS[s.type].create(
                s.name, s.options, ctx), observer=self.observer) for s in config.sinks}
        self.services = {s.name: self._service(s, saved, probe_factory)
                         for s in config.services}
        self._lateness: deque[float] = deque(maxlen=LATENESS_SAMPLES)
        self._probes = 0
        self._probe_scope: trio.CancelScope | None = None

    def _service(self, svc: ServiceConfig, saved: SavedState,
                 probe_factory: Callable[[ProbeConfig], Probe]) -> ServiceRuntime:
        backends = []
        for b in svc.backends:
            prior = saved.backends.get(svc.name, {}).get(b.name)
            health = Health.DOWN if prior and prior.state == State.DOWN.value else Health.UP
            since = prior.since if prior else rfc3339(self._wall())
            backends.append(BackendRuntime(svc.name, b, make_breaker(svc.breaker, health),
                                           since, prior.last_ok if prior else None))
        bindings = [(self.runners[b.sink], b.options) for b in svc.sinks]
        return ServiceRuntime(svc, probe_factory(svc.probe), backends, bindings)

    # -- running ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Probe and publish until `stop()`; then let sinks finish within shutdown_timeout."""
        try:
            async with trio.open_nursery() as sink_nursery:
                for runner in self.runners.values():
                    await sink_nursery.start(runner.run)
                for svc in self.services.values():  # at start the current view is applied once
                    published = svc.published()
                    svc.panic = published.view.panic
                    svc.publish(published.view)
                async with trio.open_nursery() as probe_nursery:
                    self._probe_scope = probe_nursery.cancel_scope
                    total = sum(len(s.backends) for s in self.services.values())
                    index = 0
                    start = trio.current_time()
                    for svc in self.services.values():
                        interval = svc.config.probe.timing.interval
                        for backend in svc.backends:
                            due = start + start_offset(index, total, interval)
                            probe_nursery.start_soon(self._probe_loop, svc, backend, due)
                            index += 1
                    task_status.started()
                await self._drain_sinks()
                sink_nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._close()

    def stop(self) -> None:
        """Stop probing; `run` then drains sinks and returns."""
        if self._probe_scope is not None:
            self._probe_scope.cancel()

    async def _drain_sinks(self) -> None:
        with trio.move_on_after(self.shutdown_timeout) as scope:
            for runner in self.runners.values():
                await runner.wait_idle()
        if scope.cancelled_caught:
            log.warning("stopping with sink work still pending after %gs",
                        self.shutdown_timeout)

    async def _close(self) -> None:
        with trio.move_on_after(5):
            for svc in self.services.values():
                await svc.probe.aclose()
            for runner in self.runners.values():
                await runner.sink.aclose()

    async def _probe_loop(self, svc: ServiceRuntime, backend: BackendRuntime,
                          due: float) -> None:
        timing = svc.config.probe.timing
        while True:
            await trio.sleep_until(due)
            started, start_unix = trio.current_time(), self._wall()
            self._lateness.append(started - due)
            self._probes += 1
            result = await svc.probe.check(backend.target)
            now = trio.current_time()
            transition = backend.breaker.observe(result.ok, now, result.latency)
            await self._take(svc, backend, result, transition, start_unix)
            due = next_due(timing, transition, backend.breaker.retry_at(), started, now)

    async def _take(self, svc: ServiceRuntime, backend: BackendRuntime, result: ProbeResult,
                    transition: Transition, start_unix: float) -> None:
        """Record a result; on a change of state or weight, emit, persist and publish."""
        wall = self._wall()
        backend.record(result, transition, rfc3339(wall), wall)
        desired = backend.desired()
        events: list[Event] = []
        change: tuple[str, str, str] | None = None
        if desired != backend.published:
            (old_state, _), (new_state, weight) = backend.published, desired
            reason = self._reason(transition, result, old_state, new_state, weight)
            change = (old_state.value, new_state.value, reason)
        target = backend.target
        trace_id = self.observer.probe_finished(ProbeRecord(
            svc.config.name, target.backend, target.host, target.port, svc.config.probe.type,
            result, start_unix, change))
        if change is not None:
            (old_state, _), (new_state, weight) = backend.published, desired
            if new_state != old_state:
                backend.since = rfc3339(wall)
            backend.published = desired
            events.append(self.journal.new_event(
                service=svc.config.name, backend=backend.config.name,
                address=backend.config.address, from_state=old_state.value,
                to_state=new_state.value, weight=weight, reason=change[2],
                probe=summary(svc.config.probe.type, result), trace_id=trace_id))
            reason = change[2]
            log.info("%s/%s %s -> %s (weight %d): %s", svc.config.name, backend.config.name,
                     old_state.value, new_state.value, weight, reason)
        elif transition.change is not Change.CHANGED:
            return
        published = svc.published()
        if published.view.panic != svc.panic:
            svc.panic = published.view.panic
            events.append(self._panic_event(svc, published.held_up))
        for event in events:
            self.observer.event_emitted(event)
        if events:
            await self.journal.wait_persisted()
        else:  # a verdict flipped under an admin override: keep it across restarts
            await self.journal.save_now()
        svc.publish(published.view, tuple(events))

    def _reason(self, transition: Transition, result: ProbeResult, old: State, new: State,
                weight: int) -> str:
        if new == old:
            return f"weight {weight}" + (" from script" if result.weight is not None else "")
        if new is State.DOWN and result.error:
            return f"{transition.reason}; last: {result.error}"
        return transition.reason or f"{old.value} -> {new.value}"

    def _panic_event(self, svc: ServiceRuntime, held: tuple[str, ...]) -> Event:
        name = svc.config.name
        healthy = sum(1 for b in svc.backends if b.desired()[0] is State.UP)
        required = svc.config.min_up.required(len(svc.backends))
        if svc.panic:
            reason = (f"only {healthy} of {len(svc.backends)} backends healthy, min_up "
                      f"{required}: keeping {', '.join(held)} published up")
            log.warning("%s: panic: %s", name, reason)
            return self.journal.new_event(service=name, backend="", address="",
                                          from_state="normal", to_state="panic",
                                          weight=0, reason=reason)
        reason = f"{healthy} of {len(svc.backends)} backends healthy again (min_up {required})"
        log.warning("%s: panic over: %s", name, reason)
        return self.journal.new_event(service=name, backend="", address="",
                                      from_state="panic", to_state="normal", weight=0,
                                      reason=reason)

    # -- looking in -------------------------------------------------------------

    def _snapshot(self) -> SavedState:
        return SavedState(seq=self.journal.seq, backends={
            name: {b.config.name: SavedBackend(b.breaker.health.value, b.since, b.last_ok)
                   for b in svc.backends}
            for name, svc in self.services.items()})

    def statistics(self) -> EngineStatistics:
        """Probe count and schedule lateness percentiles over recent probes."""
        samples = sorted(self._lateness)
        if not samples:
            return EngineStatistics(self._probes, 0.0, 0.0, 0.0)

        def pct(p: float) -> float:
            return samples[min(len(samples) - 1, int(p * len(samples)))] * 1000

        return EngineStatistics(self._probes, pct(0.5), pct(0.99), samples[-1] * 1000)

    def events_after(self, seq: int) -> list[Event]:
        """Held events after `seq`, oldest first (GET /v1/events)."""
        return self.journal.events_after(seq)

    def state_document(self) -> dict[str, object]:
        """The GET /v1/state document."""
        services = {name: svc.to_json(svc.published()) for name, svc in self.services.items()}
        return {"services": services,
                "sinks": {n: r.statistics().to_json() for n, r in self.runners.items()},
                "engine": self.statistics().to_json(), "seq": self.journal.seq}
