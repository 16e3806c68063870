"""Configuration of the `webhook` sink (it takes no per-service options).

    sinks:
      hook: {type: webhook, url: https://ops.example/hooks/sentinel,
             secret: [whsec_new..., whsec_old...], timeout: 10s, initial_delay: 1s,
             max_delay: 5m, give_up_after: 24h, max_pending: 100000, max_age: 168h,
             concurrency: 8}

With several secrets every message is signed with each (rotation, SPEC 7).
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.config.node import Node
from sentinel.config.tables import Duration, Field, Int, Rule, Section, Url, scalar
from sentinel.errors import SignatureError
from sentinel.sinks.webhook.signing import (
    decode_secret,
)


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """Where to POST, how to sign, how to retry and how much to keep."""

    url: str
    secrets: tuple[str, ...]
    timeout: float = 10.0
    initial_delay: float = 1.0
    max_delay: float = 300.0
    give_up_after: float = 86400.0
    max_pending: int = 100_000
    max_age: float = 7 * 86400.0
    concurrency: int = 8


def _secrets(node: Node) -> tuple[str, ...]:
    """One `whsec_` secret, or several while rotating (each is signed with)."""
    items = node.as_list() if node.is_list else [node]
    if not items:
        raise node.error("needs at least one whsec_ secret")
    for item in items:
        try:
            decode_secret(item.as_str(), signing=True)
        except SignatureError as exc:
            raise item.error(str(exc)) from None
    return tuple(item.as_str() for item in items)


_D = WebhookOptions(url="", secrets=())
_SECRET = scalar({"type": "string", "pattern": r"^whsec_[A-Za-z0-9+/]+=*$"})
_COUNT = Int(1, 10_000_000)
OPTIONS = Section(
    Field("url", Url(), "where events are POSTed", required="a webhook sink needs `url`"),
    Field("secret", Rule(_secrets, {"anyOf": [
        _SECRET, {"type": "array", "items": _SECRET, "minItems": 1}]}),
          "whsec_ + base64 key (Standard Webhooks); a list while rotating",
          required="a webhook sink needs `secret`"),
    Field("timeout", Duration(), "per attempt", _D.timeout),
    Field("initial_delay", Duration(), "first retry backoff (full jitter, doubling)",
          _D.initial_delay),
    Field("max_delay", Duration(), "the longest backoff", _D.max_delay),
    Field("give_up_after", Duration(), "an event still failing this long after it was "
          "queued is dead-lettered", _D.give_up_after),
    Field("max_pending", _COUNT, "outbox bound (dead letters count): the oldest are "
          "dropped, dead letters first", _D.max_pending),
    Field("max_age", Duration(), "entries older than this are dropped", _D.max_age),
    Field("concurrency", _COUNT, "attempts in flight (to different backends)",
          _D.concurrency))


def parse_options(node: Node) -> WebhookOptions:
    """`{type: webhook, url: ..., secret: whsec_... | [whsec_..., ...], ...}`."""
    e = OPTIONS.parse(node)
    OPTIONS.require(node, e)
    return WebhookOptions(
        OPTIONS.get(e, "url"), OPTIONS.get(e, "secret"), timeout=OPTIONS.get(e, "timeout"),
        initial_delay=OPTIONS.get(e, "initial_delay"), max_delay=OPTIONS.get(e, "max_delay"),
        give_up_after=OPTIONS.get(e, "give_up_after"),
        max_pending=OPTIONS.get(e, "max_pending"), max_age=OPTIONS.get(e, "max_age"),
        concurrency=OPTIONS.get(e, "concurrency"))


def parse_binding(node: Node) -> None:
    """A service's reference takes no options."""
    node.as_map(set())
