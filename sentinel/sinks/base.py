"""The sink interface.

A sink receives `Update`s: the full desired view of one service (sinks are
level-triggered and converge to it) plus the events that led there since the
sink last succeeded for that service (for per-event sinks such as exec and
webhook). The `SinkRunner` in `sentinel.sinks.runner` coalesces bursts,
retries failures with backoff and never lets a sink stall probing.

Beyond `apply` and `aclose` a sink may have capabilities, each a Protocol here
(durable, batch, background, flushable, table source, health, bound, outbox).
They are checked once, when the sink's runner is built (`Capabilities.of`);
nothing asks a sink object what it can do after that.

Each sink kind registers a `SinkKind` in `sentinel.sinks.registry` by its config
name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import trio

from sentinel.config.load import NameProblem
from sentinel.config.model import Config, SinkScope
from sentinel.config.tables import Section
from sentinel.errors import SinkUnavailable
from sentinel.model import Event, ServiceView


@dataclass(frozen=True, slots=True)
class Update:
    """What one sink is told about one service."""

    view: ServiceView
    events: tuple[Event, ...] = ()
    options: object = None  # the service's binding options for this sink kind

    def merge(self, newer: Update) -> Update:
        """Coalesce: the newer view wins, events accumulate in order."""
        return Update(newer.view, self.events + newer.events, newer.options)


@runtime_checkable
class DurableSink(Protocol):
    """A sink that must not lose an event (webhook's outbox): the engine hands it the
    events as soon as they are on disk, before anything else hears of them."""

    async def accept(self, events: Sequence[Event]) -> None:
        """Make `events` durable in the sink's own store (idempotent by event id)."""
        ...


@runtime_checkable
class DeliveryProgress(Protocol):
    """A durable sink that can say how far it has delivered (in a cluster the leader
    records it, so the next leader resumes there)."""

    def owed_seq(self) -> int | None:
        """The lowest seq of an event still to deliver; None when nothing is owed."""
        ...


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """How a sink's own background work is doing (webhook deliveries, HAProxy's watch and
    resync), beside the applies its runner counts; part of the sink's /v1/state entry."""

    ok: bool
    last_error: str = ""  # why not ok
    details: Mapping[str, object] = field(default_factory=dict)  # more keys of the entry


@runtime_checkable
class ReportsHealth(Protocol):
    """A sink whose applies can succeed while its real work fails (a webhook sink's
    apply only enqueues): the runner folds this into the sink's statistics."""

    def health(self) -> SinkHealth:
        """A snapshot, from memory only: /v1/state calls it on the event loop."""
        ...


@runtime_checkable
class BatchSink(Protocol):
    """A sink that converges several services in one go (nginx: one file, one reload).
    The runner hands it every service that is ready at once."""

    async def apply_batch(self, updates: Sequence[Update]) -> None:
        """Converge to every update's view together; raise SinkError on failure."""
        ...


@runtime_checkable
class BoundSink(Protocol):
    """A sink that keeps views across services (nginx renders them into one file, HAProxy
    repairs their drift): told which services are bound to it whenever that is decided,
    at start and at each reload, so a service unbound or removed leaves its memory."""

    def bind(self, services: frozenset[str]) -> None:
        """The services bound to this sink from now on (sync: the engine calls it)."""
        ...


@runtime_checkable
class BackgroundSink(Protocol):
    """A sink with work of its own beside applies (HAProxy's watch and drift repair,
    webhook deliveries): its runner runs it, and stops it with the runner."""

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Work until cancelled; `task_status.started()` once ready."""
        ...


@runtime_checkable
class FlushableSink(Protocol):
    """A sink whose applies only enqueue (webhook): a clean stop waits, within
    `shutdown_timeout`, for what it holds to go out."""

    async def wait_flushed(self) -> None:
        """Return once nothing is waiting to be delivered."""
        ...


@runtime_checkable
class TableSource(Protocol):
    """A sink that publishes a table per service (Maglev), served by the API."""

    def table_for(self, service: str) -> tuple[dict[str, object], bytes] | None:
        """The sidecar document and table last published for `service`, if any."""
        ...


class OutboxCounts(Protocol):
    """How many events an outbox holds, pending and dead, and how many it dropped."""

    @property
    def pending(self) -> int:
        """Waiting for delivery."""
        ...

    @property
    def dead(self) -> int:
        """Given up on (dead letters)."""
        ...

    @property
    def dropped(self) -> int:
        """Dropped by the outbox's bounds, ever."""
        ...


@runtime_checkable
class OutboxSink(Protocol):
    """A sink that keeps events in a durable outbox (webhook): the metrics count it."""

    def outbox_counts(self) -> OutboxCounts:
        """The outbox's counts, from memory (the metrics call it on the event loop)."""
        ...


class Sink(Protocol):
    """A publisher of service views."""

    name: str

    async def apply(self, update: Update) -> None:
        """Converge the target to `update.view`; raise SinkError on failure."""
        ...

    async def aclose(self) -> None:
        """Release resources; called once at shutdown."""
        ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a sink can do besides `apply` and `aclose`: the sink itself under each
    capability Protocol it implements, None under the others."""

    durable: DurableSink | None = None
    batch: BatchSink | None = None
    background: BackgroundSink | None = None
    flushable: FlushableSink | None = None
    tables: TableSource | None = None
    health: ReportsHealth | None = None
    bound: BoundSink | None = None
    outbox: OutboxSink | None = None
    progress: DeliveryProgress | None = None

    @classmethod
    def of(cls, sink: Sink) -> Capabilities:
        """Check `sink` against every capability Protocol, once (when it is bound)."""
        return cls(
            durable=sink if isinstance(sink, DurableSink) else None,
            batch=sink if isinstance(sink, BatchSink) else None,
            background=sink if isinstance(sink, BackgroundSink) else None,
            flushable=sink if isinstance(sink, FlushableSink) else None,
            tables=sink if isinstance(sink, TableSource) else None,
            health=sink if isinstance(sink, ReportsHealth) else None,
            bound=sink if isinstance(sink, BoundSink) else None,
            outbox=sink if isinstance(sink, OutboxSink) else None,
            progress=sink if isinstance(sink, DeliveryProgress) else None)


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink may use from the running instance."""

    state_dir: Path
    state_document: Callable[[], dict[str, object]] = field(default=lambda: {})  # `file`
    config: Callable[[], Config | None] = field(default=lambda: None)  # as reloaded


NO_KEYS = Section()


def no_name_rules(binding: object, service: str, backends: Sequence[str]
                  ) -> list[NameProblem]:
    """For sink kinds that write names nowhere a balancer parses them."""
    return []


@dataclass(frozen=True, slots=True)
class SinkKind:
    """A sink kind as the config and engine see it.

    parse_options(node) validates the `sinks.NAME` mapping (minus `type`);
    parse_binding(node) validates a service's `{sink: NAME, ...}` extras;
    check_names(binding, service, backends) says which of a service's names the
    target cannot take (nginx upstream names, HAProxy backend and server names),
    given the binding's name overrides; create(name, options, ctx) builds the sink.
    `scope` is where the kind runs in a cluster unless a sink says otherwise: `local`
    (every member, the balancers' own kinds) or `leader` (notifications, once per event).
    `options` and `binding` are the field tables the two parsers read, which
    `sentinel schema` walks (none: the kind takes no keys there).
    """

    name: str
    parse_options: Callable[..., object]
    parse_binding: Callable[..., object]
    create: Callable[[str, object, SinkContext], Sink]
    check_names: Callable[[object, str, Sequence[str]], list[NameProblem]] = no_name_rules
    scope: SinkScope = "local"
    options: Section = NO_KEYS
    binding: Section = NO_KEYS


@contextmanager
def unavailable(target: str, *, time_limit: float = math.inf) -> Iterator[None]:
    """The one place sinks map failing to reach their target: in the block, an OSError
    (a command that is missing, a socket that refuses, a full disk; a TimeoutError is
    one, so a command's own time limit is raised as that), a broken connection, or
    `time_limit` seconds passing becomes SinkUnavailable("TARGET: why"), which the
    runner retries. The original stays chained as the cause."""
    try:
        with trio.fail_after(time_limit):
            yield
    except trio.TooSlowError:
        raise SinkUnavailable(f"{target}: no answer within {time_limit:g}s") from None
    except (OSError, trio.BrokenResourceError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise SinkUnavailable(f"{target}: {why}") from exc
