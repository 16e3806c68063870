"""The probe loop. Its pure parts (the agenda's due starts, deadlines and batching on
plain virtual times), then its I/O against real
loopback servers: the same results as the per-task path, the in-flight cap, timeouts from
the real start, no TIME_WAIT."""

from __future__ import annotations

import contextlib
import math
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest
import trio
import trio.testing

from sentinel.config.model import (
    AgentSpec,
    DnsSpec,
    GrpcSpec,
    HttpSpec,
    ProbeConfig,
    ScriptSpec,
    TcpSpec,
    Timing,
)
from sentinel.engine.probegroups import ProbeGroup
from sentinel.engine.probeloop import (
    FINISHED,
    Agenda,
    ProbeLoop,
    Running,
    accepts,
    pass_gap,
    start_time,
)
from sentinel.engine.slots import Slots
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes.agent import AgentProbe
from sentinel.probes.base import Target
from sentinel.probes.dns import DnsProbe
from sentinel.probes.grpc import GrpcProbe
from sentinel.probes.http import LeanHttpProbe
from sentinel.probes.https import HttpProbe
from sentinel.probes.script import ScriptProbe
from sentinel.probes.tcp import TcpProbe
from tests.engine.fakes import Peer, ScriptedResolver, VirtualNetwork
from tests.engine.loop import TCP_CONFIG, Host, Recheck, group, loop_checks
from tests.probes.conftest import Handler, Serve, banner, hang_up, pong, reset, silent
from tests.probes.peers import (
    CHUNKED,
    OK_BODY,
    TIMEOUT,
    new_time_waits,
    reply,
    time_waits,
    trickle,
)

TCP = TcpProbe(TCP_CONFIG)


def test_groups_come_due_in_time_order() -> None:
    """take_due hands out the earliest due group, and nothing before its time."""
    agenda = Agenda()
    late, early = group(1, 2.0), group(2, 1.0)
    agenda.add(late, TCP)
    agenda.add(early, TCP)
    assert agenda.take_due(0.5) is None
    assert agenda.take_due(1.0) == (1.0, early, TCP)
    assert agenda.take_due(1.5) is None
    assert agenda.take_due(2.5) == (2.0, late, TCP)
    assert agenda.take_due(math.inf) is None


def test_groups_added_out_of_order_still_come_due_in_order() -> None:
    """Groups added in time order (the common case) and out of it (a hurry, a shorter
    interval) interleave: each take gives the earliest due, ties in the order added."""
    agenda = Agenda()
    dues = [1.0, 2.0, 3.0, 1.5, 3.0, 0.5, 4.0, 3.0, 2.5, 5.0, 0.5]
    groups = [group(port, due) for port, due in enumerate(dues, start=1)]
    for g in groups[:6]:
        agenda.add(g, TCP)
    taken = []
    for g in groups[6:]:  # take one, add one: both structures fill and drain
        head = agenda.take_due(math.inf)
        assert head is not None
        taken.append(head[1])
        agenda.add(g, TCP)
    while (head := agenda.take_due(math.inf)) is not None:
        taken.append(head[1])
    order = [groups.index(g) for g in taken]
    assert order == [5, 0, 3, 1, 8, 10, 2, 4, 7, 6, 9]


def test_a_take_splits_the_bucket_it_ends_in() -> None:
    """Groups in one bucket of due time come out only once due by the take's time; a
    hurried group comes out once, at its earlier time."""
    agenda = Agenda(0.005)
    first, second, hurried = group(1, 1.0001), group(2, 1.004), group(3, 1.5)
    for g in (first, second, hurried):
        agenda.add(g, TCP)
    hurried.members[0].next_due = 1.002
    assert agenda.hurry(hurried, TCP)
    assert agenda.head() == pytest.approx(1.0001)
    taken = [agenda.take_due(1.003), agenda.take_due(1.003), agenda.take_due(1.003)]
    assert sorted(head[1].key[2] for head in taken if head is not None) == [1, 3]
    assert taken[2] is None
    assert not agenda.hurry(hurried, TCP)  # running: scheduled again when it ends
    assert agenda.head() == pytest.approx(1.004)
    assert agenda.take_due(1.004) == (1.004, second, TCP)
    assert agenda.take_due(math.inf) is None  # the hurried group's old entry is dropped


def test_an_entry_left_behind_by_a_hurry_does_not_hide_the_next_due_group() -> None:
    """After a hurried group's check ran and it was queued an interval on, the entry its
    hurry left behind does not pass for the head: the group due next still is."""
    agenda = Agenda(0.005)
    hurried, next_due = group(1, 1.0), group(2, 1.2)
    agenda.add(hurried, TCP)
    agenda.add(next_due, TCP)
    hurried.members[0].next_due = 0.5
    assert agenda.hurry(hurried, TCP)
    assert agenda.take_due(0.5) == (0.5, hurried, TCP)
    hurried.members[0].next_due = 1.5  # its check ended: the next one an interval on
    agenda.add(hurried, TCP)
    assert agenda.head() == pytest.approx(1.2)
    assert agenda.take_due(1.2) == (1.2, next_due, TCP)
    assert agenda.head() == pytest.approx(1.5)


def test_stopped_groups_are_dropped() -> None:
    """A group a regroup stopped is never started."""
    agenda = Agenda()
    stopped, kept = group(1, 1.0), group(2, 1.5)
    agenda.add(stopped, TCP)
    agenda.add(kept, TCP)
    stopped.stop()
    assert agenda.take_due(2.0) == (1.5, kept, TCP)


def test_a_start_pass_comes_gap_apart_unless_a_check_would_be_late() -> None:
    """The next start pass comes when the check is due, but not before the pass GAP
    after the last (`start_after`), unless that would start the check over `batch` late."""
    assert start_time(10.001, 9.0, 0.005) == pytest.approx(10.001)  # on time
    assert start_time(10.001, 10.004, 0.005) == pytest.approx(10.004)  # the next pass
    assert start_time(10.001, 10.04, 0.005) == pytest.approx(10.006)  # sooner: 5 ms late
    assert start_time(math.inf, 10.04, 0.005) == math.inf  # nothing due: wait for add()


def test_start_passes_are_spaced_to_start_about_a_hundred_checks_each() -> None:
    """A wakeup costs more than a few checks, so passes come as far apart as starts a
    hundred checks each: 100 ms apart at 1,000 checks a second, 50 at 2,000; never more
    than 100 ms (a check starts at most 95 ms early), nor more than a quarter of the
    shortest interval, nor less than 10 ms (at 10,000 a second and more)."""
    assert pass_gap(1000, 1.0) == pytest.approx(0.1)
    assert pass_gap(2000, 1.0) == pytest.approx(0.05)
    assert pass_gap(10000, 1.0) == pytest.approx(0.01)
    assert pass_gap(50000, 1.0) == pytest.approx(0.01)
    assert pass_gap(10, 2.0) == pytest.approx(0.1)
    assert pass_gap(0, math.inf) == pytest.approx(0.1)  # no lean checks (yet)
    assert pass_gap(1000, 0.2) == pytest.approx(0.05)  # a fast_interval of 200 ms
    assert pass_gap(1000, 0.02) == pytest.approx(0.01)


def test_deadlines_wake_the_loop_in_batches() -> None:
    """The loop wakes for the next deadline, but not sooner than `batch` ahead."""
    agenda = Agenda()
    assert agenda.deadline_wake(10.0, 0.005) == math.inf
    agenda.watch(Running(group(3, 10.0), TCP, started=9.5, start_unix=0.0))  # times out at 10
    assert agenda.deadline_wake(10.0, 0.005) == pytest.approx(10.005)
    assert agenda.deadline_wake(9.0, 0.005) == pytest.approx(10.0)


def test_deadline_runs_from_the_real_start() -> None:
    """A check that started late still gets its whole timeout, counted from its start."""
    agenda = Agenda()
    g = group(1, 1.0)
    running = Running(g, TCP, started=1.3, start_unix=0.0)  # due at 1.0, started 0.3 s late
    agenda.watch(running)
    assert running.deadline == pytest.approx(1.8)
    assert agenda.deadline_wake(1.3, 0.005) == pytest.approx(1.8)
    assert agenda.expired(1.79) is None
    assert agenda.expired(1.8) is running
    assert agenda.expired(1.9) is None  # handed out once


def test_finished_checks_never_expire() -> None:
    """A check that finished before its deadline is skipped when the deadline passes."""
    agenda = Agenda()
    running = Running(group(1, 0.0), TCP, started=0.0, start_unix=0.0)
    running.step = FINISHED
    agenda.watch(running)
    assert agenda.expired(5.0) is None


def test_tcp_http_and_agent_checks_run_in_the_loop() -> None:
    """Plain tcp, http and agent checks run in the loop (host names too: the resolver task
    answers them); TLS tcp, https, grpc, dns and script checks keep a task each."""
    assert accepts(TCP)
    assert accepts(LeanHttpProbe(ProbeConfig("http", Timing(), HttpSpec())))
    assert accepts(AgentProbe(ProbeConfig("agent", Timing(), AgentSpec())))
    for kept in (TcpProbe(ProbeConfig("tcp", Timing(), TcpSpec(tls=True))),
                 HttpProbe(ProbeConfig("https", Timing(), HttpSpec())),
                 GrpcProbe(ProbeConfig("grpc", Timing(), GrpcSpec())),
                 DnsProbe(ProbeConfig("dns", Timing(), DnsSpec(name="example.com"))),
                 ScriptProbe(ProbeConfig("script", Timing(), ScriptSpec(("true",))))):
        assert not accepts(kept)


# -- the loop's I/O, against real loopback servers -------------------------------------


def tcp(**spec: object) -> TcpProbe:
    """A lean tcp probe with the parity tests' timeout."""
    return TcpProbe(ProbeConfig("tcp", Timing(timeout=TIMEOUT), TcpSpec(**spec)))  # type: ignore[arg-type]


def http(**spec: object) -> LeanHttpProbe:
    """A lean http probe with the parity tests' timeout."""
    return LeanHttpProbe(ProbeConfig("http", Timing(timeout=TIMEOUT), HttpSpec(**spec)))  # type: ignore[arg-type]


CASES: list[tuple[str, Handler, Callable[[], TcpProbe | LeanHttpProbe]]] = [
    ("tcp connect", silent, tcp),
    ("tcp send/expect", pong, partial(tcp, send=b"PING\r\n", expect=re.compile(rb"\+PONG"))),
    ("tcp wrong answer", pong, partial(tcp, send=b"QUIT\r\n", expect=re.compile(rb"\+PONG"))),
    ("tcp banner", banner, partial(tcp, expect=re.compile(rb"^220 "))),
    ("tcp hang", silent, partial(tcp, expect=re.compile(rb"220"))),
    ("tcp hang-up", hang_up, partial(tcp, send=b"x", expect=re.compile(rb"y"))),
    ("http ok", reply(OK_BODY), http),
    ("http body", reply(OK_BODY), partial(http, expect_body=re.compile(r'"status":\s*"ok"'))),
    ("http wrong body", reply(OK_BODY), partial(http, expect_body=re.compile("down"))),
    ("http 503", reply(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"), http),
    ("http chunked", reply(CHUNKED), partial(http, expect_body=re.compile(r'"status": "ok"'))),
    ("http slow headers", trickle(OK_BODY, 0.05), http),
    ("http too slow", trickle(OK_BODY, 0.3), http),
    ("http silent", silent, http),
    ("http reset", reset, http),
    ("http hang-up", hang_up, http),
    ("http not http", reply(b"SSH-2.0-OpenSSH\r\n\r\n"), http),
]


async def test_loop_and_task_paths_agree(serve: Serve, refused_port: int) -> None:
    """Every case gives the same verdict, failure kind and text in the loop as in a task."""
    cases = [(name, make(), await serve(handler)) for name, handler, make in CASES]
    cases += [("tcp refused", tcp(), refused_port), ("http refused", http(), refused_port)]
    in_loop, _ = await loop_checks([(probe, port) for _, probe, port in cases])
    by_task: dict[str, ProbeResult] = {}

    async def check(name: str, probe: TcpProbe | LeanHttpProbe, port: int) -> None:
        by_task[name] = await probe.check(Target("svc", "b1", "127.0.0.1", port))

    async with trio.open_nursery() as nursery:
        for name, probe, port in cases:
            nursery.start_soon(check, name, probe, port)
    for (name, _, _), (loop_result, _) in zip(cases, in_loop, strict=True):
        task_result = by_task[name]
        assert (loop_result.ok, loop_result.failure, loop_result.detail) == (
            task_result.ok, task_result.failure, task_result.detail), name


async def test_cap_makes_checks_wait_and_timeouts_run_from_the_real_start(
        autojump_clock: trio.testing.MockClock) -> None:
    """With one slot and three hanging checks due at once, they run one after another;
    each gets its whole timeout from its own start, and the waiting shows as lateness."""
    silence = VirtualNetwork(lambda ip, port: Peer())  # accepts, never answers
    probe = tcp(expect=re.compile(rb"never"))  # connects, then waits for an answer
    results, host = await loop_checks([(probe, 9)] * 3, slots=1, due=0.0,
                                      poller=lambda: silence)
    assert sorted(started for _, started in results) == pytest.approx(
        [0.0, TIMEOUT, 2 * TIMEOUT])
    for result, _ in results:
        assert result.failure is FailureKind.TIMEOUT
        assert result.detail == f"no answer within {TIMEOUT * 1000:.0f}ms (expect)"
        assert result.latency == pytest.approx(TIMEOUT)  # not stretched by the wait
    assert sorted(host.lateness) == pytest.approx([0.0, TIMEOUT, 2 * TIMEOUT])


async def test_start_passes_start_checks_within_batch_of_due_early_or_late(
        autojump_clock: trio.testing.MockClock) -> None:
    """A start pass starts every check due within BATCH; the next comes GAP (2 x BATCH)
    later, so a check starts up to BATCH early (lateness 0) or late; intervals count from
    due times. A check due between passes that the next one would start over BATCH late
    gets a pass of its own, BATCH after its due time."""
    network = VirtualNetwork(lambda ip, port: Peer())  # accepts at once
    dues = [1.0, 1.004, 1.006, 1.012, 1.0149, 1.03]
    host = Host(len(dues) + 1)
    loop = ProbeLoop(host, Slots(64), time.time, lambda: network, batch=0.005, gap=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        for port, due in enumerate(dues, 9000):
            loop.add(group(port, due), TCP)
        await trio.sleep_until(1.0101)  # after the pass at 1.01: the next is at 1.02
        loop.add(group(9100, 1.0102), TCP)
        with trio.fail_after(30):
            await host.done.wait()
        nursery.cancel_scope.cancel()
    starts = {port: at for at, (_, port) in network.connects}
    assert [starts[port] for port in range(9000, 9006)] == pytest.approx(
        [1.0, 1.0, 1.01, 1.01, 1.01, 1.03])
    assert starts[9100] == pytest.approx(1.0152)  # not at 1.02: 5 ms late at most
    assert sorted(host.lateness) == pytest.approx([0.0] * 5 + [0.004, 0.005])
    anchors = {g.key[2]: started for g, _, started in host.results}
    assert [anchors[port] for port in range(9000, 9006)] == pytest.approx(dues)
    # ...while the engine hears when each really started (what self-suspicion judges by)
    assert host.began == pytest.approx(starts)


class Counted(Recheck):
    """A Recheck host that notes, after each check, how many connects the network was
    asked about again and how many sockets its poller was asked to watch."""

    def __init__(self, expect: int, network: VirtualNetwork) -> None:
        super().__init__(expect)
        self.network = network
        self.seen: list[tuple[int, int]] = []

    def probe_done(self, group: ProbeGroup, result: ProbeResult, started: float, now: float,
                   start_unix: float, anchor: float) -> None:
        """Record the result and the network's counts; due again an interval on."""
        super().probe_done(group, result, started, now, start_unix, anchor)
        self.seen.append((self.network.asked_again, self.network.registered))


async def test_a_connect_done_within_connect_needs_no_poller(
        autojump_clock: trio.testing.MockClock) -> None:
    """A connect complete when `connect` returns (a loopback backend's) is asked about
    once more and goes on at once: the poller never sees its socket. A backend whose
    connect takes a while is waited for in the poller from then on, without asking
    twice, until a connect completes in the pass that started it."""
    connect_takes = [0.0, 0.0, 0.05, 0.05, 0.0, 0.0]  # the seconds each check's connect takes
    network = VirtualNetwork(lambda ip, port: Peer(after=connect_takes[len(network.connects)]))
    host = Counted(len(connect_takes), network)
    loop = ProbeLoop(host, Slots(64), time.time, lambda: network)
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        loop.add(group(9000, trio.current_time()), TCP)
        with trio.fail_after(30):
            await host.done.wait()
        nursery.cancel_scope.cancel()
    assert all(result.ok for _, result, _ in host.results)
    assert host.seen == [(1, 0), (2, 0),  # at once: asked again, no poller
                         (3, 1),  # under way when asked again: the poller says when
                         (3, 2),  # not asked again; connected a while after its pass
                         (3, 3),  # not asked again; connected in the pass that started it...
                         (4, 3)]  # ...so the next one is asked again, and needs no poller


async def test_a_check_that_sends_learns_from_its_send_that_it_connected(
        autojump_clock: trio.testing.MockClock) -> None:
    """A check whose connect carries a request (`Connect.then`) is never asked about a
    second time: in a group whose connects complete within `connect` the request is sent
    at once, and that send says the connect is done; when it is still under way
    (EAGAIN) the request waits, with the check, for the poller to say the socket is
    writable, and the group's next connect is waited for too, until one completes in
    the pass that started it. Every check gets its answer (which comes only once the
    request arrived)."""
    connect_takes = [0.0, 0.05, 0.05, 0.0, 0.0]  # the seconds each check's connect takes
    network = VirtualNetwork(lambda ip, port: Peer(after=connect_takes[len(network.connects)],
                                                   reply=b"+PONG\r\n"))
    host = Counted(len(connect_takes), network)
    loop = ProbeLoop(host, Slots(64), time.time, lambda: network)
    config = ProbeConfig("tcp", Timing(timeout=TIMEOUT),
                         TcpSpec(send=b"PING\r\n", expect=re.compile(rb"\+PONG")))
    probe = TcpProbe(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        loop.add(group(9000, trio.current_time(), probe=config), probe)
        with trio.fail_after(30):
            await host.done.wait()
        nursery.cancel_scope.cancel()
    assert [(result.ok, result.detail) for _, result, _ in host.results] == [(True, "")] * 5
    assert host.seen == [(0, 1),  # sent at once; the poller says when the answer came
                         (0, 3),  # under way: the request waited for "writable"
                         (0, 5),  # waited for at once; connected a while after its pass
                         (0, 7),  # waited for; connected in the pass that started it...
                         (0, 8)]  # ...so the next one sends at once again


async def test_loop_checks_leave_no_time_wait(serve: Serve) -> None:
    """Twenty TCP and twenty HTTP checks from the loop leave no TIME_WAIT on either port."""
    tcp_port, http_port = await serve(hang_up), await serve(reply(OK_BODY))
    before = time_waits(tcp_port), time_waits(http_port)
    results, _ = await loop_checks([(tcp(), tcp_port)] * 20 + [(http(), http_port)] * 20)
    assert all(result.ok for result, _ in results)
    await trio.sleep(0.05)
    assert new_time_waits(tcp_port, before[0]) == 0
    assert new_time_waits(http_port, before[1]) == 0


class HeldHttp:
    """An HTTP/1.0 server on a thread of its own (it answers while the event loop is
    blocked) that holds every answer until `release` is set: 200, then close."""

    def __init__(self, expect: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.expect = expect
        self.received = 0
        self.all_received = threading.Event()  # set once `expect` requests were read
        self.release = threading.Event()
        self.answered = threading.Event()  # set once every request read was answered
        self.stop = threading.Event()

    def serve(self) -> None:
        """Accept, read requests, hold them until `release`, then answer all."""
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        held: list[socket.socket] = []
        while not self.stop.is_set():
            for key, _ in sel.select(0.01):
                if key.fileobj is self.listener:
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = self.listener.accept()
                        sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                sel.unregister(conn)
                with contextlib.suppress(OSError):
                    if b"\r\n\r\n" in conn.recv(4096):
                        self.received += 1
                        if self.received == self.expect:
                            self.all_received.set()
                        held.append(conn)
                        continue
                conn.close()
            if self.release.is_set() and held:
                for conn in held:
                    with contextlib.suppress(OSError):
                        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
                    conn.close()
                held.clear()
                self.answered.set()


@pytest.fixture
def held_http() -> Iterator[HeldHttp]:
    """A running HeldHttp expecting 2,100 requests, stopped when the test ends."""
    server = HeldHttp(2100)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(5)
        server.listener.close()


async def test_answers_that_came_while_the_loop_was_blocked_are_read_first(
        held_http: HeldHttp) -> None:
    """2,100 answers that arrived while the event loop was blocked past their deadline
    (more than one default epoll poll returns: 1,023) are all read before any deadline
    is judged: late as measured, none failed."""
    count, timeout = held_http.expect, 2.0  # time enough to send every request on a loaded machine
    probe = LeanHttpProbe(ProbeConfig("http", Timing(timeout=timeout), HttpSpec()))

    async def block_once_all_are_sent() -> None:
        assert await trio.to_thread.run_sync(held_http.all_received.wait, 30)
        past_every_deadline = trio.current_time() + timeout + 0.05
        # From here on the event loop is held (as a slow sink or a huge state document
        # could hold it) while the server answers every check.
        held_http.release.set()
        assert held_http.answered.wait(30)
        while trio.current_time() < past_every_deadline:
            time.sleep(0.01)  # noqa: ASYNC251  # blocking on purpose

    results, _ = await loop_checks([(probe, held_http.port)] * count, slots=4096,
                                   during=block_once_all_are_sent)
    assert [result for result, _ in results if not result.ok] == []
    assert min(result.latency for result, _ in results) > timeout


async def test_a_check_that_raises_fails_alone_and_is_logged_once(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """Checks whose request cannot be built (a header that is not Latin-1, past config
    validation) each fail with an ERROR naming the exception, logged once; the loop goes
    on and the other checks pass."""
    port = await serve(reply(OK_BODY))
    bad = http(headers=(("X-Price", "\u20ac"),))
    results, _ = await loop_checks([(bad, port), (tcp(), port), (bad, port), (http(), port)])
    (first, _), (plain, _), (second, _), (good, _) = results
    for result in (first, second):
        assert result.failure is FailureKind.ERROR
        assert result.detail.startswith("probe error: UnicodeEncodeError: 'latin-1' codec")
    assert plain.ok
    assert good.ok
    logged = [r for r in caplog.records if "UnicodeEncodeError" in r.getMessage()]
    assert len(logged) == 1


# -- host names: the resolver task, on the virtual network -------------------------------


async def test_a_check_waits_for_its_name_within_its_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    """A name answered 0.3 s after the check starts: the check connects then and passes
    (its latency counts the wait); one never answered fails at its deadline as `dns`,
    as a per-task check does; NXDOMAIN fails at once with its reason."""
    names = ScriptedResolver({"slow.test": (0.3, 60.0, (socket.AF_INET, "10.0.0.1")),
                              "gone.test": (0.01, 5.0, "resolve gone.test: no such name "
                                                       "(NXDOMAIN)")})
    network = VirtualNetwork(lambda ip, port: Peer())
    probe = TcpProbe(TCP_CONFIG, resolver=names)  # type: ignore[arg-type]
    [(slow, _)], _ = await loop_checks([(probe, 80)], host="slow.test", due=0.0,
                                       poller=lambda: network)
    assert (slow.ok, slow.latency) == (True, pytest.approx(0.3))
    assert network.connects == [(pytest.approx(0.3), ("10.0.0.1", 80))]
    [(silent_name, _)], _ = await loop_checks([(probe, 80)], host="mute.test",
                                              poller=lambda: network)
    assert (silent_name.failure, silent_name.detail) == (
        FailureKind.DNS, "resolve mute.test timed out after 500ms")
    assert silent_name.latency == pytest.approx(0.5)
    [(gone, _)], _ = await loop_checks([(probe, 80)], host="gone.test",
                                       poller=lambda: network)
    assert (gone.failure, gone.detail) == (FailureKind.DNS,
                                           "resolve gone.test: no such name (NXDOMAIN)")
