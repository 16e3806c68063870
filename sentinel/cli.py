"""The command line (SPEC 2): run, check, probe, status, demo."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from sentinel.api import URL_FILE, Api, serve_api
from sentinel.budget import compute_budget, describe
from sentinel.config import Config
from sentinel.configload import load_config
from sentinel.engine import Engine
from sentinel.errors import ConfigError, ConfigErrors, StateError
from sentinel.logs import setup_logging
from sentinel.reload import reload_from_file

log = logging.getLogger("sentinel")
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
    sub.add_parser("check", parents=[common, with_config],
                   help="validate the config and print detection budgets")
    probe = sub.add_parser("probe", parents=[common], help="one probe now")
    probe.add_argument("url", help="tcp://host:port, http(s)://host:port/path or script:/cmd")
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
    from sentinel.outboxcli import add_commands

    add_commands(sub, common, [common, with_config, api])
    from sentinel.maglevcli import add_maglev_parser

    add_maglev_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sentinel` console script."""
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        if args.command == "run":
            return _run(args.config)
        if args.command == "check":
            return _check(args.config)
        if args.command == "probe":
            from sentinel.probecli import probe_once

            return probe_once(args.url, args.timeout)
        if args.command == "status" and args.watch:
            from sentinel.statuswatch import watch_status

            return watch_status(_api_url(args), _token(args))
        if args.command == "status":
            from sentinel.status import show_status

            return show_status(_api_url(args), as_json=args.json, token=_token(args))
        if args.command == "ctl":
            from sentinel.status import send_override

            return send_override(_api_url(args), args.action, args.target, _token(args))
        if args.command == "outbox":
            from sentinel.outboxcli import run_outbox

            return run_outbox(args, lambda: _api_url(args), lambda: _token(args))
        if args.command == "webhook":
            from sentinel.outboxcli import send_test

            return send_test(args.url, args.secret, args.timeout)
        if args.command == "maglev":
            from sentinel.maglevcli import run_maglev

            return run_maglev(args)
        if args.command == "demo":
            from sentinel.demo import run_demo

            return run_demo()
    except KeyboardInterrupt:
        return EXIT_FAIL
    return EXIT_USAGE


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
    return None


def _check(path: str) -> int:
    config = _load(path)
    if config is None:
        return EXIT_USAGE
    print(f"{path}: ok")
    for svc in config.services:
        budget = compute_budget(svc)
        backends = f"{len(svc.backends)} backend{'' if len(svc.backends) == 1 else 's'}"
        print(f"  {svc.name}: {backends}, {svc.probe.type} probe; "
              f"worst case death -> removal {describe(budget.to_down)}, "
              f"recovery -> return {describe(budget.to_up)}")
    from sentinel.sinks.ipvs_config import warnings as ipvs_warnings

    for warning in ipvs_warnings(config):  # risky, not invalid: still exit 0
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _run(path: str) -> int:
    config = _load(path)
    if config is None:
        return EXIT_USAGE
    try:
        trio.run(run_instance, config)
    except StateError as exc:  # e.g. a corrupt or locked outbox: say so, no traceback
        print(f"sentinel: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception:
        log.exception("sentinel crashed")
        return EXIT_FAIL
    return EXIT_OK


async def _freeze_after_first_round(config: Config) -> None:
    """Freeze again once every backend has been probed: what the first probes made per
    backend (metric children, probe groups, last results) is long-lived too, and at
    10,000 backends a full GC pass over it held the event loop ~75 ms every few seconds."""
    longest = max((s.probe.timing.interval for s in config.services), default=0.0)
    await trio.sleep(min(longest, 60.0) + 1.0)
    gc.freeze()


async def run_instance(config: Config, *,
                       task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Engine plus API until SIGINT/SIGTERM; the first signal stops gracefully,
    a second one at once."""
    from sentinel.telemetry import Telemetry

    telemetry = Telemetry(config.telemetry, Path(config.state_dir))
    engine = Engine(config, shutdown_timeout=config.shutdown_timeout, observer=telemetry)
    telemetry.watch(engine)
    metrics = telemetry.metrics.render if telemetry.metrics else None
    # What is built by now (config, backends) lives as long as the process: keep the
    # cyclic GC from walking it again and again (at 5,000 backends each full pass held
    # the event loop ~100 ms in the first seconds, and probes started that late).
    gc.collect()
    gc.freeze()

    async def reload() -> list[str]:
        return await reload_from_file(engine, config.path)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as outer:
            url = await outer.start(serve_api, Api(engine, config.api.token, reload, metrics),
                                    config.api, Path(config.state_dir))
            outer.start_soon(_freeze_after_first_round, config)
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
                    stopping = True
                    engine.stop()
            outer.cancel_scope.cancel()
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
