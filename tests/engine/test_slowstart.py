"""The slow-start ramp's steps."""

from __future__ import annotations

from sentinel.engine.slowstart import ramp


def test_ramp_climbs_from_one_to_full_weight_in_steps() -> None:
    """Weight 10 over 30 s: 1 at recovery, then 2, 4, 6, 8, 10 every 6 s."""
    assert ramp(10, 30.0) == [(0.0, 1), (6.0, 2), (12.0, 4), (18.0, 6), (24.0, 8), (30.0, 10)]


def test_small_weights_merge_equal_steps() -> None:
    """Weight 2 ramps 1 -> 2 without repeating a weight."""
    steps = ramp(2, 10.0)
    assert [w for _, w in steps] == [1, 2]
    assert steps[-1][0] <= 10.0


def test_no_ramp_without_duration_or_for_weight_one() -> None:
    """slow_start 0, or a weight of 1, publishes the full weight at once."""
    assert ramp(5, 0.0) == [(0.0, 5)]
    assert ramp(1, 30.0) == [(0.0, 1)]
