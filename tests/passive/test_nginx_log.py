"""nginx error-log lines to signals (pure), and LogTail across rotation (real files, no
clock): appended lines, partial lines, rename rotation, copytruncate, a late file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.config.model import BackendConfig, ServiceConfig
from sentinel.passive.base import BackendIndex, Signal
from sentinel.passive.nginx_log import LogFailure, LogTail, follow, parse_line, signals

HEAD = "2026/11/24 16:00:00 [error] 812#812: *7 "
CLIENT = ', client: 127.0.0.1, server: , request: "GET / HTTP/1.1"'
LINES = {
    "refused": (f"{HEAD}connect() failed (111: Connection refused) while connecting to "
                f'upstream{CLIENT}, upstream: "http://127.0.0.1:8081/", host: "x"',
                LogFailure("127.0.0.1:8081", "connect() failed (111: Connection refused)",
                           group=False)),
    "timed-out": (f"{HEAD}upstream timed out (110: Connection timed out) while reading "
                  f'response header from upstream{CLIENT}, upstream: "http://[::1]:8082/a/b"',
                  LogFailure("[::1]:8082", "upstream timed out", group=False)),
    "no-live": (f"{HEAD}no live upstreams while connecting to upstream{CLIENT}, "
                'upstream: "http://web/", host: "x"',
                LogFailure("web", "no live upstreams", group=True)),
    "closed": (f"{HEAD}upstream prematurely closed connection while reading response header "
               f'from upstream{CLIENT}, upstream: "http://127.0.0.1:8081/"',
               LogFailure("127.0.0.1:8081", "upstream prematurely closed connection",
                          group=False)),
    "reset": (f"{HEAD}recv() failed (104: Connection reset by peer) while reading response "
              f'header from upstream{CLIENT}, upstream: "http://127.0.0.1:8081/"',
              LogFailure("127.0.0.1:8081", "recv() failed (104: Connection reset by peer)",
                         group=False)),
    "stream": (f"{HEAD}connect() failed (111: Connection refused) while connecting to "
               'upstream, client: 127.0.0.1, server: 127.0.0.1:9000, upstream: '
               '"127.0.0.1:8081", bytes from/to client:0/0, bytes from/to upstream:0/0',
               LogFailure("127.0.0.1:8081", "connect() failed (111: Connection refused)",
                          group=False)),
}


def index() -> BackendIndex:
    """web: b1 at 127.0.0.1:8081, b2 at [::1]:8082; api also uses 127.0.0.1:8081."""
    def svc(name: str, *backends: tuple[str, str, int]) -> ServiceConfig:
        return ServiceConfig(name, tuple(BackendConfig(n, f"{h}:{p}", h, p)
                                         for n, h, p in backends))
    return BackendIndex([svc("web", ("b1", "127.0.0.1", 8081), ("b2", "::1", 8082)),
                         svc("api", ("a1", "127.0.0.1", 8081))])


@pytest.mark.parametrize("name", LINES)
def test_parse_line(name: str) -> None:
    """Each failure nginx logs for an upstream is found with its address and error."""
    line, expected = LINES[name]
    assert parse_line(line) == expected


@pytest.mark.parametrize("line", [
    "2026/11/24 16:00:00 [notice] 812#812: signal process started",
    f"{HEAD}open() \"/srv/x\" failed (2: No such file or directory){CLIENT}",
    f"{HEAD}client intended to send too large body{CLIENT}, upstream: \"http://1.2.3.4:80/\"",
    "", "garbage",
])
def test_other_lines_are_ignored(line: str) -> None:
    """Lines that are not an upstream failure give nothing."""
    assert parse_line(line) is None


def test_signals_map_addresses_and_upstream_groups_to_backends() -> None:
    """An address maps to every backend configured at it (across services); `no live
    upstreams` to every backend of the service; an unknown address to nothing."""
    idx = index()
    assert signals(LINES["refused"][0], idx) == [
        Signal("web", "b1", "nginx error log", "connect() failed (111: Connection refused)"),
        Signal("api", "a1", "nginx error log", "connect() failed (111: Connection refused)")]
    assert [(s.service, s.backend) for s in signals(LINES["timed-out"][0], idx)] == [
        ("web", "b2")]
    assert [(s.service, s.backend) for s in signals(LINES["no-live"][0], idx)] == [
        ("web", "b1"), ("web", "b2")]
    assert signals(LINES["refused"][0].replace("8081", "9999"), idx) == []
    assert signals(LINES["timed-out"][0], idx)[0].reason == (
        "passive: nginx error log: upstream timed out")


def test_backend_index_maps_upstream_names_of_bindings() -> None:
    """An nginx binding's own upstream name maps to its service."""
    svc = ServiceConfig("web", (BackendConfig("b1", "127.0.0.1:80", "127.0.0.1", 80),))
    assert BackendIndex([svc], {"edge_web": "web"}).upstream("edge_web") == [("web", "b1")]


# -- following the file -------------------------------------------------------------------

def append(path: Path, text: str) -> None:
    """Append as nginx does (O_APPEND)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def test_existing_file_is_followed_from_its_end_and_partial_lines_wait(tmp_path: Path) -> None:
    """Old lines are not news; a line is returned once its newline is written."""
    log = tmp_path / "error.log"
    log.write_text("old\n")
    tail = LogTail(str(log))
    assert tail.poll() == []
    append(log, "new 1\nnew ")
    assert tail.poll() == ["new 1"]
    append(log, "2\n")
    assert tail.poll() == ["new 2"]
    tail.close()


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(
        tmp_path: Path) -> None:
    """logrotate's default (rename, nginx reopens on USR1): nothing is lost, in order."""
    log = tmp_path / "error.log"
    log.write_text("")
    tail = LogTail(str(log))
    append(log, "a\n")
    os.rename(log, tmp_path / "error.log.1")
    append(tmp_path / "error.log.1", "b\nlast without newline")
    assert tail.poll() == ["a", "b"]  # not recreated yet: the old file goes on
    append(log, "c\n")
    assert tail.poll() == ["last without newline", "c"]
    append(log, "d\n")
    assert tail.poll() == ["d"]
    tail.close()


def test_copytruncate_starts_again_from_the_top(tmp_path: Path) -> None:
    """logrotate's copytruncate: the file shrinks under the reader; new lines still come."""
    log = tmp_path / "error.log"
    log.write_text("")
    tail = LogTail(str(log))
    append(log, "a long line before the rotation\n")
    assert tail.poll() == ["a long line before the rotation"]
    os.truncate(log, 0)
    append(log, "after\n")
    assert tail.poll() == ["after"]
    tail.close()


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path: Path) -> None:
    """No file yet (nginx not started): once it exists every line is new."""
    log = tmp_path / "error.log"
    tail = LogTail(str(log))
    assert tail.poll() == []
    append(log, "first\n")
    assert tail.poll() == ["first"]
    tail.close()


async def test_follow_reports_within_one_poll(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """follow polls every 50 ms: a failure line is reported by the next poll."""
    log = tmp_path / "error.log"
    log.write_text("")
    got: list[tuple[float, Signal]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: follow(
            str(log), index(), lambda s: got.append((trio.current_time(), s)),
            task_status=task_status))
        await trio.sleep(0.01)
        written = trio.current_time()
        append(log, LINES["timed-out"][0] + "\n")
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    [(at, signal)] = got
    assert (signal.service, signal.backend) == ("web", "b2")
    assert at - written <= 0.05
