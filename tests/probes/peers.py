"""Scripted peers for the probe tests: handlers a loopback server runs per connection,
canned HTTP answers, and TIME_WAIT accounting from /proc/net/tcp."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from tests.probes.conftest import read_head

# The probes' timeout in these tests: past the trickled answers' short pauses (0.05 s a
# line), short of the slow ones (0.3 s a line, an answer 1 s late).
TIMEOUT = 0.4




def reply(raw: bytes, delay: float = 0.0) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """A handler that reads the request head and answers `raw` (after `delay`)."""

    async def handle(stream: trio.abc.Stream) -> None:
        if await read_head(stream) is None:
            return
        await trio.sleep(delay)
        await stream.send_all(raw)

    return handle


def trickle(raw: bytes, pause: float) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """Answer `raw` one line at a time with `pause` between lines (slow headers)."""

    async def handle(stream: trio.abc.Stream) -> None:
        await stream.receive_some(4096)
        for line in raw.split(b"\r\n"):
            await stream.send_all(line + b"\r\n")
            await trio.sleep(pause)

    return handle


OK_BODY = b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"status": "ok"}'
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"a\r\n{\"status\":\r\n6;ext=1\r\n \"ok\"}\r\n0\r\n\r\n")
CLOSE_DELIMITED = b'HTTP/1.0 200 OK\r\n\r\n{"status": "ok"}'


def time_waits(port: int) -> set[tuple[str, str]]:
    """(local, remote) of sockets in TIME_WAIT to or from `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        ports = {int(local.split(":")[1], 16), int(remote.split(":")[1], 16)}
        if state == "06" and port in ports:
            found.add((local, remote))
    return found


def new_time_waits(port: int, before: set[tuple[str, str]]) -> int:
    """TIME_WAIT sockets of `port` that were not there `before` (a port number can be
    reused while an older connection through it still sits in TIME_WAIT)."""
    return len(time_waits(port) - before)
