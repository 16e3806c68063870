"""Doubting itself (SPEC 11): the canary gate and the mass-failure rule, sans I/O.

Theory of operation
-------------------
A checker whose own network fails sees every backend fail at once, and a
health checker that believes itself then drains every balancer it feeds.
`Doubt` decides, for each down verdict a breaker reaches, whether to publish
it now, hold it (keep the backend published up), or take back downs it
already let through. It never probes, logs or reads a clock: the shell
feeds it verdicts, probe and canary results with their times, and carries
out the `Outcome` it returns (publish, hold, restore, recheck, probe the
canaries, announce suspicion, log a line).

Canary gate (`canaries:` configured). A down is published only once a canary
probe that *started after* the failing probe has passed: the checker could
reach something known to be up after the backend failed it. The first down
of a quiet period asks for the canaries at once (`probe_canaries`), so a
healthy checker adds one canary round trip to a down. When the latest result
of every canary is a failure, sentinel is suspect.

Mass failure (`suspect:` configured). When more than `mass_failure` of all
backends, across at least two services, turn down within `window`, sentinel
is suspect: the downs of that window it already published are restored
(`restore`: published up again) and held with the others.

While suspect no down is published: every new one is held. Suspicion ends
when a canary that started after it began passes, or `max_suspect` after it
began (0: only canaries end it). Evidence gathered around a suspicion is
void: every down still held when it ends is re-probed (`recheck`), and only
a backend that fails again is published, through the canary gate as usual.
A probe that started before the suspicion ended (one in flight through the
outage, timing out just after it) is no such evidence: after its failure, or
a breaker turning down on it, the backend is held with void evidence and
re-probed.
So a checker whose network came back does not then drain everything its
breakers marked down during the outage (a backend that is really dead fails
its recheck and goes, one probe and one canary round trip later).

After `max_suspect` ran out sentinel believes its probes again: the gate
publishes on a backend's own failing probe until a canary passes once more
(a checker whose canaries stay down would otherwise be suspect forever).

Timeline, canaries `gw`, `suspect: {mass_failure: 50%, window: 4s,
max_suspect: 60s}`, 3 services of 2 backends (6)::

    t=10.0  down a/1 (probe started 9.9)   hold a/1; probe_canaries
    t=10.1  canary gw ok (started 10.0)    publish a/1             the gate: one round trip
    t=20.0  down b/1 (19.9)                hold b/1; probe_canaries
    t=20.1  down c/1 (20.0)                hold c/1
    t=20.2  down c/2 (20.1)                hold c/2
    t=20.3  down a/2 (20.2)                4 of 6 in 3 services within 4s: suspect (a/1
                                           turned down at 10: not in the window); hold
                                           a/2, b/1, c/1, c/2; probe_canaries
    t=20.5  canary gw fails (started 20.4) still suspect
    t=30.0  canary gw ok (started 29.9)    suspicion ends; recheck a/2, b/1, c/1, c/2
    t=30.1  b/1 probe fails (started 30.0) probe_canaries (b/1's new evidence)
    t=30.2  canary gw ok (started 30.1)    publish b/1
    t=30.2  up a/2, c/1, c/2               their breakers came back: never published
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from sentinel.config.model import SuspectConfig

Key = tuple[str, str]  # (service, backend)


class Cause(Enum):
    """Why sentinel is suspect."""

    CANARIES = "canaries"
    MASS_FAILURE = "mass failure"


@dataclass(frozen=True, slots=True)
class Suspicion:
    """Sentinel doubts its own probes since `since` (Trio time), because of `cause`."""

    since: float
    cause: Cause
    reason: str  # for events, /v1/state and the log: what was seen

    def to_json(self, since_text: str) -> dict[str, object]:
        """The `suspect` object of /v1/state; `since_text` is `since` as RFC 3339."""
        return {"since": since_text, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the shell must do after one input; empty when nothing changed.

    `publish`: downs to publish now, as the backends' own (reason: their
    breaker's). `hold`: downs not to publish yet (keep the backend published
    up). `restore`: downs already published to take back (publish up again,
    the reason naming the suspicion). `recheck`: held backends to probe at once
    (their evidence is void). `probe_canaries`: probe every canary now.
    `began`/`ended`: suspicion started (with the services it affects) or
    ended (with why and the services it affected). `log`: lines for the
    operator (warnings), saying what to check.
    """

    publish: tuple[Key, ...] = ()
    hold: tuple[Key, ...] = ()
    restore: tuple[Key, ...] = ()
    recheck: tuple[Key, ...] = ()
    probe_canaries: bool = False
    began: Suspicion | None = None
    ended: str = ""
    services: tuple[str, ...] = ()  # affected services, when suspicion began or ended
    joined: tuple[str, ...] = ()  # services newly affected while suspect (a `suspect` event)
    log: tuple[str, ...] = ()


NOTHING = Outcome()


@dataclass(slots=True)
class _Canary:
    ok: bool
    started: float
    error: str


@dataclass(slots=True)
class _State:
    """Everything `Doubt` remembers (kept apart so `Doubt`'s methods read as rules)."""

    held: dict[Key, float | None] = field(default_factory=dict)  # key -> evidence (start)
    published: set[Key] = field(default_factory=set)  # downs let through, not up since
    turned: list[tuple[float, Key]] = field(default_factory=list)  # downs, for the window
    canaries: dict[str, _Canary] = field(default_factory=dict)  # latest result by name
    asked: float | None = None  # when canaries were last asked for, until one answers
    suspect: Suspicion | None = None
    affected: set[str] = field(default_factory=set)  # services with a down held while suspect
    trusting: bool = False  # max_suspect ran out: believe probes until a canary passes
    void_before: float = -math.inf  # probes that started earlier are no evidence (it ended)


class Doubt:
    """The self-suspicion state machine for one sentinel (see the module docstring).

    `canaries`: the canaries' names (empty: no gate). `suspect`: the
    mass-failure rule and `max_suspect` (None: no mass rule, and only passing
    canaries end a suspicion). `total`: how many backends there are in all.
    """

    def __init__(self, canaries: tuple[str, ...], suspect: SuspectConfig | None,
                 total: int) -> None:
        if not canaries and suspect is None:
            raise ValueError("Doubt needs canaries or a suspect rule")
        if suspect is not None and suspect.max_suspect == 0 and not canaries:
            raise ValueError("max_suspect 0 needs canaries: nothing else would end suspicion")
        self.canary_names = canaries
        self.rule = suspect
        self.total = total
        self._s = _State()

    # -- looking in ---------------------------------------------------------------------

    @property
    def suspicion(self) -> Suspicion | None:
        """The current suspicion, or None."""
        return self._s.suspect

    def holding(self, key: Key) -> bool:
        """True while a down of `key` is held (the backend stays published up)."""
        return key in self._s.held

    def wake_at(self) -> float | None:
        """When `tick` has something to do (the end of `max_suspect`), or None."""
        s, rule = self._s.suspect, self.rule
        if s is None or rule is None or rule.max_suspect == 0:
            return None
        return s.since + rule.max_suspect

    def resize(self, total: int, keys: set[Key]) -> None:
        """After a reload: `total` backends, of which `keys` exist; forget the rest."""
        self.total = total
        s = self._s
        s.held = {k: v for k, v in s.held.items() if k in keys}
        s.published &= keys
        s.turned = [(t, k) for t, k in s.turned if k in keys]

    # -- inputs ---------------------------------------------------------------------------

    def down(self, key: Key, started: float, now: float) -> Outcome:
        """`key`'s breaker turned down at `now`, judging a probe that started at `started`."""
        s = self._s
        s.turned.append((now, key))
        self._forget_before(now)
        if s.suspect is None and (began := self._mass_failure(now)) is not None:
            s.held[key] = started
            return self._begin(began)
        if s.suspect is not None:
            s.held[key] = started
            return self._join((key,))
        if started < s.void_before:  # judged on a probe from the suspicion: no evidence
            s.held[key] = None
            return Outcome(hold=(key,), recheck=(key,))
        if self._gate_open():
            s.published.add(key)
            return Outcome(publish=(key,))
        quiet = s.asked is None
        s.held[key] = started
        if quiet:
            s.asked = now
        return Outcome(hold=(key,), probe_canaries=quiet)

    def probe(self, key: Key, ok: bool, started: float, now: float) -> Outcome:
        """A probe of `key` ended, its breaker still down. Only held backends care: a pass
        voids the evidence against it, a failure (on void evidence) is new evidence."""
        s = self._s
        if key not in s.held:
            return NOTHING
        if ok:
            s.held[key] = None
            return NOTHING
        if started < s.void_before:
            return Outcome(recheck=(key,))  # a probe from the suspicion: probe again
        if s.held[key] is not None:
            return NOTHING  # the first failing probe since the evidence was void counts
        s.held[key] = started
        if s.suspect is not None:
            return NOTHING
        if self._gate_open():
            del s.held[key]
            s.published.add(key)
            return Outcome(publish=(key,))
        if s.asked is None:
            s.asked = now
            return Outcome(probe_canaries=True)
        return NOTHING

    def up(self, key: Key) -> Outcome:
        """`key`'s breaker came back up: a held down is dropped, never published."""
        s = self._s
        s.held.pop(key, None)
        s.published.discard(key)
        return NOTHING

    def canary(self, name: str, ok: bool, started: float, now: float, error: str = ""
               ) -> Outcome:
        """Canary `name` answered (`ok`) a probe that started at `started`."""
        s = self._s
        s.canaries[name] = _Canary(ok, started, error)
        if not ok:
            if s.asked is not None and self._all_answered(s.asked):
                s.asked = None  # every canary answered the request, and failed
            return self._canary_failed(now)
        if s.asked is not None and started >= s.asked:
            s.asked = None  # answered; asked again below if downs still wait
        if s.suspect is not None:
            if started < s.suspect.since:
                return NOTHING  # vouches for a time before the suspicion began
            return self._end(f"canary {name} passed", now)
        s.trusting = False
        return self._release(started, now)

    def tick(self, now: float) -> Outcome:
        """Time passed: suspicion ends once `max_suspect` has run out."""
        wake = self.wake_at()
        if wake is None or now < wake:
            return NOTHING
        assert self.rule is not None
        self._s.trusting = bool(self.canary_names)
        return self._end(f"max_suspect {self.rule.max_suspect:g}s ran out; believing the "
                         "probes again", now)

    # -- rules --------------------------------------------------------------------------

    def _gate_open(self) -> bool:
        return not self.canary_names or self._s.trusting

    def _forget_before(self, now: float) -> None:
        if self.rule is None:
            self._s.turned.clear()
            return
        cutoff = now - self.rule.window
        self._s.turned = [(t, k) for t, k in self._s.turned if t >= cutoff]

    def _mass_failure(self, now: float) -> Suspicion | None:
        rule = self.rule
        if rule is None or not self.total:
            return None
        keys = {k for _, k in self._s.turned}
        services = {svc for svc, _ in keys}
        if len(services) < 2 or len(keys) <= rule.mass_failure * self.total:
            return None
        reason = (f"{len(keys)} of {self.total} backends in {len(services)} services turned "
                  f"down within {rule.window:g}s")
        return Suspicion(now, Cause.MASS_FAILURE, reason)

    def _all_answered(self, asked: float) -> bool:
        latest = self._s.canaries
        return all(name in latest and latest[name].started >= asked
                   for name in self.canary_names)

    def _canary_failed(self, now: float) -> Outcome:
        s = self._s
        if s.suspect is not None or s.trusting:
            return NOTHING
        latest = [s.canaries.get(name) for name in self.canary_names]
        if any(c is None or c.ok for c in latest):
            return NOTHING
        failing = ", ".join(f"{name} ({c.error or 'failed'})"
                            for name, c in zip(self.canary_names, latest, strict=True)
                            if c is not None)
        return self._begin(Suspicion(now, Cause.CANARIES, f"every canary fails: {failing}"))

    def _begin(self, suspicion: Suspicion) -> Outcome:
        s = self._s
        s.suspect = suspicion
        turned = {k for _, k in s.turned}
        restore = tuple(sorted(k for k in s.published if k in turned))
        for key in restore:
            s.published.discard(key)
            s.held[key] = None
        for key in s.held:
            s.held[key] = None  # evidence gathered around a suspicion is void
        s.affected = {svc for svc, _ in s.held}
        services = tuple(sorted(s.affected))
        check = ("check this host's network (interface, routes, firewall, resolver)"
                 if suspicion.cause is Cause.MASS_FAILURE else
                 "check this host's network and the canaries themselves")
        log = (f"sentinel suspects itself: {suspicion.reason}; holding {len(s.held)} "
               f"down(s) in {', '.join(services) or 'no service yet'}"
               f"{f', restoring {len(restore)} already published' if restore else ''}; "
               f"{check}{self._until()}",)
        # a mass failure asks the canaries at once: healthy ones end it in one round trip
        ask = suspicion.cause is Cause.MASS_FAILURE and bool(self.canary_names)
        return Outcome(hold=tuple(sorted(s.held)), restore=restore, began=suspicion,
                       services=services, probe_canaries=ask, log=log)

    def _join(self, keys: tuple[Key, ...]) -> Outcome:
        s = self._s
        joined = tuple(sorted({svc for svc, _ in keys} - s.affected))
        s.affected.update(joined)
        return Outcome(hold=keys, joined=joined)

    def _until(self) -> str:
        rule = self.rule
        if rule is not None and rule.max_suspect > 0:
            names = " or a canary passes" if self.canary_names else ""
            return f"; until {rule.max_suspect:g}s pass{names}"
        return "; until a canary passes"

    def _end(self, why: str, now: float) -> Outcome:
        s = self._s
        assert s.suspect is not None
        services = tuple(sorted(s.affected))
        s.suspect = None
        s.void_before = now
        s.affected = set()
        s.turned.clear()  # the downs that made the suspicion are not counted twice
        recheck = tuple(sorted(s.held))
        for key in recheck:
            s.held[key] = None
        log = (f"sentinel no longer suspects itself: {why}; re-probing {len(recheck)} held "
               "backend(s), those that fail again are published",)
        return Outcome(recheck=recheck, ended=why, services=services, log=log)

    def _release(self, started: float, now: float) -> Outcome:
        """A canary passed (not suspect): publish the held downs it vouches for."""
        s = self._s
        # a tie counts as after: on a virtual clock a zero-latency probe and the canary
        # asked for by its result start at the same instant, and waiting for a strictly
        # later canary would ask again at that instant forever
        covered = tuple(sorted(k for k, at in s.held.items()
                               if at is not None and at <= started))
        for key in covered:
            del s.held[key]
            s.published.add(key)
        waiting = any(at is not None for at in s.held.values())
        ask = waiting and s.asked is None
        if ask:
            s.asked = now
        return Outcome(publish=covered, probe_canaries=ask)
