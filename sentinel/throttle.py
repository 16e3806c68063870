"""Holding back a log line that repeats: a fault seen at every probe is logged once a
period, with a count of what was held back, instead of thousands of times.

Pure (the caller passes the time), so the probes' edge and the engine's pacing
use it without depending on the telemetry package.
"""

from __future__ import annotations

import math


class Throttle:
    """Lets a log line through at most once per key per `every` seconds (`math.inf`: once
    ever) and counts the ones it held back, so a fault that repeats at every probe is
    logged, not repeated thousands of times. Keys are forgotten past `keys` of them."""

    __slots__ = ("_every", "_keys", "_seen")

    def __init__(self, every: float = math.inf, keys: int = 1024) -> None:
        self._every = every
        self._keys = keys
        self._seen: dict[object, tuple[float, int]] = {}  # key: (last let through, held)

    def allow(self, key: object, now: float = 0.0) -> int | None:
        """None to hold this line back; else how many lines of `key` were held back
        since the last one let through."""
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._every:
            self._seen[key] = (seen[0], seen[1] + 1)
            return None
        if seen is None and len(self._seen) >= self._keys:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return 0 if seen is None else seen[1]
