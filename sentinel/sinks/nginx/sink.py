"""`nginx` sink: upstream blocks in one file, tested, reloaded, and checked to have loaded.

Every service bound to the sink gets one `upstream NAME { ... }` block (see
`render`); the sink keeps the latest view of every service and renders all
of them into `file` on each change, atomically. Then:

1. `test` (default `nginx -t`); on failure the previous file is put back.
2. `reload` (default `nginx -s reload`), at most once per `min_reload_interval`:
   a burst waits for the interval and then renders the newest views, so
   nothing is dropped, only merged.
3. Verification. nginx answers a failed reload with exit 0: the master logs
   `[emerg]` and keeps its old workers (a `listen` that cannot bind passes
   `nginx -t` and still fails). A master that did load the new file forks new
   worker processes, so the sink reads the master's PID from `pid_file`, notes
   its children before the reload, and waits up to `verify_timeout` for a child
   it has not seen (a scan of /proc; Linux), and for the old workers to stop
   accepting (their title turns to `worker process is shutting down`), so the
   apply returns once new connections see the new upstreams. No new child means
   nginx kept the old config: the previous file is put back and the apply
   fails, to be retried.

The file's header carries a generation number and a digest of the body; a
file whose digest does not match was edited by hand, which is logged before
it is overwritten. Blocks found in an untouched file from an earlier run are
kept for services that have not reported yet, so a restart never renders a
file that lacks an upstream nginx.conf still names.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from sentinel.errors import SinkError, SinkRejected, SinkUnavailable
from sentinel.files import write_atomic
from sentinel.model import ServiceView
from sentinel.process import ProcessOutcome, run_command
from sentinel.sinks.base import SinkContext, SinkKind, Update, unavailable
from sentinel.sinks.nginx.options import (
    BINDING,
    OPTIONS,
    NginxOptions,
    check_names,
    parse_binding,
    parse_options,
)
from sentinel.sinks.nginx.render import (
    UpstreamOptions,
    body_of,
    generation_of,
    render_file,
    render_upstream,
)
from sentinel.sinks.services import forget_removed

log = logging.getLogger(__name__)
_BLOCK = re.compile(r"^upstream (\S+) \{  # service (\S+)\n.*?^\}\n", re.MULTILINE | re.DOTALL)
VERIFY_POLL = 0.02
# The lines of `nginx -t` that say why; its last line only says "test failed".
NGINX_WHY = re.compile(r"\[(emerg|alert|crit|error)\]")

Runner = Callable[..., Awaitable[ProcessOutcome]]


class NginxSink:
    """Renders every bound service into one file and makes nginx load it."""

    def __init__(self, name: str, options: NginxOptions, *, run: Runner = run_command) -> None:
        self.name = name
        self._options = options
        self._path = Path(options.file)
        self._services: frozenset[str] | None = None  # bound ones: others' blocks go
        self._run = run
        self._views: dict[str, tuple[ServiceView, UpstreamOptions]] = {}
        self._kept: dict[str, str] | None = None  # service -> block from an earlier run
        self._loaded: str | None = None  # the body nginx is known to run
        self._generation = 0
        self._last_reload = -math.inf

    def bind(self, services: frozenset[str]) -> None:
        """The services bound to this sink: blocks of any other service leave the file."""
        self._services = services

    async def apply(self, update: Update) -> None:
        """Render all services with `update`'s view, then test, reload and verify."""
        await self.apply_batch([update])

    async def apply_batch(self, updates: Sequence[Update]) -> None:
        """Take several services' views, then render, test, reload and verify once
        (at start every service arrives together: one reload, not one per service)."""
        for update in updates:
            binding = update.options if isinstance(update.options, UpstreamOptions) else None
            self._views[update.view.service] = (update.view, binding or UpstreamOptions())
        body = self._body(await trio.to_thread.run_sync(_read, self._path))
        if body == self._loaded and body_of(await trio.to_thread.run_sync(_read, self._path)) \
                == body:
            return  # e.g. only a weight nginx does not publish changed
        await trio.sleep_until(self._last_reload + self._options.min_reload_interval)
        previous = await trio.to_thread.run_sync(_read, self._path)
        if previous is not None and body_of(previous) is None:
            log.warning("%s: %s was changed by hand; overwriting it", self.name, self._path)
        self._generation = max(self._generation, generation_of(previous or "") or 0) + 1
        text = render_file([body], sink=self.name, context=self._options.context,
                           generation=self._generation)
        await trio.to_thread.run_sync(write_atomic, self._path, text.encode())
        try:
            await self._command("test", self._options.test, SinkRejected)
            self._last_reload = trio.current_time()
            await self._reload_and_verify()
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_restore, self._path, previous)
            raise
        self._loaded = body
        log.info("%s: nginx reloaded %s, generation %d", self.name, self._path,
                 self._generation)

    def _body(self, on_disk: str | None) -> str:
        """Every service's block: ours, then blocks kept from an earlier run's file."""
        if self._kept is None:
            self._kept = {m.group(2): m.group(0) for m in _BLOCK.finditer(body_of(on_disk) or "")}
        forget_removed(self._views, self._services)  # services a reload removed or unbound
        forget_removed(self._kept, self._services)
        for service in self._views:
            self._kept.pop(service, None)
        blocks = dict(self._kept)
        for service, (view, b) in self._views.items():
            blocks[service] = render_upstream(view, name=b.name, mode=self._options.mode,
                                              params=b.params, directives=b.directives)
        return "\n".join(blocks[s] for s in sorted(blocks))

    async def _reload_and_verify(self) -> None:
        pid_file = self._options.pid_file
        master = before = None
        if pid_file is not None:
            master = await trio.to_thread.run_sync(_read_pid, pid_file)
            if master is None:
                raise SinkUnavailable(f"cannot verify the reload: no running nginx master in "
                                      f"{pid_file} (set pid_file, or verify: false)")
            before = await trio.to_thread.run_sync(_children, master)
        await self._command("reload", self._options.reload, SinkUnavailable)
        if master is None or before is None:
            return
        loaded = False
        with trio.move_on_after(self._options.verify_timeout):
            while True:
                now = await trio.to_thread.run_sync(_children, master)
                loaded = loaded or bool(now.keys() - before.keys())
                # Done once no worker of the old generation still accepts connections.
                if loaded and not any(_accepting(now[pid]) for pid in before.keys() & now.keys()):
                    return
                if not await trio.Path(f"/proc/{master}").exists():
                    raise SinkUnavailable(f"the nginx master (pid {master}) exited during the "
                                          f"reload")
                await trio.sleep(VERIFY_POLL)
        if loaded:
            log.warning("%s: nginx loaded the new file, but old workers still accepted "
                        "connections after %gs", self.name, self._options.verify_timeout)
            return
        raise SinkRejected(f"nginx kept its old configuration: no new worker processes within "
                           f"{self._options.verify_timeout:g}s of the reload (see nginx's "
                           f"error log); restored the previous {self._path.name}")

    async def _command(self, what: str, argv: Sequence[str],
                       error: type[SinkError]) -> None:
        with unavailable(f"{what} command {argv[0]}"):
            outcome = await self._run(argv, time_limit=self._options.timeout)
            if outcome.timed_out:
                raise TimeoutError(f"timed out after {self._options.timeout:g}s")
        if outcome.returncode != 0:
            raise error(f"{what} command failed ({outcome.describe_exit(NGINX_WHY)}); "
                        f"restored the previous {self._path.name}")

    async def aclose(self) -> None:
        """Nothing to release: the file stays as nginx runs it."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _restore(path: Path, previous: str | None) -> None:
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, previous.encode())


def _read_pid(pid_file: str) -> int | None:
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def _children(parent: int) -> dict[int, str]:
    """The processes whose parent is `parent`, with their titles (the kernel's
    children file is often not built in, so this scans /proc)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            # pid (comm) state ppid ...: comm may hold spaces and parentheses
            if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
                continue
            title = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        out[int(entry.name)] = title.replace(b"\0", b" ").decode(errors="replace")
    return out


def _accepting(title: str) -> bool:
    """A worker that takes new connections: not yet `worker process is shutting down`."""
    return "worker process" in title and "shutting down" not in title


def _create(name: str, options: object, ctx: SinkContext) -> NginxSink:
    assert isinstance(options, NginxOptions)
    return NginxSink(name, options)


KIND = SinkKind(name="nginx", parse_options=parse_options, parse_binding=parse_binding,
                create=_create, check_names=check_names, options=OPTIONS, binding=BINDING)
