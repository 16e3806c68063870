"""Reloading the config in place (SIGHUP, POST /v1/reload).

Unchanged backends keep their breaker state and their place in the probe
schedule; added ones start spread over their interval; removed ones stop.
Changed probe or breaker settings take effect on the next probe (a new
breaker starts from the backend's current verdict). Sinks whose settings
changed are replaced. An invalid file changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import trio

from sentinel.breakers import make_breaker
from sentinel.config.load import load_config
from sentinel.config.model import Config, ServiceConfig
from sentinel.engine.backend import BackendRuntime
from sentinel.engine.engine import Engine
from sentinel.engine.service import ServiceRuntime
from sentinel.errors import ConfigError, ConfigErrors
from sentinel.probes.base import Probe, Target

log = logging.getLogger(__name__)
PROBE_CLOSE_GRACE = 5.0
_LOADING = trio.CapacityLimiter(1)


async def reload_from_file(engine: Engine, path: str) -> list[str]:
    """Load `path` and apply it; return the errors (the running config is kept) or [].

    Never raises (but for cancellation): SIGHUP and POST /v1/reload call it, and
    nothing a reload meets may take the running instance down. The file is read
    and validated in a worker thread of its own, so a large file never stalls
    probing, nor waits behind host-name lookups in Trio's shared threads."""
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
        try:
            await apply_reload(engine, config)
        except Exception as exc:
            log.exception("reload of %s failed part way", path)
            return [f"{path}: reload failed: {type(exc).__name__}: {exc}"]
        log.info("reloaded %s: %d services", path, len(config.services))
        return []
    for error in errors:
        log.error("reload refused, keeping the running config: %s", error)
    return errors


async def apply_reload(engine: Engine, new: Config) -> None:
    """Move the running engine to `new`."""
    old = engine.config
    if new.api != old.api or new.telemetry != old.telemetry or new.state_dir != old.state_dir:
        log.warning("api, telemetry and state_dir changes take effect after a restart")
    # verdicts read from state_dir at startup are stale now: a backend new to the running
    # config starts up, as it would in a fresh state_dir
    engine.saved = replace(engine.saved, backends={})
    old_sinks = {s.name: s for s in old.sinks}
    for sink in new.sinks:
        if old_sinks.get(sink.name) != sink:
            if sink.name in engine.runners:
                engine.runners.pop(sink.name).retire()
            engine.runners[sink.name] = runner = engine.make_runner(sink)
            await engine.start_runner(runner)
    for name in set(old_sinks) - {s.name for s in new.sinks}:
        engine.runners.pop(name).retire()

    services: dict[str, ServiceRuntime] = {}
    retired_probes: list[Probe] = []
    for cfg in new.services:
        current = engine.services.get(cfg.name)
        services[cfg.name] = (engine.make_service(cfg) if current is None
                              else _carry_over(engine, current, cfg, retired_probes))
    retired_probes.extend(svc.probe for name, svc in engine.services.items()
                          if name not in services)
    engine.services = services
    engine.config = new
    engine.regroup()
    engine.restart_passive()
    for svc in services.values():  # the panic guard may see it differently now
        await engine.commit(svc, None, "reload")
    if retired_probes:
        engine.start_task(lambda: _close_later(retired_probes))


def _carry_over(engine: Engine, current: ServiceRuntime, cfg: ServiceConfig,
                retired_probes: list[Probe]) -> ServiceRuntime:
    """The new runtime of a service that exists before and after the reload."""
    probe = current.probe
    if current.config.probe != cfg.probe:
        retired_probes.append(probe)
        probe = engine.probe_factory(cfg.probe)
    by_name = {b.config.name: b for b in current.backends}
    backends: list[BackendRuntime] = []
    for b in cfg.backends:
        prev = by_name.get(b.name)
        if prev is not None and (prev.config.host, prev.config.port) == (b.host, b.port):
            prev.config = b
            prev.target = Target(cfg.name, b.name, b.host, b.port)
            if current.config.breaker != cfg.breaker:
                prev.breaker = make_breaker(cfg.breaker, prev.breaker.health)
            backends.append(prev)
        else:
            fresh = engine.make_backend(cfg, b.name)
            if prev is not None:  # same name, new address: keep the operator's override,
                fresh.override = prev.override  # and diff against what sinks last saw
                fresh.published = prev.published
            backends.append(fresh)
    bindings = [(engine.runners[b.sink], b.options) for b in cfg.sinks]
    svc = ServiceRuntime(cfg, probe, backends, bindings)
    svc.panic = current.panic
    return svc


async def _close_later(probes: list[Probe]) -> None:
    """Close replaced probes once checks already in flight have finished with them."""
    await trio.sleep(PROBE_CLOSE_GRACE)
    for probe in probes:
        await probe.aclose()
