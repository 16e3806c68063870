"""Flap damping, as BGP route-flap damping does it (RFC 2439).

Theory of operation: every flap (up -> down) adds 1000 to a penalty that
decays exponentially with `half_life`. Above `suppress` the backend is held
down, whatever its probes say, until the penalty decays below `reuse`. The
penalty is capped so no backend stays suppressed longer than `max_suppress`
after its last flap.

    t=0   flap        penalty 1000
    t=10  flap        penalty 1000*2^(-10/60)+1000 = 1891
    t=20  flap        penalty 2684 > suppress 2000  -> held down
    t=20+ stable      penalty decays; at t=20+110s it is < reuse 750 -> released

Pure: time is passed in.
"""

from __future__ import annotations

import math

from sentinel.config.model import DampenConfig

FLAP_PENALTY = 1000.0


class Damper:
    """One backend's damping state."""

    __slots__ = ("_at", "_ceiling", "config", "penalty", "suppressed")

    def __init__(self, config: DampenConfig) -> None:
        self.config = config
        self.penalty = 0.0
        self.suppressed = False
        self._at = 0.0
        # The penalty that decays to `reuse` in exactly max_suppress (RFC 2439 4.2). Past
        # about 1,000 half-lives that is beyond a float (`max_suppress: 1h` with
        # `half_life: 1s` is 3,600; math.pow raised and `sentinel run` crashed at start):
        # no cap then, and none is needed, since flaps adding 1000 each never come near it.
        try:
            self._ceiling = config.reuse * math.pow(2, config.max_suppress / config.half_life)
        except OverflowError:
            self._ceiling = math.inf

    def _decay(self, now: float) -> None:
        if now > self._at:
            self.penalty *= math.pow(2, -(now - self._at) / self.config.half_life)
            self._at = now

    def flap(self, now: float) -> bool:
        """Record a flap at `now`; True when this flap starts a suppression."""
        self._decay(now)
        self.penalty = min(self.penalty + FLAP_PENALTY, self._ceiling)
        starts = not self.suppressed and self.penalty > self.config.suppress
        self.suppressed = self.suppressed or starts
        return starts

    def update(self, now: float) -> bool:
        """Decay to `now`; True while suppressed (released once below `reuse`)."""
        self._decay(now)
        if self.suppressed and self.penalty < self.config.reuse:
            self.suppressed = False
        return self.suppressed

    def describe(self) -> str:
        """Penalty and state for /v1/state and event reasons."""
        state = "suppressed" if self.suppressed else "not suppressed"
        return f"flap penalty {self.penalty:.0f} ({state}; suppress {self.config.suppress:g}, " \
               f"reuse {self.config.reuse:g})"
