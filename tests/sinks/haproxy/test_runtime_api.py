"""HAProxy runtime API: parsing its answers, the plan of commands, the socket protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from sentinel.errors import SinkRejected, SinkUnavailable
from sentinel.model import State
from sentinel.sinks.haproxy.runtime_api import (
    ProcessInfo,
    RuntimeApi,
    ServerState,
    parse_info,
    parse_servers_state,
)
from sentinel.sinks.haproxy.sink import plan
from tests.sinks.views import backend

# Answers captured from HAProxy 2.6.12 (Debian 12).
SERVERS_STATE = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port\n"
    "3 web 1 web1 127.0.0.1 2 8 3 5 1 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0\n"
    "3 web 2 web2 127.0.0.1 0 1 1 1 2 1 0 2 0 0 0 0 - 18082 - 0 0 - - 0\n"
    "3 web 3 web3 127.0.0.1 2 0 1 1 2 1 0 2 0 0 0 0 - 18083 - 0 0 - - 0\n\n")
INFO = ("Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nNbthread: 2\nPid: 14838\n"
        "Uptime: 0d 0h00m07s\nUptime_sec: 7\nMemmax_MB: 0\nStart_time_sec: 1795542603\n\n")


def test_servers_state_lines_become_admin_states_and_weights() -> None:
    """admin bits 0x08 -> drain, 0x01 -> maint, none -> ready; uweight is the weight."""
    servers = parse_servers_state(SERVERS_STATE)
    assert [(s.server, s.admin, s.weight, s.op_state) for s in servers] == [
        ("web1", "drain", 3, 2), ("web2", "maint", 1, 0), ("web3", "ready", 1, 2)]
    assert servers[0] == ServerState("web", "web1", "127.0.0.1", 2, 8, 3)


@pytest.mark.parametrize(("answer", "message"), [
    ("Can't find backend.\n\n", "Can't find backend."),
    ("", "empty answer"),
    ("1\n3 web 1\n\n", "unexpected `show servers state` line"),
])
def test_bad_servers_state_answers_are_rejected(answer: str, message: str) -> None:
    """An unknown backend or a garbled answer is a SinkRejected quoting HAProxy."""
    with pytest.raises(SinkRejected, match=message):
        parse_servers_state(answer)


def test_show_info_identifies_the_process() -> None:
    """Pid, Start_time_sec and Uptime_sec identify the answering process."""
    assert parse_info(INFO) == ProcessInfo(pid=14838, start_time=1795542603, uptime=7)
    with pytest.raises(SinkRejected, match="unexpected answer to `show info`"):
        parse_info("Unknown command.\n")


@pytest.mark.parametrize(("later", "restarted"), [
    (ProcessInfo(10, 100, 60), False),
    (ProcessInfo(11, 100, 60), True),  # a new worker after a reload
    (ProcessInfo(10, 130, 5), True),  # same PID reused after a restart
    (ProcessInfo(10, 0, 5), True),  # an old HAProxy without Start_time_sec: uptime fell
])
def test_a_reload_or_restart_is_noticed(later: ProcessInfo, restarted: bool) -> None:
    """Another PID, another start time or an uptime that went back mean a new process."""
    before = ProcessInfo(10, 100 if later.start_time else 0, 50)
    assert later.restarted_since(before) is restarted


@pytest.mark.parametrize(("state", "weight", "have_admin", "have_weight", "commands"), [
    (State.UP, 5, 0, 5, []),
    (State.UP, 2, 1, 5, ["set server be/s1 weight 2", "set server be/s1 state ready"]),
    (State.UP, 5, 8, 5, ["set server be/s1 state ready"]),
    (State.DOWN, 0, 0, 5, ["set server be/s1 state maint"]),
    (State.MAINT, 0, 1, 5, []),
    (State.DRAIN, 0, 0, 5, ["set server be/s1 state drain"]),
    (State.DRAIN, 0, 1, 5, ["set server be/s1 state drain"]),
])
def test_plan_sends_only_what_differs(state: State, weight: int, have_admin: int,
                                      have_weight: int, commands: list[str]) -> None:
    """up -> weight then ready; down and maint -> maint; drain -> drain; agreement -> none."""
    have = ServerState("be", "s1", "127.0.0.1", 2, have_admin, have_weight)
    want = backend("b1", 1, state, weight=weight or 5)
    assert plan("be", "s1", want, have) == commands


# -- the socket protocol, against a scripted unix socket server ------------------------

Answer = Callable[[bytes], Awaitable[bytes | None]]


@pytest.fixture
async def haproxy_like(tmp_path: Path) -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    """Serves a unix socket that reads one command line and answers via a function
    (None: never answer); yields a starter returning the socket path."""
    async with trio.open_nursery() as nursery:
        async def start(answer: Answer) -> str:
            path = str(tmp_path / "admin.sock")
            sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
            await sock.bind(path)
            sock.listen()
            listener = trio.SocketListener(sock)

            async def handle(stream: trio.SocketStream) -> None:
                async with stream:
                    line = await stream.receive_some()
                    reply = await answer(line)
                    if reply is None:
                        await trio.sleep_forever()
                    await stream.send_all(reply)

            nursery.start_soon(trio.serve_listeners, handle, [listener])
            return path

        yield start
        nursery.cancel_scope.cancel()


async def test_a_set_answered_with_text_is_an_error(
        haproxy_like: Callable[[Answer], Awaitable[str]]) -> None:
    """A set that HAProxy answers with any text fails, hinting at `level admin`."""
    seen: list[bytes] = []

    async def answer(line: bytes) -> bytes:
        seen.append(line)
        return b"Permission denied\n\n"

    api = RuntimeApi(await haproxy_like(answer))
    with pytest.raises(SinkRejected, match=r"Permission denied \(the stats socket needs "
                                           r"`level admin`\)"):
        await api.set("set server web/web1 state maint")
    assert seen == [b"set server web/web1 state maint\n"]


async def test_an_empty_answer_to_a_set_is_success(
        haproxy_like: Callable[[Answer], Awaitable[str]]) -> None:
    """HAProxy's blank line after a set that worked is no error: the set returns, and the
    socket received that one command line."""
    seen: list[bytes] = []

    async def answer(line: bytes) -> bytes:
        seen.append(line)
        return b"\n"

    await RuntimeApi(await haproxy_like(answer)).set("set server web/web1 weight 3")
    assert seen == [b"set server web/web1 weight 3\n"]


async def test_a_silent_socket_times_out(
        haproxy_like: Callable[[Answer], Awaitable[str]],
        autojump_clock: trio.testing.MockClock) -> None:
    """No answer within `timeout` is SinkUnavailable, not a hang."""
    async def answer(line: bytes) -> None:
        return None

    api = RuntimeApi(await haproxy_like(answer), timeout=2.0)
    with pytest.raises(SinkUnavailable, match="no answer within 2s"):
        await api.info()


async def test_a_missing_socket_is_unavailable(tmp_path: Path) -> None:
    """Nothing at the path: SinkUnavailable naming the socket and the reason."""
    with pytest.raises(SinkUnavailable, match=r"haproxy socket .*nope.sock: No such file"):
        await RuntimeApi(str(tmp_path / "nope.sock")).info()


async def test_host_port_addresses_use_tcp() -> None:
    """`host:port` is a TCP address; a closed port is SinkUnavailable."""
    with pytest.raises(SinkUnavailable, match=r"haproxy socket 127\.0\.0\.1:1: "):
        await RuntimeApi("127.0.0.1:1").info()


def test_one_command_per_call() -> None:
    """Commands cannot be chained with ; or newlines (each answer is checked)."""
    with pytest.raises(ValueError, match="one command per call"):
        trio.run(RuntimeApi("x").command, "show info; show stat")
