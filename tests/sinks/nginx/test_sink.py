"""The nginx sink: options, one file for every service, test/reload/verify, restore, debounce."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.config.node import load_yaml
from sentinel.errors import ConfigError, SinkRejected, SinkUnavailable
from sentinel.model import State
from sentinel.process import ProcessOutcome
from sentinel.sinks.base import Update
from sentinel.sinks.nginx.options import NginxOptions, parse_binding, parse_options
from sentinel.sinks.nginx.render import UpstreamOptions, body_of, render_file, render_upstream
from sentinel.sinks.nginx.sink import NginxSink
from tests.sinks.views import backend, view

WEB = view("web", backend("web1", 1), backend("web2", 2))
API = view("api", backend("api1", 3))
FAIL_TEST = ("sh", "-c", "echo 'nginx: [emerg] unknown directive \"bogus\"' >&2; exit 1")


def options(path: Path, **changes: object) -> NginxOptions:
    """Options writing `path` with harmless commands, no verification, no debounce."""
    base = NginxOptions(file=str(path), test=("true",), reload=("true",), pid_file=None,
                        min_reload_interval=0.0)
    return replace(base, **changes)  # type: ignore[arg-type]


class Commands:
    """A command runner that records (trio time, argv) and fails the argv in `failing`."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, tuple[str, ...]]] = []
        self.failing: set[str] = set()

    async def __call__(self, argv: Sequence[str], *, time_limit: float) -> ProcessOutcome:
        """Record the call; exit 1 for a failing command."""
        self.calls.append((trio.current_time(), tuple(argv)))
        return ProcessOutcome(1 if argv[0] in self.failing else 0, b"", b"failed on purpose")

    def times(self, program: str) -> list[float]:
        """When `program` ran."""
        return [t for t, argv in self.calls if argv[0] == program]


def parse(text: str, fn: object = parse_options) -> object:
    """Parse a YAML mapping with `fn`."""
    assert callable(fn)
    return fn(load_yaml(text, "s.yaml"))


# -- options --------------------------------------------------------------------------


def test_options_default_to_nginx_commands_with_verification() -> None:
    """Only `file` is required; test/reload default to nginx -t / -s reload, verified."""
    got = parse("file: /tmp/x.conf")
    assert got == NginxOptions(file="/tmp/x.conf")
    assert parse("{file: x, verify: false, context: stream, mode: remove, "
                 "min_reload_interval: 0}") == NginxOptions(
        file="x", pid_file=None, context="stream", mode="remove", min_reload_interval=0.0)


@pytest.mark.parametrize(("text", "message"), [
    ("{file: x, mode: drop}", "mode: expected one of down, remove; got 'drop'"),
    ("{file: x, context: mail}", "context: expected one of http, stream; got 'mail'"),
    ("{file: x, test: /no/such/nginx}", "test: command not found"),
    ("{mode: down}", "an nginx sink needs `file`"),
    ("{file: x, reload_cmd: x}", "unknown key 'reload_cmd'"),
])
def test_bad_options_are_config_errors(text: str, message: str) -> None:
    """Bad sink options are refused with the key path."""
    with pytest.raises(ConfigError, match=message):
        parse(text)


def test_a_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    """`file` naming a directory is refused at the key: nginx's upstreams could never be
    written there."""
    with pytest.raises(ConfigError) as caught:
        parse(f"{{file: '{tmp_path}', test: 'true', reload: 'true'}}")
    assert str(caught.value) == "s.yaml:1:8: file: is a directory"


def test_binding_passes_upstream_params_and_directives() -> None:
    """A binding names the upstream and passes server params and block directives through."""
    got = parse('{upstream: web_pool, params: "max_fails=0  max_conns=100", '
                'directives: [least_conn, "keepalive 16"]}', parse_binding)
    assert got == UpstreamOptions(name="web_pool", params=("max_fails=0", "max_conns=100"),
                                  directives=("least_conn", "keepalive 16"))


@pytest.mark.parametrize(("text", "message"), [
    ('{params: "max_fails=1; include /etc/passwd"}', "params: 'max_fails=1;' is not a plain"),
    ("{upstream: 'a b'}", "upstream: not a valid nginx upstream name"),
    ("{directives: ['hash $x {']}", r"directives\[0\]: '\{' is not a plain"),
])
def test_bad_bindings_are_config_errors(text: str, message: str) -> None:
    """Anything that could break out of a server line or the block is refused."""
    with pytest.raises(ConfigError, match=message):
        parse(text, parse_binding)


# -- applying -------------------------------------------------------------------------


async def test_every_service_lands_in_the_one_file(tmp_path: Path) -> None:
    """Each update renders all services known so far, in name order, bumping the generation."""
    path = tmp_path / "up.conf"
    sink = NginxSink("edge", options(path))
    await sink.apply(Update(WEB))
    await sink.apply(Update(API, options=UpstreamOptions(params=("max_fails=0",))))
    text = path.read_text()
    assert "generation 2" in text
    assert body_of(text) == (render_upstream(API, params=("max_fails=0",)) + "\n"
                             + render_upstream(WEB))


async def test_failed_test_command_restores_the_previous_file(tmp_path: Path) -> None:
    """When `test` fails the old file is back byte for byte and the error quotes nginx."""
    path = tmp_path / "up.conf"
    sink = NginxSink("edge", options(path))
    await sink.apply(Update(WEB))
    before = path.read_bytes()
    broken = NginxSink("edge", options(path, test=FAIL_TEST))
    with pytest.raises(SinkRejected, match=r'exit 1: nginx: \[emerg\] unknown directive'):
        await broken.apply(Update(view("web", backend("web1", 1, State.DOWN))))
    assert path.read_bytes() == before


async def test_a_first_file_that_fails_is_removed_again(tmp_path: Path) -> None:
    """With no previous file, a failed apply leaves none behind."""
    path = tmp_path / "up.conf"
    with pytest.raises(SinkRejected):
        await NginxSink("edge", options(path, test=FAIL_TEST)).apply(Update(WEB))
    assert not path.exists()


async def test_failed_reload_restores_and_reports_unavailable(tmp_path: Path) -> None:
    """A reload command that fails (nginx not running) restores the file."""
    path = tmp_path / "up.conf"
    path.write_text("# the old file\n")
    commands = Commands()
    commands.failing.add("reload-nginx")
    sink = NginxSink("edge", options(path, reload=("reload-nginx",)), run=commands)
    with pytest.raises(SinkUnavailable, match="reload command failed"):
        await sink.apply(Update(WEB))
    assert path.read_text() == "# the old file\n"


async def test_unchanged_render_runs_no_command(tmp_path: Path) -> None:
    """A view that renders the same (a weight nginx does not publish) costs no reload."""
    commands = Commands()
    sink = NginxSink("edge", options(tmp_path / "up.conf"), run=commands)
    await sink.apply(Update(WEB))
    ramped = view("web", backend("web1", 1, weight=1, configured=1), backend("web2", 2))
    await sink.apply(Update(ramped))
    assert [argv[0] for _, argv in commands.calls] == ["true", "true"]


async def test_a_hand_edited_file_is_overwritten_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An edit by hand is logged and replaced on the next apply."""
    path = tmp_path / "up.conf"
    sink = NginxSink("edge", options(path))
    await sink.apply(Update(WEB))
    path.write_text(path.read_text().replace("weight=1", "weight=9"))
    with caplog.at_level(logging.WARNING, "sentinel.sinks.nginx"):
        await sink.apply(Update(view("web", backend("web1", 1, State.DOWN), backend("web2", 2))))
    assert "was changed by hand; overwriting it" in caplog.text
    assert body_of(path.read_text()) is not None


async def test_blocks_from_an_earlier_run_are_kept_until_their_service_reports(
        tmp_path: Path) -> None:
    """After a restart, blocks of configured services not yet applied stay in the file;
    blocks of services no longer configured go."""
    path = tmp_path / "up.conf"
    old_blocks = [render_upstream(API), render_upstream(view("gone", backend("g", 9))),
                  render_upstream(WEB)]
    path.write_text(render_file(["\n".join(old_blocks)], sink="edge", generation=41))
    sink = NginxSink("edge", options(path))
    sink.bind(frozenset({"web", "api"}))
    down = view("web", backend("web1", 1, State.DOWN), backend("web2", 2))
    await sink.apply(Update(down))
    text = path.read_text()
    assert "generation 42" in text
    assert body_of(text) == render_upstream(API) + "\n" + render_upstream(down)


async def test_reloads_are_debounced_and_the_latest_view_wins(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """At most one reload per min_reload_interval; each waits and renders the newest views."""
    commands = Commands()
    path = tmp_path / "up.conf"
    sink = NginxSink("edge", options(path, reload=("reload",), min_reload_interval=1.0),
                     run=commands)
    clock_start = trio.current_time()
    await sink.apply(Update(WEB))
    await sink.apply(Update(API))
    latest = view("web", backend("web1", 1, State.DOWN), backend("web2", 2))
    await sink.apply(Update(latest))
    assert [t - clock_start for t in commands.times("reload")] == [0.0, 1.0, 2.0]
    assert body_of(path.read_text()) == render_upstream(API) + "\n" + render_upstream(latest)


# -- verifying the reload against real processes --------------------------------------

MASTER = """
import signal, subprocess, sys, time
children = [subprocess.Popen(["sleep", "60"])]
def hup(*_):
    if sys.argv[1] == "reloads":
        children.append(subprocess.Popen(["sleep", "60"]))
        print("forked", children[-1].pid, flush=True)
signal.signal(signal.SIGHUP, hup)
open(sys.argv[2], "w").write("%d\\n" % __import__("os").getpid())
print("ready", children[0].pid, flush=True)
while True:
    time.sleep(1)
"""


@dataclass
class Master:
    """A fake nginx master: its pid file, its PID, and the lines it prints (`ready
    CHILD` once it runs, `forked CHILD` for each worker a SIGHUP made it fork)."""

    pid_file: Path
    pid: int
    stdout: trio.abc.ReceiveStream
    buffer: bytes = b""

    async def line(self) -> str:
        """The next line it printed (waiting for it)."""
        while b"\n" not in self.buffer:
            data = await self.stdout.receive_some()
            assert data, "the master exited"
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


@contextlib.asynccontextmanager
async def fake_master(tmp_path: Path, behaviour: str) -> AsyncIterator[Master]:
    """A process that, like an nginx master, forks a new child on SIGHUP ("reloads") or
    keeps its children ("refuses"), once its pid file is written and its first child runs;
    killed with its group."""
    pid_file = tmp_path / "master.pid"
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", MASTER, behaviour, str(pid_file)], start_new_session=True,
        stdout=subprocess.PIPE)
    assert proc.stdout is not None
    master = Master(pid_file, proc.pid, proc.stdout)
    try:
        with trio.fail_after(5):
            assert (await master.line()).startswith("ready ")
        yield master
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await proc.wait()
            await proc.stdout.aclose()


async def test_a_reload_that_forks_new_workers_is_verified(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """New children of the master after the reload count as a configuration loaded: the
    apply succeeds and logs the reload, the new file stays, and a new worker was forked."""
    caplog.set_level(logging.INFO, logger="sentinel.sinks.nginx")
    path = tmp_path / "up.conf"
    async with fake_master(tmp_path, "reloads") as master:
        sink = NginxSink("edge", options(path, pid_file=str(master.pid_file),
                                         reload=("kill", "-HUP", str(master.pid))))
        await sink.apply(Update(WEB))
        with trio.fail_after(5):
            forked = await master.line()
    assert forked.startswith("forked ")
    assert body_of(path.read_text()) == render_upstream(WEB)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"edge: nginx reloaded {path}, generation 1")]


async def test_a_reload_nginx_ignored_restores_the_file(tmp_path: Path) -> None:
    """A master that keeps its old workers (nginx's answer to a config it cannot load,
    with exit 0 from `nginx -s reload`) fails the apply and restores the file."""
    path = tmp_path / "up.conf"
    async with fake_master(tmp_path, "refuses") as master:
        sink = NginxSink("edge", options(path, pid_file=str(master.pid_file),
                                         verify_timeout=0.5,
                                         reload=("kill", "-HUP", str(master.pid))))
        with pytest.raises(SinkRejected, match="nginx kept its old configuration"):
            await sink.apply(Update(WEB))
    assert not path.exists()


async def test_a_missing_pid_file_is_a_clear_error(tmp_path: Path) -> None:
    """Without a running master the apply fails before any reload, naming pid_file."""
    sink = NginxSink("edge", options(tmp_path / "up.conf", pid_file=str(tmp_path / "no.pid")))
    with pytest.raises(SinkUnavailable, match=r"no running nginx master in .*no\.pid"):
        await sink.apply(Update(WEB))


async def test_a_service_removed_from_the_config_leaves_the_file(tmp_path: Path) -> None:
    """Once a reload drops a service from the config (or unbinds it from this sink), the
    next render leaves its block out."""
    path = tmp_path / "up.conf"
    sink = NginxSink("edge", options(path))
    sink.bind(frozenset({"web", "api"}))
    await sink.apply(Update(WEB))
    await sink.apply(Update(API))
    sink.bind(frozenset({"web"}))
    down = view("web", backend("web1", 1, State.DOWN), backend("web2", 2))
    await sink.apply(Update(down))
    assert body_of(path.read_text()) == render_upstream(down)
