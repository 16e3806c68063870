"""`sentinel status`: the running instance's state as a table or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import httpx


def render_table(doc: dict[str, Any],
                 mark: Callable[[str, str, str], str] = lambda service, backend, line: line
                 ) -> str:
    """The state document as an aligned text table; `mark` may dress each backend's line
    (`sentinel status --watch` highlights the rows that just changed)."""
    rows = [("SERVICE", "BACKEND", "ADDRESS", "STATE", "WEIGHT", "FAILS", "SINCE", "NOTE")]
    for name, svc in sorted(doc.get("services", {}).items()):
        for b in svc["backends"]:
            note = b.get("progress") or (b.get("last_probe") or {}).get("error") or ""
            if svc.get("panic"):
                note = f"PANIC {note}".strip()
            rows.append((name, b["name"], b["address"], b["state"], str(b["weight"]),
                         str(b["fails"]), b["since"], note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        lines.append(mark(r[0], r[1], line) if i else line)
    suspect = doc.get("suspect")
    if suspect:  # SPEC 11: every down is held back while this shows
        lines.append(f"SUSPECT since {suspect['since']}: {suspect['reason']} (downs are held)")
    for name, sink in sorted(doc.get("sinks", {}).items()):
        state = "ok" if sink["ok"] else f"FAILING: {sink['last_error']}"
        deliveries = sink.get("deliveries")  # a webhook sink's outbox
        owed = (f"; deliveries: {deliveries['pending']} pending, {deliveries['dead']} dead"
                if deliveries else "")
        lines.append(f"sink {name}: {state} (applied {sink['applied']}, "
                     f"pending {sink['pending']}{owed})")
    return "\n".join(lines)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def show_status(api: str, *, as_json: bool, token: str | None = None) -> int:
    """Fetch /v1/state and print it; exit 1 when the API is unreachable."""
    try:
        response = httpx.get(f"{api}/v1/state", timeout=5.0, headers=_headers(token))
        response.raise_for_status()
    except httpx.HTTPError as exc:
        print(f"sentinel status: cannot reach {api}: {exc}", file=sys.stderr)
        return 1
    doc = response.json()
    print(json.dumps(doc, indent=2) if as_json else render_table(doc))
    return 0


def send_override(api: str, action: str, target: str, token: str | None) -> int:
    """POST an admin override; exit 0 when applied, 1 when refused or unreachable."""
    service, sep, backend = target.partition("/")
    if not sep or not service or not backend:
        print(f"sentinel ctl: expected SERVICE/BACKEND, got {target!r}", file=sys.stderr)
        return 1
    try:
        response = httpx.post(f"{api}/v1/backends/{service}/{backend}/{action}", timeout=10.0,
                              headers=_headers(token))
    except httpx.HTTPError as exc:
        print(f"sentinel ctl: cannot reach {api}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        error = response.json().get("error", response.text) if response.content else ""
        print(f"sentinel ctl: refused ({response.status_code}): {error}", file=sys.stderr)
        return 1
    events = response.json().get("events", [])
    changes = ", ".join(f"{e['from']} -> {e['to']}" for e in events) or "no change"
    print(f"{service}/{backend}: {action} ({changes})")
    return 0
