"""The grpc probe against the reference server (grpcio's HealthServicer, in a subprocess)
and against a hand-written HTTP/2 server that answers wrongly on purpose."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
import trio
import trustme

from sentinel.config.model import GrpcSpec, ProbeConfig, Timing
from sentinel.errors import ProtocolError
from sentinel.model import FailureKind
from sentinel.probes.base import Target
from sentinel.probes.grpc import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PRIORITY,
    PUSH_PROMISE,
    SETTINGS,
    GrpcProbe,
    decode_status,
    encode_request,
    frame,
)
from sentinel.probes.registry import make_probe

from .conftest import ReferenceServer, Serve, silent


def probe(timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None,
          **spec: object) -> GrpcProbe:
    """A grpc probe (a generous timeout: grpcio answers from a thread pool)."""
    config = ProbeConfig(type="grpc", timing=Timing(interval=timeout, timeout=timeout),
                         spec=GrpcSpec(**spec))  # type: ignore[arg-type]
    return GrpcProbe(config, ssl_context=ssl_context)


def at(port: int, host: str = "127.0.0.1") -> Target:
    """The target for a loopback port."""
    return Target(service="svc", backend="b1", host=host, port=port)


async def test_serving_and_not_serving(grpc_server: ReferenceServer) -> None:
    """SERVING is healthy; switching the service to NOT_SERVING fails the check, and back."""
    grpc_server.command("set web SERVING")
    check = probe(service="web")
    result = await check.check(at(grpc_server.port))
    assert result.ok, result.detail
    grpc_server.command("set web NOT_SERVING")
    result = await check.check(at(grpc_server.port))
    assert (result.failure, result.detail) == (FailureKind.BODY, "service 'web' is NOT_SERVING")
    grpc_server.command("set web SERVING")
    assert (await check.check(at(grpc_server.port))).ok


async def test_whole_server_status(grpc_server: ReferenceServer) -> None:
    """service "" asks about the server as a whole (HealthServicer serves it by default)."""
    result = await probe().check(at(grpc_server.port, host="localhost"))
    assert result.ok, result.detail
    grpc_server.command("set - NOT_SERVING")
    result = await probe().check(at(grpc_server.port))
    assert (result.failure, result.detail) == (FailureKind.BODY, "server is NOT_SERVING")


async def test_service_unknown_status(grpc_server: ReferenceServer) -> None:
    """A SERVICE_UNKNOWN answer is a failure of its own name."""
    grpc_server.command("set web SERVICE_UNKNOWN")
    result = await probe(service="web").check(at(grpc_server.port))
    assert (result.failure, result.detail) == (FailureKind.BODY, "service 'web' is SERVICE_UNKNOWN")


async def test_unregistered_service_is_grpc_status(grpc_server: ReferenceServer) -> None:
    """A service the server does not know is grpc-status NOT_FOUND, named with its message."""
    result = await probe(service="nope").check(at(grpc_server.port))
    assert result.failure is FailureKind.STATUS
    assert result.detail.startswith("grpc-status 5 NOT_FOUND"), result.detail


async def test_stopped_server(grpc_server: ReferenceServer) -> None:
    """Once the server is stopped the check is a CONNECT failure."""
    grpc_server.command("set web SERVING")
    grpc_server.command("stop")
    grpc_server.kill()
    result = await probe(service="web").check(at(grpc_server.port))
    assert (result.failure, result.detail) == (FailureKind.CONNECT, "connection refused")


async def test_tls(tmp_path: Path, ca: trustme.CA, client_trusting_ca: ssl.SSLContext) -> None:
    """`tls: true` speaks HTTP/2 over TLS (ALPN h2) to grpcio's secure port, verifying
    the certificate; an untrusted certificate is a TLS failure."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server = ReferenceServer(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    try:
        result = await probe(tls=True, ssl_context=client_trusting_ca).check(at(server.port))
        assert result.ok, result.detail
        result = await probe(tls=True).check(at(server.port))  # the system trust store
        assert result.failure is FailureKind.TLS, result.detail
        assert (await probe(tls=True, verify=False).check(at(server.port))).ok
    finally:
        server.kill()


async def test_sni_names_the_certificate_when_probing_by_address(
        tmp_path: Path, ca: trustme.CA, client_trusting_ca: ssl.SSLContext) -> None:
    """A certificate issued for a name only: probed by its IP address, verification fails
    against the address; with `sni:` the probe asks for and verifies that name."""
    cert = ca.issue_cert("health.example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server = ReferenceServer(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    try:
        by_address = await probe(tls=True, ssl_context=client_trusting_ca).check(
            at(server.port))
        assert by_address.failure is FailureKind.TLS, by_address.detail
        named = await probe(tls=True, sni="health.example",
                            ssl_context=client_trusting_ca).check(at(server.port))
        assert named.ok, named.detail
    finally:
        server.kill()


async def test_make_probe_builds_grpc() -> None:
    """The registry knows `grpc`."""
    config = ProbeConfig(type="grpc", timing=Timing(), spec=GrpcSpec(service="x"))
    assert isinstance(make_probe(config), GrpcProbe)


# -- a server that answers wrongly ----------------------------------------------------------

Answer = Callable[[h2.connection.H2Connection, int], None]


def serve_h2(answer: Answer) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """A handler speaking server-side HTTP/2 that answers each request with `answer`."""

    async def handle(stream: trio.abc.Stream) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded):
                    answer(conn, event.stream_id)
            await stream.send_all(conn.data_to_send())

    return handle


def grpc_head(conn: h2.connection.H2Connection, sid: int, **extra: str) -> None:
    """Response headers of a gRPC answer, plus `extra` (grpc_status -> grpc-status)."""
    conn.send_headers(sid, [(":status", extra.pop("status", "200")),
                            ("content-type", "application/grpc"),
                            *((k.replace("_", "-"), v) for k, v in extra.items())])


def message(body: bytes, sid: int, conn: h2.connection.H2Connection, **trailers: str) -> None:
    """A 200 answer with DATA `body` and trailers (grpc-status 0 unless given)."""
    grpc_head(conn, sid)
    conn.send_data(sid, body)
    fields = {"grpc-status": "0"} | {k.replace("_", "-"): v for k, v in trailers.items()}
    conn.send_headers(sid, list(fields.items()), end_stream=True)


def no_status(conn: h2.connection.H2Connection, sid: int) -> None:
    """Trailers without grpc-status."""
    grpc_head(conn, sid)
    conn.send_data(sid, b"\x00\x00\x00\x00\x02\x08\x01")
    conn.send_headers(sid, [("x-other", "1")], end_stream=True)


def trailers_only(conn: h2.connection.H2Connection, sid: int) -> None:
    """grpc-status 12 with a percent-encoded grpc-message, in the headers alone."""
    conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                            ("grpc-status", "12"), ("grpc-message", "no%20health%20here")],
                      end_stream=True)


def not_found(conn: h2.connection.H2Connection, sid: int) -> None:
    """An HTTP 404, as a web server without gRPC would answer."""
    conn.send_headers(sid, [(":status", "404"), ("content-type", "text/plain")],
                      end_stream=True)


def reset(conn: h2.connection.H2Connection, sid: int) -> None:
    """RST_STREAM with REFUSED_STREAM."""
    conn.reset_stream(sid, error_code=7)


CASES = [
    ("serving", lambda c, s: message(b"\x00\x00\x00\x00\x02\x08\x01", s, c), None, ""),
    ("unknown-fields-skipped",
     lambda c, s: message(b"\x00\x00\x00\x00\x07\x12\x01x\x08\x01\x18\x05", s, c), None, ""),
    ("service-unknown", lambda c, s: message(b"\x00\x00\x00\x00\x02\x08\x03", s, c),
     FailureKind.BODY, "service 'web' is SERVICE_UNKNOWN"),
    ("unknown-enum", lambda c, s: message(b"\x00\x00\x00\x00\x02\x08\x09", s, c),
     FailureKind.BODY, "service 'web' is 9 (not a ServingStatus)"),
    ("missing-status-field", lambda c, s: message(b"\x00\x00\x00\x00\x00", s, c),
     FailureKind.BODY, "service 'web' is UNKNOWN"),
    ("truncated-message", lambda c, s: message(b"\x00\x00\x00\x00\x05\x08\x01", s, c),
     FailureKind.PROTOCOL, "malformed HealthCheckResponse: prefix says 5 bytes, got 2"),
    ("bad-protobuf", lambda c, s: message(b"\x00\x00\x00\x00\x01\x08", s, c),
     FailureKind.PROTOCOL, "malformed HealthCheckResponse: truncated varint"),
    ("compressed", lambda c, s: message(b"\x01\x00\x00\x00\x02\x08\x01", s, c),
     FailureKind.PROTOCOL,
     "malformed HealthCheckResponse: compressed message (no compression was offered)"),
    ("no-message", lambda c, s: message(b"", s, c), FailureKind.PROTOCOL,
     "malformed HealthCheckResponse: 0 bytes, shorter than a message prefix"),
    ("no-grpc-status", no_status, FailureKind.PROTOCOL, "no grpc-status in the answer"),
    ("grpc-status", trailers_only, FailureKind.STATUS,
     "grpc-status 12 UNIMPLEMENTED: no health here"),
    ("http-404", not_found, FailureKind.STATUS, "HTTP status 404 (not a gRPC server?)"),
    ("stream-reset", reset, FailureKind.RESET, "stream reset by the server (REFUSED_STREAM)"),
]


@pytest.mark.parametrize(("answer", "kind", "detail"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
async def test_answers(serve: Serve, answer: Answer, kind: FailureKind | None,
                       detail: str) -> None:
    """Each kind of answer gets its own verdict: failure kind and reason."""
    port = await serve(serve_h2(answer))
    result = await probe(service="web").check(at(port))
    assert (result.failure, result.detail) == (kind, detail)


async def test_ping_answered(serve: Serve) -> None:
    """A server that pings first and answers only once its PING is acknowledged (as
    grpcio's BDP probe may) gets its ack, and the check passes."""

    async def handle(stream: trio.abc.Stream) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        conn.ping(b"12345678")
        await stream.send_all(conn.data_to_send())
        ended, acked = 0, False
        while data := await stream.receive_some(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded):
                    ended = event.stream_id
                acked = acked or isinstance(event, h2.events.PingAckReceived)
            if ended and acked:
                message(b"\x00\x00\x00\x00\x02\x08\x01", ended, conn)
                ended = 0
            await stream.send_all(conn.data_to_send())

    result = await probe().check(at(await serve(handle)))
    assert result.ok, result.detail


def raw(*frames: bytes) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """A handler that reads the request, then sends `frames` as they are, then waits."""

    async def handle(stream: trio.abc.Stream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"".join(frames))
        await stream.receive_some(65536)

    return handle


OPEN = frame(SETTINGS, 0, 0, b"")
HEAD = hpack.Encoder().encode([(":status", "200"), ("content-type", "application/grpc")])
TRAILER = hpack.Encoder().encode([("grpc-status", "0")])
BODY = b"\x00\x00\x00\x00\x02\x08\x01"


async def test_continuation_padding_and_priority(serve: Serve) -> None:
    """Headers split over CONTINUATION frames, padded HEADERS and DATA and a HEADERS
    frame carrying a priority are all read as what they carry."""
    padded_head = bytes([3]) + bytes(5) + HEAD[:4] + bytes(3)  # pad length, priority, part
    port = await serve(raw(OPEN, frame(HEADERS, PADDED | PRIORITY, 1, padded_head),
                           frame(CONTINUATION, END_HEADERS, 1, HEAD[4:]),
                           frame(DATA, PADDED, 1, bytes([2]) + BODY + bytes(2)),
                           frame(HEADERS, END_HEADERS | END_STREAM, 1, TRAILER)))
    result = await probe().check(at(port))
    assert result.ok, result.detail


async def test_goaway(serve: Serve) -> None:
    """A GOAWAY before the answer is a RESET naming its error code and debug text."""
    port = await serve(raw(OPEN, frame(GOAWAY, 0, 0, bytes(4) + b"\x00\x00\x00\x0bslow")))
    result = await probe().check(at(port))
    assert (result.failure, result.detail) == (
        FailureKind.RESET, "server sent GOAWAY (ENHANCE_YOUR_CALM): b'slow'")


@pytest.mark.parametrize(("frames", "detail"), [
    ((OPEN, frame(DATA, 0, 1, BODY)), "DATA before the response headers"),
    ((OPEN, b"\x00\x50\x00\x00\x00\x00\x00\x00\x01"),
     "a frame of 20480 bytes, over the 16384 allowed"),
    ((OPEN, frame(PUSH_PROMISE, END_HEADERS, 1, bytes(4))),
     "PUSH_PROMISE, though server push is off"),
    ((OPEN, frame(HEADERS, END_HEADERS, 3, HEAD)), "a frame of type 1 on stream 3"),
    ((OPEN, frame(HEADERS, 0, 1, HEAD), frame(DATA, 0, 1, BODY)),
     "a header block without its CONTINUATION"),
    ((OPEN, frame(HEADERS, END_HEADERS, 1, b"\x80")),
     "undecodable header block (Invalid table index 0)"),
    ((OPEN, frame(HEADERS, END_HEADERS | PADDED, 1, b"\xff" + HEAD)),
     "padding longer than the frame"),
    ((frame(SETTINGS, 0, 0, b"\x00"),), "a malformed SETTINGS frame"),
    ((OPEN, frame(HEADERS, END_HEADERS, 1, HEAD), frame(HEADERS, END_HEADERS, 1, TRAILER)),
     "trailers that do not end the stream"),
])
async def test_malformed_frames(serve: Serve, frames: tuple[bytes, ...], detail: str) -> None:
    """Each framing mistake is a PROTOCOL failure naming it."""
    result = await probe().check(at(await serve(raw(*frames))))
    assert result.failure is FailureKind.PROTOCOL
    assert result.detail.startswith(f"malformed HTTP/2: {detail}"), result.detail


async def test_not_http2(serve: Serve) -> None:
    """An HTTP/1.1 server's answer is a malformed frame, quoting what came back."""

    async def http1(stream: trio.abc.Stream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await stream.receive_some(1024)

    result = await probe().check(at(await serve(http1)))
    assert result.failure is FailureKind.PROTOCOL
    assert result.detail.startswith("malformed HTTP/2: "), result.detail
    assert "HTTP/1.1 400" in result.detail


async def test_silent_server_times_out(serve: Serve) -> None:
    """A server that accepts and never answers is a TIMEOUT after the probe timeout."""
    result = await probe(timeout=0.2).check(at(await serve(silent)))
    assert (result.failure, result.detail) == (FailureKind.TIMEOUT,
                                               "no answer within 200ms (answer)")


async def test_refused(refused_port: int) -> None:
    """Nobody listening is a CONNECT failure."""
    result = await probe().check(at(refused_port))
    assert result.failure is FailureKind.CONNECT


def test_request_encoding_round_trips() -> None:
    """The hand-written HealthCheckRequest is what protobuf itself encodes."""
    from grpc_health.v1 import health_pb2

    for name in ("", "web", "x" * 300):
        wire = health_pb2.HealthCheckRequest(service=name).SerializeToString()
        assert encode_request(name) == b"\x00" + len(wire).to_bytes(4, "big") + wire
        reply = health_pb2.HealthCheckResponse(status=2).SerializeToString()
        assert decode_status(reply) == 2


def test_decoder_rejects_bad_wire_types() -> None:
    """Wire types 3, 4, 6 and 7 (groups, reserved) are malformed."""
    with pytest.raises(ProtocolError, match="wire type 3"):
        decode_status(b"\x0b")
