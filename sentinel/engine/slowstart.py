"""The slow-start ramp: after recovery the weight climbs from 1 to the full
weight over `slow_start` in a few steps (HAProxy's `slowstart`, done in steps
so balancers that take weights at run time are not flooded with updates)."""

from __future__ import annotations

STEPS = 5


def ramp(weight: int, duration: float, steps: int = STEPS) -> list[tuple[float, int]]:
    """(offset from recovery, weight) pairs: starts at 1, ends at `weight` at `duration`.

    Equal consecutive weights are merged, so a weight of 2 ramps in two steps.
    """
    if duration <= 0 or weight <= 1:
        return [(0.0, weight)]
    out: list[tuple[float, int]] = [(0.0, 1)]
    for k in range(1, steps + 1):
        w = max(1, round(weight * k / steps))
        if w != out[-1][1]:
            out.append((duration * k / steps, w))
    return out
