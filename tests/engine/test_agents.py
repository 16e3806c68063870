"""An `agent:` block in the engine, against a real agent on loopback: its answers become
admin states, weights and down verdicts as HAProxy applies them; an operator's override
stays above them; an agent that does not answer changes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from sentinel.config.model import AgentSpec, ProbeConfig, ThresholdBreakerConfig, Timing
from sentinel.engine.engine import Engine
from sentinel.model import Event
from sentinel.sinks.memory import RecordingSink
from tests.engine.fakes import FakeProbe, config, service
from tests.probes.conftest import Serve, until

WEIGHT = 10


class Agent:
    """Answers `answer` and a newline to every connection, then closes; counts them."""

    def __init__(self) -> None:
        self.answer = "up"
        self.asked = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        """One agent exchange (no line end at all while `answer` is None)."""
        self.asked += 1
        await stream.send_all(self.answer.encode() + b"\n" if self.answer else b"half")


@dataclasses.dataclass
class Running:
    """The engine under test and its agent."""

    engine: Engine
    agent: Agent

    def backend(self) -> dict[str, Any]:
        """b9001's entry in the state document."""
        doc = self.engine.state_document()["services"]
        assert isinstance(doc, dict)
        entry: dict[str, Any] = doc["s"]["backends"][0]
        return entry

    def published(self) -> tuple[str, int]:
        """b9001's published state and weight."""
        entry = self.backend()
        return entry["state"], entry["weight"]

    async def say(self, answer: str | None) -> None:
        """Switch the agent's answer and wait until the engine has taken it in (asked
        twice since: the first ask's answer was folded in before the second began)."""
        self.agent.answer, asked = answer, self.agent.asked
        await until(lambda: self.agent.asked >= asked + 2)

    def events(self) -> list[Event]:
        """Every event so far, oldest first."""
        return self.engine.events_after(0)


@pytest.fixture
async def running(serve: Serve, tmp_path: Path) -> AsyncIterator[Running]:
    """An engine over one backend (weight 10, always healthy to its FakeProbe) whose agent
    is asked every 20 ms (with a timeout that a loaded machine does not reach: an ask
    that timed out would not have taken the answer `say` waits for)."""
    agent = Agent()
    port = await serve(agent.handle)
    agent_config = ProbeConfig("agent", Timing(0.02, 0.02, 0.02, 5.0),
                               AgentSpec(agent_port=port))
    svc = dataclasses.replace(
        service("s", [9001], interval=0.05, breaker=ThresholdBreakerConfig(1, 1),
                weight=WEIGHT), agent=agent_config)
    probe = FakeProbe()
    engine = Engine(config(tmp_path, svc), sinks={"rec": RecordingSink("rec")},
                    probe_factory=probe.factory(), poller=probe.poller)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield Running(engine, agent)
        engine.stop()


async def test_answers_become_states_and_weights(running: Running) -> None:
    """Each answer's effect is published with the reason `agent: ...`: a percentage scales
    the configured weight, drain and maint are admin states, weight 0 drains, down takes
    the backend out at once and up brings it back."""
    steps = [("50%", ("up", 5)), ("drain", ("drain", 0)), ("ready 150%", ("up", 15)),
             ("0%", ("drain", 0)), ("100%", ("up", 10)), ("down # disk full", ("down", 0)),
             ("maint", ("maint", 0)), ("ready up", ("up", 10))]
    for answer, published in steps:
        await running.say(answer)
        assert running.published() == published, answer
    assert [(e.to_state, e.weight, e.reason) for e in running.events()] == [
        ("up", 5, "agent: weight 50%"), ("drain", 0, "agent: drain"),
        ("up", 15, "agent: ready, weight 150%"), ("drain", 0, "agent: weight 0%"),
        ("up", 10, "agent: weight 100%"), ("down", 0, "agent: down, # disk full"),
        ("maint", 0, "agent: maint"), ("up", 10, "agent: up, ready")]


async def test_state_document_shows_the_agent(running: Running) -> None:
    """/v1/state shows what the agent set, maxconn included, and its last check."""
    await running.say("drain 30% maxconn:25 # draining for a deploy")
    agent = running.backend()["agent"]
    assert {k: agent[k] for k in ("health", "admin", "weight", "maxconn", "message")} == {
        "health": None, "admin": "drain", "weight": 3, "maxconn": 25, "message": None}
    assert agent["last_check"]["ok"] is True


async def test_operator_override_stays_above_the_agent(running: Running) -> None:
    """`ctl maint` holds while the agent says ready; `ctl ready` lifts only the operator's
    override: the agent's drain then applies."""
    await running.say("ready 100%")
    await running.engine.set_override("s", "b9001", "maint")
    await running.say("ready 50%")
    assert running.published() == ("maint", 0)
    await running.say("drain")
    await running.engine.set_override("s", "b9001", "ready")
    assert running.published() == ("drain", 0)


async def test_an_agent_without_an_answer_changes_nothing(running: Running) -> None:
    """A drained backend stays drained while its agent cuts its line short (and no event
    is emitted); the failure shows as the agent's last check."""
    await running.say("drain")
    count = len(running.events())
    await running.say(None)
    assert running.published() == ("drain", 0)
    assert len(running.events()) == count
    last = running.backend()["agent"]["last_check"]
    assert (last["ok"], last["error"]) == (False, "agent closed without ending its line: "
                                                  "got b'half'")


async def test_a_reload_without_the_agent_lifts_what_it_said(running: Running,
                                                            tmp_path: Path) -> None:
    """Removing the `agent:` block stops the agent's task and publishes the backend as
    its probes alone say (the reload's commit); the agent is asked no more."""
    await running.say("drain")
    svc = running.engine.config.services[0]
    await running.engine.reload(config(tmp_path, dataclasses.replace(svc, agent=None)))
    assert running.published() == ("up", WEIGHT)
    assert "agent" not in running.backend()
    await trio.sleep(0.1)  # a connection made just before the reload is accepted by now
    asked = running.agent.asked
    await trio.sleep(0.2)  # ten agent intervals: none may ask
    assert running.agent.asked == asked
