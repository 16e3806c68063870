"""The composite-check combiner: the latest result of each check to one verdict."""

from __future__ import annotations

import pytest

from sentinel.breakers import make_breaker
from sentinel.breakers.base import Change, Health, Transition
from sentinel.config.model import ThresholdBreakerConfig
from sentinel.engine.combine import Combiner, combine, require_text, unjudged
from sentinel.model import FailureKind, ProbeResult

OK = ProbeResult(ok=True, latency=0.001)
REFUSED = ProbeResult(ok=False, latency=0.002, failure=FailureKind.CONNECT,
                      detail="connection refused")
STATUS = ProbeResult(ok=False, latency=0.003, failure=FailureKind.STATUS,
                     detail="HTTP status 503")
NAMES = ("http", "grpc", "raw")


def test_single_check_is_its_own_result() -> None:
    """One check combines to its result, unchanged (the `probe:` case)."""
    assert combine(("tcp",), (REFUSED,), 1, 0) is REFUSED
    assert combine(("tcp",), (OK,), 1, 0) is OK


def test_module_timeline() -> None:
    """The module docstring's timeline: http every 1s, grpc every 2s, require all; each
    verdict uses up the results it rests on."""
    checks = Combiner(("http", "grpc"), 2)
    steps = [(0, OK), (1, OK), (0, OK), (0, STATUS), (1, OK), (0, OK)]
    verdicts = [checks.take(i, r) for i, r in steps]
    assert [None if v is None else v.ok for v in verdicts] == [
        None, True, None, False, None, True]
    assert verdicts[3] == ProbeResult(ok=False, latency=STATUS.latency,
                                      failure=FailureKind.STATUS,
                                      detail="http: HTTP status 503 (0 of 2 passing, "
                                             "require all)")


def test_a_failure_counts_once() -> None:
    """With `require: any`, one check failing and the other passing feeds passes only;
    with `all`, each failing answer is one failure, however often the other answers."""
    anyone = Combiner(("http", "grpc"), 1)
    fed = [anyone.take(i, r) for i, r in [(1, REFUSED), (0, OK), (1, REFUSED), (0, OK)]]
    assert [None if v is None else v.ok for v in fed] == [None, True, None, True]
    every = Combiner(("http", "grpc"), 2)
    fed = [every.take(i, r) for i, r in [(0, OK), (1, REFUSED), (0, OK), (0, OK), (1, REFUSED)]]
    assert [None if v is None else v.ok for v in fed] == [None, False, None, None, False]


def test_single_combiner_passes_results_through() -> None:
    """A one-check combiner gives each result as it is."""
    one = Combiner(("tcp",), 1)
    assert [one.take(0, r) for r in (OK, REFUSED, OK)] == [OK, REFUSED, OK]


def test_unjudged_keeps_the_breaker_counting() -> None:
    """An undecided combination schedules by the breaker as it stands: PENDING while it
    counts towards a change (fast_interval holds), UNCHANGED when settled."""
    breaker = make_breaker(ThresholdBreakerConfig(fall=3), Health.UP)
    assert unjudged(breaker).change is Change.UNCHANGED
    breaker.observe(False, 1.0)
    assert unjudged(breaker) == Transition(Change.PENDING, Health.UP)


def test_every_failing_check_named_in_order() -> None:
    """A failure names each failing check with its text, in config order, and takes the
    first one's failure kind."""
    got = combine(NAMES, (STATUS, OK, REFUSED), 3, 1)
    assert got is not None
    assert got.failure is FailureKind.STATUS
    assert got.error == ("http: HTTP status 503; raw: connection refused "
                         "(1 of 3 passing, require all)")


@pytest.mark.parametrize(("latest", "require", "ok"), [
    ((OK, REFUSED, REFUSED), 1, True),
    ((REFUSED, REFUSED, REFUSED), 1, False),
    ((OK, OK, REFUSED), 2, True),
    ((OK, REFUSED, REFUSED), 2, False),
    ((OK, OK, OK), 3, True),
    ((OK, OK, REFUSED), 3, False),
])
def test_require_counts_passing_checks(latest: tuple[ProbeResult, ...], require: int,
                                       ok: bool) -> None:
    """The combination passes when at least `require` checks pass."""
    got = combine(NAMES, latest, require, 0)
    assert got is not None
    assert got.ok is ok


def test_passing_combination_still_names_failing_checks() -> None:
    """With `require: any`, a pass over a failing check says which one fails."""
    got = combine(NAMES, (OK, REFUSED, OK), 1, 0)
    assert got is not None
    assert got.ok
    assert got.detail == "grpc: connection refused (2 of 3 passing, require any)"


@pytest.mark.parametrize(("latest", "require", "verdict"), [
    ((OK, None, None), 3, None),  # two more must pass: undecided
    ((REFUSED, None, None), 3, False),  # all required, one fails: decided
    ((OK, None, None), 1, True),  # any: one pass decides
    ((REFUSED, None, None), 1, None),  # any: the others may still pass
    ((REFUSED, REFUSED, None), 2, False),  # two required, at most one can pass
    ((OK, REFUSED, None), 2, None),
])
def test_unanswered_checks_count_as_neither(latest: tuple[ProbeResult | None, ...],
                                            require: int, verdict: bool | None) -> None:
    """Before every check has answered, a verdict is given only once the unanswered ones
    can no longer change it."""
    got = combine(NAMES, latest, require, 0)
    assert (None if got is None else got.ok) is verdict


def test_script_weight_carried() -> None:
    """A script check's `weight=N` reaches the combination."""
    weighted = ProbeResult(ok=True, latency=0.01, weight=7)
    got = combine(("http", "script"), (OK, weighted), 2, 0)
    assert got is not None
    assert got.weight == 7


def test_require_text() -> None:
    """`require` shown as it would be written."""
    assert [require_text(r, 3) for r in (3, 1, 2)] == ["all", "any", "2"]
