"""nginx's error log as a passive source: a pure line parser and a follower on Trio.

nginx writes one line per failed attempt at an upstream, e.g. (http, then stream)::

    2026/11/24 16:00:00 [error] 812#812: *7 connect() failed (111: Connection refused)
        while connecting to upstream, client: 10.0.0.9, server: , request: "GET / HTTP/1.1",
        upstream: "http://10.0.0.11:8080/", host: "www.example"
    2026/11/24 16:00:01 [error] 812#812: *9 upstream timed out (110: Connection timed out)
        while connecting to upstream, client: 10.0.0.9, server: 0.0.0.0:443,
        upstream: "10.0.0.12:8443", bytes from/to client:0/0, bytes from/to upstream:0/0

(each on one line). `parse_line` finds the failure and the upstream address;
`BackendIndex` maps the address to the backends configured at it. `no live
upstreams` names the upstream group (`upstream: "http://web/"`): nginx's own
passive checks took every server out, so every backend of that service is
reported. Lines of other kinds, and addresses sentinel does not probe, are
ignored.

Following. `follow` polls the file every `POLL` (50 ms), so a line is seen
within one poll interval of being written (docs/performance.md's passive benchmark
measures it). Polling rather than inotify: rotation must be detected by
comparing the path's inode with the open file's anyway, an nginx log is in
the page cache, and 20 stat+read calls a second cost nothing next to a
dependency and a directory watch. Handled like `tail -F`: a rename rotation
(the old file is read to its end first, then the new one from its start), a
copytruncate (the file shrank below the read position: read from 0; lines
written between logrotate's copy and its truncate are lost by logrotate
itself, and a file that regrew past the old position within one poll is
not noticed), a file that does not exist yet (followed from its start once
it appears). An existing file is followed from its end: old errors are not
news.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import trio

from sentinel.passive.base import BackendIndex, Signal

log = logging.getLogger(__name__)
SOURCE = "nginx error log"
POLL = 0.05  # seconds between looks at the file
READ_MAX = 1 << 20  # bytes read per poll: a burst is taken over several polls, not at once
LINE_MAX = 16 * 1024  # nginx caps its own lines at 2,048 bytes (NGX_MAX_ERROR_STR)

# (pattern of the message, the error as reasons name it); the first match wins
FAILURES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"connect\(\) failed \((\d+: [^)]*)\) while connecting to upstream"),
     "connect() failed ({0})"),
    (re.compile(r"upstream timed out \((\d+: [^)]*)\)"), "upstream timed out"),
    (re.compile(r"no live upstreams"), "no live upstreams"),
    (re.compile(r"upstream prematurely closed connection"),
     "upstream prematurely closed connection"),
    (re.compile(r"recv\(\) failed \((104: [^)]*)\) while reading (?:response header )?from "
                r"upstream"), "recv() failed ({0})"),
)
_UPSTREAM = re.compile(r', upstream: "(?:[a-z][a-z0-9+.-]*://)?([^/"]+)')


@dataclass(frozen=True, slots=True)
class LogFailure:
    """One failure nginx logged: the upstream address (or, for `no live upstreams`, the
    upstream group's name) and the error as reasons name it."""

    upstream: str
    error: str
    group: bool  # True: `upstream` is an upstream block's name, not a server address


def parse_line(line: str) -> LogFailure | None:
    """The upstream failure on one error-log line, or None for any other line."""
    upstream = _UPSTREAM.search(line)
    if upstream is None:
        return None
    for pattern, text in FAILURES:
        found = pattern.search(line)
        if found is not None:
            return LogFailure(upstream.group(1), text.format(*found.groups()),
                              group=text == "no live upstreams")
    return None


def signals(line: str, index: BackendIndex) -> list[Signal]:
    """The signals one line gives: one per backend the failure maps to."""
    failure = parse_line(line)
    if failure is None:
        return []
    keys = index.upstream(failure.upstream) if failure.group else index.at(failure.upstream)
    return [Signal(service, backend, SOURCE, failure.error) for service, backend in keys]


class LogTail:
    """The file side of `follow` (synchronous; `poll` is called every POLL): reads what
    was appended since the last poll, across rotation, and returns whole lines."""

    __slots__ = ("_fd", "_ino", "_partial", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._partial = b""
        if os.path.exists(path):
            with contextlib.suppress(OSError):  # unreadable: `poll` retries and says why
                self._open(from_end=True)

    def close(self) -> None:
        """Close the open file, if any."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def poll(self) -> list[str]:
        """Whole lines appended since the last poll (rotation handled, see the module)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None  # renamed away and not recreated yet: finish the old file
        if self._fd is None:
            if st is None:
                return []
            self._open(from_end=False)
            if self._fd is None:
                return []  # gone again between stat and open
        if st is not None and (st.st_dev, st.st_ino) == self._ino \
                and st.st_size < os.lseek(self._fd, 0, os.SEEK_CUR):
            os.lseek(self._fd, 0, os.SEEK_SET)  # copytruncate
            self._partial = b""
        lines = self._read()
        if st is not None and (st.st_dev, st.st_ino) != self._ino:
            lines += self._flush()  # the old file is read to its end: now the new one
            self.close()
            self._open(from_end=False)
            lines += self._read()
        return lines

    def _open(self, *, from_end: bool) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        st = os.fstat(self._fd)
        self._ino = (st.st_dev, st.st_ino)
        self._partial = b""
        if from_end:
            os.lseek(self._fd, 0, os.SEEK_END)

    def _read(self) -> list[str]:
        if self._fd is None:
            return []
        data = os.read(self._fd, READ_MAX)
        if not data:
            return []
        chunk = self._partial + data
        *whole, self._partial = chunk.split(b"\n")
        if len(self._partial) > LINE_MAX:
            self._partial = b""  # not a line nginx writes: drop it rather than grow
        return [line.decode("utf-8", "replace") for line in whole]

    def _flush(self) -> list[str]:
        """What is left of the old file: its last line even without a newline."""
        lines = self._read()
        rest, self._partial = self._partial, b""
        return lines + ([rest.decode("utf-8", "replace")] if rest else [])


async def follow(path: str, index: BackendIndex, report: Callable[[Signal], None], *,
                 interval: float = POLL,
                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Report every upstream failure written to the error log at `path`, until cancelled.
    Started once the existing end of the file is known (so a test can write after it)."""
    tail = LogTail(path)
    trouble = ""
    try:
        task_status.started()
        while True:
            try:
                lines = tail.poll()
            except OSError as exc:  # permissions changed, say: keep trying, say so once
                if str(exc) != trouble:
                    trouble = str(exc)
                    log.warning("%s: cannot read: %s", path, exc.strerror or exc)
                await trio.sleep(max(interval, 1.0))
                continue
            trouble = ""
            for line in lines:
                for signal in signals(line, index):
                    report(signal)
            await trio.sleep(interval)
    finally:
        tail.close()
