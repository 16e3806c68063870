"""A real OTLP/HTTP trace receiver on 127.0.0.1, run in a thread of the test (or bench)
process: each POST to /v1/traces is decoded with opentelemetry-proto and kept.

    with OtlpReceiver() as receiver:
        ...  # point sentinel at receiver.url
        spans = receiver.spans("sentinel.probe")
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span with its resource's attributes."""

    name: str
    trace_id: str  # 32 hex digits
    span_id: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]  # (name, time ns, attributes)
    resource: dict[str, Any]


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP KeyValue list -> dict of plain Python values."""
    out: dict[str, Any] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field) if field else None
    return out


def decode(body: bytes) -> list[ReceivedSpan]:
    """Every span of one ExportTraceServiceRequest body."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(ReceivedSpan(
                    s.name, s.trace_id.hex(), s.span_id.hex(), s.kind,
                    s.start_time_unix_nano, s.end_time_unix_nano, s.status.code,
                    s.status.message, attributes(s.attributes),
                    [(e.name, e.time_unix_nano, attributes(e.attributes)) for e in s.events],
                    resource))
    return spans


class OtlpReceiver:
    """Serves POST /v1/traces on 127.0.0.1 (a free port) until the `with` block ends.
    `delay` seconds are waited before each answer (a slow collector)."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.take(dict(self.headers.items()), decode(body))
                time.sleep(receiver.delay)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL (sentinel appends /v1/traces)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def take(self, headers: dict[str, str], spans: list[ReceivedSpan]) -> None:
        """Keep one request's headers and spans."""
        with self._lock:
            self.requests += 1
            self.headers.append({k.lower(): v for k, v in headers.items()})
            self._spans.extend(spans)

    def spans(self, name: str | None = None) -> list[ReceivedSpan]:
        """The spans received so far (only those called `name`, when given)."""
        with self._lock:
            return [s for s in self._spans if name is None or s.name == name]

    def count(self) -> int:
        """How many spans were received so far."""
        with self._lock:
            return len(self._spans)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
