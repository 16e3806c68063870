"""Client traffic for end-to-end tests and benchmarks: one request per fresh connection
(steady, bounded, from a thread), and a keep-alive connection that stays on one backend.
Backends answer `{"name": NAME}` (tests/e2e/backend_server.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.e2e.helpers import LOOPBACK, wait_until


def fetch(port: int, timeout: float = 2.0) -> str | None:
    """One GET through 127.0.0.1:`port` on a fresh connection: the answering backend's name,
    or None when the request failed."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: sentinel-test\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        return None
    try:
        return str(json.loads(body)["name"])
    except (ValueError, KeyError):  # cut short: the backend died mid-answer
        return None


@dataclass
class Traffic:
    """Steady client traffic from a thread: one request per `gap` on a new connection,
    at most `limit` requests and `duration` seconds. Records (monotonic time, name|None)."""

    port: int
    gap: float = 0.02
    limit: int = 20_000
    duration: float = 120.0
    results: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.duration
        for _ in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self.results.append((time.monotonic(), fetch(self.port)))
            time.sleep(self.gap)

    def since(self, start: float) -> Counter[str | None]:
        """Answers per backend name (None: failed) for requests sent after `start`."""
        return Counter(name for t, name in list(self.results) if t >= start)

    def wait_for(self, count: int, start: float, timeout: float = 10.0) -> Counter[str | None]:
        """Wait until `count` requests were sent after `start`; their answers."""
        def enough() -> Counter[str | None] | None:
            answers = self.since(start)
            return answers if answers.total() >= count else None

        return wait_until(enough, timeout=timeout, what=f"{count} requests")


class KeepAlive:
    """One client connection kept open through the balancer to whichever backend it got."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection((LOOPBACK, port), timeout=3)
        self._buffer = b""

    def get(self) -> str:
        """One request on this connection; the answering backend's name."""
        self._sock.sendall(b"GET / HTTP/1.1\r\nHost: sentinel-test\r\n\r\n")
        while b"\r\n\r\n" not in self._buffer:
            self._recv()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            self._buffer = head + b"\r\n\r\n" + rest
            self._recv()
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
        self._buffer = rest[length:]
        return str(json.loads(rest[:length])["name"])

    def _recv(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("the balancer closed the kept-alive connection")
        self._buffer += chunk

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()
