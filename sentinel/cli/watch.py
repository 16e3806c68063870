"""`sentinel status --watch`: the status table kept current from GET /v1/stream.

The stream's first `state` messages are the whole state; later ones carry only
the backends that moved, merged here by name. Rows that changed in the last
few seconds are highlighted (reverse video on a terminal, a trailing `*`
otherwise). The connection is re-opened with Last-Event-ID when it drops;
Ctrl-C ends it quietly.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from sentinel.cli.status import not_sentinel, render_table

HIGHLIGHT_FOR = 3.0  # seconds a changed row stays highlighted
REDRAW_EVERY = 0.5
EVENTS_SHOWN = 5
CLEAR = "\x1b[H\x1b[2J"


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One server-sent-events message."""

    kind: str
    data: str
    id: str | None


def read_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """Messages from the lines of an event stream (comments, such as heartbeats, skipped)."""
    kind, seq = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SseMessage(kind, "\n".join(data), seq)
            kind, data, seq = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            seq = value


class WatchedState:
    """The state document as the stream tells it, and when each row last changed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.doc: dict[str, Any] = {"services": {}}
        self.changed: dict[tuple[str, str], float] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_SHOWN)
        self.last_id: str | None = None
        self._clock = clock
        self._loaded: set[str] = set()  # services whose full entry has arrived

    def apply(self, message: SseMessage, data: dict[str, Any]) -> None:
        """Merge one decoded message."""
        if message.kind == "event":
            self.last_id = message.id
            self.events.append(data)
        elif message.kind == "summary":
            self.doc.update(data)
        elif message.kind == "state":
            self._merge(data)

    def _merge(self, data: dict[str, Any]) -> None:
        services = self.doc["services"]
        name = data["service"]
        if data.get("removed"):
            services.pop(name, None)
            return
        now = self._clock()
        old = {b["name"]: b for b in services.get(name, {}).get("backends", [])}
        if data["full"]:
            backends = [dict(b) for b in data["backends"]]
        else:
            backends = list(old.values())
            index = {b["name"]: i for i, b in enumerate(backends)}
            for b in data["backends"]:
                if b["name"] in index:
                    backends[index[b["name"]]] = b
        if name in self._loaded:  # the first full entry is the start, not a change
            for b in backends:
                before = old.get(b["name"])
                if before is None or _shown(before) != _shown(b):
                    self.changed[(name, b["name"])] = now
        self._loaded.add(name)
        services[name] = {"panic": data["panic"], "up": data["up"], "total": data["total"],
                          "backends": backends}

    def render(self, *, color: bool) -> str:
        """The table with recently changed rows marked, then the latest events."""
        now = self._clock()

        def mark(service: str, backend: str, line: str) -> str:
            if now - self.changed.get((service, backend), -HIGHLIGHT_FOR) >= HIGHLIGHT_FOR:
                return line
            return f"\x1b[7m{line}\x1b[0m" if color else f"{line} *"

        lines = [render_table(self.doc, mark)]
        for e in self.events:
            who = f"{e['service']}/{e['backend']}" if e["backend"] else e["service"]
            lines.append(f"{e['time']}  {who}  {e['from']} -> {e['to']}: {e['reason']}")
        return "\n".join(lines)


def _shown(b: dict[str, Any]) -> tuple[object, ...]:
    """What the table shows of a backend (a new probe alone is no change)."""
    return (b["state"], b["weight"], b["since"], b.get("progress"), b.get("override"))


def watch_status(api: str, token: str | None, *, out: TextIO = sys.stdout) -> int:
    """Print the table, and again whenever it changes, until Ctrl-C (exit 0); exit 1 when
    the token is refused, or the server answers but is not sentinel (no event stream at
    /v1/stream, or events that are not JSON or not of the shape the table reads): retrying
    would never help."""
    color = out.isatty()
    state = WatchedState()
    delay = 0.5
    status = "connecting"
    drawn, last_draw = "", 0.0
    response: httpx.Response | None = None  # the latest answer, named when it is foreign
    try:
        while True:
            headers = {"Accept": "text/event-stream"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            if state.last_id is not None:
                headers["Last-Event-ID"] = state.last_id
            try:
                with httpx.stream("GET", f"{api}/v1/stream", headers=headers,
                                  timeout=httpx.Timeout(10.0, read=45.0)) as response:
                    if response.status_code == 401:
                        print(f"sentinel status: {api} refused the token (401)", file=sys.stderr)
                        return 1
                    kind = response.headers.get("content-type", "")
                    if response.status_code == 404 or (
                            response.is_success and not kind.startswith("text/event-stream")):
                        return not_sentinel("status", api, response, "no event stream")
                    response.raise_for_status()
                    status, delay = "live", 0.5
                    for message in read_sse(response.iter_lines()):
                        state.apply(message, json.loads(message.data))
                        # the snapshot ends with a summary: draw once it is all there
                        if "seq" in state.doc and time.monotonic() - last_draw >= REDRAW_EVERY:
                            drawn = _draw(out, state, api, status, color, drawn)
                            last_draw = time.monotonic()
                status = "stream ended; reconnecting"
            except httpx.HTTPError as exc:
                status = f"reconnecting ({exc or type(exc).__name__})"
            drawn = _draw(out, state, api, status, color, drawn)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    except KeyboardInterrupt:
        if color:
            out.write("\n")
        return 0
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        # The edge: what the server sent, read as sentinel's by `apply` and by every draw
        # (the table reads each field it shows, as `status` renders to check a document);
        # only a server's events can be of another shape, so there was an answer.
        assert response is not None
        return not_sentinel("status", api, response, "events that are not sentinel's")


def _draw(out: TextIO, state: WatchedState, api: str, status: str, color: bool,
          before: str) -> str:
    """Print the screen when it differs from `before`; returns what is shown."""
    body = state.render(color=color)
    head = f"sentinel {api}: {status}, seq {state.doc.get('seq', '?')}"
    if body + status == before:
        return before
    if color:
        out.write(f"{CLEAR}{head} (Ctrl-C to quit)  {time.strftime('%H:%M:%S')}\n{body}\n")
    else:
        out.write(f"{head}\n{body}\n\n")
    out.flush()
    return body + status
