"""Self-suspicion in the running engine (SPEC 11): the canaries probed, `Doubt` fed, and
what it answers carried out.

`sentinel.engine.suspect.Doubt` decides, sans I/O; this is its shell. It

- probes the canaries: one small task per canary (a handful, never published, never
  in a probe group with backends), at the canary probe's `interval` while it passes
  and `fast_interval` while it fails, and all of them at once when Doubt asks
  (`probe_canaries`: the first down of a quiet period, a mass failure);
- hears every verdict of a backend's breaker from the engine (`judge`): a turn down
  or up, and each probe of a backend whose down it holds;
- carries out each `Outcome`: a held down is published up (`Inputs.held`, the seam of
  `sentinel.engine.decide`: counted as healthy by the panic guard); a released one is
  published down with its breaker's reason; downs already published are restored (one
  commit per service, `suspect: <why>; restored`); held backends are re-probed at
  once, past their breaker's open spell (`recheck`); a service-level `normal` ->
  `suspect` event per affected service and `suspect` -> `normal` when it ends; a
  warning saying what to check;
- wakes when `max_suspect` runs out (`Doubt.wake_at`).

In a cluster (SPEC 11's last sentence, SPEC 12) publishing is the leader's, from the
vote: a member's shell is given `announce` and only detects. The canaries, the gate's
requests for them, the mass-failure rule over this member's own verdicts (the backends
it probes: `resize`), re-probes and the log run as above; holds, releases, restores and
service events do not. Each start and end of a suspicion goes to `announce` instead
(the member publishes it in its record; the leader then counts its down votes as
abstentions).

Precedence (SPEC 11, docs/detection.md, "Doubting itself"): an admin override wins over a held
down (`decide.desired`), a held down over its breaker (`decide.verdict`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import trio

from sentinel.breakers.base import Change, Health, Transition
from sentinel.config.model import CanaryConfig, Config, ProbeConfig
from sentinel.engine.backend import BackendRuntime, LastProbe
from sentinel.engine.commit import ServiceNote
from sentinel.engine.service import ServiceRuntime
from sentinel.engine.suspect import Cause, Doubt, Key, Outcome, Suspicion
from sentinel.probes.base import Probe, Target, guarded_check
from sentinel.timefmt import rfc3339

log = logging.getLogger(__name__)
CANARY_SERVICE = "canaries"  # the `service` a canary's probe target names (logs, scripts)


class DoubtHost(Protocol):
    """What the shell needs of the engine."""

    services: dict[str, ServiceRuntime]

    def recommit(self, svc: ServiceRuntime, backend: BackendRuntime | None, reason: str,
                 note: ServiceNote | None = None) -> None:
        """Decide `svc`'s view now and hand the commit to the committer, in order."""

    def recheck(self, backend: BackendRuntime) -> None:
        """Probe `backend` now, even while its breaker is down and cooling."""


@dataclass(slots=True)
class CanaryRuntime:
    """One canary: its probe, its schedule, its last result."""

    config: CanaryConfig
    probe: Probe
    target: Target
    next_due: float = 0.0
    nap: trio.CancelScope | None = None  # its task's wait, while waiting
    again: bool = False  # asked for while a probe was in flight: probe again at once
    last: LastProbe | None = None


@dataclass(frozen=True, slots=True)
class SuspectStatistics:
    """Self-suspicion as /v1/state and the metrics show it."""

    suspicion: Suspicion | None
    since_unix: float  # wall-clock start of the suspicion (0 when not suspect)
    held: int  # downs held now
    canaries: tuple[tuple[str, LastProbe | None], ...]

    def to_json(self) -> dict[str, object] | None:
        """`suspect` of /v1/state: `{"since", "reason"}` while suspect, else None."""
        if self.suspicion is None:
            return None
        return self.suspicion.to_json(rfc3339(self.since_unix))

    def cause(self) -> Cause | None:
        """Why sentinel is suspect now, if it is."""
        return self.suspicion.cause if self.suspicion is not None else None


class SelfDoubt:
    """The self-suspicion shell of one engine (see the module docstring); `run` it in the
    engine's probe nursery."""

    def __init__(self, config: Config, host: DoubtHost,
                 probe_factory: Callable[[ProbeConfig], Probe],
                 wall: Callable[[], float],
                 announce: Callable[[Suspicion | None], None] | None = None) -> None:
        """`announce`: a cluster member's; detect only, and hand it each start (the
        suspicion) and end (None) of a suspicion instead of holding any down."""
        self.settings = (config.canaries, config.suspect)
        self.doubt = Doubt(tuple(c.name for c in config.canaries), config.suspect,
                           total=sum(len(s.backends) for s in config.services))
        self.canaries = [CanaryRuntime(c, probe_factory(c.probe),
                                       Target(CANARY_SERVICE, c.name, c.host, c.port))
                         for c in config.canaries]
        self._host = host
        self._wall = wall
        self._announce = announce
        self._since_unix = 0.0
        self._index: tuple[object, dict[Key, BackendRuntime]] = (None, {})
        self._timer: trio.CancelScope | None = None
        self.scope = trio.CancelScope()

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Probe the canaries and keep the `max_suspect` timer until `stop`."""
        with self.scope:
            try:
                async with trio.open_nursery() as nursery:
                    for canary in self.canaries:
                        nursery.start_soon(self._probe_canary, canary)
                    nursery.start_soon(self._keep_time)
            finally:
                with trio.move_on_after(5) as cleanup:
                    cleanup.shield = True
                    for canary in self.canaries:
                        await canary.probe.aclose()

    def stop(self) -> None:
        """Stop probing canaries (a reload replaced or removed the settings)."""
        self.scope.cancel()

    async def _probe_canary(self, canary: CanaryRuntime) -> None:
        timing = canary.config.probe.timing
        while True:
            with trio.move_on_at(canary.next_due) as canary.nap:
                await trio.sleep_forever()
            canary.nap = None
            canary.again = False
            started, start_unix = trio.current_time(), self._wall()
            result = await guarded_check(canary.probe, canary.target)
            now = trio.current_time()
            canary.last = LastProbe.of(start_unix, result)
            # a failing canary is probed at fast_interval: a checker whose network came
            # back learns it soon
            delay = timing.interval if result.ok else timing.fast_interval
            canary.next_due = now if canary.again else max(started + delay, now)
            self._carry_out(self.doubt.canary(canary.config.name, result.ok, started, now,
                                              result.error))

    async def _keep_time(self) -> None:
        while True:
            with trio.move_on_at(self.doubt.wake_at() or math.inf) as self._timer:
                await trio.sleep_forever()
            self._timer = None
            self._carry_out(self.doubt.tick(trio.current_time()))

    def ask_canaries(self) -> None:
        """Probe every canary now (one in flight is probed again once it answers)."""
        now = trio.current_time()
        for canary in self.canaries:
            if canary.nap is not None:
                canary.next_due = now
                canary.nap.deadline = now
            else:
                canary.again = True

    # -- the engine's inputs ------------------------------------------------------------

    def judge(self, backend: BackendRuntime, transition: Transition, ok: bool,
              started: float, now: float) -> None:
        """A probe of `backend` (started at `started`) was fed to its breaker: tell Doubt
        of a turn down or up, and of each probe of a backend whose down it holds. The
        engine calls this before it compares what to publish with what is published,
        so `backend`'s own change is published by the engine's commit, after the ones
        this makes for other backends."""
        key = (backend.service, backend.config.name)
        if transition.change is Change.CHANGED:
            if transition.health is Health.UP:
                _hold(backend, False)
                outcome = self.doubt.up(key)
            else:
                outcome = self.doubt.down(key, started, now)
        elif transition.health is Health.DOWN and backend.inputs.held:
            outcome = self.doubt.probe(key, ok, started, now)
        else:
            return
        self._carry_out(outcome, backend)

    def adopt(self, backends: Iterable[BackendRuntime]) -> None:
        """After a reload replaced the settings: downs the previous shell held are judged
        again, as fresh downs, by these."""
        now = trio.current_time()
        for b in backends:
            self._carry_out(self.doubt.down((b.service, b.config.name), now, now), b)

    def resize(self, backends: Iterable[BackendRuntime]) -> None:
        """The backends whose verdicts it judges now (after a reload with the same
        settings; in a cluster, after the assignment moved)."""
        keys = {(b.service, b.config.name) for b in backends}
        self.doubt.resize(len(keys), keys)

    # -- carrying out ---------------------------------------------------------------------

    def _carry_out(self, outcome: Outcome, current: BackendRuntime | None = None) -> None:
        """Do what `outcome` asks; `current` is the backend whose probe is being judged
        (the engine publishes its own change)."""
        if self._announce is not None:
            self._detect(outcome, self._announce)
            return
        for line in outcome.log:
            log.warning("%s", line)
        find = self._backend
        for key in (*outcome.hold, *outcome.restore):
            if (b := find(key)) is not None:
                _hold(b, True)
        suspicion = self.doubt.suspicion
        if outcome.began is not None:
            self._since_unix = self._wall()
            why = f"suspect: {outcome.began.reason}; restored"
            self._notify(outcome.services, why, ServiceNote("normal", "suspect",
                                                            outcome.began.reason))
        elif outcome.joined and suspicion is not None:
            self._notify(outcome.joined, "", ServiceNote("normal", "suspect",
                                                         suspicion.reason))
        for key in outcome.publish:
            b = find(key)
            if b is None:
                continue
            _hold(b, False)
            if b is not current:
                svc = self._host.services[b.service]
                self._host.recommit(svc, b, b.verdict or "down")
        if outcome.ended:
            self._notify(outcome.services, outcome.ended,
                         ServiceNote("suspect", "normal", outcome.ended))
        self._ask(outcome)

    def _detect(self, outcome: Outcome, announce: Callable[[Suspicion | None], None]
                ) -> None:
        """`_carry_out` for a cluster member: no holds or events, the suspicion announced
        (Doubt's own log lines speak of holding downs: this member holds none)."""
        if outcome.began is not None:
            self._since_unix = self._wall()
            log.warning("sentinel suspects itself: %s; the cluster does not count its down "
                        "votes until that ends; check this host's network%s",
                        outcome.began.reason,
                        " and the canaries themselves" if outcome.began.cause is
                        Cause.CANARIES else " (interface, routes, firewall, resolver)")
            announce(outcome.began)
        elif outcome.ended:
            log.warning("sentinel no longer suspects itself: %s; its down votes count "
                        "again", outcome.ended)
            announce(None)
        self._ask(outcome)

    def _ask(self, outcome: Outcome) -> None:
        """The re-probes and canary probes `outcome` asks for; the timer moved to
        `max_suspect`'s end."""
        for key in outcome.recheck:
            if (b := self._backend(key)) is not None:
                self._host.recheck(b)
        if outcome.probe_canaries:
            self.ask_canaries()
        if self._timer is not None:
            self._timer.deadline = self.doubt.wake_at() or math.inf

    def _notify(self, services: Iterable[str], reason: str, note: ServiceNote) -> None:
        for name in services:
            svc = self._host.services.get(name)
            if svc is not None:
                self._host.recommit(svc, None, reason, note)

    def _backend(self, key: Key) -> BackendRuntime | None:
        """The backend runtime of `key`, if it still exists (a mass failure names
        thousands: indexed once per services map, which a reload replaces)."""
        services = self._host.services
        if self._index[0] is not services:
            self._index = (services, {(name, b.config.name): b
                                      for name, svc in services.items()
                                      for b in svc.backends})
        return self._index[1].get(key)

    # -- looking in -----------------------------------------------------------------------

    def statistics(self) -> SuspectStatistics:
        """The suspicion, the downs held and the canaries' last results."""
        held = sum(1 for svc in self._host.services.values() for b in svc.backends
                   if b.inputs.held)
        return SuspectStatistics(self.doubt.suspicion, self._since_unix, held,
                                 tuple((c.config.name, c.last) for c in self.canaries))


def _hold(backend: BackendRuntime, held: bool) -> None:
    """Hold `backend`'s down (published up) or let it go (`Inputs.held`)."""
    if backend.inputs.held != held:
        backend.inputs = replace(backend.inputs, held=held)
