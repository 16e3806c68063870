"""`sentinel.backoff.Backoff`: doubling ceilings, the jitter share, no overflow."""

from __future__ import annotations

import random

import pytest

from sentinel.backoff import EQUAL_JITTER, FULL_JITTER, Backoff


def test_the_ceiling_doubles_from_initial_up_to_maximum() -> None:
    """Retry n may wait up to initial * 2^(n-1), never more than maximum."""
    backoff = Backoff(initial=0.5, maximum=30.0)
    assert [backoff.ceiling(n) for n in range(1, 10)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_seeded_generator_gives_these_waits() -> None:
    """Equal jitter (the default) and full jitter, pinned for one seed: the draw is
    `uniform(ceiling * (1 - jitter), ceiling)`, nothing more."""
    equal, full = Backoff(), Backoff(initial=1.0, maximum=8.0, jitter=FULL_JITTER)
    rng = random.Random(7)
    assert [equal.delay(n, rng) for n in (1, 2, 3)] == pytest.approx(
        [0.33095819, 0.57542459, 1.65093447])
    rng = random.Random(7)
    assert [full.delay(n, rng) for n in (1, 2, 3, 4, 5)] == pytest.approx(
        [0.32383276, 0.30169835, 2.60373789, 0.57949029, 4.28705603])


def test_equal_jitter_keeps_the_upper_half_of_the_ceiling() -> None:
    """With jitter 0.5, delay(n) lies in [c/2, c] with c the ceiling of retry n."""
    backoff, rng = Backoff(initial=0.5, maximum=30.0, jitter=EQUAL_JITTER), random.Random(3)
    for attempt in range(1, 12):
        ceiling = backoff.ceiling(attempt)
        for _ in range(50):
            assert ceiling / 2 <= backoff.delay(attempt, rng) <= ceiling


def test_full_jitter_spreads_over_the_whole_ceiling() -> None:
    """With jitter 1.0 waits are uniform in [0, c]: some near 0, some near c."""
    backoff, rng = Backoff(initial=1.0, maximum=30.0, jitter=FULL_JITTER), random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (200, 30.0)]:
        waits = [backoff.delay(attempt, rng) for _ in range(500)]
        assert 0.0 <= min(waits) < ceiling * 0.1
        assert ceiling * 0.9 < max(waits) <= ceiling


def test_a_retry_days_into_an_outage_still_has_a_wait() -> None:
    """Attempt 5,000 (2^4999 overflows a float) waits the maximum, not an OverflowError."""
    assert Backoff(maximum=30.0).ceiling(5000) == 30.0


@pytest.mark.parametrize("jitter", [-0.1, 1.5])
def test_jitter_is_a_share(jitter: float) -> None:
    """A jitter outside 0..1 is refused when the Backoff is made."""
    with pytest.raises(ValueError, match="share of the wait"):
        Backoff(jitter=jitter)
