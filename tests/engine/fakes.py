"""Fakes for engine tests: a lean probe whose answers the test controls, the virtual network
the probe loop runs it on (a MockClock `Poller`), and config builders."""

from __future__ import annotations

import errno
import itertools
import math
import select
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from sentinel.config.model import (
    BackendConfig,
    BreakerConfig,
    Config,
    MinUp,
    NginxBreakerConfig,
    ProbeConfig,
    ServiceConfig,
    SinkBinding,
    SinkConfig,
    TcpSpec,
    Timing,
)
from sentinel.errors import ResolveError, SinkUnavailable
from sentinel.model import Event, FailureKind, ProbeResult
from sentinel.probes.base import Probe, Target, classify, failed
from sentinel.probes.exchange import Connect, Conversation
from sentinel.probes.rawsock import Address
from sentinel.probes.resolve import default_resolver
from sentinel.sinks.base import Update
from sentinel.sinks.memory import RecordingSink


async def run_inline(fn: Callable[..., None], *args: object) -> None:
    """Engine(run_blocking=...) for MockClock tests: disk writes happen on the loop, so
    autojumping virtual time cannot run ahead of them."""
    fn(*args)


@dataclass(frozen=True, slots=True)
class Peer:
    """What a connect to a pretend address meets: accepted (or, `refused`, reset) after
    `after` seconds; once a request came, `reply` after `reply_after` seconds (None: no
    answer ever), then the peer closes."""

    refused: bool = False
    after: float = 0.0
    reply: bytes | None = None
    reply_after: float = 0.0


class VirtualSocket:
    """A pretend non-blocking TCP socket (the probe loop's `Sock`) on the virtual clock."""

    def __init__(self, network: VirtualNetwork, fd: int) -> None:
        self.network = network
        self.fd = fd
        self.peer: Peer | None = None
        self.address: tuple[str, int] | None = None
        self.connected_at = math.inf
        self.reply_at = math.inf
        self.closed_at = math.inf  # the peer closed the connection (`VirtualNetwork.crash`)
        self.sent = b""
        self.replied = False
        self.interest = 0
        self.oneshot = False  # armed (`VirtualNetwork.arm`): unwatched once reported

    def fileno(self) -> int:
        """Its pretend descriptor."""
        return self.fd

    def connect_ex(self, address: tuple[str, int], /) -> int:
        """Start connecting: the network's `peer` says what answers, and when. Asked
        again (as a kernel answers): 0 once connected, EALREADY while under way,
        ECONNREFUSED once refused."""
        if self.peer is not None:
            self.network.asked_again += 1
            if self.connected_at > trio.current_time():
                return errno.EALREADY
            return errno.ECONNREFUSED if self.peer.refused else 0
        self.peer = self.network.peer(*address)
        self.address = address
        self.network.connects.append((trio.current_time(), address))
        self.connected_at = trio.current_time() + self.peer.after
        return errno.EINPROGRESS

    def getsockopt(self, level: int, option: int, /) -> int:
        """SO_ERROR: refused or not."""
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR)
        return errno.ECONNREFUSED if self.peer and self.peer.refused else 0

    def setsockopt(self, level: int, option: int, value: int, /) -> None:
        """Options change nothing here."""

    def send(self, data: bytes, /) -> int:
        """Everything fits once connected (as a kernel answers: EAGAIN while the connect
        is under way, the refusal once refused); the first request starts the peer's
        reply clock."""
        if self.peer is None or self.connected_at > trio.current_time():
            raise BlockingIOError(errno.EAGAIN, "connect under way")
        if self.peer.refused:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        if not self.sent and self.peer.reply is not None:
            self.reply_at = trio.current_time() + self.peer.reply_after
        self.sent += data
        return len(data)

    def recv(self, size: int, /) -> bytes:
        """The reply once it is due, then EOF; EOF once the peer closed."""
        if self.closed_at <= trio.current_time():
            return b""
        if self.reply_at > trio.current_time():
            raise BlockingIOError
        if self.replied:
            return b""
        self.replied = True
        assert self.peer is not None
        assert self.peer.reply is not None
        return self.peer.reply[:size]

    def close(self) -> None:
        """Gone from the network."""
        self.network.sockets.pop(self.fd, None)

    def ready_at(self) -> tuple[float, int]:
        """When its watched events are ready, and which."""
        assert self.peer is not None
        if self.peer.refused:
            return self.connected_at, select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
        if self.interest & select.EPOLLOUT:
            return self.connected_at, select.EPOLLOUT
        if self.interest & select.EPOLLIN:
            return min(self.reply_at, self.closed_at), select.EPOLLIN
        return math.inf, 0


class VirtualNetwork:
    """The probe loop's `Poller` over pretend sockets on trio's MockClock: `peer(ip, port)`
    says what each connect meets. Records every connect (time, (ip, port)), and counts
    the connects asked about again and the sockets the poller was asked to watch."""

    def __init__(self, peer: Callable[[str, int], Peer]) -> None:
        self.peer = peer
        self.sockets: dict[int, VirtualSocket] = {}
        self.connects: list[tuple[float, tuple[str, int]]] = []
        self.asked_again = 0
        self.registered = 0
        self._fds = itertools.count(1000)
        self._changed = trio.Event()  # a `crash` wakes `wait`
        self._sleep = trio.CancelScope()  # the current `wait`'s

    def crash(self, ip: str, port: int) -> None:
        """What a killed process's kernel does: every connection to (ip, port) is closed
        now (further connects meet whatever `peer` says)."""
        for sock in self.sockets.values():
            if sock.address == (ip, port):
                sock.closed_at = min(sock.closed_at, trio.current_time())
        self._changed.set()

    def socket(self, family: socket.AddressFamily, delay_ack: bool,
               source: Address | None) -> VirtualSocket:
        """A new pretend socket."""
        sock = VirtualSocket(self, next(self._fds))
        self.sockets[sock.fd] = sock
        return sock

    def reuse(self, sock: VirtualSocket, family: socket.AddressFamily,
              source: Address | None) -> None:
        """Closed, as every pretend socket is when done."""
        sock.close()

    def discard(self, sock: VirtualSocket) -> None:
        """Closed."""
        sock.close()

    def arm(self, fd: int, events: int) -> None:
        """Watch `fd` until `poll` reports it (as EPOLLONESHOT does)."""
        self.register(fd, events)
        self.sockets[fd].oneshot = True

    def register(self, fd: int, events: int) -> None:
        """Watch `fd`."""
        self.registered += 1
        self.sockets[fd].interest = events

    def modify(self, fd: int, events: int) -> None:
        """Watch `fd` for other events."""
        self.sockets[fd].interest = events

    def poll(self, max_events: int) -> list[tuple[int, int]]:
        """The sockets whose watched events are due by now (one-shot ones unwatched)."""
        now = trio.current_time()
        ready = [(fd, flags) for fd, sock in self.sockets.items() if sock.interest
                 for at, flags in [sock.ready_at()] if at <= now][:max_events]
        for fd, _ in ready:
            sock = self.sockets[fd]
            if sock.oneshot:
                sock.interest = 0
        return ready

    async def wait(self, deadline: float) -> None:
        """Sleep until the next socket is due, a `crash`, or `deadline` (or a `hasten`)."""
        due = [sock.ready_at()[0] for sock in self.sockets.values() if sock.interest]
        self._changed = trio.Event()
        with trio.move_on_at(min([*due, deadline])) as self._sleep:
            await self._changed.wait()

    def hasten(self, when: float) -> None:
        """Wake the current `wait` by `when`."""
        self._sleep.deadline = min(self._sleep.deadline, when)

    def close(self) -> None:
        """Nothing to release."""


class FakeProbe:
    """A lean probe whose checks are plain connects over a `VirtualNetwork` (`poller`):
    `alive[(host, port)]` (default alive) decides whether a connect is accepted or, after
    `fail_latency` seconds, refused; `weights` adds a weight to a passing result (as a
    script probe's `weight=N`). Records (time, target) per check. `lean = False` makes
    the engine run it as a task per group instead (`check`, scripted the same way)."""

    def __init__(self, fail_latency: float = 0.0, timeout: float = 10.0) -> None:
        self.alive: dict[tuple[str, int], bool] = {}
        self.weights: dict[tuple[str, int], int] = {}
        self.calls: list[tuple[float, Target]] = []
        self.fail_latency = fail_latency
        self.timeout = timeout
        self.lean = True
        self.resolver = default_resolver()
        self.network = VirtualNetwork(self.peer)  # the latest `poller`

    def factory(self) -> Callable[[ProbeConfig], FakeProbe]:
        """A probe_factory for Engine that always returns this probe."""
        return lambda _config: self

    def poller(self) -> VirtualNetwork:
        """The network this probe's checks meet (pass as Engine's `poller`)."""
        self.network = VirtualNetwork(self.peer)
        return self.network

    def kill(self, host: str, port: int) -> None:
        """The backend's process dies: refused from now on, its connections closed."""
        self.alive[(host, port)] = False
        self.network.crash(host, port)

    def peer(self, host: str, port: int) -> Peer:
        """Alive: accepted at once; dead: refused after `fail_latency`."""
        if self.alive.get((host, port), True):
            return Peer()
        return Peer(refused=True, after=self.fail_latency)

    def exchange(self, target: Target) -> FakeExchange:
        """One check of `target`: a connect."""
        self.calls.append((trio.current_time(), target))
        return FakeExchange(target.port, self.weights.get((target.host, target.port)))

    async def check(self, target: Target) -> ProbeResult:
        """The per-task check: answer from the scripted state."""
        self.calls.append((trio.current_time(), target))
        key = (target.host, target.port)
        if self.alive.get(key, True):
            return ProbeResult(ok=True, latency=0.0, weight=self.weights.get(key))
        await trio.sleep(self.fail_latency)
        return ProbeResult(ok=False, latency=self.fail_latency, failure=FailureKind.CONNECT,
                           detail="connection refused")

    def times(self, port: int) -> list[float]:
        """Virtual start times of the probes of one port."""
        return [t for t, target in self.calls if target.port == port]

    async def aclose(self) -> None:
        """Nothing to release."""


class FakeExchange(Conversation):
    """A connect-only check whose pass carries `weight` (see FakeProbe)."""

    __slots__ = ("weight",)

    def __init__(self, port: int, weight: int | None) -> None:
        super().__init__(Connect(port, delay_ack=True))
        self.weight = weight

    def result(self, latency: float) -> ProbeResult:
        """Connected: healthy."""
        return ProbeResult(ok=True, latency=latency, weight=self.weight)

    def timed_out(self, latency: float) -> ProbeResult:
        """No connect in time."""
        return failed(FailureKind.TIMEOUT, "timed out", latency)

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """Refused, as the edge table says it."""
        return failed(*classify(exc), latency)


class ScriptedResolver:
    """A resolver (`lookup`, as the probe loop's resolver task asks it) whose answers a
    test scripts: `answers[host] = (delay, ttl, address or negative reason)`; a host
    without one is never answered (a lookup ends at its deadline, EAI_AGAIN). Records
    each lookup as (time, host, fresh)."""

    def __init__(self, answers: dict[str, tuple[float, float, Address | str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[float, str, bool]] = []

    async def lookup(self, host: str, deadline: float, *, fresh: bool = False
                     ) -> tuple[float, Address | str]:
        """The scripted answer after its delay, valid for its TTL."""
        self.asked.append((trio.current_time(), host, fresh))
        if host not in self.answers:
            await trio.sleep_until(deadline)
            raise ResolveError(socket.EAI_AGAIN, f"resolve {host} timed out")
        delay, ttl, answer = self.answers[host]
        await trio.sleep(delay)
        return trio.current_time() + ttl, answer


class PerTask:
    """A real probe as the engine runs non-lean ones (a Trio task per probe group): only
    `check`, no exchange. Records the host of each check in `checked`."""

    def __init__(self, inner: Probe, checked: list[str] | None = None) -> None:
        self.inner = inner
        self.checked = checked if checked is not None else []

    async def check(self, target: Target) -> ProbeResult:
        """The inner probe's check, recorded."""
        self.checked.append(target.host)
        return await self.inner.check(target)

    async def aclose(self) -> None:
        """Close the inner probe."""
        await self.inner.aclose()


def service(name: str, ports: list[int], *, interval: float = 1.0, fast: float | None = None,
            down: float | None = None, timeout: float = 0.5, jitter: float = 0.0,
            breaker: BreakerConfig | None = None, sinks: tuple[str, ...] = ("rec",),
            min_up: int = 0, slow_start: float = 0.0, weight: int = 1) -> ServiceConfig:
    """A tcp service over 127.0.0.1 ports (backend names b<port>)."""
    timing = Timing(interval=interval, fast_interval=fast or interval,
                    down_interval=down or interval, timeout=timeout, jitter=jitter)
    backends = tuple(BackendConfig(name=f"b{p}", address=f"127.0.0.1:{p}", host="127.0.0.1",
                                   port=p, weight=weight) for p in ports)
    return ServiceConfig(name, backends, ProbeConfig("tcp", timing, TcpSpec()),
                         breaker or NginxBreakerConfig(max_fails=1, fail_timeout=10.0),
                         sinks=tuple(SinkBinding(s) for s in sinks),
                         slow_start=slow_start, min_up=MinUp(count=min_up))


def config(state_dir: Path, *services: ServiceConfig, max_in_flight: int = 1024,
           sinks: tuple[str, ...] = ("rec",)) -> Config:
    """A Config whose sinks are all overridden by the test (type `file`, never created)."""
    return Config(path="<test>", state_dir=str(state_dir), max_in_flight=max_in_flight,
                  sinks=tuple(SinkConfig(s, "file", None) for s in sinks),
                  services=services)


class Outboxish(RecordingSink):
    """A durable sink whose `accept` can be made to fail (the outbox write crashing)."""

    def __init__(self, name: str = "rec") -> None:
        super().__init__(name)
        self.accepted: list[Event] = []
        self.broken = False

    async def accept(self, events: Sequence[Event]) -> None:
        """Take events, or fail like a crash before the outbox commit."""
        if self.broken:
            raise OSError("disk full")
        self.accepted.extend(events)


class BreakableSink(RecordingSink):
    """A sink whose applies fail while `broken` (an exec command failing, a webhook
    receiver down); counts the failed applies."""

    def __init__(self, name: str = "rec") -> None:
        super().__init__(name)
        self.broken = False
        self.failures = 0

    async def apply(self, update: Update) -> None:
        """Record the update, or fail as an unreachable balancer would."""
        if self.broken:
            self.failures += 1
            raise SinkUnavailable(f"{self.name}: broken by the test")
        await super().apply(update)
