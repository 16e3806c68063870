"""GET /v1/stream (SPEC 6): server-sent events over the ASGI app.

A stream starts with a `retry:` hint, the held events after `Last-Event-ID`
(or `?after=SEQ`) as `event` messages, then a full `state` message per service
and a `summary`; then live `event`, `state` and `summary` messages from the
engine's `StreamHub`, and a `: heartbeat` comment every 15 seconds. It ends
when the client goes away, when the hub drops a client that fell behind, or
when the engine stops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import trio

from sentinel.engine.streamhub import StreamHub, Subscription, event_message

if TYPE_CHECKING:  # the app imports this module to hand it stream requests
    from sentinel.api.app import Receive, Send

PATH = "/v1/stream"
RETRY_MS = 1000  # how soon an EventSource reconnects after the stream ends
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
           (b"cache-control", b"no-store"),
           (b"x-accel-buffering", b"no")]  # a proxying nginx must not hold messages back


@dataclass(frozen=True, slots=True)
class Refusal:
    """A stream request answered with an error instead."""

    status: int
    error: str


def open_stream(hub: StreamHub, query: str, headers: dict[bytes, bytes], peer: str
                ) -> tuple[Subscription, list[bytes]] | Refusal:
    """A subscription and the messages it starts with (the held events asked for), or
    the status and error to answer instead (400 bad resume point, 503 too many streams
    or stopping). Last-Event-ID, sent by a reconnecting EventSource, wins over ?after=."""
    given = headers.get(b"last-event-id")
    if given is not None:
        text, name = given.decode("latin-1").strip(), "Last-Event-ID"
    else:
        values = parse_qs(query).get("after")
        text, name = (values[0] if values else ""), "after"
    if text and not re.fullmatch(r"-?[0-9]{1,19}", text):
        return Refusal(400, f"{name} must be an event seq (an integer), got {text[:40]!r}")
    opened = hub.subscribe(int(text) if text else None, peer)
    if opened is None:
        return Refusal(503, f"too many streams open ({hub.limits.max_streams}); try again "
                            "later" if hub.streams >= hub.limits.max_streams
                       else "sentinel is stopping")
    sub, backlog = opened
    return sub, [f"retry: {RETRY_MS}\n\n".encode(), *(event_message(e) for e in backlog)]


async def serve_stream(hub: StreamHub, sub: Subscription, first: list[bytes], head: bool,
                       receive: Receive, send: Send) -> None:
    """Answer one stream request with `sub` until the client leaves or the hub ends it."""
    try:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        if head:
            await send({"type": "http.response.body", "body": b""})
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
            await _body(send, b"".join(first))
            async for message in hub.snapshot():
                await _body(send, message)
            while batch := await sub.next_batch():
                await _body(send, b"".join(batch))
            await send({"type": "http.response.body", "body": b""})
            nursery.cancel_scope.cancel()
    finally:
        hub.unsubscribe(sub)


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Read the (empty) request body, then wait for the client to go away."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
