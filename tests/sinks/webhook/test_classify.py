"""The pure parts of delivery: what an answer means, Retry-After, full-jitter backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from sentinel.sinks.webhook.signing import Verdict, classify, parse_retry_after

NOW = 1_700_000_000.0


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(status: int) -> None:
    """Every 2xx counts as delivered."""
    assert classify(status, None, "", NOW).verdict is Verdict.DELIVERED


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429, 301, 302])
def test_server_errors_timeouts_and_throttling_are_retried(status: int) -> None:
    """5xx, 408, 429 (and a redirect, which is not followed) are retried."""
    assert classify(status, None, "", NOW).verdict is Verdict.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
def test_other_4xx_are_dead_lettered_with_reason(status: int) -> None:
    """Other 4xx are permanent: dead-lettered, the reason holding status and body."""
    outcome = classify(status, None, "bad signature\n", NOW)
    assert outcome.verdict is Verdict.DEAD
    assert outcome.error == f"HTTP {status}: bad signature"


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_on_429_and_503(status: int) -> None:
    """429 and 503 carry the receiver's Retry-After, in seconds or as an HTTP-date."""
    assert classify(status, "7", "", NOW).retry_after == 7.0
    date = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert classify(status, date, "", NOW).retry_after == pytest.approx(30.0)


def test_retry_after_is_ignored_on_other_statuses() -> None:
    """A 500 with Retry-After still backs off by the sink's own schedule."""
    assert classify(500, "7", "", NOW).retry_after is None


@pytest.mark.parametrize("value", [None, "", "soon", "-3"])
def test_unparsable_retry_after_is_none(value: str | None) -> None:
    """A missing or malformed Retry-After falls back to backoff."""
    assert parse_retry_after(value, NOW) is None

