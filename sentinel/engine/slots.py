"""The in-flight cap (`max_in_flight`): slots shared by the probe loop and probe tasks.

Why not `trio.CapacityLimiter`: a slot is taken and given back for every
check, and the limiter's bookkeeping (a set of borrowers, a wake-up pass on
every release) was about a seventh of the probe loop's Python time per
check. Here a slot is a counter: the loop takes one without waiting (a due
check that finds none stays due), a probe task waits for one in line, and a
slot given back while tasks wait goes straight to the first of them, so the
loop never jumps the queue.
"""

from __future__ import annotations

import trio


class Slots:
    """`total_tokens` slots, `borrowed_tokens` of them taken (the names trio's
    CapacityLimiter gives the same figures)."""

    __slots__ = ("_parked", "_waiting", "borrowed_tokens", "total_tokens")

    def __init__(self, total: int) -> None:
        self.total_tokens = total
        self.borrowed_tokens = 0
        self._waiting = trio.lowlevel.ParkingLot()
        # How many tasks are parked in `_waiting`: a plain int, as asking the lot itself
        # (its `__bool__`, a Python call) on every take and give was a measurable share.
        self._parked = 0

    def take_nowait(self) -> bool:
        """Take a slot if one is free and nobody waits for one; False otherwise."""
        if self.borrowed_tokens < self.total_tokens and not self._parked:
            self.borrowed_tokens += 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting in line for one (cancellable while waiting)."""
        if self.take_nowait():
            await trio.lowlevel.checkpoint()
            return
        self._parked += 1
        try:
            await self._waiting.park()  # woken by `give`, which hands its slot over
        except BaseException:  # cancelled while parked: it left the lot, no slot came
            self._parked -= 1
            raise

    def give(self) -> None:
        """Give a slot back: to the first waiting task if there is one."""
        if self._parked:
            self._parked -= 1  # counted out here: it is no longer parked once unparked
            self._waiting.unpark()
        else:
            self.borrowed_tokens -= 1
