"""One member of the cluster at run time: every part that talks to etcd, composed.

The engine builds a `ClusterNode` when the configuration has `cluster:` and
hands it a `ClusterHost` (itself, through `sentinel.engine.cluster`): the node
follows etcd and tells the host what changed; the host decides and carries
out. Without `cluster:` none of this exists.

What runs, all under one nursery:

- `Membership`: the lease, the registration, the live members. Each lease
  is a session: the `ObservationWriter` (this member's verdicts) and the
  campaign for leadership run in it and stop with it.
- Four followers (PrefixMirrors): the agreed state (`agreed/`: views, events,
  seq), the admin overrides, every prober's observations, and the leader key
  (who leads, for /v1/state).
- While this member leads, `ClusterHost.lead` runs the term: votes, numbers
  and publishes. It starts once this member's copies of the members,
  observations and overrides are at least as new as the agreed state the
  term read (a copy may still be from before an etcd outage, its watch
  waiting out a backoff: `_read_at_least`). A term ends when a fenced write
  fails (`NotLeader`, or an etcd error that leaves the outcome unknown) or
  the lease lapses; the node then campaigns again (holding the key still, it
  wins at once and reads the truth before going on). A leader that finds
  etcd holding a lower seq than this member has seen (the store was wiped,
  or restored from an older snapshot) numbers on from the higher one
  (`Leader.number_on`): a seq is never used twice.

Probe assignment (`probers`) is rendezvous hashing over the live members
whose configuration hash is this member's own (a member with another file
is reported, never mixed in), this member always included: alone, or before
etcd has answered, it probes everything.

Configurations never mix (SPEC 12): the leader key carries the leader's
configuration hash. A member with another hash does not campaign while that
leader holds the key, nor, when none does, while more live members run
another configuration than run its own. A member takes in the agreed state
only while a leader of its own configuration holds the key (itself
included): under another's, and between leaders, its sinks stay on the last
agreed view it took (fail static; under another's, `ok` is false with the
reason), and once such a leader leads it takes the agreed state as it
stands. This is what a rolling change of the file looks like: updated
members wait, fail static, until the leader is one of them. A reload that
brings another file (`rehash`) rewrites the member record, names the new
hash in future campaigns and judges all of this again at once; a leader so
reloaded ends its term and deletes its key (`_step_down`, fenced), so the
files the members run pick the next leader.

Self-suspicion (SPEC 11): a member that suspects itself says so in its
member record (`suspect`); the leader follows it through the member list and
its down votes abstain in every tally (`suspects`) until the record says
otherwise, when the members-changed path has every backend voted on again.

`statistics()` is the `cluster` object of /v1/state; `ok` is false while this
member is not registered, cannot follow etcd, has found etcd's store wiped or replaced
and not yet registered and read everything again, or fewer members are live (and
not suspect) than a down vote needs, with the reason in `error`. A change of
`ok` is logged.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import trio

from sentinel.backoff import Backoff
from sentinel.cluster.assign import Member, probers_for
from sentinel.cluster.config import ClusterConfig
from sentinel.cluster.etcd import EtcdClient, EtcdStatistics
from sentinel.cluster.leader import (
    AgreedChanges,
    AgreedState,
    Election,
    Leader,
    LeaderKey,
    Term,
    agreed_prefix,
    read_agreed,
)
from sentinel.cluster.membership import Lease, MemberInfo, Membership, MembershipStatistics
from sentinel.cluster.mirror import Changes, PrefixMirror
from sentinel.cluster.observations import (
    BackendKey,
    Observation,
    ObservationTable,
    ObservationWriter,
    WriterStatistics,
)
from sentinel.cluster.overrides import OverrideTable, store_override
from sentinel.cluster.vote import Ballot, tally
from sentinel.engine.pacing import percentiles
from sentinel.errors import EtcdError, NotLeader
from sentinel.model import State
from sentinel.timefmt import rfc3339

log = logging.getLogger(__name__)
LAG_SAMPLES = 1024  # recent agreed views whose lag the percentiles cover
OK_CHECK = 1.0  # seconds between looks at whether the cluster is ok (logged on change)


def _said(group: BaseExceptionGroup[BaseException]) -> str:
    """What the errors of a (possibly nested) group say, joined."""
    return "; ".join(_said(e) if isinstance(e, BaseExceptionGroup) else str(e)
                     for e in group.exceptions)


class ClusterHost(Protocol):
    """What the node tells the engine. Every call but `lead` is synchronous and must
    not block: they run inside the followers' tasks."""

    def members_changed(self) -> None:
        """The live members changed: which backends this member probes may have moved."""
        ...

    def observations_changed(self, touched: set[BackendKey]) -> None:
        """Probers' verdicts on these backends changed (the leader votes on them again)."""
        ...

    def overrides_changed(self, touched: set[BackendKey]) -> None:
        """Admin overrides of these backends changed."""
        ...

    def agreed_changed(self, changes: AgreedChanges) -> None:
        """The agreed state moved: new views and events, numbered by the leader."""
        ...

    async def lead(self, leader: Leader, state: AgreedState) -> None:
        """Run one term from `state` (what etcd holds) until it fails (NotLeader,
        EtcdError) or is cancelled."""
        ...

    def term_ended(self) -> None:
        """This member's term is over (it may be elected again at once)."""
        ...


@dataclass(frozen=True, slots=True)
class ClusterStatistics:
    """A snapshot: /v1/state's `cluster` object and the cluster metrics."""

    ok: bool
    since: float | None  # Unix time `ok` last changed
    error: str
    leader: str | None
    leading: bool
    following: bool  # False: the leader runs another configuration; sinks stay as they are
    terms: int  # terms this member has led
    membership: MembershipStatistics
    probers: int | None  # per backend (None: every member)
    quorum: int
    probing: int  # backends this member probes
    suspects: tuple[str, ...]  # live members that suspect themselves (their downs abstain)
    revision: int  # of the agreed state this member follows
    lag_p50_ms: float  # agreed view written -> seen here, over recent views
    lag_p99_ms: float
    lag_count: int
    lag_sum: float  # seconds, since start
    writer: WriterStatistics
    etcd: EtcdStatistics
    silent_watches: int  # watches started again because they fell silent (PrefixMirror)

    def to_json(self) -> dict[str, object]:
        """The `cluster` object of the state document (SPEC 12)."""
        m = self.membership
        return {"ok": self.ok, "since": rfc3339(self.since) if self.since else None,
                "error": self.error or None,
                "node": m.node, "leader": self.leader, "leading": self.leading,
                "following": self.following,
                "members": [member.to_json() for member in m.members],
                "mismatched": list(m.mismatched), "suspects": list(self.suspects),
                "revision": self.revision,
                "probers": self.probers if self.probers is not None else "all",
                "quorum": self.quorum, "probing": self.probing, "lease": m.lease,
                "lapses": m.lapses, "terms": self.terms,
                "agreed_lag_ms": {"p50": round(self.lag_p50_ms, 3),
                                  "p99": round(self.lag_p99_ms, 3)},
                "etcd": {"calls": self.etcd.calls, "errors": self.etcd.errors,
                         "last_error": self.etcd.last_error or None,
                         "resets": self.etcd.resets,
                         "silent_watches": self.silent_watches,
                         "latency_ms": {"p50": round(self.etcd.latency_p50_ms, 3),
                                        "p99": round(self.etcd.latency_p99_ms, 3)}},
                "observations": {"writes": self.writer.writes,
                                 "pending": self.writer.pending}}


class ClusterNode:
    """This member's part in the cluster; see the module docstring."""

    def __init__(self, config: ClusterConfig, host: ClusterHost, *, api_url: str,
                 version: str, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.host = host
        self.client = EtcdClient(config.endpoints, timeout=config.call_timeout,
                                 ssl_context=config.tls.context() if config.tls else None,
                                 user=config.user, password=config.password)
        prefix, node, every = config.prefix, config.node, float(config.lease_ttl)
        self.membership = Membership(self.client, config, api_url=api_url, version=version,
                                     on_members=self._members_changed,
                                     on_recorded=lambda: self.writer.wake())
        # no down vote before the suspicion that makes it abstain (SPEC 11)
        self.writer = ObservationWriter(self.client, prefix, node, record=self.membership)
        self.observations = ObservationTable(self.client, prefix,
                                             on_change=host.observations_changed,
                                             check_every=every)
        self.overrides = OverrideTable(self.client, prefix, on_change=host.overrides_changed,
                                       check_every=every)
        self.agreed = PrefixMirror(self.client, agreed_prefix(prefix),
                                   on_change=self._agreed_changed, check_every=every)
        self._leader_key = PrefixMirror(self.client, f"{prefix}leader",
                                        on_change=self._leader_changed, check_every=every)
        self.election = Election(self.client, prefix, node,
                                 config_sha256=config.config_sha256, recheck=every)
        self.leading: Leader | None = None
        self._term = trio.CancelScope()  # the current (or last) term: a reload may end it
        self._step_backoff = Backoff(initial=0.2, maximum=every)
        self._wall = wall
        self._rng = random.Random()
        self._me = Member(node, config.zone)
        self._live: list[Member] = [self._me]
        self._members: Mapping[str, MemberInfo] = {}
        self._may_lead = trio.Event()  # set when what bears on who may lead changes
        self._held = False  # agreed changes not taken in: the leader's configuration differs
        self._passed_seq = 0  # the last event seq handed to the host
        self._warned_leader: LeaderKey | None = None
        self._probers: dict[BackendKey, tuple[str, ...]] = {}
        self._terms = 0
        self._lag: deque[float] = deque(maxlen=LAG_SAMPLES)
        self._lag_count = 0
        self._lag_sum = 0.0
        self._ok: tuple[bool, str] = (False, "starting")
        self._since_ok = False  # it has been ok before: being ok again is worth a warning
        self._since: float | None = None

    # -- what the engine asks ----------------------------------------------------

    @property
    def node(self) -> str:
        """This member's name."""
        return self.config.node

    def probers(self, service: str, backend: str) -> tuple[str, ...]:
        """The members that probe service/backend now (rendezvous over the live ones)."""
        key = (service, backend)
        found = self._probers.get(key)
        if found is None:
            found = self._probers[key] = probers_for(f"{service}/{backend}", self._live,
                                                     self.config.probers)
        return found

    def knew_seq(self, seq: int) -> None:
        """Events up to `seq` were seen before this start (a restarted member's
        state.json): should etcd hold less (wiped, restored from an older snapshot), a
        term this member leads numbers on past it (`Leader.number_on`), not from etcd's."""
        self._passed_seq = max(self._passed_seq, seq)

    def probes(self, service: str, backend: str) -> bool:
        """True when this member is one of the backend's probers."""
        return self.node in self.probers(service, backend)

    def observed(self, service: str, backend: str) -> dict[str, Observation]:
        """{node: verdict} of everyone who reported on the backend."""
        return self.observations.of(service, backend)

    def tally(self, service: str, backend: str, current: State) -> Ballot:
        """The vote on one backend from its live probers' observations (SPEC 12)."""
        probers = self.probers(service, backend)
        # a down whose author's record (maybe saying it suspects itself) this member has
        # not seen yet is not counted until it has: as if not reported
        seen = {node: o.state for node, o in self.observations.of(service, backend).items()
                if o.counted(m.revision if (m := self._members.get(node)) else 0)}
        return tally(seen, probers, self.config.quorum_for(len(probers)), current,
                     self.suspects())

    def suspects(self) -> frozenset[str]:
        """Live members of this configuration whose record says they suspect themselves
        (SPEC 11): their down votes abstain."""
        live = {m.node for m in self._live}
        return frozenset(node for node, m in self._members.items()
                         if m.suspect is not None and node in live)

    def suspect(self, reason: str | None) -> None:
        """This member suspects itself (`reason`) or no longer does (None): published in
        its member record, written on change."""
        self.membership.suspect(reason)

    def report(self, service: str, backend: str, state: State, reason: str) -> None:
        """This member's verdict on a backend it probes (written only when it changed)."""
        self.writer.report(service, backend, state, reason)

    def forget(self, service: str, backend: str) -> None:
        """This member no longer probes the backend."""
        self.writer.forget(service, backend)

    def override(self, service: str, backend: str) -> State | None:
        """The admin override in force for the backend, if any."""
        return self.overrides.overrides.get((service, backend))

    async def set_override(self, service: str, backend: str, action: str) -> int:
        """Store an override for every member; the store revision after it (EtcdError
        when etcd cannot take it)."""
        return await store_override(self.client, self.config.prefix, service, backend, action)

    @property
    def synced(self) -> bool:
        """True once the agreed state, overrides and observations have been read."""
        return all(m.revision for m in (self.agreed, self.overrides.mirror,
                                        self.observations.mirror))

    # -- running -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Follow, register and (when elected) lead until cancelled; reports started once
        the member list has been read or tried (answered or not: fail static)."""
        try:
            async with trio.open_nursery() as nursery:
                # the member list first: what to probe; the rest follows while probing starts
                await nursery.start(self.membership.run, self._session)
                for mirror in (self.agreed, self.overrides.mirror, self.observations.mirror,
                               self._leader_key):
                    nursery.start_soon(mirror.run)
                nursery.start_soon(self._watch_ok)
                nursery.start_soon(self._first_leader_read)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()

    async def _session(self, lease: Lease) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.writer.run, lease)
            nursery.start_soon(self._campaign, lease)

    async def _campaign(self, lease: Lease) -> None:
        """Lead whenever elected, for as long as this lease lasts."""
        backoff, attempt = Backoff(initial=0.2, maximum=float(self.config.lease_ttl)), 0
        while True:
            term = await self.election.campaign(lease, self._wait_eligible)
            leader = Leader(self.client, self.config.prefix, term)
            self._term = trio.CancelScope()
            if term.config_sha256 != self.membership.me.config_sha256:
                self._term.cancel()  # reloaded while campaigning: the key names the old file
            try:
                with self._term:
                    state = await leader.load()
                    if state.seq < self._passed_seq:  # the store lost data: number on
                        await leader.number_on(self._passed_seq)
                        state = await leader.load()
                    await self._read_at_least(state.revision)
                    self.leading = leader
                    self._terms += 1
                    attempt = 0
                    await self.host.lead(leader, state)
            # the term's writes fail inside the host's nursery: they arrive grouped
            except* NotLeader as deposed:
                log.warning("cluster: %s", _said(deposed))
            except* EtcdError as failed:
                log.warning("cluster: %s stops leading for now: %s", self.node, _said(failed))
            finally:
                if self.leading is leader:
                    self.leading = None
                    self.host.term_ended()
            if self._term.cancel_called:  # a reload changed the file: give the key up
                await self._step_down(term)
                continue  # campaigns again at once if eligible (its file the majority's)
            attempt += 1
            await trio.sleep(backoff.delay(attempt, self._rng))

    async def _step_down(self, term: Term) -> None:
        """End a term whose leader key names a file this member no longer runs: delete
        the key (fenced by the term and its lease), retried until done or the lease ends
        (which deletes it too), so the members pick a leader by the files they run."""
        log.warning("cluster: %s steps down: it runs another configuration now (sha256 "
                    "%s, the leader key says %s)", self.node,
                    self.membership.me.config_sha256[:12], term.config_sha256[:12])
        attempt = 0
        while True:
            try:
                await self.election.resign(term)
                break
            except EtcdError as exc:
                log.info("cluster: %s could not give up the leader key (%s); retrying",
                         self.node, exc)
            attempt += 1
            await trio.sleep(self._step_backoff.delay(attempt, self._rng))
        # campaigning before the deletion is seen would take the key straight back
        while self._holds(term):
            self._may_lead = trio.Event()
            await self._may_lead.wait()

    def _holds(self, term: Term) -> bool:
        """True while this member sees the leader key of `term`."""
        kv = self._leader_key.items.get(f"{self.config.prefix}leader")
        return kv is not None and kv.create_revision == term.revision

    def rehash(self, config_sha256: str) -> None:
        """A reload brought a configuration file with this hash: the member record and
        future campaigns carry it, who this member probes with, whether it follows the
        leader and whether it may lead are judged again at once, and a term under the
        old hash ends (`_step_down`). Never blocks."""
        if config_sha256 == self.membership.me.config_sha256:
            return
        self.config = replace(self.config, config_sha256=config_sha256)
        self.election.config_sha256 = config_sha256
        self.membership.rehash(config_sha256)
        self._term.cancel()  # a term led under the old file (a term won meanwhile checks)
        if self.mixed():
            self._held = True  # the agreed state is taken in whole once it follows again
        self._members_changed(self.membership.members)
        self._leader_changed({})

    async def _read_at_least(self, revision: int) -> None:
        """A new leader votes only on copies of the members, observations and overrides
        at least as new as the agreed state it starts from (`revision`): a copy still
        from before an etcd outage (its watch waiting out a backoff) would hold the ups
        its probers wrote before a death the agreed state already shows, and a vote on
        it would publish the dead backend up, and then down again."""
        await self.membership.read_at_least(revision)
        await self.observations.mirror.read_at_least(revision)
        await self.overrides.mirror.read_at_least(revision)
        await self.agreed.wait_synced()

    async def _wait_eligible(self) -> None:
        """Return once this member may campaign: the leader key has been read, and
        `_ineligible` has nothing against it."""
        await self._leader_key.wait_synced()
        logged = ""
        while why := self._ineligible():
            if why != logged:
                log.warning("cluster: %s does not campaign: %s", self.node, why)
                logged = why
            self._may_lead = trio.Event()
            await self._may_lead.wait()

    def _ineligible(self) -> str:
        """Why this member may not lead now ("" when it may)."""
        held = self.leader_key()
        if held is not None and held.node == self.node:
            # this member's own key, left by a term that ended unclearly: campaigning
            # finds it under its lease and leads again, or steps down if its file changed
            return ""
        mixed = self.mixed()
        if mixed:
            return mixed
        if held is not None:
            return ""  # a leader of this configuration: campaign (it waits for the key)
        mine = self.membership.me.config_sha256
        counts = Counter(m.config_sha256 for m in self._members.values()
                         if m.node != self.node)
        ours = counts.pop(mine, 0) + 1
        if counts and max(counts.values()) > ours:
            return (f"more live members run another configuration ({max(counts.values())}) "
                    f"than run this one ({ours})")
        return ""

    def leader_key(self) -> LeaderKey | None:
        """Who leads and by which configuration, as this member last saw the key."""
        kv = self._leader_key.items.get(f"{self.config.prefix}leader")
        return LeaderKey.decode(kv.value) if kv else None

    def mixed(self) -> str:
        """Why this member does not follow the leader ("" when it does): the leader runs
        another configuration."""
        held = self.leader_key()
        mine = self.membership.me.config_sha256
        if held is None or held.config_sha256 == mine:
            return ""
        return (f"the leader {held.node} runs another configuration (sha256 "
                f"{held.config_sha256[:12] or 'unknown'}, ours {mine[:12]}): not following "
                f"it, sinks stay on the last agreed view")

    def _follows(self) -> bool:
        """True while a leader of this member's configuration holds the leader key."""
        held = self.leader_key()
        return held is not None and held.config_sha256 == self.membership.me.config_sha256

    def _leader_changed(self, _changes: Changes) -> None:
        """Another leader (or none): campaign if now eligible; follow again if held."""
        self._may_lead.set()
        mixed, held = self.mixed(), self.leader_key()
        if mixed and held != self._warned_leader:
            log.warning("cluster: %s", mixed)
            self._warned_leader = held
        if self._held and self._follows():
            self._held = False
            if self._warned_leader is not None:
                log.warning("cluster: %s follows the agreed state again (leader %s)",
                            self.node, held.node if held else "none")
                self._warned_leader = None
            whole = read_agreed(self.config.prefix, dict(self.agreed.items))
            self._pass(replace(whole, events=tuple(e for e in whole.events
                                                   if e.seq > self._passed_seq)))

    async def _first_leader_read(self) -> None:
        """Agreed changes are held until the leader key is read (whose they are); a first
        read that finds no key reports no change, so look once it is done."""
        await self._leader_key.wait_synced()
        self._leader_changed({})

    def _members_changed(self, members: Mapping[str, MemberInfo]) -> None:
        self._members = dict(members)
        self._may_lead.set()
        mine = self.membership.me.config_sha256
        live = [Member(m.node, m.zone) for m in members.values()
                if m.config_sha256 == mine and m.node != self.node]
        self._live = sorted([self._me, *live], key=lambda m: m.node)
        self._probers.clear()
        self.host.members_changed()

    def _agreed_changed(self, changes: Changes) -> None:
        if not self._follows():
            self._held = True  # taken in whole once a leader of this configuration leads
            return
        self._pass(read_agreed(self.config.prefix, changes))

    def _pass(self, agreed: AgreedChanges) -> None:
        """Hand agreed changes to the host (recording the lag of each view)."""
        now = self._wall()
        for doc in agreed.services.values():
            written = doc.get("time") if isinstance(doc, dict) else None
            if isinstance(written, int | float):
                lag = max(0.0, now - written)
                self._lag.append(lag)
                self._lag_count += 1
                self._lag_sum += lag
        if agreed.events:
            self._passed_seq = max(self._passed_seq, agreed.events[-1].seq)
        self.host.agreed_changed(agreed)

    # -- looking in --------------------------------------------------------------

    def leader(self) -> str | None:
        """The node that leads, as this member last saw the leader key."""
        held = self.leader_key()
        return held.node if held else None

    def _health(self) -> tuple[bool, str]:
        """(ok, why not) now."""
        m = self.membership.statistics()
        resets = self.client.resets
        if resets and not (self.membership.store_resets == resets and m.ok and all(
                mirror.current for mirror in (self.agreed, self.overrides.mirror,
                                              self.observations.mirror, self._leader_key))):
            return False, (f"etcd was wiped or replaced ({self.client.statistics().last_reset})"
                           f": registering again and reading the cluster afresh")
        if not m.ok:
            return False, m.error or "not registered"
        for name, mirror in (("agreed state", self.agreed),
                             ("observations", self.observations.mirror),
                             ("overrides", self.overrides.mirror)):
            if not mirror.ok:
                return False, f"cannot follow the {name}: {mirror.error}"
        mixed = self.mixed()
        if mixed:
            return False, mixed
        live = len(self._live)
        needed = self.config.quorum_for(min(live, self.config.probers or live))
        suspects = self.suspects()
        able = live - len(suspects)
        if able < needed:
            doubt = (f" ({', '.join(sorted(suspects))} "
                     f"{'suspects itself' if len(suspects) == 1 else 'suspect themselves'})"
                     if suspects else "")
            return False, (f"only {able} member{'' if able == 1 else 's'} live{doubt}, "
                           f"a down vote needs {needed}: no backend can be voted down")
        return True, ""

    async def _watch_ok(self) -> None:
        """Log each change of `ok` (etcd lost, regained, quorum lost) once."""
        while True:
            self._refresh_ok()
            await trio.sleep(OK_CHECK)

    def _refresh_ok(self) -> tuple[bool, str]:
        now = self._health()
        if now[0] != self._ok[0]:
            self._since = self._wall()
            if now[0]:
                log.log(logging.WARNING if self._since_ok else logging.INFO,
                        "cluster: %s ok (%d members, leader %s)", self.node,
                        len(self._live), self.leader())
                self._since_ok = True
            else:
                log.warning("cluster: not ok: %s; sinks stay on the last agreed view",
                            now[1])
        self._ok = now
        return now

    def statistics(self) -> ClusterStatistics:
        """A frozen snapshot."""
        ok, error = self._refresh_ok()
        lag = percentiles(self._lag)
        probing = sum(1 for (service, backend) in self._probers
                      if self.node in self._probers[(service, backend)])
        return ClusterStatistics(
            ok=ok, since=self._since, error=error, leader=self.leader(),
            leading=self.leading is not None, following=not self._held,
            terms=self._terms,
            membership=self.membership.statistics(), probers=self.config.probers,
            quorum=self.config.quorum_for(self.config.probers or len(self._live)),
            probing=probing, suspects=tuple(sorted(self.suspects())),
            revision=self.agreed.revision, lag_p50_ms=lag[0.5],
            lag_p99_ms=lag[0.99], lag_count=self._lag_count, lag_sum=self._lag_sum,
            writer=self.writer.statistics(), etcd=self.client.statistics(),
            silent_watches=sum(mirror.silences for mirror in (
                self.membership.mirror, self.agreed, self.overrides.mirror,
                self.observations.mirror, self._leader_key)))
