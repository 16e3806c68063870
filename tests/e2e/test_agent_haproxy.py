"""The agent-check proof: one agent steps through answers; a real HAProxy (`agent-check`)
and sentinel's agent parser must end up with the same weight, admin state, maxconn and
up/down after every step."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from sentinel.config.model import AgentSpec, ProbeConfig, Timing
from sentinel.probes.agent import AgentProbe, AgentState
from sentinel.probes.base import Target
from tests.e2e.balancers import start_haproxy
from tests.e2e.helpers import LOOPBACK, Processes, free_port, start_backend, wait_until

pytestmark = pytest.mark.e2e
WEIGHT = 10  # HAProxy's `weight` and sentinel's configured weight

# Each answer changes something HAProxy shows, so a step cannot pass on the previous state.
STEPS = [
    "50%",
    "drain",
    "ready 150%",
    "maint",
    "ready,33%",
    "down # disk full",
    "up 100%",
    "5000%",  # 500, capped at 256
    "bogus 75%",  # the unknown word is ignored, the weight taken
    "maxconn:30 20%",
    "50%x up 90%",  # the last weight word wins
    "stopped\t#\tupgrading",
    "UP READY 0%",
    "drain fail 40%",
    "up ready 100% maxconn:7",
    # `weight:N` is HAProxy 3.1's; the HAProxy these tests run (Debian's 2.6) ignores it.
]


class Agent(socketserver.ThreadingTCPServer):
    """An agent answering `answer` to every connection, counting them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), AgentHandler)
        self.answer = "up"
        self.served = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server_address[1])

    def switch(self, answer: str) -> None:
        """Answer `answer` from now on; the count starts again."""
        with self.lock:
            self.answer, self.served = answer, 0


class AgentHandler(socketserver.BaseRequestHandler):
    """Write the current answer and a newline, then close."""

    def handle(self) -> None:
        """One agent exchange."""
        server = self.server
        assert isinstance(server, Agent)
        with server.lock:
            answer = server.answer
        self.request.sendall(answer.encode() + b"\n")
        self.request.shutdown(socket.SHUT_WR)
        with server.lock:
            server.served += 1


@pytest.fixture
def agents() -> Iterator[tuple[Agent, Agent]]:
    """Two agents saying the same things: HAProxy asks one, sentinel the other, so the
    first one's count is HAProxy's alone."""
    pair = Agent(), Agent()
    threads = [threading.Thread(target=a.serve_forever, daemon=True) for a in pair]
    for t in threads:
        t.start()
    try:
        yield pair
    finally:
        for a in pair:
            a.shutdown()
            a.server_close()
        for t in threads:
            t.join(timeout=5)


def test_haproxy_and_sentinel_agree(processes: Processes, tmp_path: Path,
                                    agents: tuple[Agent, Agent]) -> None:
    """After each answer, sentinel's AgentState equals what `show servers state` and
    `show stat` report for the server."""
    for_haproxy, for_sentinel = agents
    backend = free_port()
    start_backend(processes, backend, "web1")
    section = (f"backend be_agent\n    balance roundrobin\n"
               f"    server s1 {LOOPBACK}:{backend} weight {WEIGHT} check inter 100ms "
               f"agent-check agent-port {for_haproxy.port} agent-inter 100ms\n")
    haproxy = start_haproxy(processes, tmp_path / "haproxy", [section])
    probe = AgentProbe(ProbeConfig(type="agent", timing=Timing(timeout=2.0),
                                   spec=AgentSpec(agent_port=for_sentinel.port)))
    target = Target("web", "web1", LOOPBACK, backend)
    state = AgentState.initial(WEIGHT)
    for answer in STEPS:
        for_haproxy.switch(answer)
        for_sentinel.switch(answer)
        # The second connection after the switch starts only after HAProxy handled the
        # first one's answer (one agent check at a time per server).
        wait_until(lambda: for_haproxy.served >= 2, what=f"HAProxy asking after {answer!r}")
        got, result = trio.run(probe.ask, target)
        assert got is not None, result.detail
        state = state.apply(got)
        server = haproxy.servers("be_agent")["s1"]
        shown = {"admin": server.admin, "weight": server.weight,
                 "down": server.op_state == 0,
                 "maxconn": haproxy.stat("be_agent", "s1", "slim") or None}
        ours = {"admin": state.admin, "weight": state.weight,
                "down": state.down or state.admin == "maint",
                "maxconn": str(state.maxconn) if state.maxconn is not None else None}
        assert ours == shown, f"after {answer!r}: {state.message}"
