"""The composite-check combiner: the latest result of each check to one verdict."""

from __future__ import annotations

import pytest

from sentinel.engine.combine import combine, require_text
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
    """The module docstring's timeline: http every 1s, grpc every 2s, require all."""
    names = ("http", "grpc")
    assert combine(names, (OK, None), 2, 0) is None  # t=0: grpc not yet
    assert combine(names, (OK, OK), 2, 1) == ProbeResult(ok=True, latency=OK.latency)
    failed = combine(names, (STATUS, OK), 2, 0)  # t=2: http 503
    assert failed == ProbeResult(ok=False, latency=STATUS.latency, failure=FailureKind.STATUS,
                                 detail="http: HTTP status 503 (1 of 2 passing, require all)")
    again = combine(names, (STATUS, OK), 2, 1)  # t=2.5: grpc ok, http's 503 still latest
    assert again is not None
    assert not again.ok
    assert again.latency == OK.latency


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
