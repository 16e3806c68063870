"""Composite checks (`checks:` with `require`): the latest result of each check, one verdict.

keepalived judges a real server by several checkers at once; here a backend
may have several `checks`, each with its own kind, options and schedule.
Whenever one of them gives a new result, the latest result of every check is
combined, and the combination (not the single result) is what the breaker
sees. `require` says how many must pass: all of them (the default), any one,
or a number.

Timeline, `checks: [http every 1s, grpc every 2s]`, `require: all`:

    t=0.0  http ok                      grpc not yet   -> undecided: no verdict
    t=0.5                               grpc ok        -> ok
    t=1.0  http ok                                     -> ok
    t=2.0  http 503                                    -> fails: "http: HTTP status 503"
    t=2.5                               grpc ok        -> fails again (http's 503 is latest)
    t=3.0  http ok                                     -> ok

So a failing check is counted once per new result of any check: with the
nginx breaker's `max_fails: 3` above, the 503 at t=2.0 has counted twice by
t=2.5. `sentinel check` runs this combination in its detection budget.

Undecided: a check that has not answered yet counts as neither. While the
checks that have answered neither reach `require` nor make it unreachable,
there is no verdict and the breaker is not fed. A single check combines to
its own result, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    It passes when at least `require` checks pass. A failure takes the failure kind of
    the first failing check and names every failing check in its text, in config order:
    `http: HTTP status 503; grpc: connection refused (1 of 3 passing, require all)`.
    Its latency is the new result's; a script check's weight is carried through."""
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
