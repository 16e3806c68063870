"""A small etcd v3 client over its JSON gateway, on Trio with httpx.

etcd 3.4 serves the v3 API as JSON on its client port under `/v3/` (also
under the older `/v3beta/`; checked against Debian's etcd 3.4.23). Keys and
values travel base64-encoded, 64-bit numbers (revisions, lease IDs) as
strings, and fields equal to their default are left out of answers (a put
answers no `kvs`, a failed transaction no `succeeded`). Streaming calls
(watch, lease keep-alive) answer newline-delimited `{"result": {...}}` or
`{"error": {...}}` objects.

Why not a client library: the maintained Python etcd clients speak gRPC
(grpcio's asyncio), which cannot run on Trio's event loop; httpx runs on
Trio and is already a dependency.

Rules this client keeps:
- Every call has a deadline (`timeout`, all endpoints and retries
  included): a hung etcd is an error, never a hang.
- Foreign errors (httpx, bad JSON, etcd's own error answers) become
  `EtcdError` here, at the edge; callers see nothing else.
- Several endpoints: a call that could not connect moves on to the next
  endpoint at once, and later calls start from the one that last answered.
  A connect gets its share of the deadline (`timeout` / endpoints), so an
  endpoint that drops packets (cut off, its host gone) is passed over within
  the call; a call that ran out of time on an endpoint (a connection gone
  silent) has later calls start from the next one.
  A request that may have reached etcd (a timeout after sending) is retried
  elsewhere only when repeating it is harmless; a transaction is not
  (`EtcdError.maybe_applied` tells the caller to read before retrying), as
  etcd's own clientv3 does.
- With user/password the client authenticates and sends the token; a
  token etcd no longer takes (expired, older than a change of users or
  roles, or lost in an etcd restart) is renewed once per call or watch.
- A store that was wiped or replaced is noticed here: every answer names
  the cluster's ID and the store's revision. A key-value answer whose
  revision is below the highest seen before the request was sent (reads are
  linearizable: an answer is never older than one to an earlier request),
  or an answer with another cluster ID, means the data this client saw is
  gone (etcd started again on an empty or restored data dir, or another
  cluster behind the endpoints). The client logs it once, counts it
  (`resets`) and wakes `wait_reset`: the callers drop their leases and
  copies and read everything afresh. (An etcd wiped and started again with
  the same peer URLs and cluster token keeps its cluster ID: the
  revision gives it away, as long as the new store has not yet written past
  the revision this client last saw; the leases lost with the store end the
  members' terms in any case, and the registration that follows finds the
  store's marker key changed: `found_store`.)
- Every connection has TCP keepalive (`KEEPALIVE`), as etcd's own Go client
  keeps its gRPC connections alive with pings: a watch idles for hours when
  nothing changes, and a stateful firewall or NAT on the way forgets such a
  flow and drops what etcd later sends on it, without a FIN or RST. Probes
  keep the flow alive, and a path that died anyway fails the connection
  (and so the watch) within about a minute instead of never.
- `statistics()` counts calls, failures and their latency (for the metrics).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import trio

from sentinel.engine.pacing import percentiles
from sentinel.errors import EtcdCompacted, EtcdError

log = logging.getLogger(__name__)
UNAVAILABLE = 14  # gRPC codes etcd answers with
UNAUTHENTICATED = 16
_GRPC_CODES = {"Canceled": 1, "Unknown": 2, "InvalidArgument": 3, "DeadlineExceeded": 4,
               "NotFound": 5, "AlreadyExists": 6, "PermissionDenied": 7,
               "ResourceExhausted": 8, "FailedPrecondition": 9, "Aborted": 10,
               "OutOfRange": 11, "Unimplemented": 12, "Internal": 13,
               "Unavailable": UNAVAILABLE, "DataLoss": 15, "Unauthenticated": UNAUTHENTICATED}
# a watch's cancel_reason is a gRPC status in Go's words
_GRPC_STATUS = re.compile(r"rpc error: code = (\w+) desc = (.*)", re.DOTALL)
_SAFE_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)  # the request never left
# etcd's errors for a token it no longer takes: an expired simple token answers
# UNAUTHENTICATED; a JWT older than a change of users or roles, or none at all, answers
# INVALID_ARGUMENT with one of the last two (etcd's clientv3 renews on these three)
_TOKEN_REFUSED = frozenset({"etcdserver: invalid auth token",
                            "etcdserver: revision of auth store is old",
                            "etcdserver: user name is empty"})
LATENCY_SAMPLES = 1024  # recent calls the latency percentiles cover
# TCP keepalive: the first probe after 30 s idle, then every 10 s, the connection dropped
# after 3 unanswered (what kube-apiserver asks of etcd's Go client: a gRPC ping after 30 s
# idle, 10 s for its answer). 30 s is well below the idle timeouts of the middleboxes that
# forget flows (AWS's NAT gateway 350 s, Azure's load balancer 4 min, many firewalls a few
# minutes), so an idle watch keeps its flow; a dead path fails 30 + 3 x 10 = 60 s after
# the last byte. Linux's defaults (first probe after 2 hours) would do neither.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 30, 10, 3


def _keepalive_options() -> tuple[tuple[int, int, int], ...]:
    """The socket options that turn keepalive on with the timings above (those the
    platform has: macOS names the idle time otherwise and keeps its default)."""
    tcp = ((name, value) for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE),
                                             ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                                             ("TCP_KEEPCNT", KEEPALIVE_PROBES))
           if hasattr(socket, name))
    return ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            *((socket.IPPROTO_TCP, getattr(socket, name), value) for name, value in tcp))


KEEPALIVE = _keepalive_options()


def b64(data: str | bytes) -> str:
    """A key or value as the gateway takes it."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    """A key or value as the gateway answers it."""
    return base64.b64decode(text)


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with `prefix` (clientv3's
    GetPrefixRangeEnd: the prefix with its last byte below 0xff incremented)."""
    raw = bytearray(prefix.encode("utf-8", "surrogateescape"))
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"  # every key from `prefix` on
    raw[-1] += 1
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> KeyValue:
        """From the gateway's `kv` object (absent fields are zero)."""
        return cls(key=unb64(doc["key"]).decode("utf-8", "surrogateescape"),
                   value=unb64(doc.get("value", "")),
                   create_revision=int(doc.get("create_revision", 0)),
                   mod_revision=int(doc.get("mod_revision", 0)),
                   version=int(doc.get("version", 0)), lease=int(doc.get("lease", 0)))


@dataclass(frozen=True, slots=True)
class RangeResult:
    """The keys a range read found, at store revision `revision`, and how many keys
    the range holds (`count`: all of them, also when only counted)."""

    kvs: tuple[KeyValue, ...]
    revision: int
    count: int = 0

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RangeResult:
        """From a range answer (top-level or inside a transaction)."""
        return cls(kvs=tuple(KeyValue.from_json(kv) for kv in doc.get("kvs", ())),
                   revision=_revision(doc), count=int(doc.get("count", 0)))


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: KEY's TARGET compared with VALUE; with
    range_end, every key in [KEY, range_end) must pass (none there: compared as a
    key whose fields are all zero)."""

    key: str
    target: Literal["CREATE", "MOD", "VERSION", "VALUE", "LEASE"]
    value: int | bytes
    result: Literal["EQUAL", "NOT_EQUAL", "GREATER", "LESS"] = "EQUAL"
    range_end: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The gateway's Compare object."""
        field = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version",
                 "VALUE": "value", "LEASE": "lease"}[self.target]
        value = b64(self.value) if isinstance(self.value, bytes) else str(self.value)
        return {**_range(self.key, self.range_end), "target": self.target,
                "result": self.result, field: value}


@dataclass(frozen=True, slots=True)
class Put:
    """A transaction step: set KEY to VALUE, attached to `lease` when non-zero."""

    key: str
    value: bytes
    lease: int = 0

    def to_json(self) -> dict[str, Any]:
        """The gateway's RequestOp."""
        body: dict[str, Any] = {"key": b64(self.key), "value": b64(self.value)}
        if self.lease:
            body["lease"] = str(self.lease)
        return {"request_put": body}


@dataclass(frozen=True, slots=True)
class Get:
    """A transaction step: read KEY, or [KEY, range_end) when range_end is given; with
    count_only, just count the keys (`RangeResult.count`: from etcd's index alone)."""

    key: str
    range_end: str | None = None
    count_only: bool = False

    def to_json(self) -> dict[str, Any]:
        """The gateway's RequestOp."""
        body: dict[str, Any] = _range(self.key, self.range_end)
        if self.count_only:
            body["count_only"] = True
        return {"request_range": body}


@dataclass(frozen=True, slots=True)
class Delete:
    """A transaction step: delete KEY, or [KEY, range_end) when range_end is given."""

    key: str
    range_end: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The gateway's RequestOp."""
        return {"request_delete_range": _range(self.key, self.range_end)}


Op = Put | Get | Delete


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, the revision after it, and the answers of its Get steps."""

    succeeded: bool
    revision: int
    ranges: tuple[RangeResult, ...]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change a watch saw."""

    type: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One watch answer: its events (none for a progress notice) and the store
    revision when it was sent."""

    events: tuple[WatchEvent, ...]
    revision: int

    @property
    def next_revision(self) -> int:
        """Where a watch resumes after this batch without missing or repeating a change."""
        if self.events:
            return self.events[-1].kv.mod_revision + 1
        return self.revision + 1


@dataclass(frozen=True, slots=True)
class EtcdStatistics:
    """The client's calls since start (watches count when opened), for the metrics."""

    calls: int
    errors: int
    last_error: str
    latency_sum: float  # seconds, over every call
    latency_p50_ms: float  # over the recent calls
    latency_p99_ms: float
    latency_max_ms: float
    resets: int  # times the store was found wiped or replaced
    last_reset: str  # why, the last time


class EtcdClient:
    """Calls to one etcd cluster through any of its `endpoints`."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float,
                 ssl_context: ssl.SSLContext | None = None, user: str | None = None,
                 password: str | None = None) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = tuple(e.rstrip("/") for e in endpoints)
        self.timeout = timeout
        self._current = 0
        self._user = user
        self._password = password
        self._token: str | None = None
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(
                verify=ssl_context if ssl_context is not None else True, trust_env=False,
                socket_options=KEEPALIVE),
            timeout=httpx.Timeout(timeout, connect=timeout / len(self.endpoints)),
            trust_env=False)
        self._calls = self._errors = 0
        self._last_error = ""
        self._latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._latency_sum = 0.0
        self._cluster_id = ""  # of the store this client follows
        self._high = 0  # the highest key-value revision seen in it
        self.resets = 0
        self._last_reset = ""
        self._reset = trio.Event()  # set (and replaced) when the store is found reset
        self._marker = ""  # the store's marker key, as the last registration found it
        self._marker_resets = 0  # `resets` then

    def statistics(self) -> EtcdStatistics:
        """A frozen snapshot of the calls so far."""
        p = percentiles(self._latency)
        return EtcdStatistics(self._calls, self._errors, self._last_error, self._latency_sum,
                              p[0.5], p[0.99], p[1.0], self.resets, self._last_reset)

    async def wait_reset(self, seen: int) -> None:
        """Return once the store has been found reset more than `seen` times (compare
        with `resets`)."""
        while self.resets <= seen:
            await self._reset.wait()

    def _check_store(self, endpoint: str, path: str, doc: dict[str, Any],
                     sent: tuple[int, int]) -> None:
        """Notice a wiped or replaced store from an answer's header (module docstring);
        `sent`: (`resets`, the highest revision seen) when the request was sent (an
        answer may be older than one to a request sent at the same time, never than one
        before; a reset noticed meanwhile is not noticed again)."""
        resets, floor = sent
        header = doc.get("header")
        if not isinstance(header, dict):
            return
        cluster_id, revision = str(header.get("cluster_id", "")), _revision(doc)
        why = ""
        if cluster_id and self._cluster_id and cluster_id != self._cluster_id:
            why = f"cluster id {self._cluster_id} is now {cluster_id} (another etcd)"
        elif (path.startswith("/v3/kv/") and revision and revision < floor
              and resets == self.resets):
            why = (f"store revision {revision} is below {floor} already seen (data "
                   f"dir wiped, or restored from an older snapshot)")
        self._cluster_id = cluster_id or self._cluster_id
        if path.startswith("/v3/kv/"):
            self._high = revision if why else max(self._high, revision)
        if why:
            self._found_reset(endpoint, why)

    def found_store(self, marker: str) -> None:
        """The marker key of the store, as a registration found it (the sentinel that
        first registered in the store wrote it, a random ID): another than the one found
        before, with no reset noticed since, means the store was wiped or replaced, also
        one that had written past every revision this client saw by the time it
        answered (the revision check's blind spot, module docstring)."""
        if self._marker and marker != self._marker and self._marker_resets == self.resets:
            self._found_reset(self.endpoints[self._current],
                              f"its marker {self._marker} is now {marker} (data dir wiped or "
                              f"restored, or another etcd)")
        self._marker, self._marker_resets = marker, self.resets

    def _found_reset(self, endpoint: str, why: str) -> None:
        """Count and log a wiped or replaced store, and wake `wait_reset`."""
        self.resets += 1
        self._last_reset = why
        log.warning("etcd was wiped or replaced at %s: %s; what this member knew of the "
                    "cluster is gone: registering again and reading it afresh", endpoint, why)
        self._reset.set()
        self._reset = trio.Event()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # -- key-value ----------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """The key, or None when it does not exist."""
        found = await self.range(key)
        return found.kvs[0] if found.kvs else None

    async def range(self, key: str, range_end: str | None = None, *,
                    revision: int = 0, at: str | None = None) -> RangeResult:
        """The keys in [key, range_end) (just `key` without range_end), as of `revision`
        (0: now); asked of endpoint `at` alone when given (is that one alive?)."""
        body = _range(key, range_end)
        if revision:
            body["revision"] = str(revision)
        return RangeResult.from_json(await self._call("/v3/kv/range", body, at=at))

    async def get_prefix(self, prefix: str) -> RangeResult:
        """Every key under `prefix`."""
        return await self.range(prefix, prefix_end(prefix))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Set `key`; returns the new store revision."""
        return _revision(await self._call("/v3/kv/put", Put(key, value, lease).to_json()
                                          ["request_put"]))

    async def delete(self, key: str, range_end: str | None = None) -> int:
        """Delete `key` (or [key, range_end)); returns the store revision after."""
        return _revision(await self._call("/v3/kv/deleterange", _range(key, range_end)))

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op] = (), *, at: str | None = None) -> TxnResult:
        """If every compare holds, run `success`, else `failure`; atomically; asked of
        endpoint `at` alone when given (as `range`). One that writes is never retried
        after the request may have left (see the module docstring); a read-only one is
        (repeating it is harmless)."""
        answer = await self._call("/v3/kv/txn", {
            "compare": [c.to_json() for c in compare],
            "success": [op.to_json() for op in success],
            "failure": [op.to_json() for op in failure],
        }, idempotent=all(isinstance(op, Get) for op in (*success, *failure)), at=at)
        ranges = tuple(RangeResult.from_json(r["response_range"])
                       for r in answer.get("responses", ()) if "response_range" in r)
        return TxnResult(succeeded=bool(answer.get("succeeded", False)),
                         revision=_revision(answer), ranges=ranges)

    async def create(self, key: str, value: bytes, *, lease: int = 0
                     ) -> tuple[bool, int, KeyValue | None]:
        """Put `key` unless it exists (a put-if-absent, in one transaction): whether it
        was put now, the store revision after, and the key as found when it was not
        (None if it was put, or is gone). Never retried (`txn`)."""
        done = await self.txn([Compare(key, "CREATE", 0)], [Put(key, value, lease)],
                              [Get(key)])
        kvs = done.ranges[0].kvs if done.ranges else ()
        return done.succeeded, done.revision, (kvs[0] if kvs and not done.succeeded else None)

    # -- leases -------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of `ttl` seconds; returns (lease ID, TTL etcd granted)."""
        answer = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"]), int(answer["TTL"])

    async def lease_keepalive(self, lease: int) -> int:
        """Renew `lease`; returns its TTL in seconds, 0 when etcd no longer has it."""
        answer = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", answer).get("TTL", 0))

    async def lease_revoke(self, lease: int) -> None:
        """End `lease` now, deleting its keys (an unknown lease is not an error)."""
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if exc.code != _GRPC_CODES["NotFound"]:  # already gone
                raise

    # -- watch --------------------------------------------------------------

    @asynccontextmanager
    async def watch(self, key: str, range_end: str | None = None, *,
                    start_revision: int = 0) -> AsyncIterator[WatchStream]:
        """Watch [key, range_end) from `start_revision` (0: from now on). Yields once
        etcd has created the watch (within the timeout); iterating gives batches until
        the stream fails, which raises EtcdError (EtcdCompacted when start_revision is
        older than the history etcd keeps)."""
        body = _range(key, range_end)
        if start_revision:
            body["start_revision"] = str(start_revision)
        opened = await self._create_watch(body, renew=self._user is not None)
        if opened is None:  # the token expired or is outdated: authenticate again, once
            self._token = None
            opened = await self._create_watch(body, renew=False)
        assert opened is not None
        response, stream = opened
        try:
            yield stream
        finally:
            await _close(response)

    async def _create_watch(self, body: dict[str, Any], *, renew: bool
                            ) -> tuple[httpx.Response, WatchStream] | None:
        """A created watch: its answer and stream (within the timeout); None when etcd
        refused the token and `renew` (the caller authenticates and tries again)."""
        with self._mapped("/v3/watch"):
            tried: list[str] = []
            with trio.move_on_after(self.timeout) as scope:
                endpoint, response = await self._open_watch({"create_request": body}, tried)
            if scope.cancelled_caught:
                self._move_on(tried[-1])
                raise EtcdError(f"/v3/watch: no answer within {self.timeout:g}s "
                                f"(last tried {tried[-1]})")
            try:
                stream = WatchStream(endpoint, response.aiter_lines())
                with trio.move_on_after(self.timeout) as scope:
                    first = await stream.next_result()
                if scope.cancelled_caught:
                    self._move_on(endpoint)
                    raise EtcdError(f"{endpoint}/v3/watch: not created within "
                                    f"{self.timeout:g}s")
                if not first.get("created"):
                    raise EtcdError(f"{endpoint}/v3/watch: unexpected first answer {first}")
                if first.get("canceled"):  # refused at once (an expired token, ...)
                    refused = _canceled(f"{endpoint}/v3/watch", first)
                    if renew and _token_refused(refused):
                        await _close(response)
                        return None
                    raise refused
            except BaseException:
                await _close(response)
                raise
            stream.created_revision = _revision(first)
            return response, stream

    async def _open_watch(self, request: dict[str, Any], tried: list[str]
                          ) -> tuple[str, httpx.Response]:
        """The watch's streaming answer from the first endpoint that takes it (each
        endpoint asked is appended to `tried`)."""
        errors: list[str] = []
        # the answer idles while nothing changes: only connecting and the first answer
        # are bounded (by the caller's deadline)
        limits = httpx.Timeout(self.timeout, connect=self.timeout / len(self.endpoints),
                               read=None)
        for _ in self.endpoints:
            endpoint = self.endpoints[self._current]
            tried.append(endpoint)
            try:
                if self._user is not None and self._token is None:
                    await self._authenticate(endpoint)
                sent = self._http.build_request("POST", f"{endpoint}/v3/watch", json=request,
                                                headers=self._headers(), timeout=limits)
                response = await self._http.send(sent, stream=True)
            except _SAFE_ERRORS as exc:
                errors.append(f"{endpoint}: {_describe(exc)}")
                self._move_on(endpoint)
                continue
            if response.status_code != 200:
                await response.aread()
                await response.aclose()
                raise _answer_error(endpoint, "/v3/watch", response)
            return endpoint, response
        raise EtcdError(f"/v3/watch: no endpoint answered: {'; '.join(errors)}")

    # -- plumbing -----------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any], *,
                    idempotent: bool = True, at: str | None = None) -> dict[str, Any]:
        tried: list[str] = []
        with self._mapped(path):
            with trio.move_on_after(self.timeout):
                try:
                    return await self._attempt(path, body, idempotent, at, tried)
                except EtcdError as exc:
                    if self._user is None or not _token_refused(exc):
                        raise
                    self._token = None  # expired or outdated: authenticate again, once
                    return await self._attempt(path, body, idempotent, at, tried)
            self._move_on(tried[-1])  # gone silent, it seems: the next call tries another
            raise EtcdError(f"{path}: no answer within {self.timeout:g}s "
                            f"(last tried {tried[-1]})", maybe_applied=not idempotent)

    async def _attempt(self, path: str, body: dict[str, Any], idempotent: bool,
                       at: str | None, tried: list[str]) -> dict[str, Any]:
        """Try each endpoint once, starting from the last one that answered (`at`
        alone when given); each endpoint asked is appended to `tried`."""
        errors: list[str] = []
        sent = (self.resets, self._high)
        for _ in (at,) if at is not None else self.endpoints:
            endpoint = at if at is not None else self.endpoints[self._current]
            tried.append(endpoint)
            try:
                if self._user is not None and self._token is None:
                    await self._authenticate(endpoint)
                response = await self._http.post(f"{endpoint}{path}", json=body,
                                                 headers=self._headers())
            except _SAFE_ERRORS as exc:
                errors.append(f"{endpoint}: {_describe(exc)}")
            except httpx.TransportError as exc:
                if not idempotent:
                    raise EtcdError(f"{endpoint}{path}: {_describe(exc)}",
                                    maybe_applied=True) from None
                errors.append(f"{endpoint}: {_describe(exc)}")
            else:
                if response.status_code == 200:
                    doc = _json(endpoint, path, response)
                    self._check_store(endpoint, path, doc, sent)
                    return doc
                error = _answer_error(endpoint, path, response)
                if error.code != UNAVAILABLE:  # etcd answered: no other endpoint will differ
                    raise error
                errors.append(str(error))
            self._move_on(endpoint)
        raise EtcdError(f"{path}: no endpoint answered: {'; '.join(errors)}")

    def _move_on(self, endpoint: str) -> None:
        """`endpoint` failed a call: if later calls were to start from it, they start
        from the next one."""
        if self.endpoints[self._current] == endpoint:
            self._current = (self._current + 1) % len(self.endpoints)

    async def _authenticate(self, endpoint: str) -> None:
        response = await self._http.post(f"{endpoint}/v3/auth/authenticate",
                                         json={"name": self._user, "password": self._password})
        if response.status_code != 200:
            refused = _answer_error(endpoint, "/v3/auth/authenticate", response)
            raise EtcdError(f"cannot authenticate to etcd as {self._user!r}: {refused} "
                            f"(check cluster.user and cluster.password)", code=refused.code,
                            reason=refused.reason)
        self._token = str(_json(endpoint, "/v3/auth/authenticate", response)["token"])

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    @contextmanager
    def _mapped(self, path: str) -> Iterator[None]:
        """The edge: whatever escapes from httpx or the JSON becomes an EtcdError; every
        call is counted and timed here."""
        started = time.perf_counter()
        self._calls += 1
        try:
            yield
        except EtcdError as exc:
            self._failed(exc)
            raise
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise self._failed(EtcdError(f"{path}: {_describe(exc)}", maybe_applied=True)
                               ) from None
        except (ValueError, KeyError, TypeError) as exc:  # JSON that is not etcd's
            raise self._failed(EtcdError(f"{path}: malformed answer: {exc!r}")) from None
        finally:
            elapsed = time.perf_counter() - started
            self._latency.append(elapsed)
            self._latency_sum += elapsed

    def _failed(self, exc: EtcdError) -> EtcdError:
        self._errors += 1
        self._last_error = str(exc)
        return exc


def _range(key: str, range_end: str | None) -> dict[str, Any]:
    body = {"key": b64(key)}
    if range_end is not None:
        body["range_end"] = b64(range_end)
    return body


def _revision(doc: dict[str, Any]) -> int:
    return int(doc.get("header", {}).get("revision", 0))


def _token_refused(error: EtcdError) -> bool:
    """True when etcd refused the token itself (expired, outdated by a change of users
        or roles, or missing), which authenticating again cures; not a refused password."""
    return error.code == UNAUTHENTICATED or error.reason in _TOKEN_REFUSED


async def _close(response: httpx.Response) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await response.aclose()


def _canceled(where: str, result: dict[str, Any]) -> EtcdError:
    """The error a watch answer that says `canceled` stands for."""
    compacted = int(result.get("compact_revision", 0))
    if compacted:
        return EtcdCompacted(compacted)
    reason = str(result.get("cancel_reason") or "")
    status = _GRPC_STATUS.fullmatch(reason)
    return EtcdError(f"{where}: canceled: {reason or 'no reason given'}",
                     code=_GRPC_CODES.get(status[1]) if status else None,
                     reason=status[2] if status else reason)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no endpoint"
    return str(exc) or type(exc).__name__


def _json(endpoint: str, path: str, response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        raise EtcdError(f"{endpoint}{path}: answer is not JSON: {response.text[:200]!r}"
                        ) from None
    if not isinstance(doc, dict):
        raise EtcdError(f"{endpoint}{path}: answer is not a JSON object")
    return doc


def _answer_error(endpoint: str, path: str, response: httpx.Response) -> EtcdError:
    """etcd's error answer (`{"error", "message", "code"}`) as an EtcdError."""
    try:
        doc = response.json()
        message, code = str(doc.get("message") or doc["error"]), int(doc.get("code", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        return EtcdError(f"{endpoint}{path}: HTTP {response.status_code}: "
                         f"{response.text[:200]!r}")
    return EtcdError(f"{endpoint}{path}: {message}", code=code, reason=message)


class WatchStream:
    """The batches of one watch, in revision order; iterate with `async for`."""

    def __init__(self, endpoint: str, lines: AsyncIterator[str]) -> None:
        self.endpoint = endpoint  # the one etcd endpoint it streams from
        self._lines = lines
        self.created_revision = 0  # the store revision when etcd created the watch

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchBatch:
        """The next batch; a failed, ended or cancelled watch raises EtcdError."""
        result = await self.next_result()
        if result.get("canceled"):
            raise _canceled(f"{self.endpoint}/v3/watch", result)
        events = tuple(WatchEvent("delete" if e.get("type") == "DELETE" else "put",
                                  KeyValue.from_json(e["kv"]))
                       for e in result.get("events", ()))
        return WatchBatch(events=events, revision=_revision(result))

    async def next_result(self) -> dict[str, Any]:
        """The stream's next `result` object; errors of any kind become EtcdError."""
        where = f"{self.endpoint}/v3/watch"
        try:
            async for line in self._lines:
                if not line.strip():
                    continue
                doc = json.loads(line)
                if "error" in doc:
                    error = doc["error"]
                    raise EtcdError(f"{where}: {error.get('message') or error}",
                                    code=error.get("grpc_code"),
                                    reason=str(error.get("message") or ""))
                result = doc["result"]
                if not isinstance(result, dict):
                    raise TypeError(f"result is not an object: {line[:200]!r}")
                return result
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise EtcdError(f"{where}: {_describe(exc)}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise EtcdError(f"{where}: malformed answer: {exc!r}") from None
        raise EtcdError(f"{where}: the stream ended")
