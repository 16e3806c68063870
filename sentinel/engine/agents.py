"""Agent checks beside the health probe: SPEC 9's `agent:` block, HAProxy's `agent-check`.

Every backend of a service with an `agent:` block has its own agent task: it
asks the backend's agent every agent `interval` (its first ask spread over one
interval, like first probes), on a schedule of its own that nothing shares, not
even identical agents of two services (an agent's answer is state kept per
backend, as HAProxy keeps it per server, and two services may weigh one
backend differently). Each ask takes an in-flight slot like any check.

What an answer means is decided elsewhere: the task hands the answer (None
when there was none) and the check's result to `on_answer`, which folds it
into the backend's `AgentState` (`sentinel.probes.agent`), hands that to
`sentinel.engine.decide` (`Inputs`) and publishes what changed before the
task asks again. An agent that cannot be reached, that times out or that does not end
its line changes nothing, as in HAProxy: connectivity is the health probe's
job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import trio

from sentinel.config.model import ProbeConfig
from sentinel.engine.backend import BackendRuntime
from sentinel.engine.schedule import start_offset
from sentinel.engine.slots import Slots
from sentinel.model import ProbeResult
from sentinel.probes.agent import AgentAnswer, AgentProbe
from sentinel.probes.base import crashed

log = logging.getLogger(__name__)

OnAnswer = Callable[[BackendRuntime, AgentAnswer | None, ProbeResult], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _Task:
    """One backend's agent task: the config it runs with and the scope that stops it."""

    config: ProbeConfig
    scope: trio.CancelScope


class Agents:
    """The agent tasks of every backend whose service has an `agent:` block."""

    def __init__(self, slots: Slots, on_answer: OnAnswer) -> None:
        self._slots = slots
        self._on_answer = on_answer
        self._tasks: dict[BackendRuntime, _Task] = {}

    def match(self, wanted: Iterable[tuple[BackendRuntime, ProbeConfig]],
              nursery: trio.Nursery) -> None:
        """Run one task per (backend, agent config) in `wanted` and stop the others. A
        backend whose agent config is unchanged keeps its task and its place in the
        schedule; new tasks start spread over their interval."""
        want = dict(wanted)
        for backend, task in list(self._tasks.items()):
            if want.get(backend) != task.config:
                task.scope.cancel()
                del self._tasks[backend]
        fresh = [(b, c) for b, c in want.items() if b not in self._tasks]
        for index, (backend, config) in enumerate(fresh):
            task = self._tasks[backend] = _Task(config, trio.CancelScope())
            delay = start_offset(index, len(fresh), config.timing.interval)
            nursery.start_soon(self._run, backend, task, delay)

    async def _run(self, backend: BackendRuntime, task: _Task, delay: float) -> None:
        probe = AgentProbe(task.config)
        interval = task.config.timing.interval
        with task.scope:
            due = trio.current_time() + delay
            while True:
                await trio.sleep_until(due)
                started = trio.current_time()
                await self._slots.take()
                try:
                    answer, result = await probe.ask(backend.target)
                except Exception as exc:  # a bug in the probe: this ask fails, not all
                    answer, result = None, crashed(exc, trio.current_time() - started,
                                                   backend.target)
                finally:
                    self._slots.give()
                due = max(started + interval, trio.current_time())
                await self._on_answer(backend, answer, result)
