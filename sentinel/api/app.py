"""The HTTP API (SPEC 6) as a plain ASGI app, served by Hypercorn's HTTP/1.1 protocol.

`serve_api` runs its own accept loop instead of Hypercorn's `serve`, for one
reason: to cap the connections it serves at once (see `sentinel.limits`). A
connection flood then waits in the listen backlog instead of taking the file
descriptors probes and state writes need.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

import trio

from sentinel.addresses import join
from sentinel.api.stream import PATH as STREAM_PATH
from sentinel.api.stream import Refusal, open_stream, serve_stream
from sentinel.config.model import ApiConfig
from sentinel.dashboard import dashboard_file
from sentinel.engine.streamhub import StreamHub
from sentinel.errors import BadRequest, EtcdError, StartupError
from sentinel.files import write_atomic
from sentinel.limits import API_MAX
from sentinel.model import Event
from sentinel.passive.base import BackendIndex, Signal
from sentinel.passive.reports import parse_reports
from sentinel.sinks.runner import SinkRunner
from sentinel.sinks.webhook import admin as outbox_admin
from sentinel.sinks.webhook.sink import WebhookSink

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
URL_FILE = "api.url"
BACKLOG = 128  # connections past the cap queue here (the kernel's, not our descriptors)
# accept() failing for want of resources: wait, do not crash (trio's serve_listeners does
# the same)
ACCEPT_CAPACITY_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)
UNACKED_TIMEOUT = 10.0  # seconds a client may leave sent data unacknowledged


class StateSource(Protocol):
    """What the API reads from the running engine."""

    hub: StreamHub  # GET /v1/stream

    @property
    def runners(self) -> Mapping[str, SinkRunner]:
        """The running sinks, by name (/v1/outbox acts on the webhook ones)."""
        ...

    async def state_json(self) -> bytes:
        """GET /v1/state, rendered."""
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
OUTBOX_ACTIONS: dict[str, outbox_admin.Action] = {
    "/v1/outbox": "list", "/v1/outbox/retry": "retry", "/v1/outbox/purge": "purge"}
MAX_BODY = 64 * 1024  # the largest request body read (POST /v1/reports takes the most)
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


def segments(raw_path: bytes) -> list[str]:
    """The segments of a path as sent, each %-decoded on its own, so a name's encoded `/`
    (`%2F`) or `%` (`%25`) stays in its name; BadRequest for an escape that is not UTF-8."""
    try:
        return [unquote(part, errors="strict")
                for part in raw_path.decode("ascii").strip("/").split("/")]
    except UnicodeDecodeError:
        raise BadRequest("the path is not UTF-8 once %-decoded") from None


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
        """The ASGI entry point (HTTP only: `serve_api` sends no lifespan events)."""
        if scope["type"] != "http":
            return
        # The whole request arrives before anything is acted on: a body the server
        # refuses half-way (a malformed chunk, a client that hung up) must change nothing.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                response = Response(413, {"error": f"request body over {MAX_BODY} bytes"})
                break
            if not message.get("more_body", False):
                method = scope["method"]
                if scope["path"] == STREAM_PATH and method in ("GET", "HEAD"):
                    refused = await self._stream(scope, receive, send)
                    if refused is None:
                        return  # the stream was served
                    response = refused
                    break
                # HEAD is GET without the body (RFC 9110 9.3.2), never a side effect
                response = await self.route("GET" if method == "HEAD" else method,
                                            scope["path"],
                                            scope.get("query_string", b"").decode("latin-1"),
                                            dict(scope.get("headers", [])), bytes(body),
                                            raw_path=scope.get("raw_path"))
                break
        headers = [(b"content-type", response.content_type.encode()),
                   (b"content-length", str(len(response.body)).encode()), *response.headers]
        await send({"type": "http.response.start", "status": response.status,
                    "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else response.body})

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> Response | None:
        """GET /v1/stream: read like /v1/events (the token when one is set); None once
        the stream has been served, else the refusal."""
        headers = dict(scope.get("headers", []))
        if not self._authorized(headers):
            return Response(401, {"error": "missing or wrong bearer token"})
        client = scope.get("client")
        opened = open_stream(self.source.hub, scope.get("query_string", b"").decode(),
                             headers, join(client[0], client[1]) if client else "")
        if isinstance(opened, Refusal):
            return Response(opened.status, {"error": opened.error})
        sub, first = opened
        await serve_stream(self.source.hub, sub, first, scope["method"] == "HEAD", receive,
                           send)
        return None

    async def route(self, method: str, path: str, query: str, headers: dict[bytes, bytes],
                    body: bytes = b"", *, raw_path: bytes | None = None) -> Response:
        """Answer one request (HEAD comes here as GET; `body`: a POST's, whole; `raw_path`:
        the path as sent, still %-encoded, when known)."""
        try:
            return await self._route(method, path, query, headers, body, raw_path)
        except BadRequest as refused:
            return Response(refused.status, refused.body)

    async def _route(self, method: str, path: str, query: str, headers: dict[bytes, bytes],
                     body: bytes, raw_path: bytes | None) -> Response:
        if path.startswith("/v1/outbox"):  # webhook deliveries: list, retry, purge
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            return await self._outbox(method, path, query)
        parts = path.strip("/").split("/")
        admin = len(parts) >= 5 and parts[:2] == ["v1", "backends"] and parts[-1] in ADMIN_ACTIONS
        if admin or (path == "/v1/reload" and self.reload is not None):
            if refused := wrong_method(method, "POST", path):
                return refused
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            parse_query(query, ())
            if not admin:
                return await self._reload()
            if raw_path is not None:  # `a%2Fb` is one name: split first, then decode
                parts = segments(raw_path)
            if len(parts) != 5:
                return Response(404, {"error": f"no such endpoint: {method} {path} (expected "
                                               f"/v1/backends/SERVICE/BACKEND/ACTION, each "
                                               f"name %-encoded)"})
            return await self._override(*parts[2:])
        if path == "/v1/reports":
            if refused := wrong_method(method, "POST", path):
                return refused
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            parse_query(query, ())
            return self._reports(body)
        if path in ("/healthz", "/v1/state", "/v1/events") or path.startswith("/v1/maglev/") \
                or (path == "/metrics" and self.metrics is not None) \
                or dashboard_file(path) is not None:
            return wrong_method(method, "GET", path) or await self._get(path, query, headers)
        return Response(404, {"error": f"no such endpoint: {method} {path}"})

    async def _get(self, path: str, query: str, headers: dict[bytes, bytes]) -> Response:
        if path == "/healthz":
            return Response(200, {"ok": True})
        if path == "/metrics" and self.metrics is not None:
            return Response(200, *await self.metrics())  # open, like /healthz: scrapers
        if path == "/v1/state":
            parse_query(query, ())
            return Response(200, await self.source.state_json())
        if (page := dashboard_file(path)) is not None:  # open: the data comes from the API
            return Response(200, *page)
        if path == "/v1/events":
            if not self._authorized(headers):
                return Response(401, {"error": "missing or wrong bearer token"})
            after = integer(parse_query(query, ("after",)), "after", 0)
            events = self.source.events_after(after)
            return Response(200, {"events": [e.to_json() for e in events]})
        return self._maglev(path.removeprefix("/v1/maglev/"), query)

    async def _outbox(self, method: str, path: str, query: str) -> Response:
        """GET /v1/outbox, POST /v1/outbox/retry, POST /v1/outbox/purge against the running
        webhook sinks; `?sink=NAME&id=EVENT_ID` (repeatable) narrow it, `state=dead` lists
        dead letters only, `all=true` purges pending events too."""
        action = OUTBOX_ACTIONS.get(path)
        if action is None:
            return Response(404, {"error": f"no such endpoint: {path}"})
        if refused := wrong_method(method, "GET" if action == "list" else "POST", path):
            return refused
        sinks = {n: r.sink for n, r in self.source.runners.items()
                 if isinstance(r.sink, WebhookSink)}
        # Every value is checked before anything is retried or purged. The CLI sends the
        # same parameters to each action (limit always), so each takes them all.
        params = parse_query(query, outbox_admin.PARAMS, repeatable=("sink", "id"))
        names = params.get("sink", list(sinks))
        if unknown := [n for n in names if n not in sinks]:
            return Response(404, {"error": f"no webhook sink {', '.join(unknown)}"})
        request = outbox_admin.Request(
            action, params.get("id"), dead=choice(params, "state", ("all", "dead")) == "dead",
            pending_too=choice(params, "all", ("false", "true")) == "true",
            limit=integer(params, "limit", 100, limits=(0, 10_000_000)))
        return Response(200, await outbox_admin.act_on_sinks(sinks, names, request))

    async def _override(self, service: str, backend: str, action: str) -> Response:
        try:
            events = await self.source.set_override(service, backend, action)
        except KeyError:
            return Response(404, {"error": f"no backend {service}/{backend}"})
        except EtcdError as exc:  # a cluster member stores overrides in etcd (SPEC 12)
            return Response(503, {"error": f"cluster: cannot store the override in etcd: "
                                           f"{exc}; nothing changed, try again"})
        return Response(200, {"ok": True, "events": [e.to_json() for e in events]})

    async def _reload(self) -> Response:
        assert self.reload is not None
        errors = await self.reload()
        if errors:
            return Response(400, {"ok": False, "errors": errors})
        return Response(200, {"ok": True})

    def _reports(self, body: bytes) -> Response:
        """POST /v1/reports (SPEC 10): all or nothing."""
        accepted = parse_reports(body, self.source.backend_index(), time.time())
        self.source.passive(accepted.signals)
        return Response(200, accepted.to_json())

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


def listen(config: ApiConfig) -> socket.socket:
    """The API's listening socket, bound now: an address that is taken or not this
    machine's stops the start with one line (StartupError) before anything runs."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    try:
        return socket.create_server((config.host, config.port), family=family,
                                    backlog=BACKLOG)
    except OSError as exc:  # create_server adds "(while attempting to bind ...)"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartupError(f"api.listen {config.listen}: cannot listen: {reason}") from None


def base_url(sock: socket.socket) -> str:
    """The API's base URL on a bound socket (a wildcard address as loopback)."""
    host, port = sock.getsockname()[:2]
    return f"http://{join(host, port)}".replace("0.0.0.0", "127.0.0.1")


async def serve_api(app: Api, config: ApiConfig, state_dir: Path, *,
                    sock: socket.socket | None = None, max_connections: int = API_MAX,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `sock` (default: bound from `config`) until cancelled, at most
    `max_connections` at once; reports the bound base URL (also written to
    state_dir/api.url so `sentinel status` can find an instance bound to port 0)."""
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.utils import wrap_app

    hc = HypercornConfig()
    hc.accesslog = None
    hc.errorlog = logging.getLogger("sentinel.api.server")
    hc.graceful_timeout = 1.0
    # Api types its ASGI messages as plain mappings, Hypercorn as TypedDicts
    asgi = wrap_app(app, hc.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    context = WorkerContext(None)
    sock = sock or listen(config)
    # Hypercorn's sends cannot be cancelled: a client that stops reading (a stream left
    # open on a suspended laptop) would hold a request, and so a graceful stop, forever.
    # With TCP_USER_TIMEOUT (inherited by accepted sockets) the kernel ends a connection
    # whose data goes unacknowledged, zero-window probes included.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(UNACKED_TIMEOUT * 1000))
    url = base_url(sock)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    try:
        await trio.to_thread.run_sync(write_atomic, state_dir / URL_FILE, (url + "\n").encode())
    except OSError as exc:  # a full state dir must not stop the API
        log.warning("cannot write %s: %s; `sentinel status` needs --api %s",
                    state_dir / URL_FILE, exc.strerror or exc, url)
    log.info("API listening on %s (at most %d connections at once)", url, max_connections)
    slots = trio.Semaphore(max_connections)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            await TCPServer(asgi, hc, context, {}, stream)  # type: ignore[arg-type]  # plain or TLS
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        task_status.started(url)
        while True:
            await slots.acquire()  # at the cap: leave the next one in the backlog
            try:
                stream = await listener.accept()
            except OSError as exc:
                slots.release()
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.warning("API accept failed: %s; retrying in 0.1 s", exc.strerror)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(connection, stream)
