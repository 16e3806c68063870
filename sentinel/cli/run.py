"""`sentinel run`: the engine and the API in one process until a signal stops it.

SIGINT and SIGTERM stop gracefully (a second one at once), SIGHUP reloads (in a
task of its own: a reload stuck reading a file never keeps a signal waiting, and a
stop cancels it); the cyclic GC is frozen once the long-lived objects are built;
systemd hears of start-up, readiness after the first probe round, reloads and the
stop.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import sys
from functools import partial
from pathlib import Path

import trio

from sentinel.api.app import Api, base_url, listen, serve_api
from sentinel.cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from sentinel.cli.check import errors_of
from sentinel.config.model import Config
from sentinel.engine.engine import Engine
from sentinel.errors import ConfigError, StartupError, StateError
from sentinel.limits import budget as fd_budget
from sentinel.sinks.registry import load_config
from sentinel.systemd import Notifier

log = logging.getLogger(__name__)


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for error in errors_of(exc):
            print(error, file=sys.stderr)
    return None


def run(path: str) -> int:
    """`sentinel run`: load the config and run until stopped (exit 2 on a config or
    start-up error, 1 on a crash)."""
    config = _load(path)
    if config is None:
        return EXIT_USAGE
    for warning in config.warnings:
        log.warning("%s", warning)
    try:
        trio.run(run_instance, config)
    except StartupError as exc:  # a taken port, a read-only state_dir: the config's fault
        print(f"sentinel: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StateError as exc:  # e.g. a corrupt or locked outbox: say so, no traceback
        print(f"sentinel: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception:
        log.exception("sentinel crashed")
        return EXIT_FAIL
    return EXIT_OK


async def _after_first_round(engine: Engine, notifier: Notifier, url: str) -> None:
    """Once every backend has been probed: tell systemd start-up is done, and freeze
    again, as what the first probes made per backend (metric children, probe groups,
    last results) is long-lived too (at 10,000 backends a full GC pass over it held the
    event loop ~75 ms every few seconds)."""
    await engine.wait_first_round()
    gc.freeze()
    notifier.ready(_running(engine, url))


def _first_round_bound(config: Config) -> float:
    """How long the first probe round may take: backends start spread over their interval
    and may hang for their timeout; the margin covers probes waiting for max_in_flight."""
    timings = [e.probe.timing for s in config.services for e in s.entries]
    return (max((t.interval for t in timings), default=0.0)
            + max((t.timeout for t in timings), default=0.0) + 30.0)


def _running(engine: Engine, url: str) -> str:
    """The STATUS= line while running."""
    services = engine.config.services
    backends = sum(len(s.backends) for s in services)
    return f"running: services {len(services)}, backends {backends}; API {url}"


async def run_instance(config: Config, *,
                       task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Engine plus API until SIGINT/SIGTERM; the first signal stops gracefully,
    a second one at once."""
    from sentinel.telemetry.traces import Telemetry

    fds = fd_budget(config.max_in_flight)
    telemetry = Telemetry(config.telemetry, Path(config.state_dir))
    sock = listen(config.api)  # now: a taken address must stop the start, not crash later
    engine = Engine(config, shutdown_timeout=config.shutdown_timeout, observer=telemetry,
                    api_url=base_url(sock))
    log.info("%s", fds.describe())
    telemetry.watch(engine)
    metrics = telemetry.metrics.render if telemetry.metrics else None
    # What is built by now (config, backends) lives as long as the process: keep the
    # cyclic GC from walking it again and again (at 5,000 backends each full pass held
    # the event loop ~100 ms in the first seconds, and probes started that late).
    gc.collect()
    gc.freeze()

    notifier = Notifier.from_environment()
    url = ""
    reloading = trio.Lock()  # SIGHUP during POST /v1/reload: one after the other

    async def reload() -> list[str]:
        async with reloading:
            notifier.reloading(f"reloading {config.path}")
            errors = await engine.reload_from_file(config.path)
            refused = f"; reload refused: {errors[0]}" if errors else ""
            notifier.reloaded(_running(engine, url) + refused)
            return errors

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as outer:
            outer.start_soon(notifier.watchdog)
            url = await outer.start(partial(
                serve_api, Api(engine, config.api.token, reload, metrics), config.api,
                Path(config.state_dir), sock=sock, max_connections=fds.api))
            notifier.starting(f"starting: API {url}, first probe round",
                              _first_round_bound(config))
            outer.start_soon(_after_first_round, engine, notifier, url)
            async with trio.open_nursery() as inner:

                async def engine_then_stop() -> None:
                    await engine.run()
                    inner.cancel_scope.cancel()

                async def reload_on_hup() -> None:
                    with hup_reloads:
                        async for _ in hups:
                            await reload()

                # one SIGHUP waits while a reload runs; more add nothing (it reads the file
                # after them all), and the signal loop never waits for a reload
                hup, hups = trio.open_memory_channel[None](1)
                hup_reloads = trio.CancelScope()  # a stop cancels the SIGHUP reload
                inner.start_soon(engine_then_stop)
                inner.start_soon(reload_on_hup)
                task_status.started(url)
                log.info("sentinel running: %d services, %d backends", len(config.services),
                         sum(len(s.backends) for s in config.services))
                stopping = False
                async for signum in signals:
                    if signum == signal.SIGHUP and stopping:
                        log.info("SIGHUP: not reloading, stopping")
                        continue
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: reloading %s", config.path)
                        with contextlib.suppress(trio.WouldBlock):
                            hup.send_nowait(None)
                        continue
                    if stopping:
                        log.warning("second signal: stopping now")
                        inner.cancel_scope.cancel()
                        break
                    log.info("%s: stopping gracefully", signal.Signals(signum).name)
                    notifier.stopping("stopping: finishing sink work")
                    stopping = True
                    hup_reloads.cancel()
                    engine.stop()
            outer.cancel_scope.cancel()
    notifier.close()
    await telemetry.aclose()  # a clean stop exports the spans still queued
