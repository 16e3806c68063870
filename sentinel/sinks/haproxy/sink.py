"""`haproxy` sink: converges HAProxy's servers through its runtime API.

Per service it reads `show servers state BACKEND` and sends only what differs
(`plan`): an `up` backend gets `set server B/S weight N` (the published
weight, so a slow-start ramp shows) and `state ready`; `drain` gets `state
drain`; `down` and `maint` get `state maint`. HAProxy applies these at once
to new connections; open ones are left alone (use HAProxy's own `shutdown
sessions server` or `on-marked-down` to cut them).

Runtime changes live only in the running process: a reload or restart
forgets them. The sink notes which process answers (`show info`: Pid,
Start_time_sec, Uptime_sec); every apply and every `watch` interval it asks
again, and when another process answers it re-asserts every service it
knows. Every `resync` interval it also re-reads each service's state and
repairs drift (a server put back by hand). That background work runs in
`run()`, which the sink runner starts next to its own task.

Names: the HAProxy backend defaults to the service name and each server to
the backend's name; a binding may set `backend:` and map names with
`servers: {sentinel_name: haproxy_name}`.
"""

from __future__ import annotations

import logging

import trio

from sentinel.errors import SinkError, SinkRejected
from sentinel.model import BackendView, ServiceView, State
from sentinel.sinks.base import SinkContext, SinkHealth, SinkKind, Update
from sentinel.sinks.haproxy.options import (
    BINDING,
    OPTIONS,
    HAProxyBinding,
    HAProxyOptions,
    check_names,
    parse_binding,
    parse_options,
)
from sentinel.sinks.haproxy.runtime_api import ProcessInfo, RuntimeApi, ServerState
from sentinel.sinks.services import forget_removed

log = logging.getLogger(__name__)
# HAProxy's `invalid_char()` (src/tools.c), applied to proxy and server names alike
ADMIN_FOR = {State.UP: "ready", State.DRAIN: "drain", State.DOWN: "maint",
             State.MAINT: "maint"}


def plan(backend: str, server: str, want: BackendView, have: ServerState) -> list[str]:
    """The runtime API commands that take `have` to `want` (none when they agree).

    The weight goes first, so a server coming back is ready with its ramp weight.
    """
    commands = []
    admin = ADMIN_FOR[want.state]
    if want.state is State.UP and have.weight != want.weight:
        commands.append(f"set server {backend}/{server} weight {want.weight}")
    if have.admin != admin:
        commands.append(f"set server {backend}/{server} state {admin}")
    return commands


class HAProxySink:
    """Keeps HAProxy's server states and weights on the desired views."""

    def __init__(self, name: str, options: HAProxyOptions) -> None:
        self.name = name
        self._options = options
        self._services: frozenset[str] | None = None  # bound ones: others are let go
        self._api = RuntimeApi(options.socket, timeout=options.timeout)
        self._desired: dict[str, tuple[ServiceView, HAProxyBinding]] = {}
        self._process: ProcessInfo | None = None
        self._lock = trio.Lock()  # apply and the background work take turns on HAProxy
        # What the background work found wrong, until it works again (no apply fails
        # then, so the runner alone would call the sink ok): the watch, and per service
        # a re-assert or drift repair
        self._watch_error = ""
        self._background_errors: dict[str, str] = {}

    def bind(self, services: frozenset[str]) -> None:
        """The services bound to this sink: any other is no longer re-asserted."""
        self._services = services

    async def apply(self, update: Update) -> None:
        """Converge one service (and every service, if HAProxy restarted since)."""
        binding = update.options if isinstance(update.options, HAProxyBinding) else None
        service = update.view.service
        self._desired[service] = (update.view, binding or HAProxyBinding())
        async with self._lock:
            await self._notice_restart(skip=service)
            sent = await self._converge(service)
        self._background_errors.pop(service, None)  # converged: whatever was wrong is not
        if sent:
            log.info("%s: %s", self.name, "; ".join(sent))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Watch for HAProxy reloads and repair drift every `resync`, until cancelled."""
        task_status.started()
        next_resync = trio.current_time() + self._options.resync
        while True:
            await trio.sleep(self._options.watch)
            async with self._lock:
                try:
                    restarted = await self._notice_restart()
                    if self._watch_error:
                        log.info("%s: HAProxy answers again", self.name)
                        self._watch_error = ""
                    if not restarted and trio.current_time() >= next_resync:
                        next_resync = trio.current_time() + self._options.resync
                        await self._converge_all("repairing drift of")
                except SinkError as exc:
                    if not self._watch_error:  # once per outage, not every watch
                        log.warning("%s: cannot watch HAProxy: %s", self.name, exc)
                    self._watch_error = f"watching HAProxy: {exc}"
                except Exception as exc:  # a bug here must not take the runner down
                    log.exception("%s: background resync failed", self.name)
                    self._watch_error = f"background resync: {type(exc).__name__}: {exc}"

    def health(self) -> SinkHealth:
        """Failing while the watch cannot reach HAProxy, or a service could not be
        re-asserted or repaired in the background (until it converges again)."""
        errors = [self._watch_error] if self._watch_error else []
        errors += self._background_errors.values()
        return SinkHealth(not errors, errors[0] if errors else "")

    async def _notice_restart(self, skip: str | None = None) -> bool:
        """Ask which process answers; after a reload or restart re-assert every service
        (but `skip`, which the caller converges itself). True when it restarted."""
        info = await self._api.info()
        before, self._process = self._process, info
        if before is None or not info.restarted_since(before):
            return False
        log.warning("%s: HAProxy restarted or reloaded (pid %d -> %d); re-asserting %d "
                    "services", self.name, before.pid, info.pid, len(self._desired))
        await self._converge_all("re-asserting", skip=skip)
        return True

    async def _converge_all(self, doing: str, skip: str | None = None) -> None:
        """Converge every known service; one failing does not stop the others."""
        forget_removed(self._desired, self._services)
        forget_removed(self._background_errors, self._services)
        for service in [s for s in self._desired if s != skip]:
            try:
                sent = await self._converge(service)
            except SinkError as exc:
                log.warning("%s: %s %s: %s", self.name, doing, service, exc)
                self._background_errors[service] = f"{doing} {service}: {exc}"
                continue
            self._background_errors.pop(service, None)
            if sent:
                log.warning("%s: %s %s: %s", self.name, doing, service, "; ".join(sent))

    async def _converge(self, service: str) -> list[str]:
        """Read the service's backend and send what differs; returns the commands sent."""
        view, binding = self._desired[service]
        backend = binding.backend or service
        have = {s.server: s for s in await self._api.servers_state(backend)}
        wanted = [(binding.servers.get(b.name, b.name), b) for b in view.backends]
        missing = [server for server, _ in wanted if server not in have]
        if missing:
            raise SinkRejected(f"haproxy backend {backend!r} has no server "
                               f"{', '.join(map(repr, missing))} (it has: "
                               f"{', '.join(sorted(have)) or 'none'})")
        sent = []
        for server, want in wanted:
            for command in plan(backend, server, want, have[server]):
                await self._api.set(command)
                sent.append(command)
        return sent

    async def aclose(self) -> None:
        """Nothing to release: every command uses its own connection."""


def _create(name: str, options: object, ctx: SinkContext) -> HAProxySink:
    assert isinstance(options, HAProxyOptions)
    return HAProxySink(name, options)


KIND = SinkKind(name="haproxy", parse_options=parse_options, parse_binding=parse_binding,
                create=_create, check_names=check_names, options=OPTIONS, binding=BINDING)
