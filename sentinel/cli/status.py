"""`sentinel status`: the running instance's state as a table or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from sentinel.cli import EXIT_USAGE


def render_table(doc: dict[str, Any],
                 mark: Callable[[str, str, str], str] = lambda service, backend, line: line
                 ) -> str:
    """The state document as an aligned text table; `mark` may dress each backend's line
    (`sentinel status --watch` highlights the rows that just changed). A cluster member's
    document adds a line on the cluster and who probes each backend with what it says
    (`?` for a prober that has not reported)."""
    cluster = doc.get("cluster")
    head: tuple[str, ...] = ("SERVICE", "BACKEND", "ADDRESS", "STATE", "WEIGHT", "FAILS",
                             "SINCE", "NOTE")
    rows = [head + (("PROBERS",) if cluster else ())]
    for name, svc in sorted(doc.get("services", {}).items()):
        for b in svc["backends"]:
            note = b.get("progress") or (b.get("last_probe") or {}).get("error") or ""
            if svc.get("panic"):
                note = f"PANIC {note}".strip()
            row: tuple[str, ...] = (name, b["name"], b["address"], b["state"],
                                    str(b["weight"]), str(b["fails"]), b["since"], note)
            if cluster:
                seen = b.get("observers") or {}
                row += (" ".join(f"{p}:{seen.get(p, '?')}" for p in b.get("probers") or ()),)
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [_cluster_line(cluster)] if cluster else []
    for i, r in enumerate(rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        lines.append(mark(r[0], r[1], line) if i else line)
    suspect = doc.get("suspect")
    if suspect:  # SPEC 11: every down is held back (in a cluster: abstains) while this shows
        effect = "its down votes are not counted" if "cluster" in doc else "downs are held"
        lines.append(f"SUSPECT since {suspect['since']}: {suspect['reason']} ({effect})")
    for name, sink in sorted(doc.get("sinks", {}).items()):
        state = "ok" if sink["ok"] else f"FAILING: {sink['last_error']}"
        deliveries = sink.get("deliveries")  # a webhook sink's outbox
        owed = (f"; deliveries: {deliveries['pending']} pending, {deliveries['dead']} dead"
                if deliveries else "")
        lines.append(f"sink {name}: {state} (applied {sink['applied']}, "
                     f"pending {sink['pending']}{owed})")
    return "\n".join(lines)


def _cluster_line(cluster: dict[str, Any]) -> str:
    """`cluster: node n2, leader n1; ok; members n1 n2 n3; probers 2, quorum 2`."""
    members = " ".join(m["node"] for m in cluster.get("members", ())) or "none"
    health = "ok" if cluster.get("ok") else f"NOT OK: {cluster.get('error')}"
    odd = cluster.get("mismatched") or []
    other = f"; other configuration: {' '.join(odd)}" if odd else ""
    doubting = cluster.get("suspects") or []
    other += f"; suspect: {' '.join(doubting)}" if doubting else ""
    return (f"cluster: node {cluster.get('node')}, leader {cluster.get('leader') or 'none'}; "
            f"{health}; members {members}{other}; probers {cluster.get('probers')}, "
            f"quorum {cluster.get('quorum')}")


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's body as a JSON object; None when it is not JSON, or not an object."""
    try:
        doc = response.json()
    except (ValueError, RecursionError):  # not JSON (or not UTF-8); nested thousands deep
        return None
    return doc if isinstance(doc, dict) else None


def not_sentinel(command: str, api: str, response: httpx.Response, what: str) -> int:
    """Say that `api` answered, but not as sentinel's API does; exit 1 (unusable)."""
    kind = response.headers.get("content-type", "no content type").partition(";")[0]
    print(f"sentinel {command}: {api} is not sentinel's API: {response.request.method} "
          f"{response.request.url.path} answered {response.status_code} ({kind}), "
          f"{what}", file=sys.stderr)
    return 1


def refused(command: str, api: str, response: httpx.Response, doc: dict[str, Any] | None,
            *, name_api: bool = True) -> int | None:
    """None for a 200. Otherwise say why, sentinel's refusal (`{"error": "..."}`: `refused
    (401): missing or wrong bearer token`, naming `api` unless `name_api` is false) or that
    `api` is not sentinel's, and return the exit code (1)."""
    if response.status_code == 200:
        return None
    error = (doc or {}).get("error")
    if not isinstance(error, str):
        return not_sentinel(command, api, response, "not a sentinel error")
    who = f"{api} " if name_api else ""
    print(f"sentinel {command}: {who}refused ({response.status_code}): {error}",
          file=sys.stderr)
    return 1


def show_status(api: str, *, as_json: bool, token: str | None = None) -> int:
    """Fetch /v1/state and print it; exit 1 when the API is unreachable, refuses, or is
    not sentinel's."""
    try:
        response = httpx.get(f"{api}/v1/state", timeout=5.0, headers=_headers(token))
    except httpx.HTTPError as exc:
        print(f"sentinel status: cannot reach {api}: {exc}", file=sys.stderr)
        return 1
    doc = json_object(response)
    if (failed := refused("status", api, response, doc)) is not None:
        return failed
    if doc is None or not isinstance(doc.get("services"), dict):
        return not_sentinel("status", api, response, 'not a state document {"services": {...}}')
    try:  # rendered with --json too: the table reads every field it shows
        table = render_table(doc)
    except (KeyError, TypeError, AttributeError, ValueError):  # a field of another shape
        return not_sentinel("status", api, response, "a state document of another shape")
    print(json.dumps(doc, indent=2) if as_json else table)
    return 0


def send_override(api: str, action: str, target: str, token: str | None) -> int:
    """POST an admin override; exit 0 when applied, 1 when refused, unreachable or not
    sentinel's API."""
    service, sep, backend = target.partition("/")
    if not sep or not service or not backend:
        print(f"sentinel ctl: expected SERVICE/BACKEND, got {target!r}", file=sys.stderr)
        return EXIT_USAGE
    path = f"/v1/backends/{_segment(service)}/{_segment(backend)}/{action}"
    try:
        response = httpx.post(f"{api}{path}", timeout=10.0, headers=_headers(token))
    except httpx.HTTPError as exc:
        print(f"sentinel ctl: cannot reach {api}: {exc}", file=sys.stderr)
        return 1
    doc = json_object(response)
    if (failed := refused("ctl", api, response, doc, name_api=False)) is not None:
        return failed
    events = (doc or {}).get("events")
    if doc is None or doc.get("ok") is not True or not isinstance(events, list) or not all(
            isinstance(e, dict) and isinstance(e.get("from"), str)
            and isinstance(e.get("to"), str) for e in events):
        return not_sentinel("ctl", api, response, 'not an answer {"ok": true, "events": [...]}')
    changes = ", ".join(f"{e['from']} -> {e['to']}" for e in events) or "no change"
    print(f"{service}/{backend}: {action} ({changes})")
    return 0


def _segment(name: str) -> str:
    """`name` as one path segment: every reserved character %-encoded (`?`, `#`, `/`,
    `%`...), and `.`/`..` too, which a URL would otherwise resolve as dot segments."""
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return quote(name, safe="")
