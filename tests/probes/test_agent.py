"""HAProxy's agent-check: the answer parser and its effects (pure), and the agent probe
against real loopback agents."""

from __future__ import annotations

import pytest
import trio

from sentinel.config.model import AgentSpec, ProbeConfig, Timing
from sentinel.model import FailureKind
from sentinel.probes.agent import (
    LINE_CAP,
    AgentAnswer,
    AgentProbe,
    AgentState,
    new_maxconn,
    new_weight,
    parse_line,
)
from sentinel.probes.base import Target
from sentinel.probes.registry import make_probe

from .conftest import Serve, silent

# -- the words ------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "answer"), [
    ("", AgentAnswer()),
    ("up", AgentAnswer(health="up")),
    ("DOWN", AgentAnswer(health="down")),
    ("drain 50%", AgentAnswer(admin="drain", weight="50%")),
    ("up,ready\t75%  maxconn:30", AgentAnswer("up", "ready", "75%", "30")),
    ("down #disk full", AgentAnswer(health="down", description="disk full")),
    ("stopped # for the upgrade, back at 5", AgentAnswer(
        health="stopped", description="for the upgrade, back at 5")),
    ("fail down up", AgentAnswer(health="up")),  # the last of a kind wins
    ("maint ready drain", AgentAnswer(admin="drain")),
    ("10% weight:20", AgentAnswer(weight="20")),
    ("weight:30% 5%", AgentAnswer(weight="5%")),
    ("hello up world", AgentAnswer(health="up", unknown="hello")),  # the first unknown kept
    ("50 up", AgentAnswer(health="up", unknown="50")),  # a number without % is no weight
    ("1x% up", AgentAnswer(health="up", weight="1x%")),  # HAProxy: a digit first and a %
    ("down#x", AgentAnswer(health=None, unknown="down#x")),  # `#` only starts a word
    ("MaxConn:7 Weight:9", AgentAnswer(weight="9", maxconn="7")),
])
def test_parse_line(line: str, answer: AgentAnswer) -> None:
    """Words split by spaces, tabs and commas, matched case-insensitively, as HAProxy does."""
    assert parse_line(line) == answer


@pytest.mark.parametrize(("value", "configured", "weight", "warning"), [
    ("50%", 10, 5, ""),
    ("33%", 10, 3, ""),  # integer arithmetic, truncated
    ("0%", 10, 0, ""),
    ("150%", 100, 150, ""),
    ("1000%", 100, 256, ""),  # capped at HAProxy's highest weight
    ("100%", 1000, 1000, ""),  # a sentinel weight above 256 is not cut down
    ("99999%", 1000, 1000, ""),  # percentages clamp at 25600, then the cap
    ("-5%", 10, None, "Relative weight must be positive."),
    ("50%x", 10, None, "Trailing garbage in weight string"),
    ("12", 10, 12, ""),
    ("+12", 10, 12, ""),
    ("300", 10, None, "Absolute weight can only be between 0 and 256 inclusive."),
    ("12abc", 10, None, "Trailing garbage in weight string"),
    ("abc", 10, None, "Empty weight string empty or preceded by garbage"),
    ("", 10, None, "Require <weight> or <weight%>."),
])
def test_new_weight(value: str, configured: int, weight: int | None, warning: str) -> None:
    """HAProxy's server_parse_weight_change_request, its messages included."""
    assert new_weight(value, configured) == (weight, warning)


@pytest.mark.parametrize(("value", "maxconn", "warning"), [
    ("30", 30, ""), ("0", 0, ""), ("", None, "Require <maxconn>."),
    ("x", None, "maxconn string empty or preceded by garbage"),
    ("30k", None, "Trailing garbage in maxconn string"),
])
def test_new_maxconn(value: str, maxconn: int | None, warning: str) -> None:
    """HAProxy's server_parse_maxconn_change_request."""
    assert new_maxconn(value) == (maxconn, warning)


def test_state_folds_answers() -> None:
    """What an answer does not say stays; admin, weight and health each change alone."""
    state = AgentState.initial(10)
    assert (state.admin, state.weight, state.health) == ("ready", 10, None)
    state = state.apply(parse_line("drain 50%"))
    assert (state.admin, state.weight) == ("drain", 5)
    state = state.apply(parse_line("maxconn:30"))
    assert (state.admin, state.weight, state.maxconn) == ("drain", 5, 30)
    state = state.apply(parse_line("down # disk full"))
    assert (state.down, state.message) == (True, "via agent : down (disk full)")
    assert (state.admin, state.weight) == ("drain", 5)
    state = state.apply(parse_line("up ready 50%x"))
    assert (state.down, state.admin, state.weight) == (False, "ready", 5)
    assert state.message == "via agent : up (Trailing garbage in weight string)"


@pytest.mark.parametrize(("line", "message"), [
    ("", ""),
    ("bogus 50%", "agent reports an error : bogus"),
    ("30%x", "agent warns : Trailing garbage in weight string"),
    ("300%x", "agent warns : Absolute weight can only be between 0 and 256 inclusive."),
    ("up # all fine", "via agent : up (all fine)"),
    ("up bogus # all fine", "via agent : up (bogus)"),  # for up, an error beats the text
    ("fail bogus # all wrong", "via agent : fail (all wrong)"),  # for down, the text wins
    ("stopped", "via agent : stopped"),
])
def test_status_message(line: str, message: str) -> None:
    """The check status text is the one HAProxy builds."""
    assert AgentState.initial(10).apply(parse_line(line)).message == message


# -- the probe against real agents -----------------------------------------------------------


def probe(timeout: float = 0.5, **spec: object) -> AgentProbe:
    """An agent probe."""
    config = ProbeConfig(type="agent", timing=Timing(timeout=timeout),
                         spec=AgentSpec(**spec))  # type: ignore[arg-type]
    return AgentProbe(config)


def at(port: int) -> Target:
    """The target for a loopback port."""
    return Target(service="svc", backend="b1", host="127.0.0.1", port=port)


def agent(reply: bytes, *, expect: bytes = b"") -> object:
    """An agent that reads `expect` (if any) first, then writes `reply` and closes."""

    async def handle(stream: trio.abc.Stream) -> None:
        got = b""
        while len(got) < len(expect):
            chunk = await stream.receive_some(1024)
            if not chunk:
                return
            got += chunk
        if got == expect:
            await stream.send_all(reply)

    return handle


async def test_up_with_words(serve: Serve) -> None:
    """A healthy answer passes and the detail lists what the agent said."""
    port = await serve(agent(b"up drain 50% maxconn:30\n"))
    answer, result = await probe().ask(at(port))
    assert answer == AgentAnswer("up", "drain", "50%", "30")
    assert (result.ok, result.detail) == (True, "agent: up, drain, weight 50%, maxconn 30")


async def test_down_is_a_failure(serve: Serve) -> None:
    """down, fail and stopped fail the check with HAProxy's status text."""
    port = await serve(agent(b"stopped # upgrading\r\n"))
    result = await probe().check(at(port))
    assert (result.failure, result.detail) == (FailureKind.STATUS,
                                               "via agent : stopped (upgrading)")


async def test_agent_send_and_port(serve: Serve) -> None:
    """`agent_send` is sent first; `agent_port` replaces the backend's port."""
    port = await serve(agent(b"75%\n", expect=b"web/b1\n"))
    result = await probe(agent_port=port, agent_send=b"web/b1\n").check(at(1))
    assert (result.ok, result.detail) == (True, "agent: weight 75%")


async def test_incomplete_line(serve: Serve) -> None:
    """Closing before the line ends is ignored by HAProxy: here a PROTOCOL failure."""
    port = await serve(agent(b"up"))
    result = await probe().check(at(port))
    assert (result.failure, result.detail) == (FailureKind.PROTOCOL,
                                               "agent closed without ending its line: got b'up'")


async def test_line_cap(serve: Serve) -> None:
    """An endless line is cut off at LINE_CAP bytes."""
    port = await serve(agent(b"x" * (LINE_CAP + 10)))
    result = await probe().check(at(port))
    assert (result.failure, result.detail) == (FailureKind.PROTOCOL,
                                               f"no line end in {LINE_CAP} bytes")


async def test_silent_agent(serve: Serve) -> None:
    """An agent that never answers is a TIMEOUT."""
    result = await probe(timeout=0.2).check(at(await serve(silent)))
    assert (result.failure, result.detail) == (FailureKind.TIMEOUT,
                                               "no answer within 200ms (answer)")


async def test_refused(refused_port: int) -> None:
    """No agent listening is a CONNECT failure (and no answer)."""
    answer, result = await probe().ask(at(refused_port))
    assert answer is None
    assert result.failure is FailureKind.CONNECT


async def test_make_probe_builds_agent() -> None:
    """The registry knows `agent`."""
    config = ProbeConfig(type="agent", timing=Timing(), spec=AgentSpec())
    assert isinstance(make_probe(config), AgentProbe)
