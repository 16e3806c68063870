"""Watched connections in the probe loop: the sockets behind `sentinel.engine.watch`.

The probe loop owns one poller (an epoll object in production); each watched
backend's idle connection is registered in it beside the running checks (EPOLLIN |
EPOLLRDHUP), so a held connection costs no task and no wakeup, and a close or
reset wakes the loop like any ready check. `Watches` moves each connection through
its `Watch` (connect when due, held, lost, reconnect) and tells the host when a
loss is a hint: the host probes the group's members at once. A host name is
connected to at the address the loop's resolver task last found for it. A stopped
group's connection is closed by `drop`.

What the backend sees: one connection, opened and then left alone (no payload;
TCP keepalive only with `watch: {keepalive: ...}`); closed with an RST when sentinel
stops watching (no TIME_WAIT on sentinel's side, as probes close).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import math
import os
import random
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sentinel.backoff import Backoff
from sentinel.config.model import ProbeConfig
from sentinel.engine.probegroups import ProbeGroup
from sentinel.engine.watch import QUIET, Phase, Watch
from sentinel.errors import ResolveError
from sentinel.probes import rawsock
from sentinel.probes.base import classify
from sentinel.probes.rawsock import Address

if TYPE_CHECKING:  # the probe loop imports this module
    from sentinel.engine.probeloop import Poller, Sock

_HELD = select.EPOLLIN | select.EPOLLRDHUP
KEEPALIVE_PROBES = 3  # unanswered keepalive probes before the kernel resets the connection
Where = Callable[[], Address | ResolveError | None]
"""Where a watched backend is now (see `ProbeLoop._address`); None: not known yet."""


class WatchHost(Protocol):
    """What the watches report to (the engine, through the probe loop)."""

    def watch_lost(self, group: ProbeGroup, hint: str) -> None:
        """The watched connection of `group` was lost in a way that needs a probe now."""


@dataclass(frozen=True, slots=True)
class WatchStatistics:
    """Watched connections: backends watched and connections held now, and since start
    how many the backends closed or reset and how many losses brought a probe forward."""

    watched: int
    held: int
    lost: int
    hints: int

    def to_json(self) -> dict[str, int]:
        """The `watch` object of the state document's `engine`."""
        return {"watched": self.watched, "held": self.held, "lost": self.lost,
                "hints": self.hints}


class Watched:
    """One group's watched connection: its policy, its socket, its timer."""

    __slots__ = ("group", "keepalive", "port", "sock", "source", "timer", "watch", "where")

    def __init__(self, group: ProbeGroup, watch: Watch, where: Where, port: int,
                 keepalive: float | None, source: Address | None) -> None:
        self.group = group
        self.watch = watch
        self.where = where
        self.port = port
        self.keepalive = keepalive
        self.source = source
        self.sock: Sock | None = None
        self.timer = -1  # the seq of its live entry in the timer heap


class Watches:
    """Every watched connection of one probe loop."""

    def __init__(self, poller: Poller, host: WatchHost,
                 rng: random.Random | None = None) -> None:
        self._poller = poller
        self._host = host
        self._rng = rng or random.Random()
        self._by_fd: dict[int, Watched] = {}
        self._by_group: dict[ProbeGroup, Watched] = {}
        self._timers: list[tuple[float, int, Watched]] = []
        self._seq = itertools.count()
        self._lost = 0
        self._hints = 0

    def __len__(self) -> int:
        """Open sockets (held or connecting)."""
        return len(self._by_fd)

    def add(self, group: ProbeGroup, config: ProbeConfig, where: Where, now: float) -> None:
        """Watch `group`'s backend (its first member's port, at `where`) from now."""
        assert config.watch is not None
        backoff = Backoff(initial=config.timing.interval,
                          maximum=max(config.timing.interval, QUIET))
        watch = Watch(config.timing.interval, config.timing.timeout,
                      lambda n: backoff.delay(n, self._rng))
        source = rawsock.literal(config.source) if config.source is not None else None
        watched = self._by_group[group] = Watched(
            group, watch, where, group.members[0].target.port, config.watch.keepalive, source)
        self._schedule(watched)
        self.tick(now)

    def drop(self, group: ProbeGroup) -> None:
        """Stop watching `group` (a regroup stopped it)."""
        watched = self._by_group.pop(group, None)
        if watched is not None:
            self._close(watched)
            watched.timer = -1

    def ready(self, fd: int, mask: int, now: float) -> bool:
        """Handle epoll's `mask` for `fd`; False when `fd` is not a watched connection."""
        watched = self._by_fd.get(fd)
        if watched is None:
            return False
        if watched.watch.phase is Phase.CONNECTING:
            self._connect_done(watched, mask, now)
        else:
            self._readable(watched, now)
        return True

    def tick(self, now: float) -> None:
        """Connect those due, give up connects past their timeout."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, seq, watched = heapq.heappop(timers)
            if seq != watched.timer:
                continue  # replaced, or dropped
            if watched.watch.phase is Phase.CONNECTING:
                self._close(watched)
                self._failed(watched, now, "connect timed out")
            else:
                self._connect(watched, now)

    def wake_at(self) -> float:
        """When `tick` has something to do next."""
        timers = self._timers
        while timers and timers[0][1] != timers[0][2].timer:
            heapq.heappop(timers)
        return timers[0][0] if timers else math.inf

    def probe_passed(self, group: ProbeGroup, now: float) -> None:
        """A probe of `group` passed: a watch whose connects were failing tries again."""
        watched = self._by_group.get(group)
        if watched is not None and watched.watch.phase is Phase.WAITING:
            watched.watch.probe_passed(now)
            self._schedule(watched)

    def statistics(self) -> WatchStatistics:
        """Held connections, losses and hints (see WatchStatistics)."""
        held = sum(1 for w in self._by_fd.values() if w.watch.phase is Phase.HELD)
        return WatchStatistics(len(self._by_group), held, self._lost, self._hints)

    def close(self) -> None:
        """Close every connection (the loop ends)."""
        for watched in list(self._by_group.values()):
            self.drop(watched.group)

    # -- inside -------------------------------------------------------------------------

    def _schedule(self, watched: Watched) -> None:
        due = watched.watch.due
        if math.isinf(due) and due > 0:
            watched.timer = -1
            return
        watched.timer = next(self._seq)
        heapq.heappush(self._timers, (due, watched.timer, watched))

    def _connect(self, watched: Watched, now: float) -> None:
        address = watched.where()
        watched.watch.connect(now)
        if not isinstance(address, tuple):  # the probes say what is wrong with the name
            self._failed(watched, now, "its name unresolved")
            return
        family, ip = address
        try:
            sock = self._poller.socket(family, False, watched.source)
        except OSError as exc:
            self._failed(watched, now, classify(exc)[1])
            return
        watched.sock = sock
        self._by_fd[sock.fileno()] = watched
        try:
            if watched.keepalive is not None:
                seconds = max(1, round(watched.keepalive))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
            err = sock.connect_ex((ip, watched.port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
            self._poller.register(sock.fileno(), select.EPOLLOUT)
        except OSError as exc:
            self._close(watched)
            self._failed(watched, now, classify(exc)[1])
            return
        self._schedule(watched)  # the connect's timeout

    def _connect_done(self, watched: Watched, mask: int, now: float) -> None:
        sock = watched.sock
        assert sock is not None
        if mask & select.EPOLLERR:  # else connected: no SO_ERROR to ask for
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._close(watched)
            self._failed(watched, now, classify(OSError(err, os.strerror(err)))[1])
            return
        self._poller.modify(sock.fileno(), _HELD)
        watched.watch.connected(now)
        self._schedule(watched)

    def _readable(self, watched: Watched, now: float) -> None:
        """The held connection has something: bytes the server sent (dropped: nothing is
        asked of it), or its end."""
        sock = watched.sock
        assert sock is not None
        try:
            if sock.recv(rawsock.RECV_SIZE):
                return  # a greeting or an unasked answer; the connection stays
            how = "closed"
        except BlockingIOError:
            return
        except OSError as exc:
            how = "reset" if exc.errno == errno.ECONNRESET else classify(exc)[1]
        self._lost += 1
        self._close(watched)
        hint = watched.watch.lost(now, how)
        if hint is not None:
            self._hint(watched, hint)
        self._schedule(watched)
        self.tick(now)  # the check after a loss connects at once

    def _failed(self, watched: Watched, now: float, error: str) -> None:
        hint = watched.watch.refused(now, error)
        if hint is not None:
            self._hint(watched, hint)
        self._schedule(watched)

    def _hint(self, watched: Watched, hint: str) -> None:
        self._hints += 1
        self._host.watch_lost(watched.group, f"watched connection {hint}")

    def _close(self, watched: Watched) -> None:
        sock = watched.sock
        if sock is not None:
            del self._by_fd[sock.fileno()]
            self._poller.discard(sock)  # an RST (SO_LINGER 0); leaves the poller's set
            watched.sock = None
