"""The body of POST /v1/reports (SPEC 10), parsed and checked without I/O.

    {"reports": [{"service": "web", "backend": "web1", "ok": false,
                  "error": "502 from upstream", "time": "2026-11-24T16:00:00Z",
                  "source": "lb1"}]}

A report names its backend by `backend` or by `address` (as the balancer saw
it: `10.0.0.11:8080`); `ok` is required; `error`, `time` (RFC 3339 or Unix
seconds) and `source` (who reports, named in the reason) are optional.
Successes are accepted and ignored, so a client library may report every
outcome. A report older than `MAX_AGE` is stale and ignored (a replayed
log must not take a backend out today); one more than `MAX_AHEAD` ahead of
sentinel's clock is ignored too, and counted apart as `future` so the answer
points at the reporter's clock rather than at a slow log shipper. A report's
time is when the failure was seen, so on a true clock it is never ahead: the
allowance covers only clocks that disagree a little. Without it, a host whose
clock runs an hour fast (or a replay with a forged time) would have its
reports counted as fresh, however far ahead. The whole request is refused,
changing nothing, when any report is malformed (400) or names a service or
backend sentinel does not know (422, listing them all).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sentinel.errors import BadRequest
from sentinel.passive.base import BackendIndex, Key, Signal
from sentinel.timefmt import unix

MAX_BODY = 64 * 1024  # bytes; larger bodies are refused with 413 before being read
MAX_REPORTS = 1000
MAX_TEXT = 200  # characters kept of `error` and `source`
MAX_AGE = 60.0  # seconds: older reports are ignored
# seconds a report's time may be ahead of ours: NTP keeps hosts within milliseconds of
# each other; a few seconds covers a host still slewing its clock after a boot or a
# resume. Beyond that its clock is wrong and the time says nothing about the failure.
MAX_AHEAD = 10.0
KEYS = {"service", "backend", "address", "ok", "error", "time", "source"}


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a valid request holds: the failures to act on, and how many were ignored
    (successes; failures too old, or too far ahead of sentinel's clock)."""

    signals: tuple[Signal, ...]
    successes: int
    stale: int
    future: int

    def to_json(self) -> dict[str, object]:
        """The 200 answer."""
        return {"ok": True, "accepted": len(self.signals), "successes": self.successes,
                "stale": self.stale, "future": self.future}


def parse_reports(body: bytes, index: BackendIndex, now: float) -> Accepted:
    """Check a request body against the running config's backends (`index`); `now` is
    Unix time. Raises BadRequest (400 malformed, 413 too large, 422 unknown backends)."""
    if len(body) > MAX_BODY:
        raise BadRequest(f"body over {MAX_BODY} bytes", status=413)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"not JSON: {exc}") from None
    except RecursionError:  # `[[[[...` a few thousand deep: json recurses per level
        raise BadRequest('JSON nested too deeply; expected {"reports": [{...}]}') from None
    if not isinstance(doc, dict) or set(doc) != {"reports"} or not isinstance(
            doc["reports"], list):
        raise BadRequest('expected {"reports": [...]}')
    reports: list[Any] = doc["reports"]
    if len(reports) > MAX_REPORTS:
        raise BadRequest(f"more than {MAX_REPORTS} reports", status=413)
    problems: list[str] = []
    unknown: list[str] = []
    signals: list[Signal] = []
    successes = stale = future = 0
    for i, report in enumerate(reports):
        try:
            keys, ok, error, source, at = _one(report, index)
        except ValueError as exc:
            problems.append(f"reports[{i}]: {exc}")
            continue
        if not keys or not all(index.known(k) for k in keys):
            unknown.append(_name(report))
            continue
        if ok:
            successes += 1
        elif at is not None and at < now - MAX_AGE:
            stale += 1
        elif at is not None and at > now + MAX_AHEAD:
            future += 1
        else:
            signals.extend(Signal(svc, backend, source, error) for svc, backend in keys)
    if problems:
        raise BadRequest("; ".join(problems[:10]))
    if unknown:
        raise BadRequest(f"unknown backends: {', '.join(unknown)}", status=422,
                         extra={"unknown": unknown})
    return Accepted(tuple(signals), successes, stale, future)


def _one(report: object, index: BackendIndex
         ) -> tuple[list[Key], bool, str, str, float | None]:
    if not isinstance(report, dict):
        raise ValueError("expected an object")
    extra = set(report) - KEYS
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(sorted(extra))}; "
                         f"expected {', '.join(sorted(KEYS))}")
    service = _text(report, "service", required=True)
    backend, address = _text(report, "backend"), _text(report, "address")
    if (backend is None) == (address is None):
        raise ValueError("give exactly one of `backend` and `address`")
    ok = report.get("ok")
    if not isinstance(ok, bool):
        raise ValueError("`ok` must be true or false")
    source = _text(report, "source")
    source = f"report from {source}" if source else "report"
    error = _text(report, "error") or "failed"
    assert service is not None
    if backend is not None:
        keys = [(service, backend)]
    else:
        assert address is not None
        keys = [k for k in index.at(address) if k[0] == service]
    return keys, ok, error, source, _time(report.get("time"))


def _text(report: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = report.get(key)
    if value is None:
        if required:
            raise ValueError(f"`{key}` is required")
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"`{key}` must be a non-empty string")
    return value[:MAX_TEXT]


def _time(value: object) -> float | None:
    """Unix seconds from an RFC 3339 string or a number."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str) and (seconds := unix(value)) is not None:
        return seconds
    raise ValueError("`time` must be RFC 3339 with a zone (2026-11-24T16:00:00Z) or Unix "
                     "seconds")


def _name(report: dict[str, Any]) -> str:
    return f"{report.get('service')}/{report.get('backend') or report.get('address')}"
