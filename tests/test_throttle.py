"""The log throttle: a repeating fault is logged once per period, with what was held back."""

from __future__ import annotations

from sentinel.throttle import Throttle


def test_throttle_lets_one_line_per_key_through_per_period() -> None:
    """Within `every` a key is held back and counted; the next line through reports the
    count; other keys are independent."""
    throttle = Throttle(every=10.0)
    assert throttle.allow("emfile", 0.0) == 0
    assert throttle.allow("emfile", 3.0) is None
    assert throttle.allow("enobufs", 4.0) == 0
    assert throttle.allow("emfile", 9.9) is None
    assert throttle.allow("emfile", 10.0) == 2
    assert throttle.allow("emfile", 12.0) is None


def test_throttle_forever_and_forgetting() -> None:
    """The default lets a key through once ever; past `keys` keys it starts afresh."""
    throttle = Throttle(keys=2)
    assert throttle.allow("a") == 0
    assert throttle.allow("a") is None
    assert throttle.allow("b") == 0
    assert throttle.allow("c") == 0  # a third key: the two before are forgotten
    assert throttle.allow("a") == 0
