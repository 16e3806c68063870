"""Time as text: RFC 3339 timestamps, time-ordered UUIDs (RFC 9562 version 7), and
durations as a config writes them ("250ms", "2s")."""

from __future__ import annotations

import functools
import math
import os
import uuid
from datetime import UTC, datetime


def uuid7(unix_ms: int) -> str:
    """A time-ordered UUID (RFC 9562 version 7): sorts by creation time."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 66 & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def rfc3339(unix: float) -> str:
    """UTC timestamp with milliseconds, e.g. 2026-11-24T16:00:00.123Z (the milliseconds
    of the time rounded to the microsecond, as datetime rounds it)."""
    seconds = math.floor(unix)
    micros = round((unix - seconds) * 1_000_000)
    if micros == 1_000_000:
        seconds, micros = seconds + 1, 0
    return f"{_utc_second(seconds)}.{micros // 1000:03d}Z"


def unix(text: str) -> float | None:
    """Unix seconds of an RFC 3339 time with a zone (`rfc3339`'s, or a user's
    2026-11-24T17:00:00+01:00); None when `text` is not one."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


@functools.lru_cache(maxsize=4096)
def _utc_second(unix: int) -> str:
    """`unix` as YYYY-MM-DDTHH:MM:SS: strftime is most of rfc3339's cost, and the state
    document at 10,000 backends formats many times within the same few seconds."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def duration(seconds: float | None, *, rounded: bool = False) -> str:
    """`250ms` below a second, `2.5s` from one up, exact as a config writes it. With
    `rounded`, a computed duration to the millisecond or the tenth of a second (`350ms`,
    `3.4s`, not `3.41667s`). None is `never` (a detection budget that never ends)."""
    if seconds is None:
        return "never"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if rounded else f"{seconds * 1000:g}ms"
    return f"{seconds:.1f}s" if rounded else f"{seconds:g}s"
