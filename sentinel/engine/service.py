"""One service's runtime: its backends, its probes, its sinks, and what was last decided
(the panic guard that decides it is `sentinel.engine.decide.guard`)."""

from __future__ import annotations

import json

from sentinel.config.model import ServiceConfig
from sentinel.engine.backend import BackendRuntime
from sentinel.engine.decide import guard
from sentinel.model import Event, ServiceView
from sentinel.probes.base import Probe
from sentinel.sinks.base import Update
from sentinel.sinks.runner import SinkRunner


class ServiceRuntime:
    """Everything the engine keeps for one service."""

    __slots__ = ("_chunks", "backends", "bindings", "config", "decided", "entries", "panic",
                 "probes")

    def __init__(self, config: ServiceConfig, probes: tuple[Probe, ...],
                 backends: list[BackendRuntime],
                 bindings: list[tuple[SinkRunner, object]]) -> None:
        self.config = config
        # `config.entries` builds its tuple when asked; the engine asks after every probe
        self.entries = config.entries
        self.probes = probes  # one per entry of `entries`
        self.backends = backends
        self.bindings = bindings
        self.panic = False
        # What was last decided (`Committer.stage`): what sinks are told and /v1/state shows
        self.decided = guard(config, backends)
        self._chunks: dict[int, tuple[tuple[dict[str, object], ...], bytes]] = {}

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
