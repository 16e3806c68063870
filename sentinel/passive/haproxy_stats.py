"""HAProxy's per-server error counters as a passive source.

Every `interval` the poller reads `show stat` (CSV, one row per proxy and per
server) through the haproxy sink's runtime-API client and compares each
server's counters with the previous read:

- `econ`: connections to the server that failed (refused, timed out);
- `eresp`: responses that failed (the server closed or reset mid-answer,
  an invalid header, a read timeout);
- `hrsp_5xx`: HTTP responses with a 5xx status (empty in `mode tcp`).

A server whose counters grew gives one signal per read naming what grew
("2 connection errors, 1 5xx response"). Counters that went down belong to a
new HAProxy process (a reload or restart zeroes them): that read is the new
baseline. The first read is only a baseline too. Rows map to backends
through the haproxy bindings of the services that read this sink: the
HAProxy backend is the binding's `backend` (default the service's name), the
server the binding's `servers` entry (default the backend's name).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import trio

from sentinel.errors import SinkError
from sentinel.passive.base import Key, Signal
from sentinel.sinks.haproxy.runtime_api import RuntimeApi

log = logging.getLogger(__name__)
SOURCE = "haproxy show stat"
COUNTERS: Final[dict[str, tuple[str, str]]] = {  # column -> (one, many)
    "econ": ("connection error", "connection errors"),
    "eresp": ("response error", "response errors"),
    "hrsp_5xx": ("5xx response", "5xx responses"),
}
Server = tuple[str, str]  # (HAProxy backend, server)
Counts = dict[str, int]


def parse_stat(text: str) -> dict[Server, Counts]:
    """The error counters of every server row of `show stat` (proxy rows are left out;
    an empty cell counts as 0). ValueError when the answer is not `show stat` CSV."""
    if not text.startswith("# "):
        raise ValueError(f"not `show stat` output: {text[:80]!r}")
    rows = csv.DictReader(io.StringIO(text[2:]))
    missing = {"pxname", "svname", *COUNTERS} - set(rows.fieldnames or ())
    if missing:
        raise ValueError(f"`show stat` lacks column(s) {', '.join(sorted(missing))}")
    out: dict[Server, Counts] = {}
    for row in rows:
        if row["svname"] in ("FRONTEND", "BACKEND") or not row["pxname"]:
            continue
        out[(row["pxname"], row["svname"])] = {
            column: int(row[column] or 0) for column in COUNTERS}
    return out


def grown(before: Mapping[Server, Counts], after: Mapping[Server, Counts]
          ) -> dict[Server, str]:
    """Servers whose error counters grew from `before` to `after`, with what grew as
    reasons say it. A server new in `after`, or whose counters went down (a new
    HAProxy process), gives nothing: its baseline starts now."""
    out: dict[Server, str] = {}
    for server, now in after.items():
        then = before.get(server)
        if then is None or any(now[c] < then[c] for c in COUNTERS):
            continue
        parts = []
        for column, (one, many) in COUNTERS.items():
            delta = now[column] - then[column]
            if delta:
                parts.append(f"{delta} {one if delta == 1 else many} ({column})")
        if parts:
            out[server] = ", ".join(parts)
    return out


@dataclass(frozen=True, slots=True)
class StatsSource:
    """One haproxy sink's socket and the backends its servers stand for."""

    socket: str
    timeout: float
    interval: float
    servers: Mapping[Server, tuple[Key, ...]]  # (HAProxy backend, server) -> backends


async def poll_stats(source: StatsSource, report: Callable[[Signal], None], *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Read `show stat` every `source.interval` and report servers whose error counters
    grew, until cancelled. A socket that does not answer is logged once per outage and
    tried again; the read after it is a new baseline."""
    api = RuntimeApi(source.socket, timeout=source.timeout)
    before: dict[Server, Counts] | None = None
    trouble = ""
    task_status.started()
    while True:
        try:
            after = parse_stat(await api.command("show stat"))
        except (SinkError, ValueError) as exc:
            if str(exc) != trouble:
                trouble = str(exc)
                log.warning("passive haproxy %s: %s", source.socket, exc)
            before = None
        else:
            trouble = ""
            if before is not None:
                for server, what in grown(before, after).items():
                    for service, backend in source.servers.get(server, ()):
                        report(Signal(service, backend, SOURCE, what))
            before = after
        await trio.sleep(source.interval)
