"""Time as text: durations in the form config errors quote and the rounded form `check`
prints; RFC 3339 times written and read back."""

from __future__ import annotations

import pytest

from sentinel.timefmt import duration, rfc3339, unix


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


def test_a_time_written_reads_back_to_the_millisecond() -> None:
    """`unix` reads what `rfc3339` writes (the agreed `since` a new leader resumes a
    slow start from), and a zone other than Z."""
    assert unix(rfc3339(1_764_700_000.123)) == pytest.approx(1_764_700_000.123, abs=1e-6)
    assert unix("2026-11-24T17:00:00+01:00") == unix("2026-11-24T16:00:00Z") == 1_795_536_000


@pytest.mark.parametrize("text", ["", "yesterday", "2026-11-24T16:00:00", "2026-13-01T00:00:00Z"])
def test_what_is_not_a_time_with_a_zone_reads_as_none(text: str) -> None:
    """No zone (a local time, ambiguous), or no time at all: None, never an exception."""
    assert unix(text) is None
