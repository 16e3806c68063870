"""The HTTP API (SPEC 6) as a plain ASGI app, served by Hypercorn's Trio worker."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

import trio

from sentinel.config import ApiConfig
from sentinel.model import Event
from sentinel.passive.base import BackendIndex, Signal
from sentinel.passive.reports import MAX_BODY, ReportError, parse_reports

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

    def backend_index(self) -> BackendIndex:
        """The running config's backends, by name and address (POST /v1/reports)."""
        ...

    def passive(self, signals: Iterable[Signal]) -> None:
        """Act on passive failures (POST /v1/reports)."""
        ...


Reloader = Callable[[], Awaitable[list[str]]]
MetricsRenderer = Callable[[], Awaitable[tuple[bytes, str]]]  # body, content type
ADMIN_ACTIONS = ("drain", "maint", "ready")


class Response:
    """A finished response: status, JSON body (or raw bytes) and content type."""

    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, body: object, content_type: str = "application/json"
                 ) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body if isinstance(body, bytes) else (
            json.dumps(body, indent=None, separators=(",", ":")).encode() + b"\n")


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
        body = await _read_body(receive) if scope["method"] == "POST" else b""
        response = await self.route(scope["method"], scope["path"],
                              scope.get("query_string", b"").decode(),
                              dict(scope.get("headers", [])), body)
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(b"content-type", response.content_type.encode()),
                                (b"content-length", str(len(response.body)).encode())]})
        await send({"type": "http.response.body", "body": response.body})

    async def route(self, method: str, path: str, query: str, headers: dict[bytes, bytes],
                    body: bytes = b"") -> Response:
        """Answer one request (`body`: a POST's, at most MAX_BODY + 1 bytes of it)."""
        if path == "/healthz":
            return Response(200, {"ok": True})
        if path == "/metrics" and method == "GET" and self.metrics is not None:
            return Response(200, *await self.metrics())  # open, like /healthz: scrapers
        if path.startswith("/v1/outbox"):  # webhook deliveries: list, retry, purge
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            from sentinel.outboxcli import outbox_endpoint

            return Response(*await outbox_endpoint(self.source, method, path, query))
        if method == "POST":
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            return await self._post(path, body)
        if method != "GET":
            return Response(405, {"error": f"{method} not allowed on {path}"})
        if path == "/v1/state":
            return Response(200, self.source.state_document())
        if path == "/v1/events":
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            after = parse_qs(query).get("after", ["0"])[0]
            if not re.fullmatch(r"-?[0-9]+", after):  # not isdigit: "--1" and "²" pass it
                return Response(400, {"error": f"after must be an integer, got {after!r}"})
            events = self.source.events_after(int(after))
            return Response(200, {"events": [e.to_json() for e in events]})
        if path.startswith("/v1/maglev/"):
            return self._maglev(path.removeprefix("/v1/maglev/"), query)
        return Response(404, {"error": f"no such endpoint: {path}"})

    async def _post(self, path: str, body: bytes) -> Response:
        parts = path.strip("/").split("/")
        if parts == ["v1", "reports"]:
            try:
                accepted = parse_reports(body, self.source.backend_index(), time.time())
            except ReportError as refused:
                return Response(refused.status, refused.body)
            self.source.passive(accepted.signals)
            return Response(200, accepted.to_json())
        if len(parts) == 5 and parts[:2] == ["v1", "backends"] and parts[4] in ADMIN_ACTIONS:
            service, backend, action = parts[2], parts[3], parts[4]
            try:
                events = await self.source.set_override(service, backend, action)
            except KeyError:
                return Response(404, {"error": f"no backend {service}/{backend}"})
            return Response(200, {"ok": True, "events": [e.to_json() for e in events]})
        if parts == ["v1", "reload"] and self.reload is not None:
            errors = await self.reload()
            if errors:
                return Response(400, {"ok": False, "errors": errors})
            return Response(200, {"ok": True})
        return Response(404, {"error": f"no such endpoint: POST {path}"})

    def _maglev(self, service: str, query: str) -> Response:
        published = self.source.maglev_table(service)
        if published is None:
            return Response(404, {"error": f"no maglev table for service {service!r}"})
        doc, table = published
        if parse_qs(query).get("format", ["json"])[0] == "bin":
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


async def _read_body(receive: Receive) -> bytes:
    """A request's body, read up to one byte past MAX_BODY (enough to refuse it)."""
    body = bytearray()
    while len(body) <= MAX_BODY:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(body[: MAX_BODY + 1])


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
