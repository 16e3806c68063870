"""The probe loop: one Trio task drives every lean check through one epoll object.

Why. With one Trio task per probe group, each check pays for several Trio
wakeups (`sleep_until`, `wait_writable`, `wait_readable`, a cancel scope for
its timeout), and that is most of its cost. Measured in-process on this
2-core VM: 105 us of CPU per plain TCP check and 167 us per HTTP check at
1,000 backends, and at 5,000 backends checks fell behind (p99 lateness 52 ms
for TCP, 216 ms for HTTP). Driven from here the same checks cost 57 and
89 us at 1,000 backends, 36 and 60 us at 5,000, on time (p99 under 8 ms).
HAProxy 2.6 spends about 26 and 45 us (docs/performance.md, Scale).

How. Every `tcp` (without TLS), `http` and `agent` check runs here
(`accepts`). The loop owns a `Poller` (an epoll object and raw sockets) and an
agenda of due probe groups in buckets of BATCH (`Agenda`). Each pass, in a
tight synchronous loop, it reads every ready socket and moves its check on, following the check's
pull-style exchange (`sentinel.probes.exchange`: connect with the request,
receive, done; the same steps the per-task driver follows, so results and texts are
the same); then times out checks past their deadline; then starts every
group that is due (a loopback connect is complete by the time `connect`
returns: asked once more, such a check goes on at once, never waiting on the
poller; `_connect`) and reads once more. Then it waits on the
poller until the next start or timeout; the poller's epoll set holds a timer
for that deadline (`sentinel.engine.timerfd`), so the wait needs no cancel
scope and every wake is a plain readiness wake. A check whose exchange ran to
its end (whatever its verdict) hands its socket on to a later check
(`EpollPoller.reuse`); one that ended on an error or its timeout closes it.

Batching. A wakeup costs far more than the few checks it carries (measured
in `sentinel run` at 1,000 TCP backends: 60 to 140 us of CPU each, caches
cold after the sleep), so checks are started in batches: each start pass
starts every group due within its gap - BATCH (5 ms) from now, and the next
comes a gap later. The gap is as wide as starts about PASS_CHECKS (100)
checks a pass (`pass_gap`: 100 ms at 1,000 checks a second, 10 ms from
10,000 on), but at most GAP_MOST (100 ms) and a quarter of the shortest
interval, at least GAP (10 ms); the engine tells the loop its load at every
regroup (`pace`). At 1,000 backends this cut CPU per check by 14% (TCP) and
22% (HTTP) in scale_bench against passes 10 ms apart; from 5,000 on passes
are 10-20 ms apart anyway. A pass comes sooner when a check would otherwise start more than
BATCH late (a hurry from a passive signal or a cluster peer's down, a group
added between passes): a check starts at most BATCH late, and up to gap -
BATCH early. A check started early reports lateness 0; one started within
BATCH of its due time counts its next interval from the due time, so the
batching neither drifts the schedule into ever bigger clumps nor changes its
rate, and a backend's death is still seen one interval after it at most. Each
check's start time is read as it starts (its latency and timeout count from
it, not from the start of a pass that starts dozens). Deadlines are judged in
batches too, at most BATCH after they pass.

Host names are looked up ahead of their checks by a small resolver task
(`sentinel.engine.names`); a check whose name has no valid answer yet waits
for it within its timeout, without a socket. Only `https`, TLS `tcp` and
`grpc`, `dns` and `script` checks keep a Trio task each (engine.py).

Kept from the per-task path: probe groups are shared across services; the
global in-flight cap (`max_in_flight`) is the engine's `Slots`, taken per
check without blocking: a due group that finds no slot stays due and is
retried at every pass (one of the loop's checks ending frees a slot) and at
the next start pass, so overload stretches intervals instead of failing
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
ends that check with the exchange's verdict on it, or its ERROR result
(`crashed`) when even that fails, and the other checks go on.

The loop does its I/O only through the `Poller`, so tests give it a virtual
network on trio's MockClock and the engine's timing tests run this path.

Watched connections (`watch:`, `sentinel.engine.watching`) sit in the same
poller beside the checks. The loop makes their `Watches` when the first one is
added: without any, a pass pays one attribute test for them and nothing more.
"""

from __future__ import annotations

import _socket
import errno
import heapq
import itertools
import math
import os
import select
import socket
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from socket import AddressFamily
from typing import Protocol, TypeGuard, cast

import trio

from sentinel.engine.names import NameKey, Names
from sentinel.engine.probegroups import ProbeGroup
from sentinel.engine.slots import Slots
from sentinel.engine.timerfd import Timer
from sentinel.engine.watching import Watches, WatchStatistics
from sentinel.errors import ResolveError
from sentinel.model import ProbeResult
from sentinel.probes import rawsock
from sentinel.probes.base import Probe, crashed
from sentinel.probes.exchange import DONE, RECEIVE, Connect, Exchange, LeanProbe
from sentinel.probes.rawsock import Address
from sentinel.probes.resolve import timed_out

BATCH = 0.005  # a check starts at most 5 ms late (and timeouts are judged in 5 ms batches)
GAP = 0.010  # start passes at least this far apart: each starts what is due within gap - BATCH
GAP_MOST = 0.100  # ...and at most this far (`pass_gap`): a check starts at most 95 ms early
PASS_CHECKS = 100  # how many checks a start pass aims to start (`pass_gap`)
IDLE_MOST = 1024  # sockets kept for reuse, in all (`EpollPoller.reuse`)
# What a running check waits for (`Running.step`): STARTING until it first waits (or ends).
STARTING, RESOLVING, CONNECTING, SENDING, READING, FINISHED = range(6)


# Whether a probe class is a LeanProbe, by class: an isinstance against a runtime Protocol
# costs ~20 us (it lists the protocol's members every time), and a regroup at 10,000
# backends asks once per group: 200 ms of start-up, the first probes started that late.
_LEAN_CLASSES: dict[type, bool] = {}


def accepts(probe: Probe) -> TypeGuard[LeanProbe]:
    """Whether checks of `probe` run in the loop: a lean probe (plain tcp, http, agent)."""
    kind = type(probe)
    lean = _LEAN_CLASSES.get(kind)
    if lean is None:
        lean = _LEAN_CLASSES[kind] = isinstance(probe, LeanProbe)
    return lean and cast(LeanProbe, probe).lean


def start_time(due: float, start_after: float, batch: float) -> float:
    """When the start pass that starts a check due at `due` comes: the next one (no
    sooner than `start_after`, a gap after the last), unless that would start the check
    more than `batch` late; inf for a check never due."""
    return max(due, min(start_after, due + batch))


def pass_gap(rate: float, shortest: float) -> float:
    """How far apart start passes come when the loop's checks come due `rate` times a
    second and the shortest interval of any of them (fast and down intervals included)
    is `shortest`: far enough apart that a pass starts about PASS_CHECKS checks (a
    wakeup costs more than a few checks), but at most GAP_MOST, at most a quarter of
    the shortest interval (a check never starts much more than that early), and at
    least GAP."""
    wanted = PASS_CHECKS / rate if rate > 0 else GAP_MOST
    return max(GAP, min(GAP_MOST, wanted, shortest / 4))


class LoopHost(Protocol):
    """What the loop reports to (the engine); also what its watches report to."""

    def probes_started(self, lateness: Sequence[float]) -> None:
        """Checks started these many seconds after they were due (one pass's)."""

    def probe_done(self, group: ProbeGroup, result: ProbeResult, started: float, now: float,
                   start_unix: float, anchor: float) -> None:
        """A check that started at `started` finished: judge it and set its members'
        `next_due` (sync, no await), counting the interval from `anchor` (its due time,
        if it started within BATCH of it, early or late: else `started`)."""

    def watch_lost(self, group: ProbeGroup, hint: str) -> None:
        """`group`'s watched connection was lost (`hint` says how): probe it now."""


class Running:
    """One check in flight."""

    exchange: Exchange  # set by the loop once the check has its slot (building it may fail)
    address: Address  # set once known (a host name's comes from the resolver task)
    source: Address | None  # set as it connects: the address it connects from, if given
    __slots__ = ("address", "anchor", "deadline", "exchange", "fd", "group", "moved",
                 "pending", "probe", "sock", "source", "spared", "start_unix", "started",
                 "step")

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
        self.sock: Sock | None = None  # once connecting, until finished
        self.fd = -1  # the socket's descriptor, while it has one (asked for once)
        self.step = STARTING  # what it waits for: RESOLVING ... READING; or FINISHED
        self.pending = b""  # request bytes not yet sent


class Agenda:
    """When groups are due and when running checks time out (pure: times are passed in).

    Due groups wait in buckets of `width` seconds of due time (BATCH). A start pass
    takes every group due within gap - BATCH anyway, so the order inside a bucket does
    not matter, and adding a group is one append: no heap. (Checks end out of start order,
    so their next due times arrive out of order, and a heap paid a push and a pop, a
    dozen tuple comparisons on entries scattered in memory, for most checks.) Buckets
    come out earliest first (their numbers are on a small heap: one push per bucket,
    not per check); the one holding the time a take reaches is split into what is due
    and what is not.

    A group knows when it is queued to start (`ProbeGroup.queued`; None while its check
    runs), so an entry is only a pointer: a group is taken when an entry of it comes up
    and it is queued by then, once per `add`; an entry left behind by a `hurry`, or of a
    group already taken or stopped, is dropped when its bucket comes up.

    Deadlines need no heap: checks with the same timeout time out in the order they
    started, so each timeout has a queue in start order (`watch` appends).
    """

    __slots__ = ("_again", "_buckets", "_deadlines", "_keys", "_ready", "_width")

    def __init__(self, width: float = BATCH) -> None:
        self._width = width
        self._buckets: dict[int, list[ProbeGroup]] = {}  # by due // width
        self._keys: list[int] = []  # the buckets' numbers, a heap
        self._ready: list[ProbeGroup] = []  # out of their buckets, due: taken from the end
        self._deadlines: dict[float, deque[Running]] = {}  # by timeout, in start order
        self._again: list[Running] = []  # spared once: judged at the next look

    def add(self, group: ProbeGroup, probe: LeanProbe) -> None:
        """Schedule `group`'s next check at its members' earliest `next_due` (an earlier
        entry of the group, if any, is dropped when it comes up)."""
        group.queued = due = group.due()
        group.probe = probe
        if due == math.inf:  # never, unless hurried (a test's host says so)
            return
        key = int(due // self._width)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
            heapq.heappush(self._keys, key)
        bucket.append(group)

    def hurry(self, group: ProbeGroup, probe: LeanProbe) -> bool:
        """Re-schedule a waiting group at its (earlier) `due()`; False while its check
        runs (it is scheduled again when that ends)."""
        if group.queued is None:
            return False
        self.add(group, probe)
        return True

    def take_due(self, until: float) -> tuple[float, ProbeGroup, LeanProbe] | None:
        """Remove and return a group due by `until` (its check is starting), earliest
        bucket first, or None; groups a regroup stopped are dropped on the way."""
        ready, keys, width = self._ready, self._keys, self._width
        last = until // width if until < math.inf else until  # the bucket `until` is in
        split = False
        while True:
            # Runs once per check: an entry is taken if its group is queued by `until`
            # (see the class docstring), with no other test.
            while ready:
                group = ready.pop()
                due = group.queued
                if due is not None and due <= until and not group.stopped:
                    group.queued = None
                    return due, group, group.probe
            if not keys or keys[0] > last or split:
                return None
            key = heapq.heappop(keys)
            bucket = self._buckets.pop(key)
            if key == last:  # partly due: the rest stays, and is all that is left by `until`
                split = True
                later = [g for g in bucket if g.queued is not None and g.queued > until
                         and g.queued // width == key]
                if later:
                    self._buckets[key] = later
                    heapq.heappush(keys, key)
            bucket.reverse()  # taken from the end: in the order added
            ready = self._ready = bucket

    def head(self) -> float:
        """The earliest due time of a queued group (inf: none); drops buckets holding
        only left-behind entries."""
        head = min((g.queued for g in self._ready if g.queued is not None and not g.stopped),
                   default=math.inf)
        keys, buckets, width = self._keys, self._buckets, self._width
        while keys:
            key = keys[0]
            # An entry is its group's own only in the bucket its queued time falls in:
            # one left behind by a `hurry` points elsewhere, often later (once the
            # hurried check ran, an interval on), and taken for the head it hid the
            # groups due in the buckets after it: the loop overslept them.
            first = min((g.queued for g in buckets[key] if g.queued is not None
                         and not g.stopped and g.queued // width == key), default=None)
            if first is not None:
                return min(head, first)
            del buckets[heapq.heappop(keys)]
        return head

    def watch(self, running: Running) -> None:
        """Time `running` out at its deadline unless it finishes first (a check is
        watched as it starts, if it must wait: one done within its start never is)."""
        queue = self._deadlines.get(running.probe.timeout)
        if queue is None:
            queue = self._deadlines[running.probe.timeout] = deque()
        queue.append(running)

    def spare(self, running: Running) -> None:
        """Judge `running`, already past its deadline, again at the next look."""
        self._again.append(running)

    def expired(self, now: float) -> Running | None:
        """A running check whose deadline has passed by `now` (finished ones are skipped)."""
        while self._again:
            running = self._again.pop()
            if running.step != FINISHED:
                return running
        for queue in self._deadlines.values():
            while queue and queue[0].step == FINISHED:
                queue.popleft()
            if queue and queue[0].deadline <= now:
                return queue.popleft()
        return None

    def deadline_wake(self, now: float, batch: float) -> float:
        """When to look again for timeouts: at the earliest deadline, but not before
        `now + batch` (timeouts are judged in batches too); inf: none."""
        deadline = math.inf
        for queue in self._deadlines.values():
            while queue and queue[0].step == FINISHED:
                queue.popleft()
            if queue and queue[0].deadline < deadline:
                deadline = queue[0].deadline
        return max(deadline, now + batch)


class Sock(Protocol):
    """What the loop asks of a socket (a `socket.socket` is one)."""

    def fileno(self) -> int:
        """The file descriptor the poller reports it by."""

    def connect_ex(self, address: tuple[str, int], /) -> int:
        """Start connecting: 0 or an errno (EINPROGRESS: under way). Asked again: 0 (or
        EISCONN) once connected, EALREADY while under way, or why it failed."""

    def getsockopt(self, level: int, option: int, /) -> int:
        """SO_ERROR: why the connect failed."""

    def send(self, data: bytes, /) -> int:
        """Send some of `data`; BlockingIOError when none fits."""

    def recv(self, size: int, /) -> bytes:
        """Read up to `size` bytes; b"" at EOF; BlockingIOError when none are there."""

    def setsockopt(self, level: int, option: int, value: int, /) -> None:
        """Set an option (a watched connection's TCP keepalive)."""

    def close(self) -> None:
        """Close (with an RST: SO_LINGER 0 is set when the socket is made)."""


class Poller(Protocol):
    """The loop's I/O edge: it makes the sockets and says which are ready. In production
    `EpollPoller`; tests inject a virtual network that runs on trio's MockClock (as trio
    lets tests inject sockets), so the engine's timing tests drive this loop."""

    def socket(self, family: socket.AddressFamily, delay_ack: bool,
               source: Address | None) -> Sock:
        """A non-blocking TCP socket (see `rawsock.open_socket`); raises OSError."""

    def reuse(self, sock: Sock, family: AddressFamily, source: Address | None) -> None:
        """Done with `sock` (made for `family` and `source`), whose check ran to its end:
        reset its connection and make another check's socket of it, or close it."""

    def discard(self, sock: Sock) -> None:
        """Done for good with a `sock` it made (a check's, or a watched connection's):
        close it (with an RST)."""

    def arm(self, fd: int, events: int) -> None:
        """Say once when the check socket `fd` is ready for `events` (EPOLLIN,
        EPOLLOUT): after `poll` reports it, it is not watched until armed again."""

    def register(self, fd: int, events: int) -> None:
        """Watch `fd` for `events` (EPOLLIN, EPOLLOUT) until modified or closed (a
        watched connection's socket)."""

    def modify(self, fd: int, events: int) -> None:
        """Watch the registered `fd` for other `events` instead."""

    def poll(self, max_events: int) -> list[tuple[int, int]]:
        """The ready (fd, events), without waiting. Closing a socket forgets its fd."""

    async def wait(self, deadline: float) -> None:
        """Return when `poll` may have something, or at `deadline` (trio's clock) at the
        latest."""

    def hasten(self, when: float) -> None:
        """During a `wait`: return by `when` instead, if that is earlier."""

    def close(self) -> None:
        """Release the poller (the loop is done)."""


class EpollPoller:
    """Raw sockets (`sentinel.probes.rawsock`) and one epoll object, with a timer in its
    set for the deadline of a `wait` (`sentinel.engine.timerfd`: no cancel scope, so
    every wake is a plain readiness wake). A check that ran to its end hands its socket
    to the next (`reuse`; `rawsock.disconnect`): one `connect` where the close and
    the next socket and its SO_LINGER were. A socket is made only when none is idle, so
    the idle ones are never more than the most checks that ran at once (for one family
    and source address, at most the in-flight cap); at most IDLE_MOST (the default
    cap) are kept in all. (A cap of 256 closed and made sockets all the time at 5,000
    HTTP backends, whose answers keep hundreds of checks in flight.)

    A check's socket is watched one-shot (`arm`: EPOLLONESHOT): once reported it is
    left in the epoll set, disarmed, through its idle time and later checks, so a
    check that waits on the poller pays one `epoll_ctl` (a MOD once the socket has
    been in the set), not an ADD and a DEL."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._timer = Timer()
        self._epoll.register(self._timer.fd, select.EPOLLIN)
        self._fired = (self._timer.fd, select.EPOLLIN)  # what `poll` sees when it fires
        self._armed = math.inf  # the timer's deadline; NaN once it fired: arm again
        self._idle: dict[tuple[int, Address | None], list[Sock]] = {}  # by (family, source)
        self._idle_count = 0  # in all lists of `_idle`
        self._in_set: set[int] = set()  # check sockets in the epoll set (`arm`)

    def socket(self, family: socket.AddressFamily, delay_ack: bool,
               source: Address | None) -> Sock:
        """See `Poller.socket`: an idle one if there is one."""
        idle = self._idle.get((family, source))
        if idle:
            sock = idle.pop()
            self._idle_count -= 1
            if delay_ack:  # the reset left it acknowledging at once
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
            return sock
        return rawsock.open_socket(family, delay_ack, source)

    def reuse(self, sock: Sock, family: AddressFamily, source: Address | None) -> None:
        """See `Poller.reuse` (a socket in the epoll set stays there, disarmed)."""
        idle = self._idle.get((family, source))
        if idle is None:
            idle = self._idle[(family, source)] = []
        if self._idle_count < IDLE_MOST and rawsock.disconnect(cast(_socket.socket, sock)):
            idle.append(sock)
            self._idle_count += 1
        else:
            self.discard(sock)

    def discard(self, sock: Sock) -> None:
        """See `Poller.discard` (closing it takes it out of the epoll set)."""
        self._in_set.discard(sock.fileno())
        sock.close()

    def arm(self, fd: int, events: int) -> None:
        """See `Poller.arm`."""
        if fd in self._in_set:
            self._epoll.modify(fd, events | select.EPOLLONESHOT)
        else:
            self._epoll.register(fd, events | select.EPOLLONESHOT)
            self._in_set.add(fd)

    def register(self, fd: int, events: int) -> None:
        """See `Poller.register` (a watched connection may be made on a socket a check
        left idle, still in the epoll set: watched for good from now on)."""
        if fd in self._in_set:
            self._in_set.discard(fd)
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        """See `Poller.modify`."""
        self._epoll.modify(fd, events)

    def poll(self, max_events: int) -> list[tuple[int, int]]:
        """See `Poller.poll` (the timer is not reported)."""
        events = self._epoll.poll(0, max_events + 1)
        if self._fired in events:
            events.remove(self._fired)
            self._armed = math.nan
        return events

    async def wait(self, deadline: float) -> None:
        """Until the epoll fd is readable: some socket is ready, or the timer fired."""
        if deadline != self._armed:  # mostly the next start pass, armed once
            self._timer.arm(deadline - trio.current_time())
            self._armed = deadline
        await trio.lowlevel.wait_readable(self._epoll.fileno())

    def hasten(self, when: float) -> None:
        """See `Poller.hasten`."""
        if when < self._armed:
            self._timer.arm(when - trio.current_time())
            self._armed = when

    def close(self) -> None:
        """Close the epoll object, the timer and the idle sockets."""
        self._epoll.close()
        self._timer.close()
        for idle in self._idle.values():
            for sock in idle:
                sock.close()
        self._idle.clear()
        self._idle_count = 0
        self._in_set.clear()


class ProbeLoop:
    """Runs lean checks for the groups `add`ed to it; see the module docstring."""

    def __init__(self, host: LoopHost, slots: Slots,
                 wall: Callable[[], float], poller: Callable[[], Poller] = EpollPoller,
                 batch: float = BATCH, gap: float | None = None) -> None:
        self._host = host
        self._slots = slots
        self._wall = wall
        self._batch = batch
        self._fixed_gap = gap  # None: `pace` chooses it
        self._gap = GAP if gap is None else gap
        self._agenda = Agenda(batch)
        self._poller = poller()  # closed when `run` ends: a loop runs once
        self._names = Names(self._answered)
        self._running: dict[int, Running] = {}  # by file descriptor
        self._resolving: dict[NameKey, list[Running]] = {}  # checks waiting for a name
        self._answers: list[NameKey] = []  # names looked up since the last pass
        self._waiting = False  # in the poller's `wait`: an earlier deadline hastens it
        self._start_after = -math.inf  # no start pass before then (gap apart)...
        self._start_at = math.inf  # ...unless a check would start more than BATCH late
        self._starved = False  # ...or the last one found no free slot: every pass then
        self._passes = 0
        self._watches: Watches | None = None  # made for the first `watch:` group
        # The run's clock, asked directly: trio.current_time() goes through two more
        # Python calls to reach it, and a start pass reads it once per check.
        self._clock: Callable[[], float] = trio.current_time

    def add(self, group: ProbeGroup, probe: LeanProbe) -> None:
        """Probe `group` from its `next_due` on, until it is stopped (regroup); with
        `watch:` in its probe settings, hold a watched connection to it too."""
        host = group.members[0].target.host
        group.address = rawsock.literal(host)  # once, not per check
        self._agenda.add(group, probe)
        if group.address is None:
            self._names.want((probe.resolver, host), group)
        self._start_by(group.due())
        config = group.key[0]
        if config.watch is not None:
            if self._watches is None:
                self._watches = Watches(self._poller, self._host)
            self._watches.add(group, config, partial(self._address, probe, host),
                              trio.current_time())
            self._wake(self._watches.wake_at())

    def pace(self, rate: float, shortest: float) -> None:
        """The loop's checks come due `rate` times a second, the shortest interval being
        `shortest` (after a regroup): space start passes for that (`pass_gap`), unless
        the loop was made with a fixed gap."""
        if self._fixed_gap is None:
            self._gap = pass_gap(rate, shortest)

    def drop(self, group: ProbeGroup) -> None:
        """`group` was stopped (regroup): close its watched connection, if any (its
        checks end by themselves)."""
        if self._watches is not None:
            self._watches.drop(group)

    def watch_statistics(self) -> WatchStatistics | None:
        """Watched connections held, lost and hinted (None: no group is watched)."""
        return self._watches.statistics() if self._watches is not None else None

    def _address(self, probe: LeanProbe, host: str) -> Address | ResolveError | None:
        """Where `host` is now: an IP literal, or the resolver task's answer (None: no
        valid answer yet)."""
        return rawsock.literal(host) or self._names.answer((probe.resolver, host),
                                                           trio.current_time())

    def hurry(self, group: ProbeGroup, probe: LeanProbe) -> None:
        """A member of `group` is due earlier (a passive signal): check it then."""
        if self._agenda.hurry(group, probe):
            self._start_by(group.due())

    @property
    def in_flight(self) -> int:
        """Checks started and not finished (with a socket open, or waiting for a name)."""
        return len(self._running) + sum(len(w) for w in self._resolving.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Probe until cancelled; open sockets are reset and their slots returned on exit."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._names.run)
                task_status.started()
                self._clock = trio.lowlevel.current_clock().current_time
                poller, agenda, batch = self._poller, self._agenda, self._batch
                while True:
                    now = self._pass()
                    head = agenda.head()
                    # Starved, a start pass sooner could not start more: the next one.
                    self._start_at = (max(head, self._start_after) if self._starved
                                      else start_time(head, self._start_after, batch))
                    wake = min(self._start_at, agenda.deadline_wake(now, batch))
                    if self._watches is not None:
                        wake = min(wake, max(self._watches.wake_at(), now + batch))
                    self._waiting = True
                    await poller.wait(wake)
                    self._waiting = False
        finally:
            self._waiting = False
            live = [*self._running.values(), *itertools.chain(*self._resolving.values())]
            for running in live:
                if running.step != FINISHED:
                    self._close(running)
                    self._slots.give()
            if self._watches is not None:
                self._watches.close()
            self._poller.close()

    def _start_by(self, due: float) -> None:
        """A check is due at `due`: make sure a start pass comes in time for it."""
        self._start_at = min(self._start_at, start_time(due, self._start_after, self._batch))
        self._wake(self._start_at)

    def _wake(self, when: float) -> None:
        """Something is due at `when`: if the loop waits past that, wake it then."""
        if self._waiting:
            self._poller.hasten(when)

    def _answered(self, key: NameKey) -> None:
        """A lookup of `key` ended (the resolver task): the next pass moves its checks on."""
        if key in self._resolving:
            self._answers.append(key)
            self._wake(-math.inf)

    def _pass(self) -> float:
        """Advance ready checks, time out late ones, start due ones, and advance again:
        a connect that was not complete when asked (`_connect`) may be soon after, so
        a plain TCP check can finish in the pass that started it (one wakeup, not two).
        Returns the time the pass began."""
        self._passes += 1
        # The time is read once for each step that needs it (not in every helper): what
        # was ready, timed out or watched; what starts; what finished as it started.
        clock = self._clock
        now = clock()
        self._advance_ready(now)
        if self._answers:
            self._resume()
        self._expire(now)
        if self._watches is not None:
            self._watches.tick(now)
        starting = now >= self._start_after or now >= self._start_at or self._starved
        if starting and self._start_due(clock()):
            self._advance_ready(clock())
        return now

    def _expire(self, now: float) -> None:
        """Time out checks past their deadline, except those this pass just moved on: a
        check whose connect or request waited on a busy (or blocked) loop is judged
        after the next poll, so an overloaded checker does not fail healthy backends.
        Once only: the next time its deadline is judged, it ends."""
        agenda = self._agenda
        spared: list[Running] = []
        while (late := agenda.expired(now)) is not None:
            if late.moved == self._passes and not late.spared:
                late.spared = True
                spared.append(late)
            elif late.step == RESOLVING:
                host = late.group.members[0].target.host
                self._resolving[(late.probe.resolver, host)].remove(late)
                lookup = timed_out(host, late.probe.timeout)
                self._end(late, partial(late.exchange.failed, lookup), now)
            else:
                self._end(late, late.exchange.timed_out, now)
        for running in spared:
            agenda.spare(running)

    def _advance_ready(self, now: float) -> None:
        # Every ready socket (the default is at most 1,023): a socket left unread here
        # would be judged against its deadline with its answer waiting.
        watches = self._watches
        events = self._poller.poll(len(self._running) + (len(watches) if watches else 0) + 1)
        running_by_fd, step = self._running, self._step
        for fd, flags in events:
            running = running_by_fd.get(fd)
            if running is not None:
                step(running, flags, now)
            elif watches is not None:
                watches.ready(fd, flags, now)

    def _start_due(self, now: float) -> int:
        """A start pass: start every group due by `now + gap - batch` that gets an
        in-flight slot; how many started. The next start pass comes `gap` from now, or
        sooner when a check would otherwise start more than `batch` late (`start_time`),
        so a check starts up to `gap - batch` early or `batch` late."""
        # Methods bound once for the pass: this loop runs once per check.
        take_due, take_slot, start = self._agenda.take_due, self._slots.take_nowait, self._start
        batch, gap = self._batch, self._gap
        until = now + gap - batch
        # A slot first, then the group. No slot: whatever is due stays due, retried at
        # every pass (a check of the loop's that ends frees one) and at the next start
        # pass (one of a task's may).
        self._starved = not take_slot()
        if self._starved:
            self._start_after = now + gap
            return 0
        head = take_due(until)
        if head is None:  # a wake for something else: the next start pass may come at once
            self._slots.give()
            return 0
        self._start_after = now + gap
        wall = self._wall()  # one reading for the pass: they start within it
        lateness: list[float] = []
        late = lateness.append
        clock = self._clock
        while head is not None:
            due, group, probe = head
            # Each check's own start time: its latency and timeout count from it, not
            # from the start of a pass that starts dozens.
            at = clock()
            late(at - due if at > due else 0.0)  # an early start is on time
            # The cadence counts from the due time when the check started within the
            # batch window of it (batching must not clump the schedule over time), from
            # the real start when later (an overloaded loop stretches intervals).
            start(Running(group, probe, at, wall, due if at - due <= batch else at), at)
            if not take_slot():
                self._starved = True
                break
            head = take_due(until)
            if head is None:  # nothing (more) is due: the slot goes back
                self._slots.give()
        if lateness:
            self._host.probes_started(lateness)
        return len(lateness)

    def _start(self, running: Running, now: float) -> None:
        """Build the check's exchange and follow it (or wait for its host's address)."""
        target = running.group.members[0].backend.target  # not the slot's property: hot
        try:
            running.exchange = running.probe.exchange(target)
        except Exception as exc:  # the probe could not even start: this check fails
            self._finish(running, crashed(exc, 0.0, target), now)
            return
        address = running.group.address
        if address is None:
            key = (running.probe.resolver, target.host)
            answer = self._names.answer(key, now)
            if answer is None:  # the resolver task has none yet: wait for it
                running.step = RESOLVING
                self._resolving.setdefault(key, []).append(running)
                self._agenda.watch(running)
                return
            if isinstance(answer, ResolveError):
                self._end(running, partial(running.exchange.failed, answer), now)
                return
            address = answer
        running.address = address
        self._step(running, 0, now)
        if running.step != FINISHED:  # it waits: time it out at its deadline
            self._agenda.watch(running)

    def _resume(self) -> None:
        """Move on the checks waiting for names the resolver task has answered since."""
        now = trio.current_time()
        answers, self._answers = self._answers, []
        for key in answers:
            for running in self._resolving.pop(key, []):
                answer = self._names.answer(key, now)
                if answer is None:  # no answer yet (a lookup that got none): wait on
                    self._resolving.setdefault(key, []).append(running)
                elif isinstance(answer, ResolveError):
                    self._end(running, partial(running.exchange.failed, answer), now)
                else:
                    running.address = answer
                    self._step(running, 0, now)

    def _step(self, running: Running, flags: int, now: float) -> None:
        """Finish the I/O the check was waiting for (its socket is ready: `flags`), then
        follow its exchange until it must wait again or is done, and finish it then. An
        exception ends it with the exchange's verdict on that exception."""
        passes = self._passes
        moved, running.moved = running.moved, passes
        sock, exchange, step = running.sock, running.exchange, running.step
        try:
            if step == CONNECTING:
                if moved == passes:  # connected in the pass that started it after all
                    running.group.instant = True
                if flags & select.EPOLLERR:  # else connected: no SO_ERROR to ask for
                    assert sock is not None
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    raise OSError(err, os.strerror(err))
                if running.pending:  # what its Connect step carries (`Connect.then`)
                    step = running.step = SENDING
            if step == SENDING:
                assert sock is not None
                try:
                    sent = sock.send(running.pending)
                except BlockingIOError:
                    sent = 0
                running.pending = running.pending[sent:]
                if running.pending:
                    self._poller.arm(running.fd, select.EPOLLOUT)  # one-shot: again
                    return
            elif step == READING:
                assert sock is not None
                try:
                    data = sock.recv(rawsock.RECV_SIZE)
                except BlockingIOError:
                    self._poller.arm(running.fd, select.EPOLLIN)  # one-shot: again
                    return
                exchange.receive(data)
            while (need := exchange.next_step()) is not DONE:
                if need is RECEIVE:
                    assert sock is not None, "RECEIVE before Connect"
                    self._wait_for(running, select.EPOLLIN, READING)
                    return
                assert isinstance(need, Connect)
                if not self._connect(running, need):
                    return
                sock = running.sock  # connected (and its request sent): on with the exchange
            result = exchange.result(now - running.started)
        except Exception as exc:  # the edge: the exchange translates it
            self._end(running, partial(exchange.failed, exc), now)
            return
        self._finish(running, result, now, reuse=True)

    def _connect(self, running: Running, step: Connect) -> bool:
        """Open the check's socket and start connecting (non-blocking), and send what the
        step carries (`Connect.then`); True when that is done, False when the poller is
        to say when the socket is writable. Raises OSError.

        A loopback connect (a backend on this host) is complete by the time `connect`
        returns, so for a group whose last connect was (`ProbeGroup.instant`) the loop
        goes on at once: it sends what the step carries, and that `send` tells whether
        the connect is done (`_send_at_connect`); with nothing to send, it asks once
        more (a second `connect`: 0 once connected, EALREADY while under way, or the
        connect's error). One system call (or none) instead of an `epoll_ctl` and a
        pass of the loop."""
        assert running.sock is None, "one connection per check"
        family, ip = running.address
        running.source = step.source
        sock = self._poller.socket(family, step.delay_ack, step.source)
        fd = running.fd = sock.fileno()
        running.sock = sock
        self._running[fd] = running
        address = (ip, step.port)
        then = step.then
        err = sock.connect_ex(address)
        if err == errno.EINPROGRESS and running.group.instant:
            if then is not None:
                return self._send_at_connect(running, then)
            err = sock.connect_ex(address)
            if err == errno.EALREADY:  # under way: this group's connects take a while
                running.group.instant = False
                err = errno.EINPROGRESS
        if not err or err == errno.EISCONN:
            return then is None or self._send_at_connect(running, then)
        if err != errno.EINPROGRESS:  # refused
            raise OSError(err, os.strerror(err))
        if then is not None:  # sent once connected (`_step`)
            running.pending = then
        self._poller.arm(fd, select.EPOLLOUT)
        running.step = CONNECTING
        return False

    def _send_at_connect(self, running: Running, data: bytes) -> bool:
        """Send what a Connect step carries right after asking to connect: sent, the
        connect is done (True once all of it is out); EAGAIN, it is under way (this
        group's connects take a while: the rest waits for the poller, CONNECTING); a
        refused connect raises its error, as a second `connect` would."""
        assert running.sock is not None
        try:
            sent = running.sock.send(data)
        except BlockingIOError:
            running.group.instant = False
            running.pending = data
            self._poller.arm(running.fd, select.EPOLLOUT)
            running.step = CONNECTING
            return False
        if sent < len(data):
            running.pending = data[sent:]
            self._wait_for(running, select.EPOLLOUT, SENDING)
            return False
        return True

    def _wait_for(self, running: Running, events: int, step: int) -> None:
        """Have the poller say (once) when `running`'s socket is ready for `events`; it
        waits for `step` then."""
        self._poller.arm(running.fd, events)
        running.step = step

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

    def _finish(self, running: Running, result: ProbeResult, now: float,
                reuse: bool = False) -> None:
        """Close (`reuse`: the exchange ran to its end, its socket serves another check),
        return the slot, and hand the result over (unless the group was stopped)."""
        self._close(running, reuse)
        self._slots.give()
        group = running.group
        if not group.stopped:
            if result.ok and self._watches is not None:
                self._watches.probe_passed(group, now)
            self._host.probe_done(group, result, running.started, now, running.start_unix,
                                  running.anchor)
            self._agenda.add(group, running.probe)

    def _close(self, running: Running, reuse: bool = False) -> None:
        sock = running.sock
        if sock is not None:
            del self._running[running.fd]
            if reuse:
                self._poller.reuse(sock, running.address[0], running.source)
            else:
                self._poller.discard(sock)  # an RST (SO_LINGER 0)
            running.sock = None
        running.step = FINISHED
