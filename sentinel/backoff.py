"""Exponential backoff with jitter: the one `Backoff` every retry loop uses.

Retry number n (1-based) waits a random time below the ceiling
min(maximum, initial * 2^(n-1)). `jitter` is the random share of that
ceiling (AWS Architecture Blog, "Exponential Backoff and Jitter"):

- `FULL_JITTER` (1.0): uniform in [0, ceiling]. Many clients of one server
  spread out best; webhook deliveries use it, since many sentinels may retry
  against one receiver.
- `EQUAL_JITTER` (0.5, the default): uniform in [ceiling/2, ceiling]. A
  floor under each wait, for one client retrying its own target (a sink's
  applies, state writes, etcd calls), where an instant retry would only
  fail again.

Pure: the caller passes the random generator, so tests seed it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

FULL_JITTER = 1.0
EQUAL_JITTER = 0.5
MAX_DOUBLINGS = 60  # 2**1024 overflows a float; the ceiling is long reached by then


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before each retry: doubling from `initial` up to `maximum`
    seconds, the top `jitter` share of each wait drawn at random."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = EQUAL_JITTER

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter is a share of the wait, 0..1, got {self.jitter}")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number `attempt` (1-based)."""
        return min(self.maximum, self.initial * math.pow(2, min(attempt - 1, MAX_DOUBLINGS)))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number `attempt` (1-based): uniform in
        [ceiling * (1 - jitter), ceiling]."""
        ceiling = self.ceiling(attempt)
        return rng.uniform(ceiling * (1.0 - self.jitter), ceiling)
