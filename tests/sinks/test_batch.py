"""A BatchSink (nginx: one file, one reload) gets every ready service in one call."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from sentinel.errors import SinkRejected
from sentinel.sinks.base import BatchSink, Update
from sentinel.sinks.runner import SinkRunner
from tests.sinks.views import update


class Batcher:
    """Records each batch; can fail the next one."""

    def __init__(self) -> None:
        self.name = "batcher"
        self.batches: list[list[str]] = []
        self.fail_next = False

    async def apply(self, update: Update) -> None:
        """One service alone."""
        await self.apply_batch([update])

    async def apply_batch(self, updates: Sequence[Update]) -> None:
        """Record the services of one batch, or fail it."""
        if self.fail_next:
            self.fail_next = False
            raise SinkRejected("nginx -t failed")
        self.batches.append([u.view.service for u in updates])

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_services_ready_together_are_applied_in_one_batch(
        autojump_clock: trio.testing.MockClock) -> None:
    """Three services published before the runner starts: one apply_batch call."""
    sink = Batcher()
    assert isinstance(sink, BatchSink)
    runner = SinkRunner(sink)
    for name in ("a", "b", "c"):
        runner.publish(update(name, 1))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await runner.wait_idle()
        nursery.cancel_scope.cancel()
    assert sink.batches == [["a", "b", "c"]]


async def test_a_failed_batch_retries_every_service_in_it(
        autojump_clock: trio.testing.MockClock) -> None:
    """A batch that fails is retried with backoff for every service it held."""
    sink = Batcher()
    sink.fail_next = True
    runner = SinkRunner(sink)
    for name in ("a", "b"):
        runner.publish(update(name, 1))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(0.1)
        assert runner.statistics().pending == 2
        assert not runner.statistics().ok
        await runner.wait_idle()
        nursery.cancel_scope.cancel()
    assert sorted(s for batch in sink.batches for s in batch) == ["a", "b"]
    assert runner.statistics().ok
