"""The agent-check proof: one agent server steps through answers; a real HAProxy
(`agent-check`) and `sentinel run` (an `agent:` block beside its health probe) both ask
it, and after every step sentinel publishes (GET /v1/state) the admin state and weight
HAProxy shows in `show servers state`, and the maxconn it shows in `show stat`."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.sinks.haproxy.runtime_api import ServerState
from tests.e2e.balancers import HAProxy, start_haproxy
from tests.e2e.helpers import (
    LOOPBACK,
    Processes,
    SentinelApi,
    free_port,
    start_backend,
    start_sentinel,
    wait_until,
)

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
    "UP READY 0%",  # weight 0: HAProxy keeps it up and ready with no weight; sentinel drains
    "drain fail 40%",
    "up ready 100% maxconn:7",
    # `weight:N` is HAProxy 3.1's; the HAProxy these tests run (Debian's 2.6) ignores it.
]


class Agent(socketserver.ThreadingTCPServer):
    """One agent for both: reads what the client sends first (`haproxy` or `sentinel`,
    their agent-send strings), answers `answer` and a newline, and counts per client."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), AgentHandler)
        self.answer = "up"
        self.asked = {"haproxy": 0, "sentinel": 0}
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server_address[1])

    def switch(self, answer: str) -> None:
        """Answer `answer` from now on; the counts start again."""
        with self.lock:
            self.answer = answer
            self.asked = dict.fromkeys(self.asked, 0)


class AgentHandler(socketserver.BaseRequestHandler):
    """Read the client's agent-send, write the current answer and a newline, close."""

    def handle(self) -> None:
        """One agent exchange."""
        server = self.server
        assert isinstance(server, Agent)
        who = self.request.recv(64).strip().decode(errors="replace")
        with server.lock:  # counted as asked now: a client may leave before the answer ends
            answer = server.answer
            if who in server.asked:
                server.asked[who] += 1
        # sentinel closes with an RST once it has read the answer, maybe before this shutdown
        with contextlib.suppress(OSError):
            self.request.sendall(answer.encode() + b"\n")
            self.request.shutdown(socket.SHUT_WR)


@pytest.fixture
def agent() -> Iterator[Agent]:
    """The agent, serving in a thread until the test ends."""
    server = Agent()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def expected(server: ServerState, maxconn: str) -> dict[str, object]:
    """What sentinel should publish for what HAProxy shows: its admin state first (as
    sentinel keeps drain and maint above the verdict), then down, then up; a weight of
    0 is published as drain (HAProxy keeps such a server up and ready, taking no new
    traffic). The agent's weight is HAProxy's in every state."""
    state = ("maint" if server.admin == "maint" else "drain" if server.admin == "drain"
             else "down" if server.op_state == 0 else "drain" if server.weight == 0
             else "up")
    return {"state": state, "weight": server.weight if state == "up" else 0,
            "agent_weight": server.weight, "maxconn": int(maxconn) if maxconn else None}


def published(entry: dict[str, Any]) -> dict[str, object]:
    """Sentinel's backend entry of GET /v1/state in the same terms."""
    return {"state": entry["state"], "weight": entry["weight"],
            "agent_weight": entry["agent"]["weight"], "maxconn": entry["agent"]["maxconn"]}


def answered_twice(api: SentinelApi, since: datetime, seen: set[str]) -> bool:
    """Whether two of sentinel's agent checks that took an answer ended after `since` (the
    end times seen so far are kept in `seen`): the second began after the first ended,
    so after `since`, and took the answer given since then."""
    last = api.backend("web", "s1")["agent"]["last_check"]
    if last and last["ok"] and datetime.fromisoformat(last["time"]) > since:
        seen.add(last["time"])
    return len(seen) >= 2


def test_haproxy_and_sentinel_agree(processes: Processes, tmp_path: Path,
                                    agent: Agent) -> None:
    """After each answer, sentinel publishes what `show servers state` and `show stat`
    report for the server."""
    backend = free_port()
    start_backend(processes, backend, "web1")
    section = (f"backend be_agent\n    balance roundrobin\n"
               f"    server s1 {LOOPBACK}:{backend} weight {WEIGHT} check inter 100ms "
               f"agent-check agent-port {agent.port} agent-inter 100ms "
               f'agent-send "haproxy\\n"\n')
    haproxy: HAProxy = start_haproxy(processes, tmp_path / "haproxy", [section])
    state = tmp_path / "state"
    config = tmp_path / "sentinel.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1, "state_dir": str(state), "api": {"listen": "127.0.0.1:0"},
        "services": {"web": {
            "backends": [{"name": "s1", "address": f"{LOOPBACK}:{backend}",
                          "weight": WEIGHT}],
            "probe": {"type": "tcp", "interval": "200ms"},
            "breaker": {"kind": "threshold", "rise": 1, "fall": 1},
            "agent": {"port": agent.port, "send": "sentinel\\n", "interval": "100ms"}}}}))
    api = SentinelApi(start_sentinel(processes, config, state)[1])
    for answer in STEPS:
        switched = datetime.now().astimezone()
        agent.switch(answer)
        # The second connection after the switch starts only after HAProxy handled the
        # first one's answer (one agent check at a time per server); so for sentinel.
        wait_until(lambda: agent.asked["haproxy"] >= 2, what=f"HAProxy asking after {answer!r}")
        wait_until(partial(answered_twice, api, switched, set()),
                   what=f"sentinel asking after {answer!r}")
        server = haproxy.servers("be_agent")["s1"]
        shown = expected(server, haproxy.stat("be_agent", "s1", "slim"))
        entry = api.backend("web", "s1")
        assert published(entry) == shown, f"after {answer!r}: {entry['agent']['message']}"
    assert agent.asked["sentinel"] >= 2  # sentinel's `send` reached the agent
