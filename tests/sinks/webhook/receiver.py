"""A real HTTP receiver on 127.0.0.1 for webhook tests (Trio + h11, HTTP/1.1 keep-alive).

Each request is recorded (headers, body, arrival time on Trio's clock) and
answered by a script: a function from the request to a `Reply` (status,
headers, a delay before answering). Runs in the test's nursery, so it stops
with the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio
from standardwebhooks import Webhook


@dataclass(frozen=True, slots=True)
class Request:
    """One request as it arrived."""

    headers: dict[str, str]
    body: bytes
    at: float  # trio.current_time() on arrival

    @property
    def event(self) -> dict[str, Any]:
        """The JSON body."""
        doc: dict[str, Any] = json.loads(self.body)
        return doc


@dataclass(frozen=True, slots=True)
class Reply:
    """How to answer: status, extra headers, seconds to wait first."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


Script = Callable[[Request, list[Request]], Reply]


def always_ok(request: Request, seen: list[Request]) -> Reply:
    """Every request is accepted at once."""
    return Reply()


@dataclass
class Receiver:
    """Records requests and answers them by `script`."""

    script: Script = always_ok
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    arrived: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self, nursery: trio.Nursery) -> Receiver:
        """Listen on a free loopback port (in `nursery`)."""
        listeners = await nursery.start(partial(trio.serve_tcp, self._serve, 0,
                                                host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    def accepted(self) -> list[Request]:
        """The requests answered 2xx, in arrival order."""
        return [r for r, ok in self._answers if ok]

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """The 2xx-answered events, each verified with the standardwebhooks library."""
        hook = Webhook(secret)
        return [hook.verify(r.body, r.headers) for r in self.accepted()]

    def __post_init__(self) -> None:
        self._answers: list[tuple[Request, bool]] = []

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read(conn, stream)
                if request is None:
                    return
                reply = self.script(request, self.requests)
                self.requests.append(request)
                await trio.sleep(reply.delay)
                self._answers.append((request, 200 <= reply.status < 300))
                self.arrived.set()
                self.arrived = trio.Event()
                headers = [("content-length", "0"), *reply.headers]
                await stream.send_all(conn.send(h11.Response(status_code=reply.status,
                                                             headers=headers)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _read(self, conn: h11.Connection, stream: trio.SocketStream) -> Request | None:
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Request(headers, body, trio.current_time())
            else:  # ConnectionClosed or PAUSED
                return None

    async def wait_for(self, count: int) -> None:
        """Until `count` requests have been answered 2xx."""
        while len(self.accepted()) < count:
            await self.arrived.wait()
