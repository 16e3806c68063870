"""The `http` and `https` probes: one request through httpx, judged by status and body.

Redirects are not followed: a 301 is the backend's answer, and whether it is
healthy is for `expect_status` to say. Host names are resolved by
`sentinel.probes.resolve` (not by httpx, whose lookups take worker threads),
and the request goes to the address, the name kept as Host and TLS SNI.
The timeout bounds the whole check twice over: httpx's per-phase timeouts,
and a Trio cancel scope around the request and the body read, so a server
trickling bytes cannot stretch it.
"""

from __future__ import annotations

import ssl

import httpx
import trio

from sentinel.addresses import bracketed, join
from sentinel.config.model import HttpSpec, ProbeConfig, StatusClass
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes.base import Target, classify, failed
from sentinel.probes.resolve import Resolver, default_resolver

BODY_CAP = 64 * 1024  # `expect_body` is matched against at most this much of the body
SHOWN = 64  # how much of the body a failure detail quotes
USER_AGENT = "sentinel-probe"

# The edge table for httpx (STYLE 4: foreign exceptions are translated once).
# A kind of None means "the transport cause decides": ConnectError wraps a
# refused connection, a DNS failure or a TLS failure alike. For the others a
# transport cause (ECONNRESET under a ReadError) still wins over the default.
_HTTPX_KINDS: tuple[tuple[type[httpx.HTTPError], FailureKind | None, str], ...] = (
    (httpx.TimeoutException, FailureKind.TIMEOUT, "timed out"),
    (httpx.ConnectError, None, "connect failed"),
    (httpx.ReadError, FailureKind.RESET, "connection lost while reading"),
    (httpx.WriteError, FailureKind.RESET, "connection lost while writing"),
    (httpx.RemoteProtocolError, FailureKind.PROTOCOL, "bad response"),
    (httpx.DecodingError, FailureKind.PROTOCOL, "undecodable body"),
)

_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def classify_httpx(exc: Exception) -> tuple[FailureKind, str]:
    """Map an httpx exception (or anything else) to a failure kind and text."""
    cause = _foreign_cause(exc)
    if isinstance(cause, _TRANSPORT_ERRORS):
        return classify(cause)
    if isinstance(exc, httpx.RemoteProtocolError) and cause is None:
        # httpcore raises this bare when the server closed before any response
        # bytes; parser errors sit on top of the h11 exception.
        return FailureKind.RESET, "server closed the connection without a response"
    for exc_type, kind, text in _HTTPX_KINDS:
        if isinstance(exc, exc_type):
            message = f"{text}: {exc}" if str(exc) else text
            return (kind or FailureKind.CONNECT), message
    return classify(exc)


def _foreign_cause(exc: BaseException) -> BaseException | None:
    """The first exception under `exc` raised outside httpx/httpcore, if any.

    The context is followed when there is no explicit cause: httpcore's pool
    re-raises with `from None`, which hides the cause but keeps the context.
    """
    cause = _under(exc)
    while cause is not None and type(cause).__module__.split(".")[0] in ("httpx", "httpcore"):
        cause = _under(cause)
    return cause


def _under(exc: BaseException) -> BaseException | None:
    """The exception `exc` was raised from, or else during."""
    return exc.__cause__ if exc.__cause__ is not None else exc.__context__


def describe_status(classes: tuple[StatusClass, ...]) -> str:
    """`expect_status` as written in the config: `2xx,301,500-503`."""
    parts = []
    for c in classes:
        if c.low == c.high:
            parts.append(str(c.low))
        elif c.low % 100 == 0 and c.high == c.low + 99:
            parts.append(f"{c.low // 100}xx")
        else:
            parts.append(f"{c.low}-{c.high}")
    return ",".join(parts)


class HttpProbe:
    """One HTTP(S) request per check, judged by `expect_status` and `expect_body`.

    One client per probe object, shared by the service's backends. Keep-alive
    is off: each check opens a fresh connection, so a backend that stopped
    accepting is noticed, and a pooled connection the server timed out cannot
    fail a check spuriously. `ssl_context` replaces the context built from
    `verify` (a private CA, tests).
    """

    def __init__(self, config: ProbeConfig, *, ssl_context: ssl.SSLContext | None = None,
                 resolver: Resolver | None = None) -> None:
        if not isinstance(config.spec, HttpSpec):
            raise TypeError(f"HttpProbe needs an HttpSpec, got {type(config.spec).__name__}")
        self._spec = config.spec
        self._resolver = resolver or default_resolver()
        self._scheme = "https" if config.type == "https" else "http"
        self._timeout = config.timing.timeout
        self._headers = httpx.Headers({"User-Agent": USER_AGENT})
        self._headers.update(httpx.Headers(list(self._spec.headers)))  # configured names replace
        if self._spec.host:
            self._headers["Host"] = self._spec.host
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(self._timeout),
            trust_env=False,  # no HTTP_PROXY detour: the backend itself is probed
            transport=httpx.AsyncHTTPTransport(
                verify=ssl_context or self._spec.verify,
                limits=httpx.Limits(max_keepalive_connections=0),
                local_address=config.source),
        )

    def url(self, target: Target, ip: str | None = None) -> str:
        """The URL requested for `target`, at `ip` when given (IPv6 literals bracketed)."""
        return f"{self._scheme}://{join(ip or target.host, target.port)}{self._spec.path}"

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        start = trio.current_time()
        deadline = start + self._timeout
        verdict: tuple[FailureKind, str] | None = None
        timed_out = False
        try:
            address = await self._resolver.resolve(target.host, deadline)
            with trio.move_on_at(deadline) as scope:
                verdict = await self._request(target, address[1])
            timed_out = scope.cancelled_caught
        except Exception as exc:  # the edge: every foreign error becomes a failure kind
            verdict = classify_httpx(exc)
        latency = trio.current_time() - start
        if timed_out or (verdict and verdict[0] is FailureKind.TIMEOUT):
            # Whichever timer fired first, httpx's or ours, the text is the same.
            verdict = FailureKind.TIMEOUT, f"no answer within {self._timeout * 1000:.0f}ms"
        if verdict is None:
            return ProbeResult(ok=True, latency=latency)
        return failed(*verdict, latency)

    async def aclose(self) -> None:
        """Close the shared client."""
        await self._client.aclose()

    async def _request(self, target: Target, ip: str) -> tuple[FailureKind, str] | None:
        """Send the request to `ip` (the target's resolved address); None when healthy,
        else the failure. A host name stays the Host header and the TLS server name."""
        spec = self._spec
        headers, extensions = self._headers, {}
        if ip != target.host:
            extensions["sni_hostname"] = target.host
            if not spec.host:
                headers = self._headers.copy()
                default = 443 if self._scheme == "https" else 80
                headers["Host"] = (bracketed(target.host) if target.port == default
                                   else join(target.host, target.port))
        request = self._client.build_request(spec.method, self.url(target, ip), headers=headers,
                                             extensions=extensions)
        response = await self._client.send(request, stream=True)
        try:
            verdict = status_verdict(spec, response.status_code)
            if verdict is not None or spec.expect_body is None:
                return verdict
            return body_verdict(spec, await _read_text(response))
        finally:
            await response.aclose()


def status_verdict(spec: HttpSpec, code: int) -> tuple[FailureKind, str] | None:
    """None when `code` is in `expect_status`, else the STATUS failure."""
    if any(c.matches(code) for c in spec.expect_status):
        return None
    return FailureKind.STATUS, f"status {code} not in {describe_status(spec.expect_status)}"


def body_verdict(spec: HttpSpec, body: str) -> tuple[FailureKind, str] | None:
    """None when `expect_body` matches `body` (or is unset), else the BODY failure."""
    if spec.expect_body is None or spec.expect_body.search(body):
        return None
    shown = body if len(body) <= SHOWN else body[:SHOWN] + "..."
    return FailureKind.BODY, f"body did not match {spec.expect_body.pattern!r}: got {shown!r}"


async def _read_text(response: httpx.Response) -> str:
    """Up to BODY_CAP bytes of the (content-decoded) body, as text."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= BODY_CAP:
            break
    try:
        return data[:BODY_CAP].decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data[:BODY_CAP].decode("utf-8", errors="replace")
