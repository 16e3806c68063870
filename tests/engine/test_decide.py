"""The pure decision (`sentinel.engine.decide`): results in, decisions out, no Trio, no
engine; times are plain numbers."""

from __future__ import annotations

import logging

import pytest

from sentinel.breakers import make_breaker
from sentinel.breakers.base import Change, Health, Transition
from sentinel.breakers.dampen import Damper
from sentinel.config.model import (
    BackendConfig,
    BreakerConfig,
    CheckConfig,
    DampenConfig,
    InitState,
    MinUp,
    NginxBreakerConfig,
    ProbeConfig,
    ServiceConfig,
    TcpSpec,
    ThresholdBreakerConfig,
    Timing,
)
from sentinel.engine.backend import BackendRuntime
from sentinel.engine.decide import (
    Decision,
    Inputs,
    admin,
    changes,
    decide,
    ramp_step,
    starting,
    with_agent,
)
from sentinel.engine.statefile import SavedBackend
from sentinel.model import FailureKind, ProbeResult, State
from sentinel.probes.agent import AgentState, parse_line

OK = ProbeResult(ok=True, latency=0.001)
REFUSED = ProbeResult(ok=False, latency=0.001, failure=FailureKind.CONNECT,
                      detail="connection refused")
ONE_STRIKE = ThresholdBreakerConfig(rise=1, fall=1)


def backend(name: str = "a", *, weight: int = 1,
            breaker: BreakerConfig = ONE_STRIKE,
            initial: Health | InitState = Health.UP) -> BackendRuntime:
    """A backend runtime on 127.0.0.1 with a fresh breaker."""
    config = BackendConfig(name, "127.0.0.1:80", "127.0.0.1", 80, weight=weight)
    return BackendRuntime(ServiceConfig("web", (config,)), config,
                          make_breaker(breaker, initial), since="t0")


def carry_out(b: BackendRuntime, d: Decision) -> Decision:
    """What the shell does with a decision that matters here: publish it, start a ramp."""
    if d.publish:
        b.published = d.desired
    if d.ramp:
        b.ramp_weight = d.ramp[0][1]
    return d


def test_the_module_docstring_timeline() -> None:
    """The timeline in decide's docstring: pending, down with the last error, up through a
    trial with a slow start at weight 1, then a ramp step."""
    b = backend(weight=5, breaker=NginxBreakerConfig(max_fails=2, fail_timeout=10.0))
    first = carry_out(b, decide(b, REFUSED, 0.0, 10.0))
    assert first.transition is not None
    assert (first.transition.change, first.transition.reason) == (Change.PENDING,
                                                                  "1/2 towards down")
    assert not first.publish
    down = carry_out(b, decide(b, REFUSED, 1.0, 10.0))
    assert (down.desired, down.reason, down.changed) == (
        (State.DOWN, 0), "2 failures within 10s; last: connection refused", True)
    up = carry_out(b, decide(b, OK, 11.0, 10.0))
    assert (up.desired, up.reason) == ((State.UP, 1), "1/1 trial probes passed")
    assert up.ramp == ((0.0, 1), (4.0, 2), (6.0, 3), (8.0, 4), (10.0, 5))
    assert ramp_step(b, 2) == (2, "slow start: weight 2 of 5")
    assert ramp_step(b, 5) == (None, "slow start: weight 5 of 5")


def test_a_settled_result_publishes_nothing() -> None:
    """An ok result for an up backend changes nothing and gives no reason."""
    b = backend()
    d = decide(b, OK, 0.0, 0.0)
    assert (d.publish, d.reason, d.desired, d.ramp, d.notes) == (False, "", (State.UP, 1),
                                                                  (), ())


def test_a_local_failure_feeds_no_breaker() -> None:
    """A LOCAL failure (the checker's own trouble) has no transition and publishes nothing;
    the breaker has not counted it."""
    b = backend()
    local = ProbeResult(ok=False, latency=0.0, failure=FailureKind.LOCAL, detail="EMFILE")
    d = decide(b, local, 0.0, 0.0)
    assert (d.transition, d.publish) == (None, False)
    assert b.breaker.health is Health.UP
    assert decide(b, OK, 1.0, 0.0).transition == decide(b, OK, 2.0, 0.0).transition


def test_a_counted_passive_signal_is_a_failure_with_its_reason() -> None:
    """A passive signal fed as a result takes the backend down, its text as the last error."""
    b = backend()
    signal = ProbeResult(ok=False, latency=0.0, failure=FailureKind.PASSIVE,
                         detail="nginx: upstream timed out")
    d = decide(b, signal, 0.0, 0.0)
    assert d.desired == (State.DOWN, 0)
    assert d.reason.endswith("; last: nginx: upstream timed out")


def test_a_failed_first_probe_under_init_state_up_says_so() -> None:
    """`init_state: up` falls at the first failed probe, and the reason names it."""
    b = backend(breaker=NginxBreakerConfig(max_fails=3, fail_timeout=10.0),
                initial=InitState.UP)
    d = decide(b, REFUSED, 0.0, 0.0)
    assert d.desired == (State.DOWN, 0)
    assert d.reason == "first probe failed (init_state: up); last: connection refused"


def test_a_script_weight_publishes_with_its_source() -> None:
    """A weight from a script moves the published weight, saying where it came from."""
    b = backend(weight=5)
    d = decide(b, OK._replace(weight=3), 0.0, 0.0)
    assert (d.publish, d.desired, d.reason) == (True, (State.UP, 3), "weight 3 from script")


def test_flap_damping_holds_a_flapping_backend_and_releases_it() -> None:
    """The third flap in quick succession starts a hold (a warning to log); the recovery
    is not published; once the penalty decays, a probe releases it with its reason."""
    b = backend()
    b.damper = Damper(DampenConfig(half_life=60.0, suppress=2000.0, reuse=750.0,
                                   max_suppress=240.0))
    notes = []
    for t in range(6):
        d = carry_out(b, decide(b, OK if t % 2 else REFUSED, float(t), 0.0))
        notes += d.notes
    assert [n.level for n in notes] == [logging.WARNING]
    assert notes[0].text.startswith("flapping, held down: flap penalty")
    assert b.published == (State.DOWN, 0)  # the last recovery is held back
    released = carry_out(b, decide(b, OK, 200.0, 0.0))
    assert released.desired == (State.UP, 1)
    assert released.reason.startswith("flap damping released: flap penalty")
    assert [n.level for n in released.notes] == [logging.INFO]


def test_an_override_outranks_the_verdict() -> None:
    """A backend in maint that dies stays published in maint."""
    b = backend()
    b.override = State.MAINT
    b.published = b.desired()
    d = decide(b, REFUSED, 0.0, 0.0)
    assert (d.desired, d.changed) == ((State.MAINT, 0), True)


@pytest.mark.parametrize(("inputs", "health", "want"), [
    pytest.param(Inputs(held=True), Health.DOWN, (State.UP, 4), id="suspicion holds a down"),
    pytest.param(Inputs(agreed=Health.UP), Health.DOWN, (State.UP, 4), id="agreed up wins"),
    pytest.param(Inputs(agreed=Health.DOWN), Health.UP, (State.DOWN, 0),
                 id="agreed down wins"),
    pytest.param(Inputs(admin=State.DRAIN), Health.UP, (State.DRAIN, 0), id="agent drain"),
    pytest.param(Inputs(weight=2), Health.UP, (State.UP, 2), id="agent weight"),
    pytest.param(Inputs(weight=0), Health.UP, (State.DRAIN, 0), id="agent weight 0 drains"),
    pytest.param(Inputs(agent_down=True), Health.UP, (State.DOWN, 0), id="agent down"),
    pytest.param(Inputs(agent_down=True, held=True), Health.DOWN, (State.DOWN, 0),
                 id="no hold for an agent's down"),
    pytest.param(Inputs(), Health.DOWN, (State.DOWN, 0), id="no inputs: local verdict"),
])
def test_inputs_plug_in_between_breaker_and_publish(inputs: Inputs, health: Health,
                                                    want: tuple[State, int]) -> None:
    """The seam: self-suspicion's hold, the cluster's agreed verdict and an agent's admin
    state and weight change what is published from the breaker's verdict."""
    b = backend(weight=4, initial=health)
    b.inputs = inputs
    assert b.desired() == want
    assert b.healthy is (want[0] is not State.DOWN)  # what the panic guard counts


def test_an_operator_override_outranks_the_agent_and_damping_outranks_the_vote() -> None:
    """An operator's maint beats an agent's drain; a damping hold beats an agreed up."""
    b = backend()
    b.inputs, b.override = Inputs(admin=State.DRAIN), State.MAINT
    assert b.desired() == (State.MAINT, 0)
    b = backend()
    b.damper = Damper(DampenConfig())
    b.damper.suppressed = True
    b.inputs = Inputs(agreed=Health.UP)
    assert b.desired() == (State.DOWN, 0)


def test_an_agent_state_becomes_inputs() -> None:
    """`with_agent` carries an AgentState's admin state, weight and down into `Inputs`,
    keeping the other inputs; None (no agent any more) clears them."""
    held = Inputs(held=True)
    state = AgentState.initial(10).apply(parse_line("drain 50% down"))
    assert with_agent(held, state) == Inputs(held=True, admin=State.DRAIN, weight=5,
                                             agent_down=True)
    assert with_agent(held, AgentState.initial(10)) == Inputs(held=True, weight=10)
    assert with_agent(with_agent(held, state), None) == held


def test_a_check_of_several_is_combined_before_the_breaker() -> None:
    """With two checks (require all) the first answer feeds nothing (undecided: the
    breaker as it stands schedules), the second feeds their combination; a counted
    passive signal (`check` None) is fed as it is."""
    config = BackendConfig("a", "127.0.0.1:80", "127.0.0.1", 80)
    probe = ProbeConfig("tcp", Timing(), TcpSpec())
    svc = ServiceConfig("web", (config,), probe, ONE_STRIKE,
                        checks=(CheckConfig("tcp", probe), CheckConfig("raw", probe)),
                        require=2)
    b = BackendRuntime(svc, config, make_breaker(ONE_STRIKE, Health.UP), since="t0")
    first = decide(b, OK, 0.0, 0.0, 0)
    assert (first.fed, first.publish, first.transition) == (
        None, False, Transition(Change.UNCHANGED, Health.UP))
    second = carry_out(b, decide(b, REFUSED, 1.0, 0.0, 1))
    assert second.fed is not None
    assert (second.desired, second.reason) == (
        (State.DOWN, 0), "1 consecutive failure; last: raw: connection refused "
                         "(1 of 2 passing, require all)")
    passive = ProbeResult(ok=True, latency=0.0)
    assert decide(b, passive, 2.0, 0.0, None).fed is passive


def test_a_ramp_cut_short_by_a_down_stops() -> None:
    """A slow-start step after the backend went down again does nothing."""
    b = backend(weight=5)
    b.ramp_weight = 1
    carry_out(b, decide(b, REFUSED, 0.0, 10.0))
    assert ramp_step(b, 2) is None


def test_admin_actions() -> None:
    """`drain` and `maint` set an override, `ready` lifts it; the reason names the action."""
    assert admin("drain") == (State.DRAIN, "admin: drain")
    assert admin("ready") == (None, "admin: ready")


def test_a_saved_verdict_and_override_win_over_init_state() -> None:
    """A restart starts from the saved verdict and keeps a drain; with nothing saved, the
    configured init_state, and no override."""
    saved = SavedBackend("down", "t0", None, "drain")
    assert starting(saved, InitState.UP) == (Health.DOWN, State.DRAIN)
    assert starting(SavedBackend("up", "t0", None, "up"), InitState.DOWN) == (Health.UP, None)
    assert starting(None, InitState.FULLY_DOWN) == (InitState.FULLY_DOWN, None)


def service_config(names: list[str], min_up: int) -> ServiceConfig:
    """A service over `names` with the panic guard at `min_up`."""
    backends = tuple(BackendConfig(n, "127.0.0.1:80", "127.0.0.1", 80) for n in names)
    timing = Timing(interval=1.0, fast_interval=1.0, down_interval=1.0, timeout=0.5)
    return ServiceConfig("web", backends, ProbeConfig("tcp", timing, TcpSpec()), ONE_STRIKE,
                         min_up=MinUp(count=min_up))


def test_panic_starts_before_the_moves_and_names_the_held_backend() -> None:
    """When too few backends are healthy the guard holds the one that passed a probe last
    up; the deciding backend moves with its reason, panic starts with its own."""
    a, b = backend("a"), backend("b")
    a.last_ok, b.last_ok = 5.0, 9.0
    cfg = service_config(["a", "b"], min_up=1)
    for runtime in (a, b):
        decide(runtime, REFUSED, 10.0, 0.0)
    result = changes(cfg, [a, b], False, a, "1 failure; last: refused")
    assert result.panic is not None
    assert result.panic.starts
    assert result.panic.reason == ("only 0 of 2 backends healthy, min_up 1: "
                                   "keeping b published up")
    assert [(m.index, m.state, m.reason, m.mine) for m in result.moves] == [
        (0, State.DOWN, "1 failure; last: refused", True)]
    assert result.published.held_up == ("b",)


def test_a_bystander_released_by_the_guard_says_why() -> None:
    """When panic ends, a backend the guard held up is published down with its verdict."""
    a, b = backend("a"), backend("b")
    b.last_ok = 1.0  # passed a probe last: the one held up
    cfg = service_config(["a", "b"], min_up=1)
    decide(a, REFUSED, 0.0, 0.0)
    decide(b, REFUSED, 0.0, 0.0)
    b.verdict = "1 failure"
    held = changes(cfg, [a, b], False, None, "reload")
    for move in held.moves:
        [a, b][move.index].published = (move.state, move.weight)
    decide(a, OK, 1.0, 0.0)
    over = changes(cfg, [a, b], True, a, "1 success")
    assert over.panic is not None
    assert not over.panic.starts
    assert over.panic.reason == "1 of 2 backends healthy again (min_up 1)"
    assert {m.index: m.reason for m in over.moves} == {0: "1 success",
                                                       1: "panic over: 1 failure"}
