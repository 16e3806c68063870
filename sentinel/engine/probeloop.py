"""The probe loop: one Trio task drives every lean check through one epoll object.

Why. With one Trio task per probe group, each check pays for several Trio
wakeups (`sleep_until`, `wait_writable`, `wait_readable`, a cancel scope for
its timeout), and that is most of its cost. Measured in-process on this
2-core VM: 105 us of CPU per plain TCP check and 167 us per HTTP check at
1,000 backends, and at 5,000 backends checks fell behind (p99 lateness 52 ms
for TCP, 216 ms for HTTP). Driven from here the same checks cost 57 and
89 us at 1,000 backends, 36 and 60 us at 5,000, on time (p99 under 8 ms).
HAProxy 2.6 spends about 26 and 45 us (README, Performance: Scale).

How. Plain `tcp` and `http` checks of IP-literal backends (`accepts`) run
here instead. The loop owns a `select.epoll` object and a heap of due probe
groups (`Agenda`). Each pass, in a tight synchronous loop, it reads every
ready socket and moves its check on (connect, send, read: the same
`sentinel.probes.exchange` exchanges the per-task path feeds, so results and
texts are the same), then times out checks past their deadline, then starts
every group that is due and reads once more (a loopback connect is often
complete when `connect_ex` returns). Then it awaits `wait_readable` on the
epoll fd with a deadline of the next start or timeout, no sooner than BATCH
from now: checks due within a few milliseconds of each other start in one
pass and share the cost of one Trio wakeup. A check that started within
BATCH of its due time counts its next interval from the due time, so the
batching does not drift the schedule into ever bigger clumps.

Kept from the per-task path: probe groups are shared across services; the
global in-flight cap (`max_in_flight`) is the engine's CapacityLimiter, taken
per check without blocking: a due group that finds no slot stays due and is
retried BATCH later, so overload stretches intervals instead of failing
checks; a check's timeout runs from when it really started, not from when it
was due; lateness is reported to the engine at each start. Overload must not
look like an outage: ready sockets are read before deadlines are judged, and
a check that this pass only just moved on (its connect or request waited on
a busy loop) is judged after the next poll, once: a backend that trickles a
byte at a time moves on every pass, and sparing it every time kept it alive
for seconds past a 500 ms timeout. Results go to the engine
synchronously (`LoopHost.probe_done`); the engine hands any commit (verdict,
state or weight changed) to the committer's task (`sentinel.engine.commit`), so
this loop never awaits persistence or sinks. Nothing a check does raises out of the loop: an
exception from a probe's exchange (building its request, judging its answer)
becomes that check's ERROR result (`crashed`), and the other checks go on.

Host names need an async resolver: their checks stay on the per-task path,
as do `https`, TLS `tcp` and `script` checks.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import math
import os
import select
import socket
from collections.abc import Callable
from functools import partial
from typing import Protocol, TypeGuard

import trio

from sentinel.engine.probegroups import ProbeGroup
from sentinel.engine.watching import Watches, WatchStatistics, close_held
from sentinel.model import ProbeResult
from sentinel.probes import rawsock
from sentinel.probes.base import Probe, crashed
from sentinel.probes.exchange import Exchange, LeanProbe

BATCH = 0.005  # checks due within 5 ms of each other start in one pass
_CONNECTING, _SENDING, _READING = 0, 1, 2


def accepts(probe: Probe, host: str) -> TypeGuard[LeanProbe]:
    """Whether checks of `probe` against `host` can run in the loop: a lean probe
    (plain tcp, http) and an IP literal (a host name needs an async resolver)."""
    return isinstance(probe, LeanProbe) and probe.lean and rawsock.literal(host) is not None


class LoopHost(Protocol):
    """What the loop reports to (the engine); also what its watches report to."""

    def probe_started(self, lateness: float) -> None:
        """A check started `lateness` seconds after it was due."""

    def probe_done(self, group: ProbeGroup, result: ProbeResult, started: float, now: float,
                   start_unix: float) -> None:
        """A check finished: judge it and set its members' `next_due` (sync, no await),
        counting the interval from `started` (the due time, if the check was on time)."""

    def watch_lost(self, group: ProbeGroup, hint: str) -> None:
        """`group`'s watched connection was lost (`hint` says how): probe it now."""


class Running:
    """One check in flight."""

    exchange: Exchange  # set by the loop once the check has its slot (building it may fail)
    __slots__ = ("anchor", "deadline", "exchange", "group", "moved", "pending", "probe",
                 "sock", "spared", "start_unix", "started", "step")

    def __init__(self, group: ProbeGroup, probe: LeanProbe, started: float,
                 start_unix: float, anchor: float | None = None) -> None:
        self.group = group
        self.probe = probe
        self.started = started
        self.start_unix = start_unix
        self.anchor = started if anchor is None else anchor  # what the next due counts from
        self.deadline = started + probe.timeout  # from the real start, not the due time
        self.moved = -1  # the loop pass that last moved this check on
        self.spared = False  # past its deadline once already, judged after the next poll
        self.sock: socket.socket | None = None  # None until connecting, and once finished
        self.step = _CONNECTING
        self.pending = b""  # request bytes not yet sent


class Agenda:
    """When groups are due and when running checks time out (pure: times are passed in)."""

    __slots__ = ("_deadlines", "_due", "_queued", "_seq")

    def __init__(self) -> None:
        self._due: list[tuple[float, int, ProbeGroup, LeanProbe]] = []
        self._deadlines: list[tuple[float, int, Running]] = []
        self._seq = itertools.count()  # ties break by insertion; groups are not comparable
        self._queued: dict[ProbeGroup, int] = {}  # group -> seq of its live entry in _due

    def add(self, group: ProbeGroup, probe: LeanProbe) -> None:
        """Schedule `group`'s next check at its members' earliest `next_due` (an earlier
        entry of the group, if any, is dropped when it comes up)."""
        seq = self._queued[group] = next(self._seq)
        heapq.heappush(self._due, (group.due(), seq, group, probe))

    def hurry(self, group: ProbeGroup, probe: LeanProbe) -> bool:
        """Re-schedule a waiting group at its (earlier) `due()`; False while its check
        runs (it is scheduled again when that ends)."""
        if group not in self._queued:
            return False
        self.add(group, probe)
        return True

    def next_due(self, now: float) -> tuple[float, ProbeGroup, LeanProbe] | None:
        """The earliest group due by `now`, left in place (`take` removes it); groups a
        regroup stopped, and entries a `hurry` replaced, are dropped on the way."""
        due = self._due
        while due:
            when, seq, group, probe = due[0]
            if group.stopped or self._queued.get(group) != seq:
                heapq.heappop(due)
                if group.stopped:
                    self._queued.pop(group, None)
                continue
            return (when, group, probe) if when <= now else None
        return None

    def take(self) -> None:
        """Remove the group `next_due` returned: its check is starting."""
        _, _, group, _ = heapq.heappop(self._due)
        del self._queued[group]

    def watch(self, running: Running) -> None:
        """Time `running` out at its deadline unless it finishes first."""
        heapq.heappush(self._deadlines, (running.deadline, next(self._seq), running))

    def expired(self, now: float) -> Running | None:
        """A running check whose deadline has passed by `now` (finished ones are skipped)."""
        deadlines = self._deadlines
        while deadlines:
            deadline, _, running = deadlines[0]
            if running.sock is not None and deadline > now:
                return None
            heapq.heappop(deadlines)
            if running.sock is not None:
                return running
        return None

    def wake_at(self, now: float, batch: float) -> float:
        """When to look again: the next start or deadline, but not before `now + batch`,
        so that checks due close together share one pass."""
        wake = math.inf
        if self._due:
            wake = self._due[0][0]
        if self._deadlines:
            wake = min(wake, self._deadlines[0][0])
        return max(wake, now + batch)


class ProbeLoop:
    """Runs lean checks for the groups `add`ed to it; see the module docstring."""

    def __init__(self, host: LoopHost, limiter: trio.CapacityLimiter,
                 wall: Callable[[], float], batch: float = BATCH) -> None:
        self._host = host
        self._limiter = limiter
        self._wall = wall
        self._batch = batch
        self._agenda = Agenda()
        self._running: dict[int, Running] = {}  # by file descriptor
        self._epoll = select.epoll()  # closed when `run` ends: a loop runs once
        self._watches = Watches(self._epoll, host)  # `watch:` connections, same epoll
        self._sleep: trio.CancelScope | None = None  # the loop's wait, while it waits
        self._passes = 0

    def add(self, group: ProbeGroup, probe: LeanProbe) -> None:
        """Probe `group` from its `next_due` on, until it is stopped (regroup); with
        `watch:` in its probe settings, hold a watched connection to it too."""
        self._agenda.add(group, probe)
        config = group.key[0]
        if config.watch is not None:
            self._watches.add(group, config, trio.current_time())
        if self._sleep is not None:  # wake up in time for it
            self._sleep.deadline = min(self._sleep.deadline, group.due(),
                                       self._watches.wake_at())

    def drop(self, group: ProbeGroup) -> None:
        """`group` was stopped (regroup): close its watched connection, if any (its
        checks end by themselves)."""
        self._watches.drop(group)

    def watch_statistics(self) -> WatchStatistics:
        """Watched connections held, lost and hinted (see `sentinel.engine.watching`)."""
        return self._watches.statistics()

    def hurry(self, group: ProbeGroup, probe: LeanProbe) -> None:
        """A member of `group` is due earlier (a passive signal): check it then."""
        if self._agenda.hurry(group, probe) and self._sleep is not None:
            self._sleep.deadline = min(self._sleep.deadline, group.due())

    @property
    def in_flight(self) -> int:
        """Checks with an open socket."""
        return len(self._running)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Probe until cancelled; open sockets are reset and their slots returned on exit."""
        try:
            task_status.started()
            while True:
                self._pass()
                now = trio.current_time()
                wake = self._agenda.wake_at(now, self._batch)
                watch_wake = self._watches.wake_at()
                if watch_wake < wake:
                    wake = max(watch_wake, now + self._batch)
                with trio.move_on_at(wake) as self._sleep:
                    await trio.lowlevel.wait_readable(self._epoll.fileno())
                self._sleep = None
        finally:
            for running in list(self._running.values()):
                self._close(running)
                self._limiter.release_on_behalf_of(running)
            self._watches.close()
            self._epoll.close()

    def _pass(self) -> None:
        """Advance ready checks, time out late ones, start due ones, and advance again:
        a loopback connect is often complete by the time `connect_ex` returns, so a
        plain TCP check can finish in the pass that started it (one wakeup, not two)."""
        self._passes += 1
        self._advance_ready()
        self._expire()
        self._watches.tick(trio.current_time())
        if self._start_due():
            self._advance_ready()

    def _expire(self) -> None:
        """Time out checks past their deadline, except those this pass just moved on: a
        check whose connect or request waited on a busy (or blocked) loop is judged
        after the next poll, so an overloaded checker does not fail healthy backends.
        Once only: the next time its deadline is judged, it ends."""
        agenda = self._agenda
        now = trio.current_time()
        spared: list[Running] = []
        while (late := agenda.expired(now)) is not None:
            if late.moved == self._passes and not late.spared:
                late.spared = True
                spared.append(late)
            else:
                self._end(late, late.exchange.timed_out, now)
        for running in spared:
            agenda.watch(running)

    def _advance_ready(self) -> None:
        # Every ready socket (the default is at most 1,023): a socket left unread here
        # would be judged against its deadline with its answer waiting.
        events = self._epoll.poll(0, len(self._running) + len(self._watches) + 1)
        now = trio.current_time()
        running_by_fd = self._running
        for fd, mask in events:
            running = running_by_fd.get(fd)
            if running is not None:
                self._step(running, now)
            else:
                self._watches.ready(fd, mask, now)

    def _start_due(self) -> int:
        """Start every due group that gets an in-flight slot; how many started."""
        agenda = self._agenda
        now = trio.current_time()
        started = 0
        while (head := agenda.next_due(now)) is not None:
            due, group, probe = head
            # The cadence counts from the due time when the check started within the
            # batch window of it (batching must not clump the schedule over time), from
            # the real start when later (an overloaded loop stretches intervals).
            anchor = due if now - due <= self._batch else now
            running = Running(group, probe, now, self._wall(), anchor)
            try:
                self._limiter.acquire_on_behalf_of_nowait(running)
            except trio.WouldBlock:
                break  # no slot: stays due, retried next pass (within `batch`)
            agenda.take()
            self._host.probe_started(now - due)
            try:
                self._connect(running, now)
            except Exception as exc:  # the probe could not even start: this check fails
                self._close(running)
                self._finish(running, crashed(exc, 0.0, group.members[0].target), now)
            started += 1
        return started

    def _connect(self, running: Running, now: float) -> None:
        """Build the check's exchange, open the socket and start connecting (non-blocking)."""
        target = running.group.members[0].target
        address = rawsock.literal(target.host)
        assert address is not None, "accepts() admits IP literals only"
        family, ip = address
        running.exchange = running.probe.exchange(target)
        try:
            sock = rawsock.open_socket(family, running.exchange.connect_only)
        except OSError as exc:  # out of file descriptors, say: the check fails, visibly
            self._end(running, partial(running.exchange.failed, exc), now)
            return
        running.sock = sock
        fd = sock.fileno()
        self._running[fd] = running
        try:
            err = sock.connect_ex((ip, target.port))
            if err not in (0, errno.EINPROGRESS):  # refused at once
                raise OSError(err, os.strerror(err))
            self._epoll.register(fd, select.EPOLLOUT)
        except OSError as exc:
            self._end(running, partial(running.exchange.failed, exc), now)
            return
        self._agenda.watch(running)

    def _step(self, running: Running, now: float) -> None:
        """The socket is ready: move the check on, and finish it when it has a result."""
        running.moved = self._passes
        try:
            result = self._advance(running, now)
        except Exception as exc:  # the edge: the exchange translates it
            self._end(running, partial(running.exchange.failed, exc), now)
            return
        if result is not None:
            self._finish(running, result, now)

    def _advance(self, running: Running, now: float) -> ProbeResult | None:
        sock, exchange = running.sock, running.exchange
        assert sock is not None
        if running.step == _CONNECTING:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            exchange.connected()
            running.pending = exchange.request
            running.step = _SENDING
        if running.step == _SENDING:
            if running.pending:
                try:
                    sent = sock.send(running.pending)
                except BlockingIOError:
                    return None
                running.pending = running.pending[sent:]
                if running.pending:
                    return None
            if not exchange.sent():
                return exchange.result(now - running.started)
            running.step = _READING
            self._epoll.modify(sock.fileno(), select.EPOLLIN)
            return None
        try:
            data = sock.recv(rawsock.RECV_SIZE)
        except BlockingIOError:
            return None
        if not data:
            exchange.eof()
        elif not exchange.feed(data):
            return None
        return exchange.result(now - running.started)

    def _end(self, running: Running, verdict: Callable[[float], ProbeResult],
             now: float) -> None:
        """Finish with the exchange's `verdict` for the latency so far; if judging raises,
        with that error instead (see `crashed`)."""
        latency = now - running.started
        try:
            result = verdict(latency)
        except Exception as exc:
            result = crashed(exc, latency, running.group.members[0].target)
        self._finish(running, result, now)

    def _finish(self, running: Running, result: ProbeResult, now: float) -> None:
        """Close, return the slot, and hand the result over (unless the group was stopped)."""
        self._close(running)
        self._limiter.release_on_behalf_of(running)
        group = running.group
        if group.stopped:
            return
        if result.ok:
            self._watches.probe_passed(group, now)
        self._host.probe_done(group, result, running.anchor, now, running.start_unix)
        self._agenda.add(group, running.probe)

    def _close(self, running: Running) -> None:
        close_held(running, self._running)
