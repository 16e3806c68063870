"""One backend's runtime record: what the engine knows and publishes about it.

The breaker decides health; this record adds what the shell tracks around
it (admin override, script weight, the inputs of `sentinel.engine.decide`,
timestamps, counters); `decide` derives the published state and weight from
them. It does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.breakers.base import Breaker, Change, Health, Transition
from sentinel.breakers.dampen import Damper
from sentinel.config.model import BackendConfig
from sentinel.engine.decide import NO_INPUTS, Inputs, desired, healthy
from sentinel.model import BackendView, ProbeResult, ProbeSummary, State
from sentinel.probes.base import Target
from sentinel.timefmt import rfc3339


@dataclass(frozen=True, slots=True)
class LastProbe:
    """The most recent probe, for /v1/state."""

    time: float  # Unix time; formatted only when shown
    ok: bool
    error: str
    latency_ms: float

    def to_json(self) -> dict[str, object]:
        """The `last_probe` object of the state document."""
        return {"time": rfc3339(self.time), "ok": self.ok, "error": self.error or None,
                "latency_ms": round(self.latency_ms, 3)}


class BackendRuntime:
    """Mutable per-backend state owned by the engine's task for this backend."""

    __slots__ = (
        "breaker",
        "config",
        "damper",
        "fails",
        "inputs",
        "last_ok",
        "last_probe",
        "next_due",
        "observers",
        "override",
        "probers",
        "progress",
        "published",
        "ramp_weight",
        "rendered",
        "script_weight",
        "service",
        "since",
        "target",
        "verdict",
    )

    def __init__(self, service: str, config: BackendConfig, breaker: Breaker,
                 since: str, last_ok: float | None = None) -> None:
        self.service = service
        self.config = config
        self.breaker = breaker
        self.target = Target(service, config.name, config.host, config.port)
        self.override: State | None = None
        self.script_weight: int | None = None
        self.ramp_weight: int | None = None  # slow start in progress: the ramp's weight
        self.next_due: float | None = None  # Trio time this backend's next probe is due
        self.damper: Damper | None = None  # flap damping, when the service asks for it
        self.inputs: Inputs = NO_INPUTS  # cluster vote, self-suspicion, agent (`decide`)
        self.since = since
        self.fails = 0
        self.last_ok = last_ok
        self.last_probe: LastProbe | None = None
        self.progress = ""
        self.verdict = ""  # why the breaker last changed its mind
        # In a cluster (SPEC 12): who probes the backend and what each of them says
        self.probers: tuple[str, ...] | None = None
        self.observers: tuple[tuple[str, str], ...] | None = None
        self.published: tuple[State, int] = self.desired()
        self.rendered: tuple[tuple[object, ...], dict[str, object]] | None = None  # `shown`

    def record(self, result: ProbeResult, transition: Transition, wall: float) -> None:
        """Take in one probe result and the breaker's answer to it (runs every probe)."""
        self.fails = 0 if result.ok else self.fails + 1
        if result.ok:
            self.last_ok = wall
        if result.weight is not None:
            self.script_weight = result.weight
        self.progress = transition.reason if transition.change is Change.PENDING else ""
        self.last_probe = LastProbe(wall, result.ok, result.error, result.latency * 1000)

    @property
    def health(self) -> Health:
        """The breaker's verdict, or in a cluster the agreed one (`Inputs.agreed`): what
        /v1/state shows as `health`."""
        agreed = self.inputs.agreed
        return self.breaker.health if agreed is None else agreed

    @property
    def healthy(self) -> bool:
        """What the verdict says (breaker, inputs, flap damping), whatever an admin
        override says: what the panic guard counts."""
        return healthy(self)

    def desired(self) -> tuple[State, int]:
        """The state and weight this backend should be published with (`decide.desired`)."""
        return desired(self.override, healthy(self), self.inputs, self.script_weight,
                       self.ramp_weight, self.config.weight)

    def view(self, state: State, weight: int) -> BackendView:
        """This backend as sinks see it."""
        c = self.config
        return BackendView(name=c.name, address=c.address, host=c.host, port=c.port,
                           state=state, weight=weight, configured_weight=c.weight,
                           backup=c.backup)

    def to_json(self, state: State, weight: int) -> dict[str, object]:
        """This backend's entry in the state document."""
        entry: dict[str, object] = {
            "name": self.config.name, "address": self.config.address,
            "state": state.value, "weight": weight, "health": self.health.value,
            "since": self.since, "fails": self.fails, "progress": self.progress or None,
            "override": self.override.value if self.override else None,
            "damping": self.damper.describe() if self.damper else None,
            "last_probe": self.last_probe.to_json() if self.last_probe else None}
        if self.probers is not None:
            entry["probers"] = list(self.probers)
            entry["observers"] = dict(self.observers or ())
        return entry


    def shown(self, state: State, weight: int) -> dict[str, object]:
        """`to_json`, built again only when something it shows has changed (GET /v1/state
        at 10,000 backends rebuilds only those probed since it was last asked). Shared:
        never modify it."""
        key = (state, weight, self.last_probe, self.since, self.fails, self.progress,
               self.override, self.health, self.config, self.probers, self.observers)
        if self.rendered is None or self.rendered[0] != key:
            self.rendered = (key, self.to_json(state, weight))
        return self.rendered[1]


def summary(probe_type: str, result: ProbeResult) -> ProbeSummary:
    """The `probe` object carried by an event."""
    return ProbeSummary(type=probe_type, ok=result.ok, error=result.error,
                        latency_ms=result.latency * 1000)
