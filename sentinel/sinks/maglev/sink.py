"""`maglev` sink: a Maglev lookup table per service for a data plane to hash into.

Per service it writes `DIR/SERVICE.maglev` (one little-endian uint32 backend
index per slot) and `DIR/SERVICE.json` (backends by index, weights,
`generation`, `sha256` of the table), each atomically, the table first. A
reader takes the JSON, then the table, and retries when the table's sha256
is not the one the JSON names (a newer generation landed in between).

Files are written only when the table or its description changed, and then
`generation` grows by one; it is read back from the JSON at start so a
restart continues the count. When no backend is eligible the last table
stays published with `"state": "fail_static"` (as Katran keeps serving its
last ring), unless `on_empty: clear`, which publishes a table of NO_BACKEND
(`"state": "empty"`). Rebuilds are at most one per `min_interval` per
service and run in a worker thread with the file writes, so probing never
waits for them. See `sentinel.sinks.maglev.table` for the algorithm and the hash contract.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import trio

from sentinel.addresses import canonical
from sentinel.files import write_atomic
from sentinel.model import ServiceView, State
from sentinel.sinks.base import SinkContext, SinkKind, Update, unavailable
from sentinel.sinks.maglev.options import (
    OPTIONS,
    MaglevOptions,
    parse_binding,
    parse_options,
)
from sentinel.sinks.maglev.table import (
    Member,
    Table,
    build,
    read_files,
    sidecar,
)

log = logging.getLogger(__name__)


def members_of(view: ServiceView) -> list[Member]:
    """The view's backends as table members."""
    return [Member(name=b.name, key=canonical(b.host, b.port), weight=b.weight,
                   configured_weight=b.configured_weight, up=b.state is State.UP,
                   backup=b.backup, address=b.address) for b in view.backends]


@dataclass(frozen=True, slots=True)
class Published:
    """What is on disk for one service: the sidecar document and the table bytes."""

    doc: dict[str, object]
    table: bytes
    generation: int = 0

    def same_as(self, other: Published) -> bool:
        """Equal apart from the generation number."""
        mine = {k: v for k, v in self.doc.items() if k != "generation"}
        theirs = {k: v for k, v in other.doc.items() if k != "generation"}
        return self.table == other.table and mine == theirs


def load_published(directory: Path, service: str) -> tuple[Published | None, int]:
    """The pair on disk and its generation; (None, generation) when the pair is missing
    or inconsistent (the generation still counts on from what the JSON says)."""
    path = directory / f"{service}.json"
    try:
        doc, table = read_files(path)
    except (OSError, ValueError):
        try:
            number = json.loads(path.read_text()).get("generation")
        except (OSError, ValueError, AttributeError):
            return None, 0
        return None, number if isinstance(number, int) else 0
    generation = doc.get("generation")
    if not isinstance(generation, int):
        return None, 0
    return Published(doc, table, generation), generation


class MaglevSink:
    """Builds and publishes one table per service."""

    def __init__(self, name: str, options: MaglevOptions, ctx: SinkContext) -> None:
        self.name = name
        self._options = options
        self._dir = Path(options.dir) if options.dir else ctx.state_dir / "maglev"
        self._published: dict[str, Published] = {}
        self._built_at: dict[str, float] = {}

    async def apply(self, update: Update) -> None:
        """Rebuild (rate-limited) and write the files when the table changed."""
        service = update.view.service
        due = self._built_at.get(service, -math.inf) + self._options.min_interval
        if due > trio.current_time():
            await trio.sleep_until(due)
        self._built_at[service] = trio.current_time()
        previous = self._published.get(service)
        with unavailable(str(self._dir)):
            published = await trio.to_thread.run_sync(self._converge, update.view, previous)
        self._published[service] = published

    def _converge(self, view: ServiceView, previous: Published | None) -> Published:
        """Build the table for `view` and publish it unless nothing changed (worker thread)."""
        service = view.service
        generation = previous.generation if previous else 0
        if previous is None:
            previous, generation = load_published(self._dir, service)
        table = build(members_of(view), self._options.table_size, self._options.mode)
        if table.filled:
            candidate = self._render(table, service, "ok")
        elif (self._options.on_empty == "keep" and previous is not None
              and previous.doc.get("state") != "empty"):
            candidate = Published({**previous.doc, "state": "fail_static"}, previous.table)
        else:
            candidate = self._render(table, service, "empty")
        if previous is not None and candidate.same_as(previous):
            return previous
        state = candidate.doc["state"]
        if state != "ok":
            log.warning("%s: no backend of %s is up: %s", self.name, service,
                        "keeping the last table (fail static)" if state == "fail_static"
                        else "publishing an empty table")
        generation += 1
        published = Published({**candidate.doc, "generation": generation}, candidate.table,
                              generation)
        write_atomic(self._dir / f"{service}.maglev", published.table)
        write_atomic(self._dir / f"{service}.json",
                     json.dumps(published.doc, indent=1).encode() + b"\n")
        log.info("%s: %s: table generation %d (%s)", self.name, service, generation, state)
        return published

    def _render(self, table: Table, service: str, state: str) -> Published:
        return Published(sidecar(table, generation=0, state=state, service=service),
                         table.to_bytes())

    def table_for(self, service: str) -> tuple[dict[str, object], bytes] | None:
        """The published sidecar document and table of `service` (GET /v1/maglev)."""
        published = self._published.get(service)
        return (dict(published.doc), published.table) if published else None

    async def aclose(self) -> None:
        """Nothing to release."""


def _create(name: str, options: object, ctx: SinkContext) -> MaglevSink:
    assert isinstance(options, MaglevOptions)
    return MaglevSink(name, options, ctx)


KIND = SinkKind(name="maglev", parse_options=parse_options, parse_binding=parse_binding,
                create=_create, options=OPTIONS)
