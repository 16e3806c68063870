"""The script probe, running real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from sentinel.config.model import ProbeConfig, ScriptSpec, Timing
from sentinel.model import FailureKind
from sentinel.probes.base import Target
from sentinel.probes.registry import make_probe
from sentinel.probes.script import ScriptProbe, parse_weight
from tests.processes import alive, wait_gone

TARGET = Target(service="web", backend="web1", host="10.0.0.11", port=8080)
Script = Callable[[str], Path]


@pytest.fixture
def script(tmp_path: Path) -> Script:
    """`script(body) -> path`: an executable /bin/sh script in tmp_path."""
    count = 0

    def write(body: str) -> Path:
        nonlocal count
        count += 1
        path = tmp_path / f"check{count}.sh"
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    return write


def probe(*argv: str | Path, timeout: float = 2.0, service_env: bool = True) -> ScriptProbe:
    """A script probe for `argv`."""
    config = ProbeConfig(
        type="script",
        timing=Timing(timeout=timeout),
        spec=ScriptSpec(command=tuple(str(a) for a in argv)),
    )
    return ScriptProbe(config, service_env=service_env)


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """PIDs a test's scripts reported; any still running `sleep` are killed after the test."""
    found: list[int] = []
    yield found
    for pid in found:
        # Only our own sleepers: a PID that died may have been reused since.
        with contextlib.suppress(OSError):
            if alive(pid) and b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


async def test_exit_zero_is_ok(script: Script) -> None:
    """Exit 0 is healthy with no weight."""
    result = await probe(script("exit 0\n")).check(TARGET)
    assert result.ok, result.detail
    assert result.weight is None


async def test_exit_code_with_last_stderr_line(script: Script) -> None:
    """A non-zero exit is an EXIT failure quoting the last stderr line."""
    path = script("echo starting >&2\necho 'db unreachable' >&2\necho noise\nexit 3\n")
    result = await probe(path).check(TARGET)
    assert result.failure is FailureKind.EXIT
    assert result.detail == "exit 3: db unreachable"


async def test_killed_by_signal(script: Script) -> None:
    """Death by a signal names the signal."""
    result = await probe(script("kill -TERM $$\n")).check(TARGET)
    assert result.failure is FailureKind.EXIT
    assert result.detail == "killed by SIGTERM"


async def test_weight_line(script: Script) -> None:
    """A `weight=N` line on stdout sets the result's weight."""
    result = await probe(script("echo checking\necho weight=3\n")).check(TARGET)
    assert result.ok, result.detail
    assert result.weight == 3


async def test_invalid_weight_ignored(script: Script) -> None:
    """An invalid weight is ignored, said so in the detail, and the check still passes."""
    result = await probe(script("echo weight=lots\n")).check(TARGET)
    assert result.ok
    assert result.weight is None
    assert result.detail == "ignored weight='lots': not an integer 0..1000000"


def test_parse_weight_bounds() -> None:
    """Weights 0..1000000 are accepted, the last line wins, anything else is ignored."""
    assert parse_weight(b"weight=0\n") == (0, "")
    assert parse_weight(b"weight=5\nweight=1000000\n") == (1_000_000, "")
    assert parse_weight(b"weight=1000001\n")[0] is None
    assert parse_weight(b"weight=-1\n")[0] is None
    assert parse_weight(b"no weight here\n") == (None, "")


async def test_service_env(script: Script, tmp_path: Path) -> None:
    """The script sees SENTINEL_SERVICE/BACKEND/HOST/PORT and sentinel's own environment."""
    out = tmp_path / "env.txt"
    path = script(
        'echo "$SENTINEL_SERVICE $SENTINEL_BACKEND $SENTINEL_HOST $SENTINEL_PORT" > "$1"\n'
        'echo "$HOME" >> "$1"\n'
    )
    result = await probe(path, out).check(TARGET)
    assert result.ok, result.detail
    assert out.read_text().splitlines() == ["web web1 10.0.0.11 8080", os.environ["HOME"]]


async def test_service_env_off(script: Script, tmp_path: Path) -> None:
    """With service_env=False the SENTINEL_* variables are not set."""
    out = tmp_path / "env.txt"
    path = script('echo "[${SENTINEL_SERVICE-unset}]" > "$1"\n')
    result = await probe(path, out, service_env=False).check(TARGET)
    assert result.ok, result.detail
    assert out.read_text() == "[unset]\n"


async def test_argv_not_shell(script: Script, tmp_path: Path) -> None:
    """Arguments reach the command verbatim; nothing is run through a shell."""
    out = tmp_path / "args.txt"
    path = script('printf "%s\\n" "$2" > "$1"\n')
    result = await probe(path, out, "$(touch pwned); *").check(TARGET)
    assert result.ok, result.detail
    assert out.read_text() == "$(touch pwned); *\n"
    assert not (Path.cwd() / "pwned").exists()


async def test_timeout_kills_process_group(script: Script, tmp_path: Path, pids: list[int]) -> None:
    """On timeout the script and the children it spawned are all killed, and the check
    ends then, not when they would (in 10 minutes)."""
    pidfile = tmp_path / "pids"
    path = script(
        'sleep 600 & bg=$!\nsleep 600 & fg=$!\necho "$$ $bg $fg" > "$1.tmp"\n'
        'mv "$1.tmp" "$1"\nwait\n'
    )
    with trio.fail_after(30):
        result = await probe(path, pidfile, timeout=0.5).check(TARGET)
    pids.extend(int(p) for p in pidfile.read_text().split())
    assert result.failure is FailureKind.TIMEOUT
    assert result.detail == "no exit within 500ms; process group killed"
    assert len(pids) == 3
    assert await wait_gone(pids) == []


async def test_stragglers_killed_after_exit(
    script: Script, tmp_path: Path, pids: list[int]
) -> None:
    """A script that exits 0 leaving a background child passes when it exits, not when the
    child would (in 10 minutes, past the 60 s timeout); the child is killed."""
    pidfile = tmp_path / "pids"
    path = script('sleep 600 &\necho $! > "$1"\necho weight=7\nexit 0\n')
    with trio.fail_after(30):
        result = await probe(path, pidfile, timeout=60.0).check(TARGET)
    pids.append(int(pidfile.read_text()))
    assert result.ok, result.detail
    assert result.weight == 7
    assert await wait_gone(pids) == []


async def test_missing_command() -> None:
    """A command that cannot be started is an ERROR result, not an exception."""
    result = await probe("/nonexistent/check").check(TARGET)
    assert result.failure is FailureKind.ERROR
    assert result.detail.startswith("cannot run /nonexistent/check: ")


async def test_large_output_capped(script: Script) -> None:
    """Megabytes of output neither block the script nor hide the final weight line."""
    path = script("head -c 3000000 /dev/zero | tr '\\0' x\necho\necho weight=9\n")
    result = await probe(path).check(TARGET)
    assert result.ok, result.detail
    assert result.weight == 9


async def test_cancellation_kills_and_propagates(
    script: Script, tmp_path: Path, pids: list[int]
) -> None:
    """Cancelling a running check kills the group and lets Cancelled propagate."""
    pidfile = tmp_path / "pids"
    path = script('echo $$ > "$1.tmp"\nmv "$1.tmp" "$1"\nexec sleep 30\n')
    with trio.CancelScope() as scope:  # cancelled once the script runs (wrote its pid)
        async with trio.open_nursery() as nursery:

            async def cancel_once_running() -> None:
                while not pidfile.exists():  # noqa: ASYNC110 - a file another process writes
                    await trio.sleep(0.01)
                scope.cancel()

            nursery.start_soon(cancel_once_running)
            await probe(path, pidfile, timeout=5.0).check(TARGET)
            pytest.fail("check returned despite cancellation")
    assert scope.cancelled_caught
    pids.append(int(pidfile.read_text()))
    assert await wait_gone(pids) == []


def test_make_probe_script() -> None:
    """The registry builds a ScriptProbe for `type: script`."""
    config = ProbeConfig(type="script", spec=ScriptSpec(command=("true",)))
    assert isinstance(make_probe(config), ScriptProbe)


@pytest.mark.parametrize(("ending", "limit"), [("exit 0", 60.0), ("exec sleep 600", 0.5)])
async def test_children_that_left_the_session_are_killed(
        script: Script, tmp_path: Path, pids: list[int], ending: str, limit: float) -> None:
    """Children that called setsid() (out of the script's process group and session),
    holding the output pipe or not, are killed when the script exits and on timeout; the
    check ends when the script does (or at its timeout), not when they would (in 10
    minutes, past the longer timeout)."""
    pidfile = tmp_path / "pids"
    path = script('setsid sleep 600 &\necho $! > "$1.tmp"\n'
                  'setsid sleep 600 >/dev/null 2>&1 </dev/null &\necho $! >> "$1.tmp"\n'
                  f'mv "$1.tmp" "$1"\n{ending}\n')
    with trio.fail_after(30):
        result = await probe(path, pidfile, timeout=limit).check(TARGET)
    pids.extend(int(p) for p in pidfile.read_text().split())
    assert len(pids) == 2
    assert result.ok is (ending == "exit 0")
    assert await wait_gone(pids) == []
