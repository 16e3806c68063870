"""Every decision about a backend, in one file and sans I/O (h11's rule; STYLE 13).

The engine tells this module what happened (a probe result, a counted passive
signal, an admin action, a slow-start step, a change of the inputs below) and
carries out what it answers: it schedules, records, numbers events, logs and
publishes; nothing here awaits, logs, reads a clock or numbers an event. Only
the backend's own state machines (its breaker and flap damper, sans-I/O cores
the runtime owns) advance in place, as `observe` and `flap` do.

Theory of operation
-------------------
One result, step by step (`decide`)::

    result -- LOCAL? -------> no breaker fed: the shell counts it, retries soon
      |                       (the checker's own trouble: out of fds, ports)
    combine ----------------> with several `checks`, the result joins the others'
      |                       (`sentinel.engine.combine`); undecided: no breaker fed,
      |                       the check is scheduled by the breaker as it stands
    breaker.observe --------> Transition: UNCHANGED | PENDING | CHANGED, health, reason
      |
    flap damping -----------> a CHANGED down may start a hold, a quiet spell ends it
      |                       (log lines: "flapping, held down", "flap damping released")
    verdict() --------------> the health published from; THE SEAM for later inputs
      |                       (`Inputs`): self-suspicion holds a down up, the cluster's
      |                       agreed verdict replaces the local one, an agent's down
      |                       takes it down, then damping holds
    slow start -------------> a CHANGED up with `slow_start` starts a ramp at weight 1
      |
    desired() --------------> operator override > agent admin state > verdict; weight:
      |                       agent > script > configured, capped by the ramp; an
      |                       agent's weight 0 is published as drain
    reason -----------------> why it moved: "<breaker reason>; last: <probe error>",
                              "flap damping released: ...", "weight 3 from script", ...

Then, per service, when the shell commits (`changes`): the panic guard
(`guard`) turns the backends' desired states into the published view, and the
view is diffed against what the sinks last heard: one `Move` per backend that
moves (with the deciding backend's reason, or a bystander's "panic guard: ..."
/ "panic over: ..."), and panic starting or ending, with its reason.

Timeline: nginx breaker `max_fails: 2` (fail_timeout 10s), `slow_start: 10s`,
weight 5 (tests/engine/test_decide.py runs it)::

    t=0   fail "connection refused"  PENDING "1/2 towards down"; nothing published
    t=1   fail "connection refused"  CHANGED down -> publish down, 0:
                                     "2 failures within 10s; last: connection refused"
    t=11  ok (the trial)             CHANGED up -> publish up, 1: "1/1 trial probes
                                     passed"; ramp (0s,1) (4s,2) (6s,3) (8s,4) (10s,5)
    t=15  (the shell's ramp task)    `ramp_step` -> up, 2: "slow start: weight 2 of 5"

Where later inputs plug in
--------------------------
`Inputs` is the seam. The shell keeps one per backend (`BackendRuntime.inputs`);
an input's owner replaces it (`dataclasses.replace`) and commits the service
(`Engine.commit(svc, backend, reason)`, the reason saying what changed); every
field's default leaves the backend's own verdict alone. `verdict` and `desired`
are the only readers, so the rest of the engine (panic guard, events, sinks,
/v1/state) follows without change:

- the cluster vote (`sentinel.cluster.vote.tally`): `agreed`, the ballot's state
  as a Health, replaces the local verdict (flap damping, overrides and the panic
  guard then apply to it as to a local verdict);
- self-suspicion (`sentinel.engine.suspect.Doubt`, its shell
  `sentinel.engine.doubting`): `held` keeps a down verdict published up (its `hold`
  and `restore`); clearing it publishes the down. It judges each result of a
  backend right after `decide` (holding the down the breaker just reached, or
  releasing one it held on this very probe), so the shell takes `reconsidered`
  instead of committing separately: the probe's own event keeps its probe and trace;
- agent answers (`sentinel.probes.agent.AgentState`, folded in by `with_agent`):
  `admin` (DRAIN or MAINT; None for ready) and `weight`, below an operator's
  override (sentinel keeps the operator's word; HAProxy is last-writer-wins),
  above a script's weight; `agent_down` (down, fail, stopped) makes the verdict
  down at once, as HAProxy sets the server's health to 0, and `up` lifts it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from sentinel.breakers.base import Change, Health, Transition
from sentinel.breakers.dampen import Damper
from sentinel.config.model import InitState, ServiceConfig
from sentinel.engine.combine import unjudged
from sentinel.engine.slowstart import ramp as ramp_steps
from sentinel.model import FailureKind, ProbeResult, ServiceView, State

# Enum members read on every probe, bound to module names once: in Python 3.11 reading
# one through its class (`Change.CHANGED`) costs about 60 ns, an unspecialised lookup.
_CHANGED, _UP, _LOCAL, _STATE_UP = Change.CHANGED, Health.UP, FailureKind.LOCAL, State.UP

if TYPE_CHECKING:  # the runtimes import this module; they are read here, never imported
    from sentinel.engine.backend import BackendRuntime
    from sentinel.engine.statefile import SavedBackend
    from sentinel.probes.agent import AgentState


@dataclass(frozen=True, slots=True)
class Inputs:
    """What bears on a backend's verdict besides its own breaker (see "Where later inputs
    plug in" above). The defaults change nothing."""

    agreed: Health | None = None  # the cluster's agreed verdict; None: the local one stands
    held: bool = False  # self-suspicion: a down verdict is held, kept published up
    admin: State | None = None  # the backend's agent asks for DRAIN or MAINT (None: ready)
    weight: int | None = None  # the backend's agent asks for this weight
    agent_down: bool = False  # the backend's agent last said down, fail or stopped


NO_INPUTS = Inputs()


def with_agent(inputs: Inputs, agent: AgentState | None) -> Inputs:
    """`inputs` with what the backend's agent has said (None: it has no agent)."""
    if agent is None:
        return replace(inputs, admin=None, weight=None, agent_down=False)
    admin = None if agent.admin == "ready" else State(agent.admin)
    return replace(inputs, admin=admin, weight=agent.weight, agent_down=agent.down)


@dataclass(frozen=True, slots=True)
class Note:
    """A line for the shell to log about the backend (`level` as in `logging`)."""

    level: int
    text: str


Steps = tuple[tuple[float, int], ...]  # a slow-start ramp: (offset from recovery, weight)


class Decision(NamedTuple):
    """What one result changes, for the shell to carry out. (Frozen, as a NamedTuple: one
    is made per probe, and a frozen dataclass costs twice as much to build.)"""

    transition: Transition | None  # the breaker's answer; None: a LOCAL failure, not fed
    fed: ProbeResult | None  # what the breaker saw (several checks: their combination)
    desired: tuple[State, int]  # the state and weight this backend should be published with
    publish: bool  # the verdict changed, or the desired state or weight moved: commit
    reason: str = ""  # why (for the event, the log line and the span); "" unless `publish`
    ramp: Steps = ()  # a slow start begins: its steps, the first one now; () when none
    notes: tuple[Note, ...] = ()  # what to log

    @property
    def changed(self) -> bool:
        """The breaker changed its mind (its `reason` becomes the backend's verdict)."""
        return self.transition is not None and self.transition.change is Change.CHANGED


def decide(backend: BackendRuntime, result: ProbeResult, now: float, slow_start: float,
           check: int | None = 0) -> Decision:
    """Feed `result` (taken at `now`, Trio time) to the backend's breaker and damper and
    say what follows; `slow_start` is the service's ramp duration (0: none). The answer
    of the backend's check number `check` is combined with its other checks first
    (nothing is fed, `fed` None, while that is undecided); `check` None feeds `result`
    as it is (a counted passive signal)."""
    fed = feed(backend, result, check)
    if isinstance(fed, Decision):
        return fed
    result = fed
    transition = backend.breaker.observe(result.ok, now, result.latency)
    changed = transition.change is _CHANGED
    damper = backend.damper
    if damper is None:  # written out for the common case (this runs every probe)
        notes: tuple[Note, ...] = ()
        suppressed = False
    else:
        notes = dampen(damper, transition, now)
        suppressed = damper.suppressed
    ramp: Steps = ()
    ramp_weight = backend.ramp_weight
    if changed and transition.health is _UP and slow_start > 0:
        steps = ramp_steps(backend.config.weight, slow_start)
        if len(steps) > 1:
            ramp, ramp_weight = tuple(steps), steps[0][1]
    script = result.weight
    if script is None:
        script = backend.script_weight
    inputs = backend.inputs
    up = verdict(transition.health, suppressed, inputs) is _UP
    want = desired(backend.override, up, inputs, script, ramp_weight, backend.config.weight)
    if not changed and want == backend.published:  # the common case: every probe
        # positional: a NamedTuple's keyword arguments cost a third more
        return Decision(transition, result, want, False, "", (), notes)
    reason = _reason(transition, result, backend.published, want, damper)
    return Decision(transition, result, want, publish=True, reason=reason, ramp=ramp,
                    notes=notes)


def feed(backend: BackendRuntime, result: ProbeResult, check: int | None
         ) -> ProbeResult | Decision:
    """What the backend's breaker is to be fed: `result` combined with the backend's other
    checks (`check` None: `result` as it is); instead, the Decision that feeds nothing when
    it is a LOCAL failure or the combination is still undecided. (A cluster member's
    `observe` takes this step too.)"""
    if result.failure is _LOCAL:  # the checker's own trouble, not the backend's
        return Decision(None, None, backend.published, publish=False)
    if check is None or backend.combiner.single:  # one check combines to itself
        return result
    combined = backend.combiner.take(check, result)
    if combined is None:
        return Decision(unjudged(backend.breaker), None, backend.published, publish=False)
    return combined


def reconsidered(backend: BackendRuntime, decision: Decision) -> Decision:
    """`decision` again after an input's owner changed `backend.inputs` on the same result
    (self-suspicion holding the down the breaker just reached, or releasing one it held):
    publish when what is desired moved; a released down's reason is its breaker's verdict."""
    want = backend.desired()
    if decision.publish or want == backend.published:
        return decision._replace(desired=want)
    return decision._replace(desired=want, publish=True, reason=backend.verdict or (
        f"{backend.published[0].value} -> {want[0].value}"))


def dampen(damper: Damper, transition: Transition, now: float) -> tuple[Note, ...]:
    """Flap damping's step: a new down is a flap (it may start a hold); while held, time
    decays the penalty (it may end the hold). A cluster leader takes this step on the
    agreed verdict's transitions."""
    if transition.change is Change.CHANGED and transition.health is Health.DOWN:
        if damper.flap(now):
            return (Note(logging.WARNING, f"flapping, held down: {damper.describe()}"),)
    elif damper.suppressed and not damper.update(now):
        return (Note(logging.INFO, f"flap damping released: {damper.describe()}"),)
    return ()


def _reason(transition: Transition, result: ProbeResult, published: tuple[State, int],
            want: tuple[State, int], damper: Damper | None) -> str:
    (old, _), (new, weight) = published, want
    if damper and new is State.UP and transition.change is not Change.CHANGED:
        return f"flap damping released: {damper.describe()}"
    if new == old:
        source = "script" if result.weight is not None else "slow start"
        return f"weight {weight} from {source}"
    if new is State.DOWN and result.error:
        return f"{transition.reason}; last: {result.error}"
    return transition.reason or f"{old.value} -> {new.value}"


def verdict(health: Health, suppressed: bool, inputs: Inputs) -> Health:
    """The health a backend is published from: its breaker's `health`, then the inputs
    (self-suspicion's hold, the cluster's agreed verdict, the agent's down), then flap
    damping's hold."""
    if inputs.held and health is Health.DOWN:
        health = Health.UP
    if inputs.agreed is not None:
        health = inputs.agreed
    return Health.DOWN if suppressed or inputs.agent_down else health


def healthy(backend: BackendRuntime) -> bool:
    """Whether the verdict (not an admin override) says up: what the panic guard counts."""
    damper = backend.damper
    return verdict(backend.breaker.health, damper is not None and damper.suppressed,
                   backend.inputs) is Health.UP


def desired(override: State | None, up: bool, inputs: Inputs, script_weight: int | None,
            ramp_weight: int | None, configured_weight: int) -> tuple[State, int]:
    """The state and weight to publish: an operator's override first, then the agent's
    admin state, then the verdict (`up`); the weight is the agent's, else the script's,
    else the configured one, capped by a slow start in progress. An agent's weight 0 is
    published as drain: no new traffic, as HAProxy treats a weight of 0, also in
    balancers whose weights sentinel does not set at run time (nginx)."""
    if override is not None and override is not State.UP:
        return override, 0
    if inputs.admin is not None and inputs.admin is not State.UP:
        return inputs.admin, 0
    if not up:
        return State.DOWN, 0
    if inputs.weight == 0:
        return State.DRAIN, 0
    weight = (inputs.weight if inputs.weight is not None
              else script_weight if script_weight is not None else configured_weight)
    if ramp_weight is not None:
        weight = min(weight, ramp_weight)
    return _STATE_UP, weight


def ramp_step(backend: BackendRuntime, weight: int) -> tuple[int | None, str] | None:
    """A slow-start step to `weight`: the ramp weight to keep (None once it reaches the
    configured weight) and the reason; None when the ramp was cut short (the backend
    went down: its next recovery starts a new ramp)."""
    if backend.ramp_weight is None or verdict(backend.breaker.health, False,
                                              backend.inputs) is Health.DOWN:
        return None
    full = backend.config.weight
    return (None if weight >= full else weight), f"slow start: weight {weight} of {full}"


def admin(action: str) -> tuple[State | None, str]:
    """An operator's `drain`, `maint` or `ready`: the override to keep and the reason."""
    return (None if action == "ready" else State(action)), f"admin: {action}"


def starting(prior: SavedBackend | None, init_state: InitState
          ) -> tuple[Health | InitState, State | None]:
    """Where a backend starts: its saved verdict and override (a restart changes nothing),
    else the service's `init_state` and no override."""
    if prior is None:
        return init_state, None
    health = Health.DOWN if prior.state == State.DOWN.value else Health.UP
    kept = prior.override if prior.override in (State.DRAIN.value, State.MAINT.value) else None
    return health, State(kept) if kept else None


# -- per service: the panic guard and what the sinks hear ------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """A service's published view and which backends the panic guard is holding up."""

    view: ServiceView
    held_up: tuple[str, ...]


def guard(config: ServiceConfig, backends: Sequence[BackendRuntime]) -> Published:
    """The view sinks should converge to, after the panic guard (SPEC 5).

    Panic is when the verdicts say fewer than `min_up` backends are healthy (an
    operator's drain or maint of a healthy backend is not a panic). Then the down
    backends that most recently passed a probe stay published up, enough to publish
    `min_up` up; admin overrides are never overruled.
    """
    wanted = [b.desired() for b in backends]
    up = sum(1 for state, _ in wanted if state is State.UP)
    required = config.min_up.required(len(backends))
    panic = sum(1 for b in backends if healthy(b)) < required
    held: list[int] = []
    if panic:
        candidates = [i for i, (state, _) in enumerate(wanted)
                      if state is State.DOWN and backends[i].override is None]
        candidates.sort(key=lambda i: -(backends[i].last_ok or 0.0))
        held = candidates[: required - up]
    views = []
    for i, (b, (state, weight)) in enumerate(zip(backends, wanted, strict=True)):
        if i in held:
            state, weight = State.UP, b.config.weight
        views.append(b.view(state, weight))
    view = ServiceView(config.name, tuple(views), panic=panic)
    return Published(view, tuple(backends[i].config.name for i in held))


@dataclass(frozen=True, slots=True)
class Move:
    """One backend whose published state or weight changes."""

    index: int  # in the service's backends
    old: State
    state: State
    weight: int
    reason: str
    mine: bool  # the deciding backend: its event carries the probe and trace


@dataclass(frozen=True, slots=True)
class Panic:
    """The panic guard starts (`starts`) or stops holding backends up, and why."""

    starts: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Changes:
    """What a commit of one service publishes: panic starting comes before the moves,
    panic ending after them (so the events read in the order things happened)."""

    published: Published
    moves: tuple[Move, ...]
    panic: Panic | None


def changes(config: ServiceConfig, backends: Sequence[BackendRuntime], panic: bool,
            deciding: BackendRuntime | None, reason: str,
            reasons: Mapping[str, str] | None = None) -> Changes:
    """Diff the guarded view against what each backend was last published as (`panic`:
    whether the service was in panic). `deciding` is the backend whose decision this
    commits, `reason` its reason; None for a reload, whose reason every move takes.
    `reasons` (backend name -> why) commits several backends' decisions at once (a
    cluster leader's vote); the others that move are bystanders."""
    published = guard(config, backends)
    moves = []
    for i, (b, view) in enumerate(zip(backends, published.view.backends, strict=True)):
        if (view.state, view.weight) == b.published:
            continue
        mine = b is deciding
        if reasons and b.config.name in reasons:
            why = reasons[b.config.name]
        elif mine or (deciding is None and not reasons):
            why = reason
        else:
            why = _bystander(b, published)
        moves.append(Move(i, b.published[0], view.state, view.weight, why, mine))
    now_panic = published.view.panic
    turn = None
    if now_panic != panic:
        turn = Panic(now_panic, _panic_reason(config, backends, published.held_up, now_panic))
    return Changes(published, tuple(moves), turn)


def _bystander(backend: BackendRuntime, published: Published) -> str:
    """Why a backend other than the deciding one moved."""
    if backend.config.name in published.held_up:
        return "panic guard: kept published up (min_up)"
    why = backend.verdict or "probed state published"
    if published.view.panic:  # still in panic: another backend is held up instead
        return f"panic guard: another backend kept up instead; {why}"
    return f"panic over: {why}"


def _panic_reason(config: ServiceConfig, backends: Sequence[BackendRuntime],
                  held: tuple[str, ...], starts: bool) -> str:
    total = len(backends)
    up = sum(1 for b in backends if healthy(b))
    required = config.min_up.required(total)
    if starts:
        return (f"only {up} of {total} backends healthy, min_up {required}: "
                f"keeping {', '.join(held)} published up")
    return f"{up} of {total} backends healthy again (min_up {required})"
