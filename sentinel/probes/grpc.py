"""The `grpc` probe: the standard gRPC health protocol, `grpc.health.v1.Health/Check`.

One check is one unary call on a fresh HTTP/2 connection: cleartext h2c
with prior knowledge (gRPC servers speak HTTP/2 from the first byte; no
HTTP/1.1 upgrade), or TLS with ALPN `h2`. Healthy only when the answer is
`SERVING`, as Kubernetes' and Envoy's gRPC health checks judge it.

Why not grpcio: a client for one unary call needs HTTP/2 framing and two
one-field protobuf messages. The framing of one call is written here (a
frame reader, the request built once per backend), header blocks are
(de)compressed by `hpack` (pure Python, the HPACK library of h2, which
httpx and hypercorn use), and the messages are a dozen lines below. h2's
full connection state machine did the framing at first and cost about
680 us of CPU per check. grpcio would bring a C++ core with its own threads, event loop and
connection management (channels reconnect and back off on their own, which
hides exactly the failures a health check exists to see) into a Trio
process, for a client that sends one request per connection.

`GrpcCall` is the call without I/O (bytes in, bytes out, a verdict); the
probe drives it over a Trio stream.
"""

from __future__ import annotations

import _socket
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from urllib.parse import unquote

import hpack
import trio

from sentinel.addresses import join
from sentinel.config.model import GrpcSpec, ProbeConfig
from sentinel.errors import BadFrame, ProtocolError
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import exchange as lean
from sentinel.probes import rawsock
from sentinel.probes.base import Target, classify, failed, source_address
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
            raise ProtocolError("truncated varint")
        if shift > 63:
            raise ProtocolError("varint longer than 10 bytes")
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
    missing status is UNKNOWN (proto3's default). Raises ProtocolError."""
    status, pos = 0, 0
    while pos < len(body):
        key, pos = _read_varint(body, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtocolError("field number 0")
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
            raise ProtocolError(f"wire type {wire}")
        if pos > len(body):
            raise ProtocolError("truncated field")
    return status


def unframe(data: bytes) -> bytes:
    """The one message in a unary response's DATA (5-byte gRPC prefix + body)."""
    if len(data) < 5:
        raise ProtocolError(f"{len(data)} bytes, shorter than a message prefix")
    compressed, length = struct.unpack_from(">BI", data)
    if compressed:
        raise ProtocolError("compressed message (no compression was offered)")
    if len(data) != 5 + length:
        raise ProtocolError(f"prefix says {length} bytes, got {len(data) - 5}")
    return data[5:]


def status_name(code: str) -> str:
    """`12 UNIMPLEMENTED` for a grpc-status value."""
    if code.isdigit() and int(code) < len(GRPC_STATUS):
        return f"{code} {GRPC_STATUS[int(code)]}"
    return code


# -- one call, without I/O ----------------------------------------------------------------
#
# HTTP/2 by hand (RFC 9113) for the one exchange a check makes. The request is the same
# bytes for every check of a backend (each connection starts with empty HPACK tables), so
# the probe builds it once per authority; the answer is read frame by frame and its header
# blocks decoded by `hpack`. Flow control needs nothing: the request fits the initial
# window and the answer is capped far below ours.

_FRAME_HEAD = struct.Struct(">IBI")  # length << 8 | type, flags, stream id
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, CONTINUATION = (
    0, 1, 3, 4, 5, 6, 7, 9)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE as we leave it: a longer frame is an error
STREAM = 1  # the call's stream: the first one a client opens
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame."""
    return _FRAME_HEAD.pack(len(payload) << 8 | kind, flags, stream) + payload


SETTINGS_ACK = frame(SETTINGS, ACK, 0, b"")
GOODBYE = frame(GOAWAY, 0, 0, bytes(8))  # last stream 0, NO_ERROR


def request_bytes(spec: GrpcSpec, authority: str, timeout: float) -> bytes:
    """What a check sends: the connection preface, SETTINGS turning server push off, and
    the call: HEADERS and one DATA frame that ends the stream."""
    block = hpack.Encoder().encode([
        (":method", "POST"), (":scheme", "https" if spec.tls else "http"),
        (":path", PATH), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers"),
        # the server may give up when we do; grpc-timeout units: m = milliseconds
        ("grpc-timeout", f"{max(1, int(timeout * 1000))}m"),
        ("user-agent", USER_AGENT),
    ])
    return (PREFACE + frame(SETTINGS, 0, 0, b"\x00\x02\x00\x00\x00\x00")
            + frame(HEADERS, END_HEADERS, STREAM, block)
            + frame(DATA, END_STREAM, STREAM, encode_request(spec.service)))


def error_name(code: int) -> str:
    """`REFUSED_STREAM` for an HTTP/2 error code (the number when unknown)."""
    return ERROR_CODES[code] if code < len(ERROR_CODES) else str(code)


ERROR_CODES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
               "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
               "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
               "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")


class GrpcCall:
    """One Health/Check call: `start()` gives the bytes to send (`request`, built by
    `request_bytes`), `feed(data)` takes what came back and gives any bytes to answer
    with (SETTINGS and PING acks) until `done`; then `result`. Same verdict methods as
    `lean.Exchange`. A malformed frame raises BadFrame from `feed` (`failed` names it)."""

    __slots__ = ("_block", "_block_ends", "_data", "_decoder", "_first", "_frames",
                 "_headers", "_pending", "_request", "_service", "_timeout", "_trailers",
                 "_verdict", "done", "phase")

    def __init__(self, service: str, request: bytes, timeout: float) -> None:
        self._service = service
        self._request = request
        self._timeout = timeout
        self._decoder = hpack.Decoder()
        self._pending = b""  # the start of a frame not yet complete
        self._frames = 0
        self._block: bytes | None = None  # a header block awaiting CONTINUATION frames
        self._block_ends = False  # whether the HEADERS frame that began it ends the stream
        self._headers: dict[str, str] | None = None
        self._trailers: dict[str, str] = {}
        self._data = bytearray()
        self._first = b""  # the first bytes read, quoted when they are not HTTP/2
        self._verdict: tuple[FailureKind, str] | None = None
        self.done = False
        self.phase = "connect"

    def start(self) -> bytes:
        """The connection preface, SETTINGS, the request's HEADERS and its one DATA frame."""
        self.phase = "answer"
        return self._request

    def feed(self, data: bytes) -> bytes:
        """Take bytes read; returns bytes to send back."""
        if len(self._first) < 64:
            self._first += data[:64 - len(self._first)]
        buffer = self._pending + data if self._pending else data
        # HTTP/2 servers open with SETTINGS; without this check an HTTP/1 answer would be
        # read as the head of a 4 MiB frame, and waited for.
        if not self._frames and len(buffer) >= 4 and buffer[3] != SETTINGS:
            raise BadFrame("the server's first frame is not SETTINGS")
        reply = b""
        pos, end = 0, len(buffer)
        while not self.done and end - pos >= 9:
            size_kind, flags, stream = _FRAME_HEAD.unpack_from(buffer, pos)
            size = size_kind >> 8
            if size > MAX_FRAME:
                raise BadFrame(f"a frame of {size} bytes, over the {MAX_FRAME} allowed")
            if end - pos - 9 < size:
                break
            self._frames += 1
            reply += self._frame(size_kind & 0xFF, flags, stream & 0x7FFFFFFF,
                                 buffer[pos + 9:pos + 9 + size])
            pos += 9 + size
        self._pending = buffer[pos:]
        return reply

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        """Act on one frame; what to send back."""
        if self._block is not None and kind != CONTINUATION:
            raise BadFrame("a header block without its CONTINUATION")
        if kind == SETTINGS:
            if stream or len(payload) % 6 or (flags & ACK and payload):
                raise BadFrame("a malformed SETTINGS frame")
            return b"" if flags & ACK else SETTINGS_ACK
        if kind == PING:
            if stream or len(payload) != 8:
                raise BadFrame("a malformed PING frame")
            return b"" if flags & ACK else frame(PING, ACK, 0, payload)
        if kind == GOAWAY:
            if stream or len(payload) < 8:
                raise BadFrame("a malformed GOAWAY frame")
            extra = payload[8:]
            self._end(FailureKind.RESET, f"server sent GOAWAY ({_code(payload[4:8])})"
                      + (f": {extra!r}" if extra else ""))
        elif kind == PUSH_PROMISE:
            raise BadFrame("PUSH_PROMISE, though server push is off")
        elif kind in (DATA, HEADERS, RST_STREAM, CONTINUATION):
            if stream != STREAM:
                raise BadFrame(f"a frame of type {kind} on stream {stream}")
            if kind == RST_STREAM:
                if len(payload) != 4:
                    raise BadFrame("a malformed RST_STREAM frame")
                self._end(FailureKind.RESET, f"stream reset by the server ({_code(payload)})")
            elif kind == DATA:
                self._on_data(flags, payload)
            else:
                self._on_headers(kind, flags, payload)
        return b""  # PRIORITY, WINDOW_UPDATE and unknown types mean nothing to one call

    def _on_data(self, flags: int, payload: bytes) -> None:
        if self._headers is None:
            raise BadFrame("DATA before the response headers")
        self._data += _unpad(flags, payload)
        if len(self._data) > MESSAGE_CAP:
            self._end(FailureKind.PROTOCOL, f"answer over {MESSAGE_CAP} bytes")
        elif flags & END_STREAM:
            self.done = True

    def _on_headers(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == HEADERS:
            payload = _unpad(flags, payload)
            if flags & PRIORITY:
                if len(payload) < 5:
                    raise BadFrame("a HEADERS frame too short for its priority")
                payload = payload[5:]
            self._block, self._block_ends = payload, bool(flags & END_STREAM)
        elif self._block is None:
            raise BadFrame("CONTINUATION without a header block")
        else:
            self._block += payload
            if len(self._block) > MESSAGE_CAP:
                raise BadFrame(f"a header block over {MESSAGE_CAP} bytes")
        if not flags & END_HEADERS:
            return
        try:
            fields = {name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
                      for name, value in self._decoder.decode(self._block, raw=True)}
        except hpack.HPACKError as exc:
            raise BadFrame(f"undecodable header block ({exc})") from None
        self._block = None
        if self._headers is None:
            if fields.get(":status", "").startswith("1") and not self._block_ends:
                return  # an interim answer (100 Continue): the real one follows
            self._headers = fields
        elif not self._block_ends:
            raise BadFrame("trailers that do not end the stream")
        else:
            self._trailers = fields
        if self._block_ends:
            self.done = True

    def _end(self, kind: FailureKind, detail: str) -> None:
        self._verdict = kind, detail
        self.done = True

    def goodbye(self) -> bytes:
        """A GOAWAY to send before closing (servers count clean closes apart)."""
        return GOODBYE

    def eof(self) -> None:
        """The server closed before the call ended."""
        got = f": got {quote(self._first)}" if self._first and self._headers is None else ""
        self._end(FailureKind.RESET, f"server closed the connection before answering{got}")

    def result(self, latency: float) -> ProbeResult:
        """SERVING is healthy; everything else is a failure naming what came back."""
        verdict = self._verdict or self._judge()
        if verdict is None:
            return ProbeResult(ok=True, latency=latency)
        return failed(*verdict, latency)

    def _judge(self) -> tuple[FailureKind, str] | None:
        head = self._headers or {}
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
        except ProtocolError as exc:
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
        """A malformed frame or message is PROTOCOL; the rest is the shared edge table."""
        if isinstance(exc, BadFrame):
            detail = f"malformed HTTP/2: {exc}"
            if self._first and self._headers is None:
                detail += f" (got {quote(self._first)})"
            return failed(FailureKind.PROTOCOL, detail, latency)
        if isinstance(exc, ProtocolError):
            return failed(FailureKind.PROTOCOL, str(exc), latency)
        return failed(*classify(exc), latency)


def _unpad(flags: int, payload: bytes) -> bytes:
    """A DATA or HEADERS payload without its padding."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise BadFrame("padding longer than the frame")
    return payload[1:len(payload) - payload[0]]


def _code(four: bytes) -> str:
    return error_name(int.from_bytes(four, "big"))


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
        self._source = source_address(config)
        self._requests: dict[str, bytes] = {}  # by authority: the same bytes every check
        self._ssl: ssl.SSLContext | None = None
        if self._spec.tls:  # built once: loading the trust store per check costs more
            self._ssl = ssl_context or client_context(self._spec.verify)
            self._ssl.set_alpn_protocols(["h2"])

    def call(self, target: Target) -> GrpcCall:
        """A fresh call for one check of `target` (its request bytes built once)."""
        authority = join(target.host, target.port)
        request = self._requests.get(authority)
        if request is None:
            request = self._requests[authority] = request_bytes(self._spec, authority,
                                                                self.timeout)
        return GrpcCall(self._spec.service, request, self.timeout)

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        call = self.call(target)
        return await lean.check(call, target.host, self.timeout, self._resolver,
                                partial(self._drive, target, call))

    async def aclose(self) -> None:
        """Nothing is pooled; present for the Probe protocol."""

    async def _drive(self, target: Target, call: GrpcCall, address: Address) -> None:
        """`address` is resolved already; a host name stays the TLS server name. A raw
        socket (`rawsock`: no happy-eyeballs nursery, closed with an RST like every
        check), wrapped in a Trio stream only for TLS."""
        sock: _socket.socket = await rawsock.connect(address, target.port, source=self._source)
        try:
            if self._ssl is None:
                await _converse(call, partial(rawsock.send_all, sock),
                                partial(rawsock.recv_some, sock))
                return
            call.phase = "tls handshake"
            stdlib = socket.socket(sock.family, sock.type, fileno=sock.detach())  # trio's kind
            sock = stdlib
            tls = trio.SSLStream(trio.SocketStream(trio.socket.from_stdlib_socket(stdlib)),
                                 self._ssl, server_hostname=self._spec.sni or target.host)
            await tls.do_handshake()
            if tls.selected_alpn_protocol() != "h2":
                raise ProtocolError("the server did not agree to HTTP/2 (ALPN h2)")
            await _converse(call, tls.send_all, partial(tls.receive_some, READ_SIZE))
        finally:
            sock.close()  # with an RST: rawsock sets SO_LINGER 0


async def _converse(call: GrpcCall, send_all: Callable[[bytes], Awaitable[None]],
                    receive_some: Callable[[], Awaitable[bytes | bytearray]]) -> None:
    """Run the call over a connected transport. What the last answer wants sent back (a
    SETTINGS ack, usually) goes out with the GOAWAY, in one write: each write on loopback
    costs the checker the peer's wakeup too."""
    await send_all(call.start())
    reply = b""
    while not call.done:
        data = await receive_some()
        if not data:
            call.eof()
            break
        reply = call.feed(bytes(data))
        if reply and not call.done:
            await send_all(reply)
            reply = b""
    # best effort: the verdict is in, a server that already left changes nothing
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await send_all(reply + call.goodbye())
