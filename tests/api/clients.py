"""Talking to the API in tests: an Api that counts the requests it has finished, raw
HTTP/1.1 on a fresh connection, and a body Hypercorn refuses half-way."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from sentinel.api.app import Api, Receive, Scope, Send

BROKEN_CHUNK = b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"  # "zz" is no chunk size


class CountingApi(Api):
    """The real Api, counting the requests it has finished handling, so a test can wait
    for the handler itself (not only for an answer the server may send before it ends)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handled = 0
        self._changed = trio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle the request, then count it."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.handled += 1
                self._changed.set()
                self._changed = trio.Event()

    async def wait_handled(self, count: int) -> None:
        """Until `count` requests have been handled (bound it with trio.fail_after)."""
        while self.handled < count:
            await self._changed.wait()


async def send_raw(client: httpx.AsyncClient, request: bytes) -> bytes:
    """Send `request` as it is on a fresh connection to the API; everything answered
    until the server closes."""
    url = client.base_url
    stream = await trio.open_tcp_stream(url.host, url.port or 80)
    async with stream:
        await stream.send_all(request)
        answer = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                answer += chunk
    return answer
