"""The webhook protocol: Standard Webhooks signing (standardwebhooks.com), as SPEC 7 pins
it, and what a receiver's answer means for a delivery.

A secret is `whsec_` followed by base64 of the key. A message is signed as
`v1,` + base64(HMAC-SHA256(key, "ID.TIMESTAMP.BODY")); while a secret is
rotated, several secrets give several signatures, space-separated in one
`webhook-signature` header, and a receiver accepts any one it can verify.
The timestamp is taken at each attempt, so a retry hours later still passes
a receiver's five-minute replay window, while the id stays the event's id.

Answers (`classify`, pure): any 2xx is delivered; 5xx, 408 and 429 are
retried (429 and 503 after Retry-After when given), as are redirects, which
are not followed; any other 4xx is permanent. Retries wait by exponential
backoff with full jitter (`sentinel.backoff`): uniform in
[0, min(max, initial * 2^(n-1))].
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum

from sentinel.errors import SignatureError

PREFIX = "whsec_"
TOLERANCE = 300.0  # seconds: the replay window the published libraries use


def decode_secret(secret: str, *, signing: bool = False) -> bytes:
    """The HMAC key of a `whsec_...` secret. Verifying, the prefix is optional, as in the
    libraries; `signing` (the sink, `webhook test`) requires it: a bare string that happens
    to be base64 ("hunter2") would sign with a key nobody meant."""
    if signing and not secret.startswith(PREFIX):
        raise SignatureError("a webhook secret must be whsec_ followed by base64 (the "
                             "Standard Webhooks form)")
    text = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("a webhook secret must be whsec_ followed by base64") from exc
    if not key:
        raise SignatureError("a webhook secret must not be empty")
    return key


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,SIG` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys)


def headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes
            ) -> dict[str, str]:
    """The three Standard Webhooks headers plus the JSON content type."""
    return {"content-type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(keys, msg_id, timestamp, body)}


def verify(secret: str, body: bytes, received: Mapping[str, str], now: float) -> str:
    """Check a received message as a receiver would; returns its id.

    Raises SignatureError when a header is missing, the timestamp is more
    than five minutes from `now` (a replay), or no `v1` signature matches.
    """
    lowered = {k.lower(): v for k, v in received.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    given = lowered.get("webhook-signature", "")
    if not (msg_id and stamp and given):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isdigit():
        raise SignatureError(f"webhook-timestamp is not Unix seconds: {stamp!r}")
    if abs(now - int(stamp)) > TOLERANCE:
        raise SignatureError(f"webhook-timestamp {stamp} is more than 5 minutes from now")
    expected = sign([decode_secret(secret)], msg_id, int(stamp), body)
    if any(hmac.compare_digest(expected, candidate) for candidate in given.split()):
        return msg_id
    raise SignatureError("no matching v1 signature")


class Verdict(Enum):
    """What one attempt means for its entry."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's verdict, its error text and the receiver's Retry-After (seconds)."""

    verdict: Verdict
    error: str = ""
    retry_after: float | None = None


RETRIED_STATUS = frozenset({408, 429})
RETRY_AFTER_STATUS = frozenset({429, 503})


def classify(status: int, retry_after: str | None, body: str, now: float) -> Outcome:
    """Map an HTTP answer to a verdict (pure: `now` is Unix time for HTTP-date Retry-After)."""
    if 200 <= status < 300:
        return Outcome(Verdict.DELIVERED)
    error = f"HTTP {status}" + (f": {body.strip()[:200]}" if body.strip() else "")
    if status >= 500 or status in RETRIED_STATUS:
        wait = parse_retry_after(retry_after, now) if status in RETRY_AFTER_STATUS else None
        return Outcome(Verdict.RETRY, error, wait)
    if 400 <= status < 500:
        return Outcome(Verdict.DEAD, error)
    return Outcome(Verdict.RETRY, error)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as delay-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None

