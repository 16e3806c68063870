"""Membership: a lease, a registration under it, and the list of live members.

A member grants itself a lease of `lease_ttl` seconds and registers as
`PREFIX/members/NODE` under it (a JSON document: zone, API URL, version,
the configuration's SHA-256). It renews the lease every third of its TTL,
so two renewals may fail before it lapses. The key lives exactly as long as
the lease: a member killed with SIGKILL leaves the list within `lease_ttl`,
one that stops cleanly revokes its lease and leaves at once.

A term: everything a member does on the cluster's behalf (leading,
probing, writing observations) runs as the `session` of one lease and is
cancelled when that lease lapses. The member counts its lease as lapsed at
the last renewal it *sent* plus the TTL etcd answered, and before the first
renewal at the grant it sent plus the TTL granted (not from when its
registration writes were answered: on a slow etcd they take a good share of
the TTL, which etcd counts from the grant). That is never later than etcd's
own expiry (etcd starts its count when it receives the grant or renewal),
so a member has stopped acting before etcd lets another take its place; a
registration that took the whole TTL starts no term and is tried again.
After a lapse (the member was paused, or lost etcd for longer than
the TTL) it logs so, counts it, grants a new lease and registers again. A
store found wiped or replaced (`EtcdClient.resets`) holds neither the lease
nor the record: the term ends at once the same way, without waiting for a
renewal to be refused.

Registration is a put-if-absent: a second live member with the same node
name is refused (and reported) until the first one's lease ends. The record
is rewritten in place (still under the lease) only when what it says
changes: whether this member suspects itself (SPEC 11, `suspect`), which the
leader follows through its member list to keep that member's down votes out
of the tally (so no down observation is written while a suspicion is not in
the record yet: `suspicion_unrecorded`), and the configuration's hash after a reload brought another
file. Members whose configuration hash differs from this one's are reported,
never silently mixed.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

import trio

from sentinel.backoff import Backoff
from sentinel.cluster.config import ClusterConfig
from sentinel.cluster.etcd import Compare, EtcdClient, KeyValue, Put
from sentinel.cluster.mirror import Changes, PrefixMirror
from sentinel.errors import EtcdError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Lease:
    """One term of membership: the lease and the TTL etcd granted."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A live member as registered in etcd."""

    node: str
    zone: str | None
    api_url: str
    version: str
    config_sha256: str
    lease: int = 0
    suspect: str | None = None  # why this member suspects itself (SPEC 11), or None
    revision: int = 0  # the record's mod revision in etcd (0: not read from etcd)

    def to_json(self) -> dict[str, object]:
        """The registration document (and the /v1/state entry)."""
        return {"node": self.node, "zone": self.zone, "api": self.api_url,
                "version": self.version, "config_sha256": self.config_sha256,
                "suspect": self.suspect}

    def encode(self) -> bytes:
        """The registration document as stored in etcd."""
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def from_kv(cls, kv: KeyValue) -> MemberInfo:
        """From its key in etcd (ValueError when it is not a registration)."""
        try:
            doc = json.loads(kv.value)
            return cls(node=str(doc["node"]), zone=doc.get("zone"), api_url=str(doc["api"]),
                       version=str(doc["version"]), config_sha256=str(doc["config_sha256"]),
                       lease=kv.lease,
                       suspect=str(doc["suspect"]) if doc.get("suspect") else None,
                       revision=kv.mod_revision)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{kv.key}: not a member registration: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class MembershipStatistics:
    """A snapshot for /v1/state's `cluster` and the metrics."""

    node: str
    ok: bool  # registered, lease current, etcd answering
    since: float | None  # Unix time of the last change of `ok`
    error: str
    lease: int  # 0 while not registered
    registrations: int
    renewals: int
    lapses: int
    members: tuple[MemberInfo, ...]
    mismatched: tuple[str, ...]  # live members whose configuration differs from ours

    def to_json(self) -> dict[str, object]:
        """The membership part of /v1/state's `cluster`."""
        return {"ok": self.ok, "since": self.since, "error": self.error or None,
                "node": self.node, "lease": self.lease, "registrations": self.registrations,
                "renewals": self.renewals, "lapses": self.lapses,
                "members": [m.to_json() for m in self.members],
                "mismatched": list(self.mismatched)}


class Membership:
    """This member's registration and the cluster's live members."""

    def __init__(self, client: EtcdClient, config: ClusterConfig, *, api_url: str,
                 version: str, on_members: Callable[[Mapping[str, MemberInfo]], None]
                 | None = None, on_recorded: Callable[[], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.config = config
        self.me = MemberInfo(node=config.node, zone=config.zone, api_url=api_url,
                             version=version, config_sha256=config.config_sha256)
        self.key = f"{config.prefix}members/{config.node}"
        self.store_key = f"{config.prefix}store"
        self.members: dict[str, MemberInfo] = {}
        self.lease: Lease | None = None
        self._last_lease: Lease | None = None
        self._on_members = on_members
        self._on_recorded = on_recorded
        self._rng = rng or random.Random()
        self._backoff = Backoff(initial=0.2, maximum=float(config.lease_ttl))
        self.mirror = PrefixMirror(client, f"{config.prefix}members/",
                                   on_change=self._members_changed,
                                   check_every=float(config.lease_ttl), rng=self._rng)
        self._ok = False
        self._since: float | None = None
        self._error = "not registered yet"
        self._registrations = self._renewals = self._lapses = 0
        self._warned_hashes: set[tuple[str, str, str]] = set()
        self._recorded = b""  # the registration document etcd holds under the lease
        self._recorded_suspect = False  # whether that document says this member is suspect
        self.recorded_revision = 0  # its mod revision (observations are stamped with it)
        self._record_changed = trio.Event()
        self.store_resets = 0  # the client's `resets` when the lease was registered

    def suspect(self, reason: str | None) -> None:
        """This member suspects itself (`reason`) or no longer does (None): its record
        says so, rewritten under the lease (never blocks; written by the session)."""
        self._rewrite(replace(self.me, suspect=reason))

    def rehash(self, config_sha256: str) -> None:
        """A reload brought another configuration file: the record carries its hash
        (rewritten under the lease like `suspect`), and the members that differ from it
        are warned of anew."""
        self._rewrite(replace(self.me, config_sha256=config_sha256))
        for info in self.members.values():
            self._warn_mismatch(info)

    async def read_at_least(self, revision: int) -> None:
        """Return once the member list reflects etcd at `revision` or later."""
        await self.mirror.read_at_least(revision)

    def suspicion_unrecorded(self) -> bool:
        """True while this member suspects itself and the record etcd holds does not say
        so yet: the leader would count its down votes, so none may be written until it
        does (the observation writer asks)."""
        return self.me.suspect is not None and not self._recorded_suspect

    def _record(self, doc: bytes, revision: int) -> None:
        """etcd holds `doc` as this member's record (under the current lease), written
        at `revision`."""
        self._recorded = doc
        self.recorded_revision = revision
        self._recorded_suspect = bool(json.loads(doc).get("suspect"))
        if self._on_recorded is not None:
            self._on_recorded()

    def _rewrite(self, me: MemberInfo) -> None:
        if me != self.me:
            self.me = me
            self._record_changed.set()

    def statistics(self) -> MembershipStatistics:
        """A frozen snapshot."""
        members = tuple(sorted(self.members.values(), key=lambda m: m.node))
        return MembershipStatistics(
            node=self.me.node, ok=self._ok and self.mirror.ok, since=self._since,
            error=self._error or self.mirror.error, lease=self.lease.id if self.lease else 0,
            registrations=self._registrations, renewals=self._renewals, lapses=self._lapses,
            members=members,
            mismatched=tuple(m.node for m in members  # our own record: until rewritten
                             if m.config_sha256 != self.me.config_sha256
                             and m.node != self.me.node))

    async def run(self, session: Callable[[Lease], Awaitable[None]] | None = None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, stay registered, follow the members, and run `session(lease)` for
        each lease, cancelled when that lease lapses. Reports started once the member
        list was read (or could not be). On cancellation the lease is revoked."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.mirror.run)
                task_status.started()
                while True:
                    lease, granted = await self._register()
                    async with trio.open_nursery() as term:
                        term.start_soon(self._keep_alive, lease, granted, term.cancel_scope)
                        term.start_soon(self._end_on_reset, lease, term.cancel_scope)
                        term.start_soon(self._keep_record, lease)
                        if session is not None:
                            term.start_soon(session, lease)
        finally:
            await self._leave()

    async def _register(self) -> tuple[Lease, float]:
        """Grant a lease and put-if-absent the member key under it; retried (with
        backoff) until it works. Returns the lease and when its grant was sent (where
        its first deadline counts from: the module docstring)."""
        attempt = 0
        while True:
            try:
                granted = trio.current_time()
                lease = Lease(*await self.client.lease_grant(self.config.lease_ttl))
                self.client.found_store(await self._mark_store())
                claimed = await self._claim(lease)
                if claimed and trio.current_time() < granted + lease.ttl:
                    self.lease = self._last_lease = lease
                    self.store_resets = self.client.resets  # the store that holds it
                    self._registrations += 1
                    self._set_ok(True, "")
                    log.info("cluster: %s registered (lease %x, ttl %ds)", self.me.node,
                             lease.id, lease.ttl)
                    return lease, granted
                if claimed:  # a very slow etcd: the lease lapsed while registering
                    self._set_ok(False, f"cannot register: it took longer than the lease's "
                                        f"{lease.ttl}s TTL (etcd too slow?)")
                await self.client.lease_revoke(lease.id)
            except EtcdError as exc:
                self._set_ok(False, f"cannot register: {exc}")
            attempt += 1
            await trio.sleep(self._backoff.delay(attempt, self._rng))

    async def _mark_store(self) -> str:
        """The store's marker (`PREFIX/store`, a random ID put by the first member to
        register in it and never changed): a wiped or replaced store has another one
        (`EtcdClient.found_store`). Put-if-absent, so repeating it is harmless."""
        mine = secrets.token_hex(8)
        for _ in range(3):
            try:
                put, _, held = await self.client.create(self.store_key, mine.encode())
            except EtcdError as exc:
                if not exc.maybe_applied:
                    raise
                continue
            if put:
                return mine
            if held is not None:
                return held.value.decode(errors="replace")
        raise EtcdError("store marker: no clear answer after retries", maybe_applied=True)

    async def _claim(self, lease: Lease) -> bool:
        """Put the member key unless another live member holds it (a retry after a lost
        answer finds its own lease on the key and counts as done)."""
        doc = self.me.encode()
        for _ in range(3):
            try:
                put, revision, holder = await self.client.create(self.key, doc,
                                                                 lease=lease.id)
            except EtcdError as exc:
                if not exc.maybe_applied:
                    raise
                continue
            if put:
                self._record(doc, revision)
                return True
            if holder is not None and holder.lease == lease.id:
                self._record(holder.value, holder.mod_revision)
                return True
            if holder is not None and self._last_lease and holder.lease == self._last_lease.id:
                # our own lapsed lease, which etcd has not yet expired: end it now
                await self.client.lease_revoke(holder.lease)
                continue
            if holder is not None:
                try:
                    other = MemberInfo.from_kv(holder).api_url
                except ValueError:
                    other = "unknown"
                self._set_ok(False, f"node name {self.me.node!r} is held by another live "
                                    f"member (api {other}); waiting for its lease to end")
                return False
        raise EtcdError("registration: no clear answer after retries", maybe_applied=True)

    async def _keep_record(self, lease: Lease) -> None:
        """Rewrite the registration when what it says changed (only while the key is
        still this lease's), retried with backoff while etcd is away."""
        attempt = 0
        while True:
            doc = self.me.encode()
            if doc == self._recorded:
                self._record_changed = trio.Event()
                await self._record_changed.wait()
                continue
            try:
                # idempotent: repeating it after an unclear answer is harmless
                done = await self.client.txn([Compare(self.key, "LEASE", lease.id)],
                                             [Put(self.key, doc, lease.id)])
            except EtcdError as exc:
                log.info("cluster: could not update %s's record (%s); retrying",
                         self.me.node, exc)
                attempt += 1
                await trio.sleep(self._backoff.delay(attempt, self._rng))
                continue
            attempt = 0
            # not succeeded: the key is no longer this lease's (deleted by hand), nothing
            # was written and the revision stays
            self._record(doc, done.revision if done.succeeded else self.recorded_revision)

    async def _keep_alive(self, lease: Lease, granted: float, term: trio.CancelScope
                          ) -> None:
        """Renew every third of the TTL, counted from when the lease's grant was sent
        (`granted`) and then from each renewal sent; on a lapse, end the term."""
        deadline = granted + lease.ttl
        period = lease.ttl / 3
        next_at = granted + period
        failure = ""
        while True:
            await trio.sleep_until(next_at)
            sent = trio.current_time()
            if sent >= deadline:  # paused past it, or the last renewals failed
                self._lapsed(lease, f"not renewed within {lease.ttl}s"
                             + (f"; last error: {failure}" if failure
                                else " (this member was paused)"), term)
                return
            with trio.move_on_at(deadline):
                try:
                    ttl = await self.client.lease_keepalive(lease.id)
                except EtcdError as exc:
                    failure = str(exc)
                    self._set_ok(False, f"lease renewal failed: {exc}")
                    next_at = min(trio.current_time() + period / 2, deadline)
                    continue
                if ttl == 0:
                    self._lapsed(lease, "etcd says it expired", term)
                    return
                deadline = sent + ttl
                next_at = sent + ttl / 3
                failure = ""
                self._renewals += 1
                self._set_ok(True, "")
                continue
            self._lapsed(lease, f"etcd did not answer within {lease.ttl}s", term)
            return

    async def _end_on_reset(self, lease: Lease, term: trio.CancelScope) -> None:
        """End the term when the store that held the lease is found wiped or replaced."""
        await self.client.wait_reset(self.store_resets)
        self._lapsed(lease, "etcd's store was wiped or replaced", term)

    def _lapsed(self, lease: Lease, why: str, term: trio.CancelScope) -> None:
        self._lapses += 1
        self.lease = None
        self._set_ok(False, f"lease lapsed: {why}")
        log.warning("cluster: %s lost its lease %x (%s); stopped acting as leader and "
                    "prober; registering again", self.me.node, lease.id, why)
        term.cancel()

    async def _leave(self) -> None:
        """Revoke the lease (shielded, bounded) so the others reassign at once."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(self.client.timeout):
            try:
                await self.client.lease_revoke(lease.id)
            except EtcdError as exc:
                log.info("cluster: could not revoke lease %x on leaving (%s); it ends "
                         "within its TTL", lease.id, exc)

    def _members_changed(self, changes: Changes) -> None:
        for key, kv in changes.items():
            node = key.rsplit("/", 1)[-1]
            if kv is None:
                self.members.pop(node, None)
                continue
            try:
                info = MemberInfo.from_kv(kv)
            except ValueError as exc:
                log.warning("cluster: ignoring %s", exc)
                continue
            self.members[node] = info
            self._warn_mismatch(info)
        if self._on_members is not None:
            self._on_members(self.members)

    def _warn_mismatch(self, info: MemberInfo) -> None:
        """Warn once per (member, its hash, ours) when a member runs another file."""
        mark = (info.node, info.config_sha256, self.me.config_sha256)
        if (info.config_sha256 != self.me.config_sha256 and info.node != self.me.node
                and mark not in self._warned_hashes):
            self._warned_hashes.add(mark)
            log.warning("cluster: member %s runs another configuration (sha256 %s, "
                        "ours %s): compare the files", info.node, info.config_sha256[:12],
                        self.me.config_sha256[:12])

    def _set_ok(self, ok: bool, error: str) -> None:
        if ok != self._ok:
            self._since = time.time()
        self._ok, self._error = ok, error
