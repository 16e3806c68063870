"""The probe loop's timer (a Linux timerfd) and its epoll poller's deadline: a wait ends at
its deadline or earlier when hastened, and the timer never shows up as a ready socket."""

from __future__ import annotations

import math
import select
import time

import trio
import trio.testing

from sentinel.engine.probeloop import EpollPoller
from sentinel.engine.timerfd import Timer


def ready(timer: Timer) -> bool:
    """Whether the timer's descriptor is readable now."""
    with select.epoll() as epoll:
        epoll.register(timer.fd, select.EPOLLIN)
        return bool(epoll.poll(0))


def test_a_timer_fires_once_armed_and_rearming_clears_it() -> None:
    """Armed for now it is readable; armed again for later, or disarmed, it is not."""
    timer = Timer()
    try:
        assert not ready(timer)
        timer.arm(0.0)
        deadline = time.monotonic() + 5
        while not ready(timer):  # fires at once; bounded for a loaded machine
            assert time.monotonic() < deadline
        timer.arm(60.0)
        assert not ready(timer)
        timer.arm(-math.inf)
        while not ready(timer):
            assert time.monotonic() < deadline
        timer.arm(math.inf)
        assert not ready(timer)
    finally:
        timer.close()


async def test_a_poller_wait_ends_at_its_deadline_or_when_hastened() -> None:
    """`wait` returns once its deadline passes, with no socket reported ready; `hasten`
    brings a long wait's end forward."""
    poller = EpollPoller()
    try:
        with trio.fail_after(10):
            deadline = trio.current_time() + 0.05
            while trio.current_time() < deadline:  # a wake may come early, never late
                await poller.wait(deadline)
                assert poller.poll(8) == []
        with trio.fail_after(10):  # the wait ends when hastened, not in an hour
            async with trio.open_nursery() as nursery:
                nursery.start_soon(poller.wait, trio.current_time() + 3600)
                await trio.testing.wait_all_tasks_blocked()
                poller.hasten(trio.current_time())
        assert poller.poll(8) == []
    finally:
        poller.close()
