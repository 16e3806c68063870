"""`ipvs` sink: a reconciler for the kernel's IPVS table (LVS), keepalived-style.

For each service bound to it, the sink reads the kernel's actual entry for
the binding's `virtual`, computes the fewest ipvsadm edits to the desired one
(`sentinel.sinks.ipvs.table.diff`), applies them and reads back to verify. It
creates the virtual service (scheduler, flags, persistence) when missing and
adds missing real servers; services and real servers it does not own are left
alone. A real server is owned while it is a backend of the service, and after
its backend left the config until it is gone from the table; a virtual
service is owned when the sink created it, and is deleted once no binding
names it (at start, or after a reload). Both are kept in
STATE_DIR/ipvs-NAME.json, so this holds across restarts (see `Ownership`).
All services of one pass share one `ipvsadm -R` and one read-back.

Backends not up (`on_down`): `weight0` (default, keepalived's
`inhibit_on_failure`) keeps the real server with weight 0: established
connections go on, new ones go elsewhere. `remove` deletes it.
`drain_then_remove` sets weight 0 and deletes it once ActiveConn and
InActConn are 0 or `drain_timeout` has passed. A backend in admin `drain`
always gets weight 0, never removed. Up backends get the published weight, so
slow-start ramps and a script's `weight=N` go straight to the kernel.

`run()` (started by the sink runner) re-reads the whole table every `resync`
and repairs drift; a difference from what the sink last verified means
someone else changed the table (a hand edit, a keepalived fighting over it):
it is logged as a conflict and counted in `conflicts`. It also polls the
services with a real server draining.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from sentinel.addresses import join
from sentinel.config.model import Config
from sentinel.errors import SinkError, SinkRejected
from sentinel.files import write_atomic
from sentinel.model import BackendView, ServiceView, State
from sentinel.sinks.base import SinkContext, SinkHealth, SinkKind, Update
from sentinel.sinks.ipvs.ipvsadm import Ipvsadm
from sentinel.sinks.ipvs.options import (
    BINDING,
    OPTIONS,
    IpvsBinding,
    IpvsOptions,
    parse_binding,
    parse_options,
)
from sentinel.sinks.ipvs.table import (
    DesiredService,
    RealKey,
    RealServer,
    ServiceEntry,
    Table,
    Virtual,
    diff,
    drain_finished,
    drift,
    normalise_ip,
    parse_virtual,
)

log = logging.getLogger(__name__)
DRAIN_POLL = 1.0  # seconds between looks at a draining real server's connections
CONFIG_POLL = 1.0  # seconds between looks for a reloaded config (memory only, no ipvsadm)
SHOWN_NOTES = 5  # changes named in one conflict warning
NOT_FOUND = "Scheduler or persistence engine not found"
REMOVE, DRAIN = -1, -2  # what `_weight` says instead of a weight


@dataclass(slots=True)
class _Plan:
    """One service's part of a converge: what it should be and the edits to get there."""

    service: str
    desired: DesiredService
    backends: set[RealKey]  # the keys of the service's backends
    edits: list[tuple[str, ...]]


class Ownership:
    """What the sink manages, kept in `path` (JSON) so that it holds across restarts:
    the real servers it owns per virtual service, and the virtual services it created.

    A real server is owned while it is a backend of the service, and afterwards until
    it is seen gone from the table (so a backend removed while sentinel was stopped is
    still deleted at the next start). A virtual service is the sink's when the sink's
    `-A` created it; it is deleted once no binding names it any more. One that existed
    before the sink first converged it is someone else's and never deleted.

    The file is `{"version": 2, "reals": {VIRTUAL: [[IP, PORT], ...]}, "created":
    [VIRTUAL, ...]}`; the first build's `{VIRTUAL: [[IP, PORT], ...]}` is read as reals
    with nothing created."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._owned: dict[Virtual, frozenset[RealKey]] = {}
        self.created: frozenset[Virtual] = frozenset()
        if path is not None and path.exists():
            try:
                saved = json.loads(path.read_text())
                reals, created = ((saved["reals"], saved["created"])
                                  if saved.get("version") == 2 else (saved, []))
                self._owned = {parse_virtual(v): frozenset((a, int(p)) for a, p in keys)
                               for v, keys in reals.items()}
                self.created = frozenset(parse_virtual(v) for v in created)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("ignoring %s: %s", path, exc)

    def get(self, virtual: Virtual) -> frozenset[RealKey]:
        """The real servers owned in `virtual`."""
        return self._owned.get(virtual, frozenset())

    async def settle(self, virtual: Virtual, backends: Iterable[RealKey],
                     present: Iterable[RealKey]) -> None:
        """Own `backends`, and keep owning earlier ones only while still `present`;
        saved when that changes."""
        earlier = self.get(virtual)
        owned = frozenset(backends) | (earlier & frozenset(present))
        if owned != earlier:
            self._owned[virtual] = owned
            await self._save()

    async def created_by_us(self, virtual: Virtual) -> None:
        """Record that the sink's `-A` created `virtual` (after it read back)."""
        if virtual not in self.created:
            self.created |= {virtual}
            await self._save()

    async def forget(self, virtual: Virtual) -> None:
        """`virtual` is gone: nothing in it is owned any more."""
        if virtual in self.created or virtual in self._owned:
            self.created -= {virtual}
            self._owned.pop(virtual, None)
            await self._save()

    async def _save(self) -> None:
        """Write the file atomically, in a worker thread."""
        if self._path is None:
            return
        data = {"version": 2, "reals": {str(v): sorted(keys) for v, keys in self._owned.items()},
                "created": sorted(map(str, self.created))}
        await trio.to_thread.run_sync(write_atomic, self._path,
                                      json.dumps(data, indent=1).encode())


class IpvsSink:
    """Keeps the kernel's IPVS table on the desired views."""

    def __init__(self, name: str, options: IpvsOptions, state_dir: Path | None = None,
                 config: Callable[[], Config | None] = lambda: None) -> None:
        self.name = name
        self._options = options
        self._config = config  # the running config: which virtual services are still named
        self.driver = Ipvsadm(options.command, options.timeout)
        self._desired: dict[str, tuple[ServiceView, IpvsBinding]] = {}
        self._claims: dict[Virtual, str] = {}  # which service owns each virtual
        self._owned = Ownership(state_dir / f"ipvs-{name}.json" if state_dir else None)
        self._verified: dict[Virtual, ServiceEntry | None] = {}  # as last read back
        self._draining: dict[tuple[Virtual, RealKey], float] = {}  # -> when weight 0 began
        self._lock = trio.Lock()  # apply and the background work take turns on the table
        self._drain_began = trio.Event()  # wakes `run` to poll the draining servers
        self.conflicts = 0
        self._background_error = ""  # the resync's or the clean-up's, until it works again

    async def apply(self, update: Update) -> None:
        """Converge one service's virtual service to its view; SinkRejected when the
        table does not read back as wanted."""
        binding = update.options
        if not isinstance(binding, IpvsBinding):
            raise SinkRejected(f"service {update.view.service!r} is bound to ipvs sink "
                               f"{self.name!r} without a `virtual`")
        service = update.view.service
        owner = self._claims.setdefault(binding.virtual, service)
        if owner != service:
            raise SinkRejected(f"{binding.virtual} is already managed by service {owner!r}")
        if service in self._desired and self._desired[service][1].virtual != binding.virtual:
            del self._claims[self._desired[service][1].virtual]  # a reload moved the service
        self._desired[service] = (update.view, binding)
        async with self._lock:
            failures = await self._converge([service], whole_table=False)
        if failures:
            raise failures[0]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Repair drift every `resync`, finish drains, and delete the virtual services it
        created that the config (at start, after a reload) no longer names; until
        cancelled."""
        task_status.started()
        next_resync = trio.current_time() + self._options.resync
        seen: Config | None = None
        while True:
            config = self._config()
            if config is not seen:  # at start, and after every reload
                seen = config
                async with self._lock:
                    await self._background(self._clean_up, config)
            self._drain_began = trio.Event()
            wake = min(next_resync, trio.current_time() + (
                DRAIN_POLL if self._draining else CONFIG_POLL))
            with trio.move_on_at(wake) as sleep:
                await self._drain_began.wait()
            if not sleep.cancelled_caught:
                continue  # a drain began: look again within DRAIN_POLL
            async with self._lock:
                if trio.current_time() >= next_resync:
                    next_resync = trio.current_time() + self._options.resync
                    await self._background(self.resync)
                elif self._draining:
                    draining = {self._claims[virtual] for virtual, _ in self._draining}
                    await self._background(self._converge, sorted(draining), whole_table=False)

    async def _background(self, work: Callable[..., Awaitable[object]], *args: Any,
                          **kwargs: Any) -> None:
        """Run background `work`; its failure is logged and reported in health() (no
        apply fails then), never raised: a bug here must not take the runner down."""
        try:
            await work(*args, **kwargs)
        except SinkError as exc:
            if not self._background_error:
                log.warning("%s: %s", self.name, exc)
            self._background_error = str(exc)
        except Exception as exc:
            log.exception("%s: background work failed", self.name)
            self._background_error = f"{type(exc).__name__}: {exc}"
        else:
            self._background_error = ""

    def health(self) -> SinkHealth:
        """Failing while the resync or the clean-up fails (until it works again)."""
        return SinkHealth(not self._background_error, self._background_error)

    async def _clean_up(self, config: Config | None) -> None:
        """Forget the services `config` no longer binds to this sink, and delete the
        virtual services this sink created that no ipvs binding (of any sink) names;
        nothing when the config is unknown (call with the lock held)."""
        if config is None:
            return
        bindings = [(svc.name, b) for svc in config.services for b in svc.sinks
                    if isinstance(b.options, IpvsBinding)]
        mine = {service for service, b in bindings if b.sink == self.name}
        named = {b.options.virtual for _, b in bindings if isinstance(b.options, IpvsBinding)}
        for service in [s for s in self._desired if s not in mine]:
            del self._desired[service]
        self._claims = {v: s for v, s in self._claims.items()
                        if s in self._desired and self._desired[s][1].virtual == v}
        failures = []
        for virtual in sorted(self._owned.created - named, key=str):
            try:
                await self._delete(virtual)
            except SinkError as exc:
                failures.append(str(exc))
        if failures:
            raise SinkRejected("; ".join(failures))

    async def _delete(self, virtual: Virtual) -> None:
        """Delete a virtual service the sink created, real servers and all."""
        entry = await self.driver.read(virtual)
        if entry is not None:
            complaints = await self.driver.apply([("-D", *virtual.argv())])
            if await self.driver.read(virtual) is not None:
                raise SinkRejected(f"{virtual}: cannot delete the virtual service it created "
                                   f"and no service names any more; ipvsadm said: "
                                   f"{complaints or 'nothing'}")
            reals = ", ".join(join(*key) for key in sorted(entry.reals)) or "none"
            log.warning("%s: deleted %s: it created it and no service names it any more "
                        "(real servers: %s)", self.name, virtual, reals)
        await self._owned.forget(virtual)
        self._verified.pop(virtual, None)
        for key in [k for k in self._draining if k[0] == virtual]:
            del self._draining[key]

    async def resync(self) -> None:
        """Converge every known service in one pass: the whole table read once, every
        edit in one ipvsadm call, read back once (call with the lock held)."""
        for failure in await self._converge(list(self._desired), whole_table=True):
            log.warning("%s: %s", self.name, failure)

    async def aclose(self) -> None:
        """Nothing to release: the table is left as it is."""

    # -- converging ------------------------------------------------------------------

    async def _read(self, virtuals: list[Virtual], whole_table: bool, table: Table) -> Table:
        """The whole table, or `table` with the entries of `virtuals` read afresh."""
        if whole_table:
            return await self.driver.read_all()
        for virtual in virtuals:
            entry = await self.driver.read(virtual)
            if entry is None:
                table.pop(virtual, None)
            else:
                table[virtual] = entry
        return table

    async def _converge(self, services: list[str], *, whole_table: bool
                        ) -> list[SinkRejected]:
        """Read, plan every service, apply all edits at once, read back and verify.
        Returns a SinkRejected per service whose entry does not read back as wanted."""
        table = await self._read([self._desired[s][1].virtual for s in services], whole_table,
                                 {})
        plans: list[_Plan] = []
        failures = []
        for service in services:
            view, binding = self._desired[service]
            actual = table.get(binding.virtual)
            self._report_drift(binding.virtual, actual)
            try:
                desired, backends = await self._desired_entry(view, binding, actual)
            except SinkRejected as exc:
                failures.append(exc)
                continue
            owned = self._owned.get(binding.virtual)
            await self._owned.settle(binding.virtual, backends, owned)  # before any edit
            plans.append(_Plan(service, desired, backends, diff(desired, actual)))
        complaints = ""
        if any(plan.edits for plan in plans):
            complaints = await self.driver.apply([e for plan in plans for e in plan.edits])
            changed = [plan.desired.virtual for plan in plans if plan.edits]
            table = await self._read(changed, whole_table, table)
        for plan in plans:
            virtual = plan.desired.virtual
            after = table.get(virtual)
            await self._owned.settle(virtual, plan.backends, after.reals if after else ())
            if after is not None and plan.edits and plan.edits[0][0] == "-A":
                await self._owned.created_by_us(virtual)
            left = diff(plan.desired, after)
            if not left:  # only a verified entry is the baseline that drift is measured from
                self._verified[virtual] = after
            elif plan.edits and not complaints:
                # ipvsadm took every edit without a word, yet the table reads otherwise:
                # someone changed it between our apply and our read-back.
                self.conflicts += 1
                log.warning("%s: conflict: %s changed while being applied; retrying",
                            self.name, virtual)
            if left:
                failures.append(SinkRejected(self._explain(plan.service, left, complaints)))
            elif plan.edits:
                log.info("%s: %s: %s", self.name, virtual,
                         "; ".join(" ".join(edit) for edit in plan.edits))
        if complaints and not failures:
            log.warning("%s: ipvsadm said: %s", self.name, complaints)
        return failures

    def _report_drift(self, virtual: Virtual, actual: ServiceEntry | None) -> None:
        """Log and count a change made by someone else since the sink last read back."""
        if virtual not in self._verified:
            return
        before = self._verified[virtual]
        if before is None:
            notes = [f"{virtual} was created"] if actual is not None else []
        else:
            notes = drift(before, actual, self._owned.get(virtual))
        if notes:
            self.conflicts += 1
            more = f"; and {len(notes) - SHOWN_NOTES} more" if len(notes) > SHOWN_NOTES else ""
            log.warning("%s: conflict: someone else changed %s: %s%s; restoring it",
                        self.name, virtual, "; ".join(notes[:SHOWN_NOTES]), more)

    def _explain(self, service: str, left: list[tuple[str, ...]], complaints: str) -> str:
        binding = self._desired[service][1]
        said = " / ".join(complaints.splitlines()) or "nothing"
        if NOT_FOUND in complaints and left[0][0] in ("-A", "-E"):
            return (f"{binding.virtual}: the kernel has no IPVS scheduler "
                    f"{binding.spec.scheduler!r} (module ip_vs_{binding.spec.scheduler} "
                    f"missing?); ipvsadm said: {said}")
        return (f"{binding.virtual}: the table does not match after applying; still to do: "
                f"{'; '.join(' '.join(edit) for edit in left)}; ipvsadm said: {said}")

    async def _desired_entry(self, view: ServiceView, binding: IpvsBinding,
                             actual: ServiceEntry | None
                             ) -> tuple[DesiredService, set[RealKey]]:
        """The wanted entry for `view` (each backend's real server by state and on_down;
        owned real servers that are no backend any more are absent), and the backends' keys."""
        virtual = binding.virtual
        wanted: dict[RealKey, RealServer] = {}
        absent: set[RealKey] = set()
        names: dict[RealKey, str] = {}
        for backend in view.backends:
            address = await self._resolve(backend, binding)
            key = (address, virtual.real_port(binding.forward, backend.port))
            if key in names:
                raise SinkRejected(
                    f"{virtual}: backends {names[key]!r} and {backend.name!r} are the same "
                    f"real server {join(*key)} (with forward {binding.forward} the "
                    f"kernel uses the service's port)")
            names[key] = backend.name
            weight = _weight(backend, binding)
            if weight == DRAIN:
                weight = self._drain(virtual, key, actual, binding.drain_timeout)
            else:
                self._draining.pop((virtual, key), None)
            if weight == REMOVE:
                absent.add(key)
                continue
            wanted[key] = RealServer(*key, forward=binding.forward, weight=weight,
                                     u_threshold=binding.u_threshold,
                                     l_threshold=binding.l_threshold)
        backends = set(names)
        absent |= self._owned.get(virtual) - backends
        for stale in [k for k in self._draining if k[0] == virtual and k[1] not in backends]:
            del self._draining[stale]  # its backend left the config while draining
        return DesiredService(virtual, binding.spec, wanted, frozenset(absent)), backends

    def _drain(self, virtual: Virtual, key: RealKey, actual: ServiceEntry | None,
               timeout: float) -> int:
        """drain_then_remove: weight 0 from the first time the backend is seen down,
        REMOVE once its real server has no connection left or `timeout` has passed."""
        now = trio.current_time()
        if (virtual, key) not in self._draining:
            self._draining[virtual, key] = now
            self._drain_began.set()
        have = actual.reals.get(key) if actual else None
        if drain_finished(have, self._draining[virtual, key], now, timeout):
            del self._draining[virtual, key]
            return REMOVE
        return 0

    async def _resolve(self, backend: BackendView, binding: IpvsBinding) -> str:
        """The backend's IP: its host when a literal, else looked up in the service's family."""
        try:
            return normalise_ip(backend.host)
        except ValueError:
            pass
        family = socket.AF_UNSPEC if binding.forward == "tun" else (
            socket.AF_INET6 if binding.virtual.ipv6 else socket.AF_INET)
        try:
            found = await trio.socket.getaddrinfo(backend.host, None, family,
                                                  socket.SOCK_STREAM)
        except OSError as exc:
            raise SinkRejected(f"{binding.virtual}: cannot resolve {backend.host!r} "
                               f"(backend {backend.name!r}): {exc}") from exc
        return ipaddress.ip_address(found[0][4][0]).compressed


def _weight(backend: BackendView, binding: IpvsBinding) -> int:
    """The real server's weight, or REMOVE, or DRAIN (weight 0, then REMOVE when idle)."""
    if backend.state is State.UP:
        return backend.weight
    if backend.state is State.DRAIN or binding.on_down == "weight0":
        return 0
    return REMOVE if binding.on_down == "remove" else DRAIN


def _create(name: str, options: object, ctx: SinkContext) -> IpvsSink:
    assert isinstance(options, IpvsOptions)
    return IpvsSink(name, options, ctx.state_dir, ctx.config)


KIND = SinkKind(name="ipvs", parse_options=parse_options, parse_binding=parse_binding,
                create=_create, options=OPTIONS, binding=BINDING)
