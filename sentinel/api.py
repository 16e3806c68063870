"""The HTTP API (SPEC 6) as a plain ASGI app, served by Hypercorn's Trio worker."""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

import trio

from sentinel.config import ApiConfig
from sentinel.model import Event

log = logging.getLogger("sentinel.api")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
URL_FILE = "api.url"


class StateSource(Protocol):
    """What the API reads from the running engine."""

    def state_document(self) -> dict[str, object]:
        """GET /v1/state."""
        ...

    def events_after(self, seq: int) -> list[Event]:
        """GET /v1/events."""
        ...

    def maglev_table(self, service: str) -> tuple[dict[str, object], bytes] | None:
        """GET /v1/maglev/SERVICE: the sidecar document and the table, None when none."""
        ...

    async def set_override(self, service: str, backend: str, action: str
                           ) -> tuple[Event, ...]:
        """POST /v1/backends/SERVICE/BACKEND/ACTION; KeyError when unknown."""
        ...


Reloader = Callable[[], Awaitable[list[str]]]
MetricsRenderer = Callable[[], Awaitable[tuple[bytes, str]]]  # body, content type
ADMIN_ACTIONS = ("drain", "maint", "ready")
MAX_BODY = 64 * 1024  # no endpoint takes a body yet; this bounds what is read and dropped
MAX_QUERY_FIELDS = 100
SHOWN = 40  # longest client value quoted in an error


class Response:
    """A finished response: status, JSON body (or raw bytes), content type, more headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: object, content_type: str = "application/json",
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        self.content_type = content_type
        self.headers = headers
        self.body = body if isinstance(body, bytes) else (
            json.dumps(body, indent=None, separators=(",", ":")).encode() + b"\n")


class BadRequest(ValueError):
    """A request the API answers 400 with this message, having changed nothing."""


def wrong_method(method: str, allowed: str, path: str) -> Response | None:
    """None when `method` may be used on `path`, else the 405 (with `Allow`, RFC 9110)."""
    if method == allowed:
        return None
    allow = "GET, HEAD" if allowed == "GET" else allowed
    return Response(405, {"error": f"{method} not allowed on {path} (allowed: {allow})"},
                    headers=((b"allow", allow.encode()),))


def parse_query(query: str, names: Collection[str], repeatable: Collection[str] = ()
                ) -> dict[str, list[str]]:
    """The query string's parameters; BadRequest for a name the endpoint does not take
    (a typo must not be ignored silently), a repeat of one it takes once, or an escape
    that is not UTF-8."""
    try:
        params = parse_qs(query, keep_blank_values=True, errors="strict",
                          max_num_fields=MAX_QUERY_FIELDS)
    except UnicodeDecodeError:
        raise BadRequest("the query string is not UTF-8 once %-decoded") from None
    except ValueError:
        raise BadRequest(f"more than {MAX_QUERY_FIELDS} query parameters") from None
    if unknown := sorted(set(params) - set(names)):
        takes = f"it takes {', '.join(names)}" if names else "it takes none"
        raise BadRequest(f"unknown query parameter {', '.join(map(shown, unknown))} ({takes})")
    for name, values in params.items():
        if len(values) > 1 and name not in repeatable:
            raise BadRequest(f"{name} given {len(values)} times")
    return params


def integer(params: dict[str, list[str]], name: str, default: int, *,
            limits: tuple[int, int] | None = None) -> int:
    """Parameter `name` as an integer (within `limits`, inclusive, when given), or
    `default` when absent."""
    if name not in params:
        return default
    text = params[name][0]
    # not int() alone: it takes "1_0", " 1" and "²", and raises on 5,000 digits; 19 digits
    # cover every seq
    if re.fullmatch(r"-?[0-9]{1,19}", text) and (
            limits is None or limits[0] <= int(text) <= limits[1]):
        return int(text)
    within = f" from {limits[0]} to {limits[1]}" if limits else ""
    raise BadRequest(f"{name} must be an integer{within}, got {shown(text)}")


def choice(params: dict[str, list[str]], name: str, allowed: tuple[str, ...]) -> str:
    """Parameter `name`, one of `allowed` (the first is the default)."""
    value = params.get(name, [allowed[0]])[0]
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {shown(value)}")
    return value


def shown(value: str) -> str:
    """A client's value quoted in an error, cut short: an error must not echo 5,000 digits."""
    return repr(value) if len(value) <= SHOWN else f"{value[:SHOWN]!r}... ({len(value)} characters)"


class Api:
    """Routes requests to the engine; checks the bearer token where SPEC requires it."""

    def __init__(self, source: StateSource, token: str | None = None,
                 reload: Reloader | None = None, metrics: MetricsRenderer | None = None
                 ) -> None:
        self.source = source
        self.token = token
        self.reload = reload
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        # The whole request arrives before anything is acted on: a body the server
        # refuses half-way (a malformed chunk, a client that hung up) must change nothing.
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > MAX_BODY:
                response = Response(413, {"error": f"request body over {MAX_BODY} bytes"})
                break
            if not message.get("more_body", False):
                method = scope["method"]
                # HEAD is GET without the body (RFC 9110 9.3.2), never a side effect
                response = await self.route("GET" if method == "HEAD" else method,
                                            scope["path"],
                                            scope.get("query_string", b"").decode("latin-1"),
                                            dict(scope.get("headers", [])))
                break
        headers = [(b"content-type", response.content_type.encode()),
                   (b"content-length", str(len(response.body)).encode()), *response.headers]
        await send({"type": "http.response.start", "status": response.status,
                    "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else response.body})

    async def route(self, method: str, path: str, query: str, headers: dict[bytes, bytes]
                    ) -> Response:
        """Answer one request (HEAD comes here as GET)."""
        try:
            return await self._route(method, path, query, headers)
        except BadRequest as exc:
            return Response(400, {"error": str(exc)})

    async def _route(self, method: str, path: str, query: str, headers: dict[bytes, bytes]
                     ) -> Response:
        if path.startswith("/v1/outbox"):  # webhook deliveries: list, retry, purge
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            from sentinel.outboxcli import outbox_endpoint

            return await outbox_endpoint(self.source, method, path, query)
        parts = path.strip("/").split("/")
        admin = len(parts) == 5 and parts[:2] == ["v1", "backends"] and parts[4] in ADMIN_ACTIONS
        if admin or (path == "/v1/reload" and self.reload is not None):
            if refused := wrong_method(method, "POST", path):
                return refused
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            parse_query(query, ())
            return await (self._override(*parts[2:]) if admin else self._reload())
        if path in ("/healthz", "/v1/state", "/v1/events") or path.startswith("/v1/maglev/") \
                or (path == "/metrics" and self.metrics is not None):
            return wrong_method(method, "GET", path) or await self._get(path, query, headers)
        return Response(404, {"error": f"no such endpoint: {method} {path}"})

    async def _get(self, path: str, query: str, headers: dict[bytes, bytes]) -> Response:
        if path == "/healthz":
            return Response(200, {"ok": True})
        if path == "/metrics" and self.metrics is not None:
            return Response(200, *await self.metrics())  # open, like /healthz: scrapers
        if path == "/v1/state":
            parse_query(query, ())
            return Response(200, self.source.state_document())
        if path == "/v1/events":
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            after = integer(parse_query(query, ("after",)), "after", 0)
            events = self.source.events_after(after)
            return Response(200, {"events": [e.to_json() for e in events]})
        return self._maglev(path.removeprefix("/v1/maglev/"), query)

    async def _override(self, service: str, backend: str, action: str) -> Response:
        try:
            events = await self.source.set_override(service, backend, action)
        except KeyError:
            return Response(404, {"error": f"no backend {service}/{backend}"})
        return Response(200, {"ok": True, "events": [e.to_json() for e in events]})

    async def _reload(self) -> Response:
        assert self.reload is not None
        errors = await self.reload()
        if errors:
            return Response(400, {"ok": False, "errors": errors})
        return Response(200, {"ok": True})

    def _maglev(self, service: str, query: str) -> Response:
        form = choice(parse_query(query, ("format",)), "format", ("json", "bin"))
        published = self.source.maglev_table(service)
        if published is None:
            return Response(404, {"error": f"no maglev table for service {service!r}"})
        doc, table = published
        if form == "bin":
            return Response(200, table, "application/octet-stream")
        return Response(200, doc)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if self.token is None:
            return True
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        # The scheme is case-insensitive (RFC 9110 11.1); the token is compared in
        # constant time.
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            given.strip(), self.token.encode())


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_api(app: Api, config: ApiConfig, state_dir: Path, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` until cancelled; reports the bound base URL (also written to
    state_dir/api.url so `sentinel status` can find an instance bound to port 0)."""
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve

    hc = HypercornConfig()
    hc.bind = [config.listen]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("sentinel.api.server")
    hc.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve, app, hc)
        url = binds[0].replace("0.0.0.0", "127.0.0.1")
        (state_dir / URL_FILE).write_text(url + "\n")
        log.info("API listening on %s", url)
        task_status.started(url)
