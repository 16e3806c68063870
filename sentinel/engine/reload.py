"""Reloading the config in place (SIGHUP, POST /v1/reload): `Engine.reload` and
`Engine.reload_from_file`, and their helpers here.

Unchanged backends keep their breaker state and their place in the probe
schedule; added ones start spread over their interval; removed ones stop.
Changed probe or breaker settings take effect on the next probe (a new
breaker starts from the backend's current verdict). Sinks whose settings
changed are replaced. An invalid file changes nothing. In a cluster the new
file's hash goes to the cluster (`ClusterMode.reload`); the rest of
`cluster:` needs a restart.

A reload never hangs, nor holds up a stop. Only a regular file is reloaded: a
FIFO, a device or a directory put where the config was is refused at once
(opening a FIFO blocks until something writes to it; `sentinel check -c
<(...)` and the first load of `sentinel run` still take any readable file,
as a pipe read once is fine). What still blocks (a FIFO swapped in after that
check, a `token_file:` that is a FIFO, a hung network file system) is given
up after LOAD_TIMEOUT and refused; its worker thread is abandoned, and a
cancelled reload (a stop) abandons it at once. At most MAX_STUCK_LOADS such
threads wait at a time; past that a reload is refused at once.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import replace

import trio

from sentinel.breakers import make_breaker
from sentinel.cluster.config import ClusterConfig
from sentinel.config.model import BackendConfig, Config, ProbeConfig, ServiceConfig
from sentinel.engine.backend import BackendRuntime
from sentinel.engine.service import ServiceRuntime
from sentinel.errors import ConfigError, ConfigErrors
from sentinel.files import kind_of
from sentinel.probes.base import Probe, Target
from sentinel.sinks.registry import load_config
from sentinel.sinks.runner import SinkRunner

log = logging.getLogger(__name__)
PROBE_CLOSE_GRACE = 5.0
LOAD_TIMEOUT = 60.0  # a 16 MB file of 10,000s of backends loads in seconds
MAX_STUCK_LOADS = 4
# Worker threads for loading, per Trio run, apart from Trio's shared ones (host-name
# lookups): one for the reload under way (`sentinel run` runs one at a time), and one for
# each thread abandoned stuck, which keeps its token until it ends.
_LOADING: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("_LOADING")


async def load(path: str) -> Config | list[str]:
    """The config at `path`, or its errors (logged: the running config is kept).

    Never raises (but for cancellation): nothing a reload meets may take the
    running instance down. The file is read and validated in a worker thread of
    its own, so a large file never stalls probing, nor waits behind host-name
    lookups in Trio's shared threads. Cancelling abandons that thread; one still
    blocked after LOAD_TIMEOUT is abandoned and the file refused."""
    limiter = _loading()
    try:
        if limiter.available_tokens == 0:  # one token per stuck thread, and none left
            raise ConfigError(None, f"{path}: not read: earlier reloads are still blocked "
                                    f"reading files ({MAX_STUCK_LOADS} at most); restart "
                                    f"sentinel to free them")
        with trio.move_on_after(LOAD_TIMEOUT):
            config = await trio.to_thread.run_sync(
                _load_regular, path, limiter=limiter, abandon_on_cancel=True)
            for warning in config.warnings:
                log.warning("%s", warning)
            return config
        raise ConfigError(None, f"{path}: not loaded within {LOAD_TIMEOUT:g}s: reading it, "
                                f"or a file it names (token_file), blocked (a FIFO? a hung "
                                f"file system?)")
    except ConfigErrors as exc:
        errors = [str(e) for e in exc.errors]
    except ConfigError as exc:
        errors = [str(exc)]
    except Exception as exc:  # a loader bug: refuse the file, keep running
        log.exception("reload refused: loading %s failed", path)
        errors = [f"{path}: cannot load: {type(exc).__name__}: {exc}"]
    for error in errors:
        log.error("reload refused, keeping the running config: %s", error)
    return errors


def _loading() -> trio.CapacityLimiter:
    """This Trio run's limiter for loading threads (made at the first reload)."""
    try:
        return _LOADING.get()
    except LookupError:
        limiter = trio.CapacityLimiter(1 + MAX_STUCK_LOADS)
        _LOADING.set(limiter)
        return limiter


def _load_regular(path: str) -> Config:
    """`load_config(path)` if `path` is a regular file (or a link to one): opening a FIFO
    would block until something writes to it, a device may never end. (A file that is
    missing or unreadable is left to load_config, to say why as `sentinel check` does.)"""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        raise ConfigError(None, f"{path}: not a regular file ({kind_of(mode)}); a reload reads "
                                f"only regular files")
    return load_config(path)


def restart_only(old: Config, new: Config) -> None:
    """Warn of changes a reload cannot apply. Of `cluster:` a reload applies only the
    file's hash (a member claims the file it runs); etcd endpoints, node, prefix, lease,
    probers and quorum stay as the member started."""
    if new.api != old.api or new.telemetry != old.telemetry or new.state_dir != old.state_dir:
        log.warning("api, telemetry and state_dir changes take effect after a restart")
    if _without_hash(new.cluster) != _without_hash(old.cluster):
        log.warning("cluster changes (other than the file's hash) take effect after a "
                    "restart: this member keeps its cluster settings until then")


def _without_hash(cluster: ClusterConfig | None) -> ClusterConfig | None:
    return replace(cluster, config_sha256="") if cluster is not None else None


def carry_over(current: ServiceRuntime, cfg: ServiceConfig, runners: Mapping[str, SinkRunner],
               make_backend: Callable[[ServiceConfig, BackendConfig], BackendRuntime],
               make_probe: Callable[[ProbeConfig], Probe]
               ) -> tuple[ServiceRuntime, list[Probe]]:
    """The new runtime of a service that exists before and after the reload, and its old
    probes the new config replaced (to close once checks in flight are done): a check
    whose config is unchanged keeps its probe."""
    kept = list(zip((e.probe for e in current.config.entries), current.probes, strict=True))
    probes: list[Probe] = []
    for entry in cfg.entries:
        same = next((i for i, (old, _) in enumerate(kept) if old == entry.probe), None)
        probes.append(kept.pop(same)[1] if same is not None else make_probe(entry.probe))
    retired = [probe for _, probe in kept]
    by_name = {b.config.name: b for b in current.backends}
    backends: list[BackendRuntime] = []
    for b in cfg.backends:
        prev = by_name.get(b.name)
        if prev is not None and (prev.config.host, prev.config.port) == (b.host, b.port):
            prev.config = b
            prev.target = Target(cfg.name, b.name, b.host, b.port)
            if current.config.breaker != cfg.breaker:
                prev.breaker = make_breaker(cfg.breaker, prev.breaker.health)
            prev.probing(cfg)
            backends.append(prev)
        else:
            fresh = make_backend(cfg, b)
            if prev is not None:  # same name, new address: keep the operator's override,
                fresh.override = prev.override  # and diff against what sinks last saw
                fresh.published = prev.published
            backends.append(fresh)
    bindings = [(runners[b.sink], b.options) for b in cfg.sinks]
    svc = ServiceRuntime(cfg, tuple(probes), backends, bindings)
    svc.panic = current.panic
    return svc, retired


async def close_later(probes: list[Probe]) -> None:
    """Close replaced probes once checks already in flight have finished with them."""
    await trio.sleep(PROBE_CLOSE_GRACE)
    for probe in probes:
        await probe.aclose()
