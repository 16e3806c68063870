"""One service's runtime: its backends, its probe, its sinks, and the panic guard."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sentinel.config.model import ServiceConfig
from sentinel.engine.backend import BackendRuntime
from sentinel.model import Event, ServiceView, State
from sentinel.probes.base import Probe
from sentinel.sinks.base import Update
from sentinel.sinks.runner import SinkRunner


@dataclass(frozen=True, slots=True)
class Published:
    """A service's published view and which backends the panic guard is holding up."""

    view: ServiceView
    held_up: tuple[str, ...]


class ServiceRuntime:
    """Everything the engine keeps for one service."""

    __slots__ = ("_chunks", "backends", "bindings", "config", "decided", "panic", "probe")

    def __init__(self, config: ServiceConfig, probe: Probe, backends: list[BackendRuntime],
                 bindings: list[tuple[SinkRunner, object]]) -> None:
        self.config = config
        self.probe = probe
        self.backends = backends
        self.bindings = bindings
        self.panic = False
        # What was last decided (`Publisher.decide`): what sinks are told and /v1/state shows
        self.decided = self.published()
        self._chunks: dict[int, tuple[tuple[dict[str, object], ...], bytes]] = {}

    def published(self) -> Published:
        """The view sinks should converge to, after the panic guard (SPEC 5).

        Panic is when the breakers say fewer than `min_up` backends are healthy
        (an operator's drain or maint of a healthy backend is not a panic). Then
        the down backends that most recently passed a probe stay published up,
        enough to publish `min_up` up; admin overrides are never overruled.
        """
        desired = [b.desired() for b in self.backends]
        up = sum(1 for state, _ in desired if state is State.UP)
        healthy = sum(1 for b in self.backends if b.healthy)
        required = self.config.min_up.required(len(self.backends))
        panic = healthy < required
        held: list[int] = []
        if panic:
            candidates = [i for i, (state, _) in enumerate(desired)
                          if state is State.DOWN and self.backends[i].override is None]
            candidates.sort(key=lambda i: -(self.backends[i].last_ok or 0.0))
            held = candidates[: required - up]
        views = []
        for i, (b, (state, weight)) in enumerate(zip(self.backends, desired, strict=True)):
            if i in held:
                state, weight = State.UP, b.config.weight
            views.append(b.view(state, weight))
        view = ServiceView(self.config.name, tuple(views), panic=panic)
        return Published(view, tuple(self.backends[i].config.name for i in held))

    def publish(self, view: ServiceView, events: tuple[Event, ...] = ()) -> None:
        """Hand the view (and the events behind it) to every sink of this service."""
        for runner, options in self.bindings:
            runner.publish(Update(view, events, options))

    def to_json(self) -> dict[str, object]:
        """This service's entry in the state document, as last decided."""
        backends = [b.shown(v.state, v.weight)
                    for b, v in zip(self.backends, self.decided.view.backends, strict=True)]
        return {**self.header(), "backends": backends}

    def chunk_json(self, index: int, shown: tuple[dict[str, object], ...]) -> bytes:
        """Backend entries number `index` of the state document (`shown`, CHUNK of them)
        as JSON without the brackets; encoded again only when one of them was rebuilt."""
        cached = self._chunks.get(index)
        if cached is None or len(cached[0]) != len(shown) or any(
                a is not b for a, b in zip(cached[0], shown, strict=True)):
            body = json.dumps(shown, separators=(",", ":")).encode()[1:-1]
            cached = self._chunks[index] = (shown, body)
        return cached[1]

    def header(self) -> dict[str, object]:
        """The service's entry in the state document without its backends."""
        view = self.decided.view
        return {"panic": view.panic, "up": view.up, "total": len(self.backends)}
