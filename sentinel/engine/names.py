"""Host names for the probe loop, resolved ahead of their checks by one small task.

The probe loop never awaits, so it cannot look a name up when a check of it
starts. Instead, each name a loop check connects to is kept here with its
answer (`sentinel.probes.resolve`: the hosts file, then the name servers,
cached for the record's TTL), and this task asks again shortly before the
answer expires (at three quarters of its TTL, at most REFRESH_AHEAD before
the end), so a check normally finds a valid answer and connects at once.

When it finds none (the first lookup of a new name, or a refresh that has
not come back by the time the old answer expired), the check waits for it
within its own timeout, as a per-task check does, and fails as `dns`
("resolve NAME timed out after 500ms") if it does not come. A negative
answer (NXDOMAIN, every server failing) fails the checks at once with its
reason until it expires (NEGATIVE_TTL) and the name is asked again. A lookup
that gets no answer at all (name servers silent for LOOKUP_LIMIT) is retried
at once; the checks meanwhile time out as `dns`, as above.

A name is kept fresh while a live probe group uses it; once every group
that asked for it has been stopped (a reload removed it), its entry is
dropped at its next refresh.
"""

from __future__ import annotations

import heapq
import itertools
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from sentinel.engine.probegroups import ProbeGroup
from sentinel.errors import ResolveError
from sentinel.probes.rawsock import Address
from sentinel.probes.resolve import NEGATIVE_TTL, Resolver

NameKey = tuple[Resolver, str]  # a host name, as one resolver answers it
REFRESH_AHEAD = 5.0  # seconds before the end of the TTL a refresh starts, at most
LOOKUP_LIMIT = 30.0  # a lookup that has not answered by then is given up and retried


@dataclass(slots=True, eq=False)
class _Entry:
    """One name: its last answer and until when it holds, the groups that want it."""

    answer: Address | ResolveError | None = None
    until: float = -math.inf
    refresh_at: float = -math.inf
    busy: bool = False  # a lookup is running
    groups: set[ProbeGroup] = field(default_factory=set)


class Names:
    """The names the probe loop's checks connect to, kept fresh by `run` (one task);
    `answered(key)` is called after each lookup of `key` ends."""

    def __init__(self, answered: Callable[[NameKey], None]) -> None:
        self._answered = answered
        self._entries: dict[NameKey, _Entry] = {}
        self._agenda: list[tuple[float, int, NameKey]] = []  # (refresh_at, seq, key)
        self._seq = itertools.count()
        self._nap: trio.CancelScope | None = None

    def want(self, key: NameKey, group: ProbeGroup) -> None:
        """`group` checks the name `key`: look it up now if it is new, keep it fresh."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self._schedule(key, -math.inf)
        entry.groups.add(group)

    def answer(self, key: NameKey, now: float) -> Address | ResolveError | None:
        """The address to connect to, the negative answer to fail with, or None when
        there is no valid answer yet (the check waits for `answered`)."""
        entry = self._entries.get(key)
        if entry is None or entry.until <= now:
            return None
        return entry.answer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Look names up when they are due, until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                while self._agenda and self._agenda[0][0] <= now:
                    _, _, key = heapq.heappop(self._agenda)
                    entry = self._entries.get(key)
                    if entry is None or entry.busy or entry.refresh_at > now:
                        continue  # dropped, already asking, or rescheduled later
                    entry.groups = {g for g in entry.groups if not g.stopped}
                    if not entry.groups:
                        del self._entries[key]
                        continue
                    entry.busy = True
                    nursery.start_soon(self._lookup, key, entry)
                wake = self._agenda[0][0] if self._agenda else math.inf
                with trio.move_on_at(wake) as self._nap:
                    await trio.sleep_forever()
                self._nap = None

    async def _lookup(self, key: NameKey, entry: _Entry) -> None:
        resolver, host = key
        start = trio.current_time()
        try:
            until, answer = await resolver.lookup(host, start + LOOKUP_LIMIT,
                                                  fresh=entry.answer is not None)
        except ResolveError as exc:
            if exc.errno == socket.EAI_AGAIN:  # silence for LOOKUP_LIMIT: the checks wait on
                self._schedule(key, trio.current_time())
            else:  # no name server configured, say: as a negative answer
                entry.answer, entry.until = exc, trio.current_time() + NEGATIVE_TTL
                self._schedule(key, entry.until)
        else:
            if isinstance(answer, str):
                entry.answer, entry.until = ResolveError(socket.EAI_NONAME, answer), until
                self._schedule(key, until)
            else:
                entry.answer, entry.until = answer, until
                ahead = min(REFRESH_AHEAD, (until - start) / 4)
                self._schedule(key, until - ahead)
        finally:
            entry.busy = False
        self._answered(key)

    def _schedule(self, key: NameKey, when: float) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.refresh_at = when
        heapq.heappush(self._agenda, (when, next(self._seq), key))
        if self._nap is not None:
            self._nap.deadline = min(self._nap.deadline, when)
