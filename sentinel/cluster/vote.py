"""The vote: probers' observations of one backend -> the cluster's agreed state.

Pure: no I/O, no clock. The leader calls `tally` for a backend whenever an
observation of it, its probers or the live members change, and publishes
the result as the agreed view (the panic guard, flap damping and admin
overrides then apply to it as they do to a single sentinel's verdicts).

The rules (SPEC 12 and 11):

- Only the backend's live probers vote; an observation left by a member
  that no longer probes it is ignored.
- Down needs `quorum` down votes. A member partitioned from one backend
  sees it fail alone: one vote, below quorum, so the backend stays up
  everywhere.
- A member that suspects itself (its canaries fail, or it saw a mass
  failure) casts no down votes: its down counts as an abstention.
- When fewer probers can vote down than `quorum` (members died, or suspect
  themselves), no down can be voted: the agreed state stays as it is,
  except that a down backend still comes back up when the probers that
  report say up and none says down (ups are still published).
- A down backend whose probers have not all reported yet (a member just
  took it over) stays down while the missing reports could still make a
  quorum: a new prober's silence is not an up vote.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sentinel.model import State


@dataclass(frozen=True, slots=True)
class Ballot:
    """The outcome of one backend's vote, with who said what."""

    state: State  # the agreed state: UP or DOWN
    reason: str
    down: tuple[str, ...]  # probers whose down vote counted
    up: tuple[str, ...]  # probers that say up
    missing: tuple[str, ...]  # probers that have not reported
    abstained: tuple[str, ...]  # suspect probers that say down (not counted)
    quorate: bool  # enough probers can vote down to reach quorum


def tally(observations: Mapping[str, State], probers: Sequence[str], quorum: int,
          current: State, suspects: Collection[str] = ()) -> Ballot:
    """The agreed state of a backend whose agreed state is `current` (UP or DOWN),
    from `observations` ({node: UP|DOWN}) of its live `probers`."""
    down = tuple(p for p in probers if observations.get(p) is State.DOWN and p not in suspects)
    abstained = tuple(p for p in probers if observations.get(p) is State.DOWN and p in suspects)
    up = tuple(p for p in probers if observations.get(p) is State.UP)
    missing = tuple(p for p in probers if p not in observations)
    able = sum(1 for p in probers if p not in suspects)
    quorate = able >= quorum

    def ballot(state: State, reason: str) -> Ballot:
        return Ballot(state, reason, down, up, missing, abstained, quorate)

    votes = f"{len(down)} of {len(probers)} probers say down"
    if down:
        votes += f" ({', '.join(down)})"
    if abstained:
        who = "suspects itself" if len(abstained) == 1 else "suspect themselves"
        votes += f"; {', '.join(abstained)} {who}, not counted"
    if len(down) >= quorum:
        return ballot(State.DOWN, f"{votes}; quorum {quorum}")
    if not quorate:
        why = (f"only {able} prober{'' if able == 1 else 's'} can vote, quorum {quorum}: "
               f"no down can be voted")
        if current is State.DOWN and (down or not up):
            return ballot(State.DOWN, f"{why}; stays down ({votes})")
        return ballot(State.UP, f"{why}; {votes}")
    if current is State.DOWN and len(down) + len(missing) >= quorum:
        return ballot(State.DOWN, f"{votes}, waiting for {', '.join(missing)}; quorum {quorum}")
    return ballot(State.UP, f"{votes}; quorum {quorum}")
