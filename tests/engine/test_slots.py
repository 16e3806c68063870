"""The in-flight cap: slots taken without waiting by the probe loop, in line by tasks."""

from __future__ import annotations

import trio
import trio.testing

from sentinel.engine.slots import Slots


async def test_waiting_tasks_get_returned_slots_in_order_before_the_loop(
        autojump_clock: trio.testing.MockClock) -> None:
    """With both slots taken, two tasks wait; each slot given back goes to the first task
    in line (the count stays at the cap), and the loop's take_nowait cannot jump ahead
    while anyone waits; once nobody waits, a returned slot is free again."""
    slots = Slots(2)
    assert slots.take_nowait()
    assert slots.take_nowait()
    assert not slots.take_nowait()
    got: list[str] = []

    async def task(name: str) -> None:
        await slots.take()
        got.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task, "first")
        await trio.sleep(1)
        nursery.start_soon(task, "second")
        await trio.sleep(1)
        slots.give()
        assert not slots.take_nowait()  # "second" still waits
        await trio.sleep(1)
        assert got == ["first"]
        slots.give()
    assert got == ["first", "second"]
    assert slots.borrowed_tokens == 2
    slots.give()
    assert slots.borrowed_tokens == 1
    assert slots.take_nowait()


async def test_a_cancelled_wait_takes_no_slot(autojump_clock: trio.testing.MockClock) -> None:
    """A task cancelled while waiting leaves the count as it was."""
    slots = Slots(1)
    assert slots.take_nowait()
    with trio.move_on_after(1):
        await slots.take()
    assert slots.borrowed_tokens == 1
    slots.give()
    assert slots.borrowed_tokens == 0
