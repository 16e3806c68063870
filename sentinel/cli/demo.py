"""`sentinel demo`: three loopback backends, one killed and brought back.

Everything runs in this process on 127.0.0.1: real HTTP servers on real
sockets, the real engine with its HTTP probes and nginx breaker, and a
printing sink that shows each transition and the nginx upstream it renders.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable

import trio

from sentinel.config.model import (
    BackendConfig,
    Config,
    HttpSpec,
    NginxBreakerConfig,
    ProbeConfig,
    ServiceConfig,
    SinkBinding,
    SinkConfig,
    Timing,
)
from sentinel.engine.engine import Engine
from sentinel.sinks.base import Update
from sentinel.sinks.nginx.render import render_upstream

DEMO_TIMEOUT = 30.0
OK = b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{"status": "ok"}'


class Backend:
    """A tiny HTTP server on 127.0.0.1 that can be stopped and started again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """Listen (on the same port as before, once one was chosen)."""
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self._scope = trio.CancelScope()
        nursery.start_soon(self._serve, listeners, self._scope)

    async def _serve(self, listeners: list[trio.SocketListener], scope: trio.CancelScope
                     ) -> None:
        with scope:
            await trio.serve_listeners(self._answer, listeners)

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(2):
                await stream.receive_some(4096)
                await stream.send_all(OK)

    def stop(self) -> None:
        """Close the listener: new connections are refused."""
        if self._scope is not None:
            self._scope.cancel()


class Printer:
    """A sink that prints transitions and the nginx upstream they lead to."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.name = "demo"
        self.say = say
        self.changed = trio.Event()

    async def apply(self, update: Update) -> None:
        """Print each event, then the upstream block."""
        for e in update.events:
            self.say(f"event #{e.seq}: {e.backend} {e.from_state} -> {e.to_state} "
                     f"(weight {e.weight}): {e.reason}")
        self.say("rendered nginx upstream:\n" + render_upstream(update.view))
        if update.events:
            self.changed.set()
            self.changed = trio.Event()

    async def aclose(self) -> None:
        """Nothing to release."""


def demo_config(ports: dict[str, int], state_dir: str) -> Config:
    """Fast settings so a failover and a recovery fit in seconds."""
    backends = tuple(BackendConfig(name=n, address=f"127.0.0.1:{p}", host="127.0.0.1",
                                   port=p, weight=5) for n, p in ports.items())
    probe = ProbeConfig("http", Timing(interval=0.5, fast_interval=0.2, down_interval=0.5,
                                       timeout=0.3),
                        HttpSpec(path="/healthz", expect_body=re.compile(r'"status":\s*"ok"')))
    service = ServiceConfig("web", backends, probe,
                            NginxBreakerConfig(max_fails=2, fail_timeout=2.0),
                            sinks=(SinkBinding("demo"),))
    return Config(path="<demo>", state_dir=state_dir,
                  sinks=(SinkConfig("demo", "file", None),), services=(service,))


async def demo(say: Callable[[str], None] = print) -> None:
    """The whole demo; returns when the killed backend is back in rotation."""
    with tempfile.TemporaryDirectory(prefix="sentinel-demo-") as state_dir:
        backends = [Backend(f"web{i}") for i in (1, 2, 3)]
        printer = Printer(say)
        with trio.fail_after(DEMO_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for b in backends:
                    await b.start(nursery)
                say("backends: " + ", ".join(f"{b.name}=127.0.0.1:{b.port}" for b in backends))
                engine = Engine(demo_config({b.name: b.port for b in backends}, state_dir),
                                sinks={"demo": printer})
                await nursery.start(engine.run)
                await trio.sleep(1.5)
                victim = backends[1]
                say(f"--- stopping {victim.name}: its port now refuses connections")
                victim.stop()
                await printer.changed.wait()
                await trio.sleep(1.0)
                say(f"--- starting {victim.name} again")
                await victim.start(nursery)
                await printer.changed.wait()
                say("--- demo done: failover and recovery seen")
                engine.stop()
                for b in backends:
                    b.stop()


def run_demo() -> int:
    """Entry point of `sentinel demo`."""
    engine_log = logging.getLogger("sentinel.engine")
    if engine_log.getEffectiveLevel() > logging.DEBUG:
        engine_log.setLevel(logging.WARNING)  # the printer already tells each transition
    trio.run(demo)
    return 0
