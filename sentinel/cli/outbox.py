"""Seeing and fixing webhook deliveries: `sentinel outbox list|retry|purge`, the matching
`/v1/outbox` API endpoints, and `sentinel webhook test URL`.

The CLI opens each webhook sink's outbox file itself when no instance runs.
A running sentinel holds the file's lock, so the CLI then asks it over the
API instead (the running sink must hear of a retry or a purge anyway).
Both paths answer with the same document:

    {"sinks": {NAME: {"pending": n, "dead": n, "dropped": n, "entries": [...]}}}

where retry and purge list the entries they touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from sentinel.api import Response, choice, integer, parse_query, wrong_method
from sentinel.config.model import Config
from sentinel.errors import ConfigError, OutboxLocked, SignatureError, StateError
from sentinel.sinks.registry import load_config
from sentinel.sinks.webhook.outbox import Counts, Entry, Outbox
from sentinel.sinks.webhook.signing import decode_secret, headers
from sentinel.sinks.webhook.sink import WebhookSink, outbox_path
from sentinel.timefmt import rfc3339, uuid7

ACTIONS = ("list", "retry", "purge")
OUTBOX_PARAMS = ("sink", "id", "state", "all", "limit")
Doc = dict[str, Any]


def add_commands(sub: Any, common: argparse.ArgumentParser,
                 with_config: Sequence[argparse.ArgumentParser]) -> None:
    """Register `outbox` and `webhook test` on the CLI's subparsers."""
    outbox = sub.add_parser("outbox", parents=list(with_config),
                            help="list, retry or purge webhook deliveries")
    outbox.add_argument("action", choices=ACTIONS)
    outbox.add_argument("--id", dest="ids", action="append", default=[], metavar="EVENT_ID",
                        help="only this event (repeatable; default: all that apply)")
    outbox.add_argument("--sink", help="only this webhook sink")
    outbox.add_argument("--dead", action="store_true", help="list: dead letters only")
    outbox.add_argument("--all", action="store_true",
                        help="purge: pending events too (default: dead letters only)")
    outbox.add_argument("--limit", type=int, default=100, help="list: at most this many")
    outbox.add_argument("--json", action="store_true")
    webhook = sub.add_parser("webhook", parents=[common], help="webhook receiver tools")
    test = webhook.add_subparsers(dest="webhook_command", required=True).add_parser(
        "test", parents=[common], help="send a signed test event to URL")
    test.add_argument("url")
    test.add_argument("--secret", action="append", required=True, metavar="whsec_...",
                      help="repeat to sign with several secrets (rotation)")
    test.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")


# -- sentinel outbox -------------------------------------------------------------------


def run_outbox(args: argparse.Namespace, api_url: Callable[[], str],
               token: Callable[[], str | None]) -> int:
    """`sentinel outbox ACTION`: exit 0 done, 1 outbox or API unusable, 2 bad config/args."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    webhooks = [s.name for s in config.sinks if s.type == "webhook"]
    if not webhooks:
        print(f"sentinel outbox: {args.config} has no webhook sink", file=sys.stderr)
        return 2
    if args.sink is not None and args.sink not in webhooks:
        print(f"sentinel outbox: --sink {args.sink}: {args.config} has no webhook sink of "
              f"that name (webhook sinks: {', '.join(webhooks)})", file=sys.stderr)
        return 2
    names = [args.sink] if args.sink is not None else webhooks
    try:
        doc = _direct(config, names, args)
    except OutboxLocked:
        try:
            doc = _via_api(api_url(), token(), names, args)
        except (httpx.HTTPError, ValueError) as exc:
            print(f"sentinel outbox: the outbox is in use and the API is not answering: "
                  f"{exc}", file=sys.stderr)
            return 1
    except StateError as exc:
        print(f"sentinel outbox: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else _table(doc, args.action))
    return 0


def _direct(config: Config, names: list[str], args: argparse.Namespace) -> Doc:
    sinks: Doc = {}
    for name in names:
        outbox = Outbox.open(outbox_path(Path(config.state_dir), name))
        try:
            touched = _act(outbox, args.action, args.ids or None, dead=args.dead,
                           pending_too=args.all, limit=args.limit)
            sinks[name] = sink_doc(outbox.counts(), touched)
        finally:
            outbox.close()
    return {"sinks": sinks}


def _act(outbox: Outbox, action: str, ids: list[str] | None, *, dead: bool, pending_too: bool,
         limit: int) -> list[Entry]:
    if action == "retry":
        return outbox.retry(ids, time.time())
    if action == "purge":
        return outbox.purge(ids, pending_too=pending_too)
    return outbox.entries(dead=True if dead else None, event_ids=ids, limit=limit)


def _via_api(api: str, token: str | None, names: list[str], args: argparse.Namespace) -> Doc:
    params: list[tuple[str, str | int | float | bool | None]] = [("sink", n) for n in names]
    params += [("id", i) for i in args.ids]
    params += [("state", "dead")] if args.dead else []
    params += [("all", "true")] if args.all else []
    params.append(("limit", args.limit))
    path = "/v1/outbox" if args.action == "list" else f"/v1/outbox/{args.action}"
    auth = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.request("GET" if args.action == "list" else "POST", api + path,
                             params=params, headers=auth, timeout=10.0)
    if response.status_code != 200:
        raise ValueError(f"{response.status_code} {response.text.strip()}")
    doc: Doc = response.json()
    return doc


def sink_doc(counts: Counts, entries: list[Entry], extra: Doc | None = None) -> Doc:
    """One sink's part of the outbox document."""
    return {"pending": counts.pending, "dead": counts.dead, "dropped": counts.dropped,
            **(extra or {}), "entries": [e.to_json() for e in entries]}


def _table(doc: Doc, action: str) -> str:
    lines = []
    done = {"list": "", "retry": "; retried {}", "purge": "; purged {}"}[action]
    for name, sink in doc["sinks"].items():
        lines.append(f"{name}: {sink['pending']} pending, {sink['dead']} dead, "
                     f"{sink['dropped']} dropped" + done.format(len(sink["entries"])))
        for e in sink["entries"]:
            event = e["event"]
            lines.append(f"  {e['state']:<7} {e['id']}  seq {e['seq']}  {e['key']} "
                         f"{event['from']}->{event['to']}  attempts {e['attempts']}  "
                         f"{e['last_error'] or ''}".rstrip())
    return "\n".join(lines)


# -- the API side ----------------------------------------------------------------------


async def outbox_endpoint(source: object, method: str, path: str, query: str) -> Response:
    """GET /v1/outbox, POST /v1/outbox/retry, POST /v1/outbox/purge against the running
    webhook sinks; `?sink=NAME&id=EVENT_ID` (repeatable) narrow it, `state=dead` lists
    dead letters only, `all=true` purges pending events too."""
    runners = getattr(source, "runners", {})
    sinks = {n: r.sink for n, r in runners.items() if isinstance(r.sink, WebhookSink)}
    action = {"/v1/outbox": ("GET", "list"), "/v1/outbox/retry": ("POST", "retry"),
              "/v1/outbox/purge": ("POST", "purge")}.get(path)
    if action is None:
        return Response(404, {"error": f"no such endpoint: {path}"})
    if refused := wrong_method(method, action[0], path):
        return refused
    # Every value is checked before anything is retried or purged. The CLI sends the
    # same parameters to each action (limit always), so each takes them all.
    params = parse_query(query, OUTBOX_PARAMS, repeatable=("sink", "id"))
    names = params.get("sink", list(sinks))
    if unknown := [n for n in names if n not in sinks]:
        return Response(404, {"error": f"no webhook sink {', '.join(unknown)}"})
    ids = params.get("id")
    dead = choice(params, "state", ("all", "dead")) == "dead"
    pending_too = choice(params, "all", ("false", "true")) == "true"
    limit = integer(params, "limit", 100, limits=(0, 10_000_000))
    out: Doc = {}
    for name in names:
        sink = sinks[name]
        if action[1] == "retry":
            touched = await sink.retry(ids)
        elif action[1] == "purge":
            touched = await sink.purge(ids, pending_too=pending_too)
        else:
            touched = [e for e in await sink.entries(dead=True if dead else None,
                                                      limit=-1 if ids else limit)
                       if ids is None or e.event_id in ids]
        stats = sink.statistics()
        extra = {k: v for k, v in stats.to_json().items()
                 if k not in ("pending", "dead", "dropped")}
        out[name] = sink_doc(stats.outbox, touched, extra)
    return Response(200, {"sinks": out})


# -- sentinel webhook test -----------------------------------------------------------


def send_test(url: str, secrets: Sequence[str], timeout: float) -> int:
    """POST one signed test event; exit 0 on a 2xx, 1 otherwise, 2 for a bad secret."""
    try:
        keys = [decode_secret(s, signing=True) for s in secrets]
    except SignatureError as exc:
        print(f"sentinel webhook test: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    event = {"id": uuid7(int(now * 1000)), "seq": 0, "time": rfc3339(now),
             "service": "sentinel", "backend": "webhook-test", "address": "", "from": "test",
             "to": "test", "weight": 0, "reason": "sentinel webhook test", "probe": None,
             "trace_id": None}
    body = json.dumps(event, separators=(",", ":")).encode()
    try:
        response = httpx.post(url, content=body, timeout=timeout,
                              headers=headers(keys, str(event["id"]), int(now), body))
    except httpx.HTTPError as exc:
        print(f"sentinel webhook test: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: HTTP {response.status_code} for test event {event['id']}")
    if not response.is_success:
        print(response.text.strip()[:500], file=sys.stderr)
        return 1
    return 0
