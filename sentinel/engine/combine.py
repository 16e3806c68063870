"""Composite checks (`checks:` with `require`): each check's newest result, one verdict.

keepalived judges a real server by several checkers at once; here a backend
may have several `checks`, each with its own kind, options and schedule.
Whenever one of them gives a new result, the combination is judged, and when
it is decided, the combined result (not the single one) is what the breaker
sees. `require` says how many must pass: all of them (the default), any one,
or a number.

Each result counts once: a verdict uses up the results it rests on, and the
next one waits for results taken since. So a failing check is counted once
per answer of its own, not again with every answer of the others, and a
verdict never rests on what a check said before the previous one (with
nginx's breaker, the first trial after `fail_timeout` would otherwise combine
one passing check with the others' failures from before the backend
recovered, fail, and hold it down for another `fail_timeout`). A check that
has not answered since the last verdict counts as neither: while those that
have answered neither reach `require` nor make it unreachable, there is no
verdict and the breaker is not fed.

Timeline, `checks: [http every 1s, grpc every 2s]`, `require: all`:

    t=0.0  http ok                     -> undecided: grpc has not answered
    t=0.5               grpc ok        -> ok (both results used up)
    t=1.0  http ok                     -> undecided: grpc has not answered since
    t=2.0  http 503                    -> fails: with a 503, `all` cannot pass
    t=2.5               grpc ok        -> undecided: http has not answered since
    t=3.0  http ok                     -> ok

A single check combines to its own result, unchanged. `sentinel check` runs
this combiner in its detection budget.
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.breakers.base import Breaker, Change, Transition
from sentinel.model import ProbeResult


def require_text(require: int, count: int) -> str:
    """`all`, `any` or the number, as `require` would be written for `count` checks."""
    if require == count:
        return "all"
    return "any" if require == 1 else str(require)


def combine(names: Sequence[str], latest: Sequence[ProbeResult | None], require: int,
            new: int) -> ProbeResult | None:
    """The combined result of the checks `names` given the latest result of each (None:
    none yet) when check `new` has just answered; None while undecided.

    It passes when at least `require` checks pass, and fails once too few can. A
    failure takes the failure kind of the first failing check and names every failing
    check in its text, in config order: `http: HTTP status 503; grpc: connection refused
    (1 of 3 passing, require all)`. Its latency is the new result's; a script check's
    weight is carried through."""
    if len(latest) == 1:
        return latest[0]
    passing = sum(1 for r in latest if r is not None and r.ok)
    failing = [(name, r) for name, r in zip(names, latest, strict=True)
               if r is not None and not r.ok]
    if passing < require <= len(latest) - len(failing):
        return None
    result = latest[new]
    assert result is not None, "the check that answered has a result"
    weight = next((r.weight for r in latest if r is not None and r.weight is not None), None)
    tally = f"{passing} of {len(latest)} passing, require {require_text(require, len(latest))}"
    text = "; ".join(f"{name}: {r.error}" for name, r in failing)
    if passing >= require:
        return ProbeResult(ok=True, latency=result.latency, weight=weight,
                           detail=f"{text} ({tally})" if failing else "")
    return ProbeResult(ok=False, latency=result.latency, failure=failing[0][1].failure,
                       detail=f"{text} ({tally})", weight=weight)


class Combiner:
    """One backend's checks: the results since the last verdict, combined as each comes."""

    __slots__ = ("latest", "names", "require", "single")

    def __init__(self, names: Sequence[str], require: int) -> None:
        self.names = tuple(names)
        self.require = require
        # One check: every result is the verdict's as it is; `decide.feed` then skips `take`
        # (`latest` matters only with several checks)
        self.single = len(self.names) == 1
        self.latest: list[ProbeResult | None] = [None] * len(self.names)

    def take(self, index: int, result: ProbeResult) -> ProbeResult | None:
        """Check `index` answered `result`: the combined result (the results it rests on
        are used up), or None while undecided."""
        latest = self.latest
        latest[index] = result
        if len(latest) == 1:  # one check combines to itself (the common case: every probe)
            return result
        combined = combine(self.names, latest, self.require, index)
        if combined is not None:
            self.latest = [None] * len(self.names)
        return combined


def unjudged(breaker: Breaker) -> Transition:
    """What the schedule goes by after an undecided combination: the breaker as it
    stands (still counting towards a change: PENDING, so `fast_interval` holds)."""
    return Transition(Change.PENDING if breaker.progress() else Change.UNCHANGED,
                      breaker.health)
