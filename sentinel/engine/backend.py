"""One backend's runtime record: what the engine knows and publishes about it.

The breaker decides health; this record adds what the shell tracks around
it (admin override, script weight, its checks' schedules and latest results,
its agent's answers, the inputs of `sentinel.engine.decide`, timestamps,
counters); `decide` derives the published state and weight from them. It does
no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

from sentinel.breakers.base import Breaker, Change, Health, Transition
from sentinel.breakers.dampen import Damper
from sentinel.config.model import BackendConfig, ProbeConfig, ServiceConfig, Timing
from sentinel.engine.combine import Combiner
from sentinel.engine.decide import NO_INPUTS, Inputs, desired, healthy, with_agent
from sentinel.model import BackendView, ProbeResult, ProbeSummary, State
from sentinel.observe import ProbeCounter
from sentinel.probes.agent import AgentState
from sentinel.probes.base import Target
from sentinel.timefmt import rfc3339

# Enum members read on every probe, bound to module names once: in Python 3.11 reading
# one through its class (`Change.CHANGED`) costs about 60 ns, an unspecialised lookup.
_PENDING = Change.PENDING


class LastProbe(NamedTuple):
    """The most recent probe, for /v1/state. A check's and a backend's are built when
    shown (`of`) from the result they keep: building one per probe was a twentieth of
    the engine's time per check."""

    time: float  # Unix time; formatted only when shown
    ok: bool
    error: str
    latency_ms: float

    @classmethod
    def of(cls, time: float, result: ProbeResult | None) -> LastProbe | None:
        """`result`, taken at `time`, as shown (None: no result yet)."""
        if result is None:
            return None
        return cls(time, result.ok, result.error, result.latency * 1000)

    def to_json(self) -> dict[str, object]:
        """The `last_probe` object of the state document."""
        return {"time": rfc3339(self.time), "ok": self.ok, "error": self.error or None,
                "latency_ms": round(self.latency_ms, 3)}


class CheckSlot:
    """One check of one backend (its `probe`, or one of its `checks`): when it is next
    due and what it last answered. Probe groups and the probe loop schedule these.

    What the engine reads of the check's config after every probe (its timing, its
    probe type, what counts its probes) is kept here, set when the backend's checks are
    matched to the config (`BackendRuntime.probing`, at start and on every reload):
    finding it through the service and its entries by name was lookups and cache lines
    per check."""

    __slots__ = ("backend", "counter", "index", "last_result", "last_time", "next_due",
                 "phase", "probe_type", "timing")

    def __init__(self, backend: BackendRuntime, index: int) -> None:
        self.backend = backend
        self.index = index  # in the service's `entries`
        self.next_due: float | None = None  # Trio time this check is next due
        # A cluster member's: where in each interval of wall-clock time (seconds into
        # it) this member checks the backend while it is up (`schedule.on_phase`)
        self.phase: float | None = None
        self.last_result: ProbeResult | None = None  # its last answer (see `last`)
        self.last_time = 0.0  # when that probe started, Unix time
        self.timing = Timing()  # its entry's (`configure`)
        self.probe_type = ""  # its entry's probe type (`configure`)
        # What counts its probes (`Observer.probe_counter`), asked at its first probe
        # and again after its probe type changes
        self.counter: ProbeCounter | None = None

    def configure(self, index: int, probe: ProbeConfig) -> None:
        """Its place in the service's `entries` and that entry's `probe`, as configured."""
        self.index, self.timing = index, probe.timing
        if probe.type != self.probe_type:
            self.probe_type, self.counter = probe.type, None

    @property
    def target(self) -> Target:
        """What the check is aimed at: its backend."""
        return self.backend.target

    @property
    def last(self) -> LastProbe | None:
        """Its last answer, as /v1/state shows it."""
        return LastProbe.of(self.last_time, self.last_result)


class BackendRuntime:
    """Mutable per-backend state owned by the engine's task for this backend."""

    __slots__ = (
        "agent",
        "agent_last",
        "breaker",
        "checks",
        "combiner",
        "config",
        "damper",
        "fails",
        "inputs",
        "last_ok",
        "last_result",
        "last_time",
        "observers",
        "override",
        "probers",
        "progress",
        "published",
        "ramp_weight",
        "rendered",
        "reported",
        "script_weight",
        "service",
        "since",
        "slow_start",
        "target",
        "verdict",
    )

    def __init__(self, service: ServiceConfig, config: BackendConfig, breaker: Breaker,
                 since: str, last_ok: float | None = None) -> None:
        self.service = service.name
        self.config = config
        self.breaker = breaker
        self.target = Target(service.name, config.name, config.host, config.port)
        self.override: State | None = None
        self.script_weight: int | None = None
        self.ramp_weight: int | None = None  # slow start in progress: the ramp's weight
        self.damper: Damper | None = None  # flap damping, when the service asks for it
        self.inputs: Inputs = NO_INPUTS  # cluster vote, self-suspicion, agent (`decide`)
        self.checks: tuple[CheckSlot, ...] = ()
        self.combiner = Combiner((), 1)
        self.agent: AgentState | None = None  # what its agent said, with an `agent:` block
        self.agent_last: LastProbe | None = None  # the agent's last check
        self.slow_start = 0.0  # its service's ramp duration (0: none), read every probe
        self.probing(service)
        self.since = since
        self.fails = 0
        self.last_ok = last_ok
        self.last_result: ProbeResult | None = None  # what it was last fed (`last_probe`)
        self.last_time = 0.0  # when that probe started, Unix time
        self.progress = ""
        self.verdict = ""  # why the breaker last changed its mind
        # In a cluster (SPEC 12): who probes the backend and what each of them says
        self.probers: tuple[str, ...] | None = None
        self.observers: tuple[tuple[str, str], ...] | None = None
        self.reported = False  # this member's verdict is in etcd since it took it over
        self.published: tuple[State, int] = self.desired()
        self.rendered: tuple[tuple[object, ...], dict[str, object]] | None = None  # `shown`

    def probing(self, service: ServiceConfig) -> None:
        """Match the checks and the agent to the service's config (at start and after a
        reload): a check whose name stays keeps its schedule, an agent what it said
        (unless the backend's weight changed, which its percentages scale)."""
        entries = service.entries
        names = tuple(e.name for e in entries)
        if names != self.combiner.names:
            kept: dict[str, CheckSlot] = dict(zip(self.combiner.names, self.checks,
                                                  strict=True))
            self.checks = tuple(kept.get(name) or CheckSlot(self, i)
                                for i, name in enumerate(names))
        for i, (slot, entry) in enumerate(zip(self.checks, entries, strict=True)):
            slot.configure(i, entry.probe)
        self.slow_start = service.slow_start
        if (names, service.require) != (self.combiner.names, self.combiner.require):
            self.combiner = Combiner(names, service.require)
        if service.agent is None:
            self.agent = self.agent_last = None
        elif self.agent is None or self.agent.configured_weight != self.config.weight:
            self.agent = AgentState.initial(self.config.weight)
        self.inputs = with_agent(self.inputs, self.agent)

    def record(self, result: ProbeResult, transition: Transition, wall: float) -> None:
        """Take in one probe result and the breaker's answer to it (runs every probe)."""
        self.fails = 0 if result.ok else self.fails + 1
        if result.ok:
            self.last_ok = wall
        if result.weight is not None:
            self.script_weight = result.weight
        self.progress = transition.reason if transition.change is _PENDING else ""
        self.last_result, self.last_time = result, wall

    @property
    def last_probe(self) -> LastProbe | None:
        """The probe it was last fed, as /v1/state shows it."""
        return LastProbe.of(self.last_time, self.last_result)

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
            "last_probe": last.to_json() if (last := self.last_probe) else None,
            **self._checks_json(), **self._agent_json()}
        if self.probers is not None:
            entry["probers"] = list(self.probers)
            entry["observers"] = dict(self.observers or ())
        return entry

    def _checks_json(self) -> dict[str, object]:
        """`checks` for a backend with several: each one's last answer, by name."""
        if len(self.checks) < 2:
            return {}
        return {"checks": [{"name": name, **(last.to_json() if (last := slot.last) else {})}
                           for name, slot in zip(self.combiner.names, self.checks,
                                                 strict=True)]}

    def _agent_json(self) -> dict[str, object]:
        """`agent` for a backend with one: what its answers set, and its last check."""
        agent = self.agent
        if agent is None:
            return {}
        return {"agent": {"health": agent.health, "admin": agent.admin, "weight": agent.weight,
                          "maxconn": agent.maxconn, "message": agent.message or None,
                          "last_check": self.agent_last.to_json() if self.agent_last
                          else None}}


    def shown(self, state: State, weight: int) -> dict[str, object]:
        """`to_json`, built again only when something it shows has changed (GET /v1/state
        at 10,000 backends rebuilds only those probed since it was last asked). Shared:
        never modify it."""
        key = (state, weight, self.last_time, self.last_result, self.since, self.fails,
               self.progress,
               self.override, self.health, self.config, self.agent, self.agent_last,
               tuple((slot.last_time, slot.last_result) for slot in self.checks),
               self.probers, self.observers)
        if self.rendered is None or self.rendered[0] != key:
            self.rendered = (key, self.to_json(state, weight))
        return self.rendered[1]


def summary(probe_type: str, result: ProbeResult) -> ProbeSummary:
    """The `probe` object carried by an event."""
    return ProbeSummary(type=probe_type, ok=result.ok, error=result.error,
                        latency_ms=result.latency * 1000)
