"""Seeing and fixing webhook deliveries: list, retry, purge, for `sentinel outbox` and
the `/v1/outbox` endpoints alike.

With no instance running, the CLI acts on each sink's outbox file itself
(`act_on_files`). A running sentinel holds the files' locks, so the CLI then
asks it over the API, which acts on the running sinks (`act_on_sinks`): the
running sink must hear of a retry or a purge anyway. Both answer with the same
document:

    {"sinks": {NAME: {"pending": n, "dead": n, "dropped": n, "entries": [...]}}}

where retry and purge list the entries they touched.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sentinel.sinks.webhook.outbox import Counts, Entry, Outbox
from sentinel.sinks.webhook.sink import WebhookSink, outbox_path

Action = Literal["list", "retry", "purge"]
ACTIONS: tuple[Action, ...] = ("list", "retry", "purge")
PARAMS = ("sink", "id", "state", "all", "limit")  # the API's query: the CLI sends them all
Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Request:
    """One list, retry or purge: which events (None: all that apply), dead letters only
    (list), pending events too (purge), and at most how many to list."""

    action: Action
    ids: Sequence[str] | None = None
    dead: bool = False
    pending_too: bool = False
    limit: int = 100


def sink_doc(counts: Counts, entries: list[Entry], extra: Doc | None = None) -> Doc:
    """One sink's part of the document."""
    return {"pending": counts.pending, "dead": counts.dead, "dropped": counts.dropped,
            **(extra or {}), "entries": [e.to_json() for e in entries]}


def act_on_files(state_dir: Path, names: Sequence[str], request: Request) -> Doc:
    """Carry `request` out on the outbox files of the sinks `names` (blocking; OutboxLocked
    when a running instance holds one: ask it through the API instead)."""
    sinks: Doc = {}
    for name in names:
        outbox = Outbox.open(outbox_path(state_dir, name))
        try:
            sinks[name] = sink_doc(outbox.counts(), _act_on_file(outbox, request))
        finally:
            outbox.close()
    return {"sinks": sinks}


def _act_on_file(outbox: Outbox, request: Request) -> list[Entry]:
    ids = list(request.ids) if request.ids else None
    if request.action == "retry":
        return outbox.retry(ids, time.time())
    if request.action == "purge":
        return outbox.purge(ids, pending_too=request.pending_too)
    return outbox.entries(dead=True if request.dead else None, event_ids=ids,
                          limit=request.limit)


async def act_on_sinks(sinks: Mapping[str, WebhookSink], names: Sequence[str],
                       request: Request) -> Doc:
    """Carry `request` out on the running sinks `names`; their statistics go along."""
    ids = list(request.ids) if request.ids else None
    out: Doc = {}
    for name in names:
        sink = sinks[name]
        if request.action == "retry":
            touched = await sink.retry(ids)
        elif request.action == "purge":
            touched = await sink.purge(ids, pending_too=request.pending_too)
        else:
            touched = [e for e in await sink.entries(dead=True if request.dead else None,
                                                      limit=-1 if ids else request.limit)
                       if ids is None or e.event_id in ids]
        stats = sink.statistics()
        extra = {k: v for k, v in stats.to_json().items()
                 if k not in ("pending", "dead", "dropped")}
        out[name] = sink_doc(stats.outbox, touched, extra)
    return {"sinks": out}
