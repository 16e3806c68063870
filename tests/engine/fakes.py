"""Fakes for engine tests: a probe whose answers the test controls, and config builders."""

from __future__ import annotations

from collections.abc import Callable
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
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes.base import Target


async def run_inline(fn: Callable[..., None], *args: object) -> None:
    """Engine(run_blocking=...) for MockClock tests: disk writes happen on the loop, so
    autojumping virtual time cannot run ahead of them."""
    fn(*args)


class FakeProbe:
    """Answers from `alive[(host, port)]` (default alive); records (time, target) per call.

    A dead target answers after `fail_latency` seconds (0: refused at once).
    """

    def __init__(self, fail_latency: float = 0.0) -> None:
        self.alive: dict[tuple[str, int], bool] = {}
        self.weights: dict[tuple[str, int], int] = {}
        self.calls: list[tuple[float, Target]] = []
        self.fail_latency = fail_latency

    def factory(self) -> Callable[[ProbeConfig], FakeProbe]:
        """A probe_factory for Engine that always returns this probe."""
        return lambda _config: self

    async def check(self, target: Target) -> ProbeResult:
        """Answer from the scripted state."""
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
