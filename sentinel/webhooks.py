"""Standard Webhooks signing (standardwebhooks.com), as SPEC 7 pins it.

A secret is `whsec_` followed by base64 of the key. A message is signed as
`v1,` + base64(HMAC-SHA256(key, "ID.TIMESTAMP.BODY")); while a secret is
rotated, several secrets give several signatures, space-separated in one
`webhook-signature` header, and a receiver accepts any one it can verify.
The timestamp is taken at each attempt, so a retry hours later still passes
a receiver's five-minute replay window, while the id stays the event's id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

PREFIX = "whsec_"
TOLERANCE = 300.0  # seconds: the replay window the published libraries use


class SignatureError(ValueError):
    """A secret cannot be decoded, or a message does not verify."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (the prefix is optional, as in the libraries)."""
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
