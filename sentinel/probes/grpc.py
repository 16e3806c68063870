"""The `grpc` probe: the standard gRPC health protocol, `grpc.health.v1.Health/Check`.

One check is one unary call on a fresh HTTP/2 connection: cleartext h2c
with prior knowledge (gRPC servers speak HTTP/2 from the first byte; no
HTTP/1.1 upgrade), or TLS with ALPN `h2`. Healthy only when the answer is
`SERVING`, as Kubernetes' and Envoy's gRPC health checks judge it.

Why not grpcio: a client for one unary call needs HTTP/2 framing and two
one-field protobuf messages. `h2` (pure Python, the HTTP/2 state machine
httpx and hypercorn use) does the framing; the messages are a dozen lines
below. grpcio would bring a C++ core with its own threads, event loop and
connection management (channels reconnect and back off on their own, which
hides exactly the failures a health check exists to see) into a Trio
process, for a client that sends one request per connection.

`GrpcCall` is the call without I/O (bytes in, bytes out, a verdict); the
probe drives it over a Trio stream.
"""

from __future__ import annotations

import contextlib
import ssl
import struct
from functools import partial
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from sentinel.config.model import GrpcSpec, ProbeConfig
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import exchange as lean
from sentinel.probes.base import Target, classify, failed
from sentinel.probes.rawsock import Address
from sentinel.probes.resolve import Resolver, default_resolver
from sentinel.probes.tcp import client_context, no_answer, quote

PATH = "/grpc.health.v1.Health/Check"
MESSAGE_CAP = 64 * 1024  # a HealthCheckResponse is 2 bytes; more than this is not one
READ_SIZE = 65536
USER_AGENT = "sentinel-probe"

# grpc.health.v1.HealthCheckResponse.ServingStatus
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING = 1

# The gRPC status codes (grpc/doc/statuscodes.md), for failure details.
GRPC_STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
               "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
               "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
               "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


class Malformed(Exception):
    """The answer is not a well-formed gRPC message (a PROTOCOL failure)."""


# -- the two messages: protobuf by hand ---------------------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise Malformed("truncated varint")
        if shift > 63:
            raise Malformed("varint longer than 10 bytes")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def encode_request(service: str) -> bytes:
    """HealthCheckRequest{service = 1}, framed as one uncompressed gRPC message."""
    name = service.encode()
    body = b"\x0a" + _varint(len(name)) + name if name else b""  # proto3 omits the default ""
    return struct.pack(">BI", 0, len(body)) + body


def decode_status(body: bytes) -> int:
    """The `status` (field 1) of a HealthCheckResponse; unknown fields are skipped, a
    missing status is UNKNOWN (proto3's default). Raises Malformed."""
    status, pos = 0, 0
    while pos < len(body):
        key, pos = _read_varint(body, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise Malformed("field number 0")
        if wire == 0:
            value, pos = _read_varint(body, pos)
            if field == 1:
                status = value
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, pos = _read_varint(body, pos)
            pos += length
        else:
            raise Malformed(f"wire type {wire}")
        if pos > len(body):
            raise Malformed("truncated field")
    return status


def unframe(data: bytes) -> bytes:
    """The one message in a unary response's DATA (5-byte gRPC prefix + body)."""
    if len(data) < 5:
        raise Malformed(f"{len(data)} bytes, shorter than a message prefix")
    compressed, length = struct.unpack_from(">BI", data)
    if compressed:
        raise Malformed("compressed message (no compression was offered)")
    if len(data) != 5 + length:
        raise Malformed(f"prefix says {length} bytes, got {len(data) - 5}")
    return data[5:]


def status_name(code: str) -> str:
    """`12 UNIMPLEMENTED` for a grpc-status value."""
    if code.isdigit() and int(code) < len(GRPC_STATUS):
        return f"{code} {GRPC_STATUS[int(code)]}"
    return code


# -- one call, without I/O ----------------------------------------------------------------

class GrpcCall:
    """One Health/Check call: `start()` gives the bytes to send, `feed(data)` takes what
    came back and gives any bytes to answer with (settings acks, window updates) until
    `done`; then `result`. Same verdict methods as `lean.Exchange`."""

    __slots__ = ("_conn", "_data", "_first", "_headers", "_request", "_service", "_stream",
                 "_timeout", "_trailers", "_verdict", "done", "phase")

    def __init__(self, spec: GrpcSpec, authority: str, timeout: float) -> None:
        self._service = spec.service
        self._timeout = timeout
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self._stream = 1
        self._request = [
            (":method", "POST"), (":scheme", "https" if spec.tls else "http"),
            (":path", PATH), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"),
            # the server may give up when we do; grpc-timeout units: m = milliseconds
            ("grpc-timeout", f"{max(1, int(timeout * 1000))}m"),
            ("user-agent", USER_AGENT),
        ]
        self._headers: dict[str, str] = {}
        self._trailers: dict[str, str] = {}
        self._data = bytearray()
        self._first = b""  # the first bytes read, quoted when they are not HTTP/2
        self._verdict: tuple[FailureKind, str] | None = None
        self.done = False
        self.phase = "connect"

    def start(self) -> bytes:
        """The connection preface, SETTINGS, the request's HEADERS and its one DATA frame."""
        self.phase = "answer"
        self._conn.initiate_connection()
        self._conn.send_headers(self._stream, self._request)
        self._conn.send_data(self._stream, encode_request(self._service), end_stream=True)
        return self._conn.data_to_send()

    def feed(self, data: bytes) -> bytes:
        """Take bytes read; returns bytes to send back. Raises h2's ProtocolError on a
        malformed frame (`failed` names it)."""
        if len(self._first) < 64:
            self._first += data[:64 - len(self._first)]
            # HTTP/2 servers open with SETTINGS (type 4); without this, h2 would read an
            # HTTP/1 answer as the head of a 4 MiB frame and wait for the rest.
            if len(self._first) >= 4 and self._first[3] != 4:
                raise h2.exceptions.ProtocolError("the server's first frame is not SETTINGS")
        for event in self._conn.receive_data(data):
            self._event(event)
            if self.done:
                break
        return self._conn.data_to_send()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._headers = dict(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.TrailersReceived):
            self._trailers = dict(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            self._data += event.data
            self._conn.acknowledge_received_data(event.flow_controlled_length, self._stream)
            if len(self._data) > MESSAGE_CAP:
                self._end(FailureKind.PROTOCOL, f"answer over {MESSAGE_CAP} bytes")
        elif isinstance(event, h2.events.StreamEnded):
            self.done = True
        elif isinstance(event, h2.events.StreamReset):
            self._end(FailureKind.RESET, f"stream reset by the server ({_code(event)})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._end(FailureKind.RESET, f"server sent GOAWAY ({_code(event)})"
                      + (f": {event.additional_data!r}" if event.additional_data else ""))

    def _end(self, kind: FailureKind, detail: str) -> None:
        self._verdict = kind, detail
        self.done = True

    def goodbye(self) -> bytes:
        """A GOAWAY to send before closing (servers count clean closes apart)."""
        self._conn.close_connection()
        return self._conn.data_to_send()

    def eof(self) -> None:
        """The server closed before the call ended."""
        got = f": got {quote(self._first)}" if self._first and not self._headers else ""
        self._end(FailureKind.RESET, f"server closed the connection before answering{got}")

    def result(self, latency: float) -> ProbeResult:
        """SERVING is healthy; everything else is a failure naming what came back."""
        verdict = self._verdict or self._judge()
        if verdict is None:
            return ProbeResult(ok=True, latency=latency)
        return failed(*verdict, latency)

    def _judge(self) -> tuple[FailureKind, str] | None:
        head = self._headers
        status = head.get(":status", "")
        if status != "200":
            return FailureKind.STATUS, f"HTTP status {status or 'missing'} (not a gRPC server?)"
        kind = head.get("content-type", "")
        if not kind.startswith("application/grpc"):
            return FailureKind.PROTOCOL, f"content-type {kind or 'missing'!s}, not application/grpc"
        # A "trailers-only" answer carries grpc-status in the headers.
        trailers = self._trailers or head
        code = trailers.get("grpc-status")
        if code is None:
            return FailureKind.PROTOCOL, "no grpc-status in the answer"
        if code != "0":
            message = unquote(trailers.get("grpc-message", ""))
            return FailureKind.STATUS, (f"grpc-status {status_name(code)}"
                                        + (f": {message}" if message else ""))
        try:
            serving = decode_status(unframe(bytes(self._data)))
        except Malformed as exc:
            return FailureKind.PROTOCOL, f"malformed HealthCheckResponse: {exc}"
        if serving == SERVING:
            return None
        name = SERVING_STATUS.get(serving, f"{serving} (not a ServingStatus)")
        who = f"service {self._service!r}" if self._service else "server"
        return FailureKind.BODY, f"{who} is {name}"

    def timed_out(self, latency: float) -> ProbeResult:
        """A TIMEOUT naming the phase it was in."""
        return no_answer(self._timeout, self.phase, b"", latency)

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """h2's protocol errors are malformed frames; the rest is the shared edge table."""
        if isinstance(exc, h2.exceptions.ProtocolError):
            detail = f"malformed HTTP/2: {exc or type(exc).__name__}"
            if self._first and not self._headers:
                detail += f" (got {quote(self._first)})"
            return failed(FailureKind.PROTOCOL, detail, latency)
        if isinstance(exc, Malformed):
            return failed(FailureKind.PROTOCOL, str(exc), latency)
        return failed(*classify(exc), latency)


def _code(event: h2.events.StreamReset | h2.events.ConnectionTerminated) -> str:
    code = event.error_code
    return getattr(code, "name", str(code))


# -- the probe ----------------------------------------------------------------------------

class GrpcProbe:
    """Health/Check per check on a fresh connection; `ssl_context` replaces the context
    built from `verify` (a private CA, tests)."""

    def __init__(self, config: ProbeConfig, *, ssl_context: ssl.SSLContext | None = None,
                 resolver: Resolver | None = None) -> None:
        if not isinstance(config.spec, GrpcSpec):
            raise TypeError(f"GrpcProbe needs a GrpcSpec, got {type(config.spec).__name__}")
        self._spec = config.spec
        self.timeout = config.timing.timeout
        self._resolver = resolver or default_resolver()
        self._source = config.source
        self._ssl: ssl.SSLContext | None = None
        if self._spec.tls:  # built once: loading the trust store per check costs more
            self._ssl = ssl_context or client_context(self._spec.verify)
            self._ssl.set_alpn_protocols(["h2"])

    def call(self, target: Target) -> GrpcCall:
        """A fresh call for one check of `target`."""
        host = f"[{target.host}]" if ":" in target.host else target.host
        return GrpcCall(self._spec, f"{host}:{target.port}", self.timeout)

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        call = self.call(target)
        return await lean.check(call, target.host, self.timeout, self._resolver,
                                partial(self._drive, target, call))

    async def aclose(self) -> None:
        """Nothing is pooled; present for the Probe protocol."""

    async def _drive(self, target: Target, call: GrpcCall, address: Address) -> None:
        """`address` is resolved already; a host name stays the TLS server name."""
        stream: trio.abc.Stream = await trio.open_tcp_stream(address[1], target.port,
                                                             local_address=self._source)
        try:
            if self._ssl is not None:
                call.phase = "tls handshake"
                tls = trio.SSLStream(stream, self._ssl,
                                     server_hostname=self._spec.sni or target.host)
                await tls.do_handshake()
                stream = tls
                if tls.selected_alpn_protocol() != "h2":
                    raise Malformed("the server did not agree to HTTP/2 (ALPN h2)")
            await stream.send_all(call.start())
            while not call.done:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    call.eof()
                    break
                if reply := call.feed(bytes(data)):
                    await stream.send_all(reply)
            # best effort: the verdict is in, a server that already left changes nothing
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     OSError, h2.exceptions.ProtocolError):
                await stream.send_all(call.goodbye())
        finally:
            await trio.aclose_forcefully(stream)
