"""The command line (SPEC 2): argparse wiring; each command runs from its own module
(`run`, `check`, `probe`, `status`, `watch`, `outbox`, `maglev`, `demo`, `schema`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from sentinel.api.app import URL_FILE
from sentinel.cli import EXIT_FAIL, EXIT_USAGE
from sentinel.errors import ConfigError
from sentinel.sinks.registry import load_config
from sentinel.telemetry.logs import setup_logging


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
    sub.add_parser("schema", parents=[common],
                   help="print the configuration's JSON Schema, for editors and CI")
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
            from sentinel.cli.run import run

            return run(args.config)
        if args.command == "check":
            from sentinel.cli.check import check

            return check(args.config, args.format)
        if args.command == "probe":
            from sentinel.cli.probe import probe_once

            return probe_once(args.url, args.timeout)
        if args.command in ("status", "ctl", "outbox"):  # a bad --api is a bad argument
            try:
                api = _api_url(args)
            except ConfigError as exc:
                print(f"sentinel {args.command}: {exc}", file=sys.stderr)
                return EXIT_USAGE
        if args.command == "status" and args.watch:
            from sentinel.cli.watch import watch_status

            return watch_status(api, _token(args))
        if args.command == "status":
            from sentinel.cli.status import show_status

            return show_status(api, as_json=args.json, token=_token(args))
        if args.command == "ctl":
            from sentinel.cli.status import send_override

            return send_override(api, args.action, args.target, _token(args))
        if args.command == "outbox":
            from sentinel.cli.outbox import run_outbox

            return run_outbox(args, lambda: api, lambda: _token(args))
        if args.command == "webhook":
            from sentinel.cli.outbox import send_test

            return send_test(args.url, args.secret, args.timeout)
        if args.command == "maglev":
            from sentinel.cli.maglev import run_maglev

            return run_maglev(args)
        if args.command == "demo":
            from sentinel.cli.demo import run_demo

            return run_demo()
        if args.command == "schema":
            from sentinel.cli.schema import print_schema

            return print_schema()
    except KeyboardInterrupt:
        return EXIT_FAIL
    return EXIT_USAGE


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
    """The API's base URL: --api, else from -c's api.listen (or the URL the instance
    wrote, when it listens on port 0). ConfigError when it is no http(s) URL (a bad
    argument: exit 2)."""
    if args.api:
        return api_base(str(args.api), "--api")
    if Path(args.config).exists():
        try:
            config = load_config(args.config)
        except ConfigError:
            return "http://127.0.0.1:9900"
        url_file = Path(config.state_dir) / URL_FILE
        if config.api.port == 0 and url_file.exists():
            return api_base(url_file.read_text().strip(), str(url_file))
        return f"http://{config.api.listen}"
    return "http://127.0.0.1:9900"


def api_base(url: str, given_by: str) -> str:
    """`url` checked as the API's base URL (`http(s)://host[:port][/prefix]`), without a
    trailing `/`; ConfigError naming `given_by` (the option or file it came from)."""
    expected = f"{given_by}: expected http://host:port or https://host:port, got {url!r}"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(None, f"{expected} ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.query \
            or parsed.fragment or not 0 < (parsed.port or 80) < 65536:
        raise ConfigError(None, expected)
    return url.rstrip("/")


__all__ = ["main"]
