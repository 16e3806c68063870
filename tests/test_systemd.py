"""The systemd notify protocol against a real unix datagram socket standing in for systemd
(the process-level tests, with `sentinel run`, are in tests/e2e/test_systemd.py)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.systemd import Notifier, socket_address, watchdog_interval
from tests.notify import NotifyListener


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[tuple[NotifyListener, str]]:
    """A listener at a path, and the $NOTIFY_SOCKET value naming it."""
    path = str(tmp_path / "notify")
    with NotifyListener.bound(path) as listener:
        yield listener, path


def test_abstract_socket_name() -> None:
    """`@name` reaches a socket in the abstract namespace."""
    name = f"sentinel-test-{uuid.uuid4().hex}"
    with NotifyListener.bound("\0" + name) as listener:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("running")
        assert listener.messages() == ["READY=1\nSTATUS=running"]


@pytest.mark.parametrize(("value", "address"), [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@abc", "\0abc"),
    ("@", None),
    ("relative/path", None),
    ("vsock:2:1234", None),
])
def test_socket_address(value: str, address: str | None) -> None:
    """Paths and `@abstract` names are understood; anything else is refused."""
    assert socket_address(value) == address


@pytest.mark.parametrize(("usec", "pid", "interval"), [
    ("30000000", None, 15.0),  # WatchdogSec=30s: a ping every 15 s
    ("30000000", "4242", 15.0),  # WATCHDOG_PID names this process
    ("30000000", "4243", None),  # inherited from a parent: not ours
    ("0", None, None),
    ("-5", None, None),
    ("soon", None, None),
    (None, None, None),
])
def test_watchdog_interval(usec: str | None, pid: str | None, interval: float | None) -> None:
    """Half of WATCHDOG_USEC, only for the process WATCHDOG_PID names."""
    assert watchdog_interval(usec, pid, 4242) == interval


def test_environment_is_consumed(fake_systemd: tuple[NotifyListener, str]) -> None:
    """The variables are removed once read, so script probes and exec sinks do not inherit
    them; the watchdog is taken only with a socket to ping."""
    _, path = fake_systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7", "HOME": "/"}
    notifier = Notifier.from_environment(env, pid=7)
    assert (notifier.address, notifier.watchdog_every, env) == (path, 1.0, {"HOME": "/"})
    assert Notifier.from_environment({"WATCHDOG_USEC": "2000000"}).watchdog_every is None


def test_reload_brackets_with_monotonic_usec(fake_systemd: tuple[NotifyListener, str]) -> None:
    """RELOADING=1 carries CLOCK_MONOTONIC in microseconds (taken between the test's two
    readings of it); READY=1 ends the reload."""
    listener, path = fake_systemd
    notifier = Notifier(path)
    notifier.ready("running")
    before = monotonic_usec()
    notifier.reloading("reloading sentinel.yaml")
    after = monotonic_usec()
    notifier.reloaded("running")
    ready, reloading, done = listener.messages()
    assert ready == done == "READY=1\nSTATUS=running"
    first, usec, status = reloading.split("\n")
    assert (first, status) == ("RELOADING=1", "STATUS=reloading sentinel.yaml")
    assert usec.startswith("MONOTONIC_USEC=")
    assert before <= int(usec.removeprefix("MONOTONIC_USEC=")) <= after


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd reads it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_no_reload_messages_before_ready(fake_systemd: tuple[NotifyListener, str]) -> None:
    """A reload during start-up only updates STATUS: READY=1 still waits for start-up."""
    listener, path = fake_systemd
    notifier = Notifier(path)
    notifier.reloading("reloading")
    notifier.reloaded("starting")
    notifier.stopping("stopping")
    assert listener.messages() == ["STATUS=starting", "STOPPING=1\nSTATUS=stopping"]


def test_lost_socket_is_logged_once_and_never_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With systemd's socket gone, sends log one warning and carry on."""
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="sentinel.systemd"):
        for _ in range(3):
            notifier.send("WATCHDOG=1")
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot notify systemd at {tmp_path / 'gone'}: No such file or directory"]


async def test_watchdog_pings_every_half_period(
        fake_systemd: tuple[NotifyListener, str], autojump_clock: trio.testing.MockClock) -> None:
    """WatchdogSec=2s: pings at 0, 1, 2 and 3 s of virtual time in 3.5 s (looked for a
    quarter second after each, and half a second apart)."""
    listener, path = fake_systemd
    notifier = Notifier(path, watchdog=1.0)
    seen: list[tuple[float, str]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.watchdog)
        await trio.sleep(0.25)
        for _ in range(7):  # at 0.25, 0.75, ...: never at a ping's own instant
            seen += [(trio.current_time() - 0.25, m) for m in listener.messages()]
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert seen == [(0.0, "WATCHDOG=1"), (1.0, "WATCHDOG=1"), (2.0, "WATCHDOG=1"),
                    (3.0, "WATCHDOG=1")]
