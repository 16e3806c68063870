"""Standard Webhooks signing, checked against the published `standardwebhooks` library."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from sentinel.errors import SignatureError
from sentinel.sinks.webhook.signing import decode_secret, headers, sign, verify
from tests.sinks.webhook.conftest import OTHER_SECRET, SECRET

BODY = b'{"id":"msg_1","to":"down"}'


def test_signature_matches_the_library() -> None:
    """One secret gives exactly the `v1,...` signature the library computes."""
    now = int(time.time())
    ours = sign([decode_secret(SECRET)], "msg_1", now, BODY)
    theirs = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(now, UTC), BODY.decode())
    assert ours == theirs


@pytest.mark.parametrize("secret", [SECRET, OTHER_SECRET])
def test_rotation_signatures_verify_with_either_secret(secret: str) -> None:
    """Two secrets give two space-separated signatures; a receiver holding either accepts."""
    sent = headers([decode_secret(SECRET), decode_secret(OTHER_SECRET)], "msg_1",
                   int(time.time()), BODY)
    assert len(sent["webhook-signature"].split(" ")) == 2
    assert Webhook(secret).verify(BODY, sent) == {"id": "msg_1", "to": "down"}
    assert verify(secret, BODY, sent, time.time()) == "msg_1"


def test_tampered_body_is_rejected() -> None:
    """A changed body fails verification in the library and in our helper."""
    sent = headers([decode_secret(SECRET)], "msg_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY + b" ", sent)
    with pytest.raises(SignatureError, match="no matching"):
        verify(SECRET, BODY + b" ", sent, time.time())


def test_replay_older_than_five_minutes_is_rejected() -> None:
    """The helper, like the library, refuses a timestamp more than 5 minutes old."""
    sent = headers([decode_secret(SECRET)], "msg_1", int(time.time()) - 301, BODY)
    with pytest.raises(SignatureError, match="5 minutes"):
        verify(SECRET, BODY, sent, time.time())
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, sent)


@pytest.mark.parametrize("bad", ["whsec_", "whsec_!!notbase64!!", ""])
def test_bad_secret_is_an_error(bad: str) -> None:
    """An empty or non-base64 secret is refused with a message."""
    with pytest.raises(SignatureError):
        decode_secret(bad)


def test_signing_requires_the_whsec_prefix() -> None:
    """Verifying takes a bare base64 key as the libraries do; signing (the sink, `webhook
    test`) refuses one: "hunter2" is base64 too, and would sign with a key nobody meant."""
    bare = SECRET.removeprefix("whsec_")
    assert decode_secret(bare) == decode_secret(SECRET, signing=True)
    with pytest.raises(SignatureError, match="must be whsec_ followed by base64"):
        decode_secret(bare, signing=True)


def test_missing_headers_are_rejected() -> None:
    """A message without the three headers does not verify."""
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, BODY, {"webhook-id": "x"}, time.time())
