"""Which members probe which backend: rendezvous hashing over the live members.

Rendezvous (highest random weight) hashing (Thaler and Ravishankar, 1996):
each member scores each backend with a hash of (member, backend); a
backend's probers are its highest-scoring members. Every member computes
the same answer from the same member list, without messages, and a join or
a leave only moves the backends whose top scores it changes: a member that
leaves is replaced where it probed and nowhere else; one that joins takes
over only where it scores among the top.

Zones: when members name zones, the probers of a backend are spread over as
many zones as there are probers (or zones): first the best-scoring member of
each zone, zones taken in the order of their best score, then the best of
the rest. A zone that goes dark then costs each backend at most its share
of probers, never all of them.

The hash is BLAKE2b of "node\\nbackend" (Python's hash() is salted per
process, and every member must agree).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """A live member as the assignment sees it."""

    node: str
    zone: str | None = None


def score(node: str, backend: str) -> int:
    """The rendezvous weight of `node` for `backend` (the same in every process)."""
    digest = hashlib.blake2b(f"{node}\n{backend}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def probers_for(backend: str, members: Sequence[Member], count: int | None) -> tuple[str, ...]:
    """The nodes that probe `backend`: `count` of them (None: every member), spread
    over zones when the members have zones, in the order they were chosen."""
    ranked = sorted(members, key=lambda m: (score(m.node, backend), m.node), reverse=True)
    if count is None or count >= len(ranked):
        return tuple(m.node for m in ranked)
    chosen: list[str] = []
    seen_zones: set[str | None] = set()
    for m in ranked:  # the best of each zone, zones in the order of their best score
        if m.zone not in seen_zones:
            seen_zones.add(m.zone)
            chosen.append(m.node)
            if len(chosen) == count:
                return tuple(chosen)
    taken = set(chosen)
    chosen.extend(m.node for m in ranked if m.node not in taken)
    return tuple(chosen[:count])


def probe_phase(backend: str, rank: int, probers: int) -> float:
    """Where in each interval (a fraction from 0 to 1) the prober of rank `rank` (its
    place in `probers_for`) checks `backend`: the backend's own offset (a hash, so
    backends spread over the interval) plus rank / probers. A backend's probers take
    turns evenly, so one of them sees a death within interval / probers, not all of
    them within the same interval."""
    digest = hashlib.blake2b(backend.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") / 2**64 + rank / probers) % 1.0


def assignment(backends: Iterable[str], members: Sequence[Member],
               count: int | None) -> dict[str, tuple[str, ...]]:
    """Every backend's probers (see `probers_for`)."""
    return {b: probers_for(b, members, count) for b in backends}

