"""The command line (SPEC 2): run, check, probe, status, demo."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from sentinel.api import URL_FILE, Api, listen, serve_api
from sentinel.config.model import Config
from sentinel.engine.budget import compute_budget, describe
from sentinel.engine.engine import Engine
from sentinel.errors import ConfigError, ConfigErrors, StartupError, StateError
from sentinel.limits import budget as fd_budget
from sentinel.sinks.registry import load_config
from sentinel.systemd import Notifier
from sentinel.telemetry.logs import setup_logging

log = logging.getLogger(__name__)
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _log_options(*, defaults: bool) -> argparse.ArgumentParser:
    """`--log-level` and `--log-format`, before or after the subcommand. Only the top
    level sets defaults: a subcommand's default would overwrite `sentinel --log-format
    json run`'s value."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--log-level", default="info" if defaults else argparse.SUPPRESS,
                         choices=["debug", "info", "warning", "error"])
    options.add_argument("--log-format", default="text" if defaults else argparse.SUPPRESS,
                         choices=["text", "json"])
    return options


def _parser() -> argparse.ArgumentParser:
    common = _log_options(defaults=False)
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument("-c", "--config", default="./sentinel.yaml", metavar="FILE")
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--api", metavar="URL", help="sentinel's API (default: from -c, "
                     "else http://127.0.0.1:9900)")

    parser = argparse.ArgumentParser(prog="sentinel", parents=[_log_options(defaults=True)],
                                     description="Health-check and circuit-breaker sidecar.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common, with_config], help="probe and publish until stopped")
    check = sub.add_parser("check", parents=[common, with_config],
                           help="validate the config and print detection budgets")
    check.add_argument("--format", choices=["text", "json"], default="text",
                       help="json: one document on stdout, for CI pipelines")
    probe = sub.add_parser("probe", parents=[common], help="one probe now")
    probe.add_argument("url", help="tcp://host:port, http(s)://host:port/path, "
                       "grpc(s)://host:port/service, dns://server[:port]/name?qtype=A, "
                       "agent://host:port or script:/cmd")
    probe.add_argument("--timeout", default="1s")
    status = sub.add_parser("status", parents=[common, with_config, api],
                            help="the running instance's state")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true",
                        help="keep the table current from the live stream until Ctrl-C")
    sub.add_parser("demo", parents=[common], help="a self-contained failover demo")
    ctl = sub.add_parser("ctl", parents=[common, with_config, api],
                         help="admin override: drain, maint or ready a backend")
    ctl.add_argument("action", choices=["drain", "maint", "ready"])
    ctl.add_argument("target", metavar="SERVICE/BACKEND")
    from sentinel.cli.outbox import add_commands

    add_commands(sub, common, [common, with_config, api])
    from sentinel.cli.maglev import add_maglev_parser

    add_maglev_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sentinel` console script."""
    try:
        code = _dispatch(argv)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except (BrokenPipeError, BaseExceptionGroup) as exc:  # a group: from inside trio (demo)
        if isinstance(exc, BaseExceptionGroup) and exc.split(BrokenPipeError)[1] is not None:
            raise
        # The reader went away (`sentinel status | head -1`): stop quietly, as `cat`
        # does. stdout points at /dev/null from now on, or Python's flush at exit
        # would report the same broken pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        if args.command == "run":
            return _run(args.config)
        if args.command == "check":
            return _check(args.config, args.format)
        if args.command == "probe":
            from sentinel.cli.probe import probe_once

            return probe_once(args.url, args.timeout)
        if args.command == "status" and args.watch:
            from sentinel.cli.watch import watch_status

            return watch_status(_api_url(args), _token(args))
        if args.command == "status":
            from sentinel.cli.status import show_status

            return show_status(_api_url(args), as_json=args.json, token=_token(args))
        if args.command == "ctl":
            from sentinel.cli.status import send_override

            return send_override(_api_url(args), args.action, args.target, _token(args))
        if args.command == "outbox":
            from sentinel.cli.outbox import run_outbox

            return run_outbox(args, lambda: _api_url(args), lambda: _token(args))
        if args.command == "webhook":
            from sentinel.cli.outbox import send_test

            return send_test(args.url, args.secret, args.timeout)
        if args.command == "maglev":
            from sentinel.cli.maglev import run_maglev

            return run_maglev(args)
        if args.command == "demo":
            from sentinel.cli.demo import run_demo

            return run_demo()
    except KeyboardInterrupt:
        return EXIT_FAIL
    return EXIT_USAGE


def _errors(exc: ConfigError) -> list[ConfigError]:
    """The errors one load raised (a ConfigErrors carries every one of a pass)."""
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for error in _errors(exc):
            print(error, file=sys.stderr)
    return None


def _check(path: str, fmt: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        if fmt == "json":
            errors = [_error_json(e, path) for e in _errors(exc)]
            print(json.dumps({"file": path, "ok": False, "errors": errors, "services": [],
                              "warnings": []}, indent=2))
        else:
            for error in _errors(exc):
                print(error, file=sys.stderr)
        return EXIT_USAGE
    from sentinel.sinks.ipvs.options import warnings as ipvs_warnings

    budgets = [(svc, compute_budget(svc)) for svc in config.services]
    warnings = (*config.warnings, *ipvs_warnings(config))  # risky, not invalid: exit 0
    if fmt == "json":
        services = [{"name": svc.name, "backends": len(svc.backends), "probe": svc.probe.type,
                     "to_down_seconds": _seconds(budget.to_down),
                     "to_up_seconds": _seconds(budget.to_up)} for svc, budget in budgets]
        print(json.dumps({"file": path, "ok": True, "errors": [], "services": services,
                          "warnings": [{"message": w} for w in warnings]}, indent=2))
        return EXIT_OK
    print(f"{path}: ok")
    for svc, budget in budgets:
        backends = f"{len(svc.backends)} backend{'' if len(svc.backends) == 1 else 's'}"
        print(f"  {svc.name}: {backends}, {svc.probe.type} probe; "
              f"worst case death -> removal {describe(budget.to_down)}, "
              f"recovery -> return {describe(budget.to_up)}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _error_json(error: ConfigError, path: str) -> dict[str, object]:
    """One config error for `check --format json`; position and key path are null when
    the error has none (an unreadable file)."""
    mark = error.mark
    if mark is None:
        return {"file": path, "line": None, "column": None, "path": None,
                "message": error.message}
    return {"file": mark.file, "line": mark.line, "column": mark.column,
            "path": mark.path or None, "message": error.message}


def _seconds(budget: float | None) -> float | None:
    """A budget in seconds to the millisecond (the simulation's sums carry float noise);
    None (JSON null) for never."""
    return None if budget is None else round(budget, 3)


def _run(path: str) -> int:
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
    timings = [s.probe.timing for s in config.services]
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
    engine = Engine(config, shutdown_timeout=config.shutdown_timeout, observer=telemetry)
    sock = listen(config.api)  # now: a taken address must stop the start, not crash later
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

                inner.start_soon(engine_then_stop)
                task_status.started(url)
                log.info("sentinel running: %d services, %d backends", len(config.services),
                         sum(len(s.backends) for s in config.services))
                stopping = False
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await reload()
                        continue
                    if stopping:
                        log.warning("second signal: stopping now")
                        inner.cancel_scope.cancel()
                        break
                    log.info("%s: stopping gracefully", signal.Signals(signum).name)
                    notifier.stopping("stopping: finishing sink work")
                    stopping = True
                    engine.stop()
            outer.cancel_scope.cancel()
    notifier.close()
    await telemetry.aclose()  # a clean stop exports the spans still queued


def _token(args: argparse.Namespace) -> str | None:
    """The API token: $SENTINEL_TOKEN, else the one in the config file, if any."""
    token = os.environ.get("SENTINEL_TOKEN")
    if token or not Path(args.config).exists():
        return token
    try:
        return load_config(args.config).api.token
    except ConfigError:
        return None


def _api_url(args: argparse.Namespace) -> str:
    if args.api:
        return str(args.api).rstrip("/")
    if Path(args.config).exists():
        try:
            config = load_config(args.config)
        except ConfigError:
            return "http://127.0.0.1:9900"
        url_file = Path(config.state_dir) / URL_FILE
        if config.api.port == 0 and url_file.exists():
            return url_file.read_text().strip()
        return f"http://{config.api.listen}"
    return "http://127.0.0.1:9900"


__all__ = ["main", "run_instance"]
