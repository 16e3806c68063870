"""Reloading the config in place (SIGHUP, POST /v1/reload): `Engine.reload` and
`Engine.reload_from_file`, and their helpers here.

Unchanged backends keep their breaker state and their place in the probe
schedule; added ones start spread over their interval; removed ones stop.
Changed probe or breaker settings take effect on the next probe (a new
breaker starts from the backend's current verdict). Sinks whose settings
changed are replaced. An invalid file changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import trio

from sentinel.breakers import make_breaker
from sentinel.config.model import BackendConfig, Config, ProbeConfig, ServiceConfig
from sentinel.engine.backend import BackendRuntime
from sentinel.engine.service import ServiceRuntime
from sentinel.errors import ConfigError, ConfigErrors
from sentinel.probes.base import Probe, Target
from sentinel.sinks.registry import load_config
from sentinel.sinks.runner import SinkRunner

log = logging.getLogger(__name__)
PROBE_CLOSE_GRACE = 5.0
_LOADING = trio.CapacityLimiter(1)


async def load(path: str) -> Config | list[str]:
    """The config at `path`, or its errors (logged: the running config is kept).

    Never raises (but for cancellation): nothing a reload meets may take the
    running instance down. The file is read and validated in a worker thread of
    its own, so a large file never stalls probing, nor waits behind host-name
    lookups in Trio's shared threads."""
    try:
        config = await trio.to_thread.run_sync(load_config, path, limiter=_LOADING)
    except ConfigErrors as exc:
        errors = [str(e) for e in exc.errors]
    except ConfigError as exc:
        errors = [str(exc)]
    except Exception as exc:  # a loader bug: refuse the file, keep running
        log.exception("reload refused: loading %s failed", path)
        errors = [f"{path}: cannot load: {type(exc).__name__}: {exc}"]
    else:
        for warning in config.warnings:
            log.warning("%s", warning)
        return config
    for error in errors:
        log.error("reload refused, keeping the running config: %s", error)
    return errors


def restart_only(old: Config, new: Config) -> None:
    """Warn of changes a reload cannot apply."""
    if new.api != old.api or new.telemetry != old.telemetry or new.state_dir != old.state_dir:
        log.warning("api, telemetry and state_dir changes take effect after a restart")


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
