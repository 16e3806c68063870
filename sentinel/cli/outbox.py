"""`sentinel outbox list|retry|purge` and `sentinel webhook test URL`.

The outbox commands act on the files themselves when no instance runs, and
through the running instance's `/v1/outbox` otherwise: both ways are in
`sentinel.sinks.webhook.admin`, which the API shares.
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

from sentinel.cli.status import json_object, not_sentinel, refused
from sentinel.errors import ConfigError, OutboxLocked, SignatureError, StateError
from sentinel.sinks.registry import load_config
from sentinel.sinks.webhook.admin import ACTIONS, Doc, Request, act_on_files
from sentinel.sinks.webhook.signing import decode_secret, headers
from sentinel.timefmt import rfc3339, uuid7


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
    request = Request(args.action, args.ids or None, dead=args.dead, pending_too=args.all,
                      limit=args.limit)
    try:
        doc = act_on_files(Path(config.state_dir), names, request)
    except OutboxLocked:
        return _via_api(api_url(), token(), names, args)
    except StateError as exc:
        print(f"sentinel outbox: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else _table(doc, args.action))
    return 0


def _via_api(api: str, token: str | None, names: list[str], args: argparse.Namespace) -> int:
    """Ask the running instance, which holds the outbox files, and print its answer; exit
    1 when it cannot be reached, refuses, or answers what sentinel's API does not (as
    `status` says of a server that is not sentinel: one line, no traceback)."""
    params: list[tuple[str, str | int | float | bool | None]] = [("sink", n) for n in names]
    params += [("id", i) for i in args.ids]
    params += [("state", "dead")] if args.dead else []
    params += [("all", "true")] if args.all else []
    params.append(("limit", args.limit))
    path = "/v1/outbox" if args.action == "list" else f"/v1/outbox/{args.action}"
    auth = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request("GET" if args.action == "list" else "POST", api + path,
                                 params=params, headers=auth, timeout=10.0)
    except httpx.HTTPError as exc:
        print(f"sentinel outbox: the outbox is in use and the API is not answering: {exc}",
              file=sys.stderr)
        return 1
    doc = json_object(response)
    if (failed := refused("outbox", api, response, doc)) is not None:
        return failed
    sinks = (doc or {}).get("sinks")
    if doc is None or not isinstance(sinks, dict):
        return not_sentinel("outbox", api, response,
                            'not an outbox document {"sinks": {...}}')
    if sorted(sinks) != sorted(names):  # sentinel answers for exactly the sinks asked
        return not_sentinel("outbox", api, response, f"an outbox document of sinks "
                            f"{', '.join(sorted(sinks)) or 'none'}, not {', '.join(names)}")
    try:  # rendered with --json too: the table reads every field it shows
        table = _table(doc, args.action)
    except (KeyError, TypeError, AttributeError, ValueError):  # a field of another shape
        return not_sentinel("outbox", api, response, "an outbox document of another shape")
    print(json.dumps(doc, indent=2) if args.json else table)
    return 0


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
