"""A sink's own background task (`run`) lives and dies with its runner."""

from __future__ import annotations

import trio

from sentinel.sinks.memory import RecordingSink
from sentinel.sinks.runner import SinkRunner


class BackgroundSink(RecordingSink):
    """Counts background ticks, one per second."""

    def __init__(self) -> None:
        super().__init__("background")
        self.ticks = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Tick until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(1)
            self.ticks += 1


async def test_background_task_starts_with_the_runner_and_stops_on_retire(
        autojump_clock: trio.testing.MockClock) -> None:
    """The runner starts `sink.run` next to its own loop; retire() stops both."""
    sink = BackgroundSink()
    runner = SinkRunner(sink)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(3.5)
        runner.retire()
    assert sink.ticks == 3
