"""systemd's side of the notify protocol, for tests: a bound unix datagram socket that
collects what sentinel sends to $NOTIFY_SOCKET."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest


class NotifyListener:
    """systemd's side of $NOTIFY_SOCKET: a bound unix datagram socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    @classmethod
    @contextlib.contextmanager
    def bound(cls, address: str) -> Iterator[NotifyListener]:
        """A listener on `address` (a NUL first for the abstract namespace), closed after."""
        listener = cls(address)
        try:
            yield listener
        finally:
            listener.sock.close()

    def messages(self) -> list[str]:
        """Every datagram received so far, oldest first (no waiting)."""
        self.sock.setblocking(False)
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def next(self, timeout: float = 20.0) -> tuple[float, set[str]]:
        """The next datagram's arrival time (time.monotonic) and its assignments; the
        test fails when none arrives within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            pytest.fail(f"no notify message within {timeout:g}s")
        return time.monotonic(), set(data.decode().split("\n"))

    def until(self, assignment: str, timeout: float = 20.0) -> list[set[str]]:
        """Every message up to and including the first carrying `assignment`."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            _, message = self.next(max(0.1, deadline - time.monotonic()))
            seen.append(message)
            if assignment in message:
                return seen
