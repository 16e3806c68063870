"""Durations as text: the form config errors quote and the rounded form `check` prints."""

from __future__ import annotations

import pytest

from sentinel.timefmt import duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0.25, "250ms"), (0.0005, "0.5ms"), (1.0, "1s"), (2.5, "2.5s"), (90.0, "90s"),
    (3.4166666, "3.41667s")])
def test_a_duration_reads_as_a_config_would_write_it(seconds: float, text: str) -> None:
    """Below a second in milliseconds, else seconds, without trailing zeros."""
    assert duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0.3504, "350ms"), (0.9994, "999ms"), (1.0, "1.0s"), (3.4166666, "3.4s"), (None, "never")])
def test_a_rounded_duration_hides_the_noise_of_a_computed_one(
        seconds: float | None, text: str) -> None:
    """Rounded: whole milliseconds, or tenths of a second; None is `never`."""
    assert duration(seconds, rounded=True) == text
