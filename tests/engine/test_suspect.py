"""Doubt (SPEC 11), input by input on virtual times: the canary gate, the mass-failure
rule, how a suspicion ends, and properties over random input sequences."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.config.model import SuspectConfig
from sentinel.engine.suspect import NOTHING, Cause, Doubt, Key, Outcome

RULE = SuspectConfig(mass_failure=0.5, window=4.0, max_suspect=60.0)
A1, A2, B1, B2, C1, C2, D1, D2 = (("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"),
                                  ("c", "1"), ("c", "2"), ("d", "1"), ("d", "2"))


def test_module_timeline() -> None:
    """The theory-of-operation timeline holds step by step."""
    d = Doubt(("gw",), RULE, total=6)
    assert d.down(A1, 9.9, 10.0) == Outcome(hold=(A1,), probe_canaries=True)
    assert d.canary("gw", True, 10.0, 10.1) == Outcome(publish=(A1,))
    assert d.down(B1, 19.9, 20.0) == Outcome(hold=(B1,), probe_canaries=True)
    assert d.down(C1, 20.0, 20.1) == Outcome(hold=(C1,))
    assert d.down(C2, 20.1, 20.2) == Outcome(hold=(C2,))
    began = d.down(A2, 20.2, 20.3)
    assert began.began is not None
    assert (began.began.cause, began.began.reason) == (
        Cause.MASS_FAILURE, "4 of 6 backends in 3 services turned down within 4s")
    assert (began.hold, began.restore, began.services, began.probe_canaries) == (
        (A2, B1, C1, C2), (), ("a", "b", "c"), True)
    assert d.canary("gw", False, 20.4, 20.5) == NOTHING
    ended = d.canary("gw", True, 29.9, 30.0)
    assert (ended.ended, ended.recheck, ended.services) == (
        "canary gw passed", (A2, B1, C1, C2), ("a", "b", "c"))
    assert d.probe(B1, False, 30.0, 30.1) == Outcome(probe_canaries=True)
    assert d.canary("gw", True, 30.1, 30.2) == Outcome(publish=(B1,))
    assert [d.up(k) for k in (A2, C1, C2)] == [NOTHING] * 3
    assert d.suspicion is None
    assert not any(d.holding(k) for k in (A1, A2, B1, C1, C2))


def test_timeline_counts_backends_not_services() -> None:
    """The timeline's mass rule: 3 of 6 is not more than 50%; a fourth in the window is."""
    d = Doubt((), RULE, total=6)
    assert d.down(B1, 0.0, 0.0) == Outcome(publish=(B1,))
    assert d.down(C1, 0.0, 0.1) == Outcome(publish=(C1,))
    assert d.down(A2, 0.0, 0.2) == Outcome(publish=(A2,))
    outcome = d.down(A1, 0.0, 0.3)
    assert outcome.began is not None
    assert outcome.began.reason == "4 of 6 backends in 3 services turned down within 4s"
    assert outcome.restore == (A2, B1, C1)  # published within the window: taken back
    assert outcome.hold == (A1, A2, B1, C1)


@pytest.mark.parametrize(("canaries", "rule", "message"), [
    ((), None, "needs canaries or a suspect rule"),
    ((), SuspectConfig(max_suspect=0.0), "max_suspect 0 needs canaries")])
def test_settings_that_could_never_work_are_refused(
        canaries: tuple[str, ...], rule: SuspectConfig | None, message: str) -> None:
    """No canaries and no rule, or a suspicion only canaries could end without canaries."""
    with pytest.raises(ValueError, match=message):
        Doubt(canaries, rule, total=4)


# -- the canary gate ------------------------------------------------------------------------

def test_gate_holds_until_a_canary_started_after_the_failing_probe_passes() -> None:
    """A canary that started before the failing probe vouches for nothing; one that
    started after it publishes the down."""
    d = Doubt(("gw",), None, total=2)
    assert d.down(A1, 5.0, 5.1) == Outcome(hold=(A1,), probe_canaries=True)
    assert d.canary("gw", True, 4.9, 5.2) == NOTHING  # too early; the request is still out
    assert d.holding(A1)
    assert d.canary("gw", True, 5.3, 5.4) == Outcome(publish=(A1,))
    assert not d.holding(A1)


def test_only_the_first_down_of_a_quiet_period_asks_for_canaries() -> None:
    """While a canary request is outstanding, further downs wait for its answer; an answer
    that covers only some of them asks again for the rest."""
    d = Doubt(("gw",), None, total=3)
    assert d.down(A1, 1.0, 1.1).probe_canaries
    assert d.down(A2, 1.2, 1.3) == Outcome(hold=(A2,))
    assert d.canary("gw", True, 1.15, 1.4) == Outcome(publish=(A1,), probe_canaries=True)
    assert d.canary("gw", True, 1.5, 1.6) == Outcome(publish=(A2,))
    assert d.down(B1, 9.0, 9.1).probe_canaries  # quiet again


def test_a_held_backend_that_recovers_is_never_published() -> None:
    """`up` drops a held down: the backend was never published down."""
    d = Doubt(("gw",), None, total=2)
    d.down(A1, 1.0, 1.1)
    assert d.up(A1) == NOTHING
    assert d.canary("gw", True, 2.0, 2.1) == NOTHING


def test_a_pass_voids_the_evidence_and_a_new_failure_renews_it() -> None:
    """A held backend that passes a probe is not published on its old failure; its next
    failing probe is the evidence a canary must start after."""
    d = Doubt(("gw",), None, total=2)
    d.down(A1, 1.0, 1.1)
    assert d.probe(A1, True, 1.2, 1.3) == NOTHING
    assert d.canary("gw", True, 1.25, 1.4) == NOTHING  # nothing left to vouch for
    assert d.holding(A1)
    assert d.probe(A1, False, 2.0, 2.1) == Outcome(probe_canaries=True)
    assert d.probe(A1, False, 2.5, 2.6) == NOTHING  # the first failure since counts
    assert d.canary("gw", True, 2.2, 2.3) == Outcome(publish=(A1,))


def test_probes_of_backends_not_held_change_nothing() -> None:
    """`probe` is only about held backends."""
    d = Doubt(("gw",), None, total=2)
    assert d.probe(A1, False, 1.0, 1.1) == NOTHING


def test_every_canary_failing_is_a_suspicion_one_failing_is_not() -> None:
    """With two canaries, one failing is that canary's own trouble; both failing makes
    sentinel suspect, naming each with its error."""
    d = Doubt(("gw", "dns"), None, total=4)
    assert d.canary("gw", False, 1.0, 1.1, "timed out") == NOTHING
    assert d.canary("dns", True, 1.0, 1.2) == NOTHING
    assert d.suspicion is None
    outcome = d.canary("dns", False, 3.0, 3.1, "connection refused")
    assert outcome.began is not None
    assert outcome.began.cause is Cause.CANARIES
    assert outcome.began.reason == ("every canary fails: gw (timed out), "
                                    "dns (connection refused)")
    assert outcome.log == (
        "sentinel suspects itself: every canary fails: gw (timed out), dns (connection "
        "refused); holding 0 down(s) in no service yet; check this host's network and the "
        "canaries themselves; until a canary passes",)


def test_while_canaries_fail_every_down_is_held_and_each_service_joins_once() -> None:
    """Suspect by canaries: downs are held; each newly affected service is named once (its
    `suspect` event); a canary pass started after the suspicion began ends it."""
    d = Doubt(("gw",), None, total=4)
    d.canary("gw", False, 1.0, 1.1, "timed out")
    assert d.down(A1, 2.0, 2.1) == Outcome(hold=(A1,), joined=("a",))
    assert d.down(A2, 2.0, 2.2) == Outcome(hold=(A2,))
    assert d.down(B1, 2.0, 2.3) == Outcome(hold=(B1,), joined=("b",))
    assert d.canary("gw", True, 0.9, 2.4) == NOTHING  # started before the suspicion
    ended = d.canary("gw", True, 2.5, 2.6)
    assert (ended.ended, ended.recheck, ended.services) == (
        "canary gw passed", (A1, A2, B1), ("a", "b"))
    assert ended.log == ("sentinel no longer suspects itself: canary gw passed; re-probing 3 "
                         "held backend(s), those that fail again are published",)


def test_a_canary_failing_while_others_answer_keeps_the_request_open() -> None:
    """A fast-failing canary does not answer the request while another is still out: no
    new request (no probe storm), and the slower canary's pass publishes."""
    d = Doubt(("gw", "dns"), None, total=2)
    d.down(A1, 1.0, 1.1)
    assert d.canary("gw", False, 1.1, 1.11) == NOTHING
    assert d.canary("dns", True, 1.1, 1.3) == Outcome(publish=(A1,))


# -- mass failure ---------------------------------------------------------------------------

def four_services_fail(d: Doubt, at: float) -> list[Outcome]:
    """a, b, c and d each lose both backends within 0.3s of `at`."""
    keys = [A1, B1, C1, D1, A2, B2, C2, D2]
    return [d.down(k, at + i * 0.04, at + i * 0.04 + 0.01) for i, k in enumerate(keys)]


def test_four_services_failing_at_once_publish_no_down_and_canaries_bring_them_out() -> None:
    """Four services fail at once: suspect at the 5th of 8 downs, the 4 let through are
    restored; nothing is published while suspect; a canary pass ends it, the rechecks
    of dead backends fail and are published after one more canary round trip."""
    d = Doubt(("gw",), RULE, total=8)
    outcomes = four_services_fail(d, 10.0)
    assert [o.probe_canaries for o in outcomes[:2]] == [True, False]
    assert all(not o.publish for o in outcomes)
    began = outcomes[4]
    assert began.began is not None
    assert began.began.reason == "5 of 8 backends in 4 services turned down within 4s"
    assert began.probe_canaries  # healthy canaries would end it in one round trip
    ended = d.canary("gw", True, 11.0, 11.1)
    assert ended.recheck == (A1, A2, B1, B2, C1, C2, D1, D2)
    rechecked = [d.probe(k, False, 11.2, 11.3) for k in ended.recheck]
    assert rechecked == [Outcome(probe_canaries=True)] + [NOTHING] * 7
    assert d.canary("gw", True, 11.3, 11.4).publish == ended.recheck


def test_without_canaries_published_downs_are_restored_and_max_suspect_ends_it() -> None:
    """No canaries: downs publish at once until the mass rule trips, which restores them;
    after max_suspect the held ones are re-probed and a failure publishes at once."""
    d = Doubt((), RULE, total=8)
    outcomes = four_services_fail(d, 10.0)
    assert [o.publish for o in outcomes[:4]] == [(A1,), (B1,), (C1,), (D1,)]
    assert outcomes[4].restore == (A1, B1, C1, D1)
    assert all(o == Outcome(hold=(k,)) for o, k in zip(outcomes[5:], (B2, C2, D2),
                                                       strict=True))
    assert d.wake_at() == pytest.approx(70.17)
    assert d.tick(70.0) == NOTHING
    ended = d.tick(70.2)
    assert ended.ended == "max_suspect 60s ran out; believing the probes again"
    assert ended.recheck == (A1, A2, B1, B2, C1, C2, D1, D2)
    assert d.probe(A1, False, 70.3, 70.4) == Outcome(publish=(A1,))
    assert d.probe(A2, True, 70.3, 70.4) == NOTHING
    assert d.holding(A2)


def test_a_probe_from_before_the_end_of_a_suspicion_is_no_evidence() -> None:
    """Seen with a blackholed checker: a probe in flight through the outage times out
    just after a canary ended the suspicion. Its failure publishes nothing, nor does a
    breaker turning down on it: held and re-probed; a probe started after the end
    counts."""
    d = Doubt(("gw",), RULE, total=8)
    d.canary("gw", False, 1.0, 1.1)
    assert d.down(A1, 1.2, 1.3).hold == (A1,)
    assert d.canary("gw", True, 5.0, 5.1).recheck == (A1,)
    assert d.probe(A1, False, 5.0, 5.15) == Outcome(recheck=(A1,))
    assert d.down(B1, 5.05, 5.2) == Outcome(hold=(B1,), recheck=(B1,))
    assert d.canary("gw", True, 5.3, 5.4) == NOTHING
    assert d.probe(A1, False, 5.5, 5.6) == Outcome(probe_canaries=True)
    assert d.probe(B1, False, 5.5, 5.6) == NOTHING
    assert d.canary("gw", True, 5.7, 5.8).publish == (A1, B1)


def test_one_service_failing_entirely_is_not_a_mass_failure() -> None:
    """Every backend of one service down is that service's outage, not the checker's."""
    d = Doubt((), RULE, total=3)
    assert [d.down(k, 1.0, 1.0).publish for k in (A1, A2)] == [(A1,), (A2,)]
    assert d.suspicion is None


def test_downs_spread_wider_than_the_window_are_not_a_mass_failure() -> None:
    """Downs more than `window` apart are counted separately."""
    d = Doubt((), RULE, total=4)
    for i, k in enumerate((A1, B1, C1, D1)):
        assert d.down(k, i * 4.5, i * 4.5).publish == (k,)
    assert d.suspicion is None


def test_max_suspect_with_failing_canaries_trusts_probes_until_a_canary_passes() -> None:
    """After max_suspect the canaries are not believed: downs publish on their own failing
    probe and failing canaries start no new suspicion, until a canary passes again."""
    d = Doubt(("gw",), RULE, total=8)
    d.canary("gw", False, 1.0, 1.1)
    assert d.suspicion is not None
    assert d.tick(61.1).ended
    assert d.canary("gw", False, 62.0, 62.1) == NOTHING
    assert d.suspicion is None
    assert d.down(A1, 63.0, 63.1) == Outcome(publish=(A1,))
    assert d.canary("gw", True, 64.0, 64.1) == NOTHING
    assert d.down(B1, 65.0, 65.1) == Outcome(hold=(B1,), probe_canaries=True)


def test_max_suspect_zero_waits_for_canaries_only() -> None:
    """max_suspect 0: no wake-up time; only a canary ends the suspicion."""
    d = Doubt(("gw",), SuspectConfig(max_suspect=0.0), total=4)
    d.canary("gw", False, 1.0, 1.1)
    assert d.wake_at() is None
    assert d.tick(1e9) == NOTHING
    assert d.suspicion is not None


def test_resize_forgets_removed_backends() -> None:
    """After a reload removed a held backend, nothing is published or restored for it."""
    d = Doubt(("gw",), None, total=2)
    d.down(A1, 1.0, 1.1)
    d.resize(1, {A2})
    assert d.canary("gw", True, 2.0, 2.1) == NOTHING


# -- properties -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One input: kind (down, up, probe, canary, tick), a key or canary index, ok."""

    kind: str
    index: int
    ok: bool
    gap: float


KEYS: list[Key] = [A1, A2, B1, B2, C1, C2]
steps = st.lists(st.builds(Step, st.sampled_from(["down", "up", "probe", "canary", "tick"]),
                           st.integers(0, 5), st.booleans(),
                           st.sampled_from([0.0, 0.1, 1.0, 5.0, 30.0])), max_size=60)
rules = st.one_of(st.none(), st.builds(SuspectConfig, st.sampled_from([0.25, 0.5]),
                                       st.sampled_from([1.0, 4.0]),
                                       st.sampled_from([0.0, 10.0, 60.0])))


@given(st.sampled_from([(), ("gw",), ("gw", "dns")]), rules, steps)
def test_never_publishes_a_down_while_suspect(canaries: tuple[str, ...],
                                             rule: SuspectConfig | None,
                                             seq: list[Step]) -> None:
    """Over any inputs: no down is published while suspect; only backends whose breaker
    is down are published, once; only published downs are restored; held and published
    never overlap."""
    if (not canaries and rule is None) or (rule and rule.max_suspect == 0 and not canaries):
        return
    d = Doubt(canaries, rule, total=len(KEYS))
    down: set[Key] = set()
    published: set[Key] = set()
    now = 0.0
    for step in seq:
        now += step.gap
        key = KEYS[step.index]
        if step.kind == "down" and key not in down:
            down.add(key)
            out = d.down(key, now - 0.05, now)
        elif step.kind == "up" and key in down:
            down.discard(key)
            published.discard(key)
            out = d.up(key)
        elif step.kind == "probe" and key in down:
            out = d.probe(key, step.ok, now - 0.05, now)
        elif step.kind == "canary" and canaries:
            out = d.canary(canaries[step.index % len(canaries)], step.ok, now - 0.05, now)
        else:
            out = d.tick(now)
        if out.publish:
            assert d.suspicion is None
            assert out.began is None
        assert set(out.publish) <= down - published
        assert set(out.restore) <= published
        published = (published | set(out.publish)) - set(out.restore)
        assert not any(d.holding(k) for k in published)
