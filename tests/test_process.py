"""`sentinel.process.run_command`: standard input, how much output it keeps, and the
sweep for processes that left the run's session."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from sentinel import process
from sentinel.process import EXEC_WAIT, MARK, OUTPUT_CAP, run_command
from tests.processes import alive


async def test_standard_input_reaches_the_command() -> None:
    """`stdin` is written to the command's standard input, then closed (EOF)."""
    outcome = await run_command(["cat"], time_limit=10.0, stdin=b"one\ntwo\n")
    assert (outcome.returncode, outcome.stdout) == (0, b"one\ntwo\n")


async def test_a_command_that_does_not_read_its_input_still_ends_normally() -> None:
    """A megabyte on the input of a command that exits without reading it is no error."""
    with trio.fail_after(10):
        outcome = await run_command(["true"], time_limit=10.0, stdin=b"x" * 1_000_000)
    assert outcome.returncode == 0


async def test_only_the_tail_of_the_output_is_kept_unless_asked() -> None:
    """By default the last 64 KiB are kept; `output_cap` keeps more (a listing to parse)."""
    argv = ["head", "-c", str(3 * OUTPUT_CAP), "/dev/zero"]
    assert len((await run_command(argv, time_limit=10.0)).stdout) == OUTPUT_CAP
    whole = await run_command(argv, time_limit=10.0, output_cap=4 * OUTPUT_CAP)
    assert len(whole.stdout) == 3 * OUTPUT_CAP


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, killed and reaped at its end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_the_sweep_kills_the_marked_and_looks_again_at_the_environment_less(
        started: list[subprocess.Popen[bytes]]) -> None:
    """Of the processes started after the run's first: one with the run's mark is
    killed; one that shows no environment and is alive (as one caught in the middle of
    an exec does) is counted to look at again, and left alone; a zombie (the run's own
    child before it is reaped) and a kernel thread are not."""
    marked = subprocess.Popen(["sleep", "30"], env={MARK: "test.1", "PATH": os.defpath})
    bare = subprocess.Popen(["sleep", "30"], env={})
    ended = subprocess.Popen(["true"])
    started += [marked, bare, ended]
    deadline = time.monotonic() + 10
    while alive(ended.pid):  # until it has exited, unreaped: a zombie
        assert time.monotonic() < deadline, "`true` did not exit"
        time.sleep(0.01)
    assert process._mid_exec(str(bare.pid))
    assert not process._mid_exec(str(ended.pid))
    assert not process._mid_exec("2")  # kthreadd
    killed, unsure = process._sweep("test.1", marked.pid)
    assert killed == 1
    assert unsure >= 1  # the bare one (and any other such process on the machine)
    assert marked.wait(10) == -signal.SIGKILL
    assert alive(bare.pid)


@pytest.mark.parametrize(("passes", "calls"), [
    # seen mid-exec twice, then found marked and killed, then nothing left
    ([(0, 1), (0, 1), (1, 0), (0, 0)], 4),
    # kills on every pass: SWEEPS passes, no more
    ([(1, 0)] * 10, process.SWEEPS),
])
async def test_the_sweep_goes_on_while_a_process_may_be_mid_exec(
        monkeypatch: pytest.MonkeyPatch, passes: list[tuple[int, int]], calls: int) -> None:
    """A process caught mid-exec shows no environment for a moment, and no test can
    make the kernel hold one there, so the passes are given here: the sweep looks again
    while one may be mid-exec, and again after a pass that killed, SWEEPS times."""
    given = iter(passes)
    made: list[str] = []

    def sweep(run: str, first: int) -> tuple[int, int]:
        made.append(run)
        return next(given)

    monkeypatch.setattr(process, "_sweep", sweep)
    await process._sweep_all("test.2", 1)
    assert len(made) == calls


async def test_the_sweep_gives_up_on_one_that_never_shows_an_environment(
        monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock) -> None:
    """A process that never shows an environment (started with none) is looked at
    until EXEC_WAIT has passed, then left."""
    monkeypatch.setattr(process, "_sweep", lambda run, first: (0, 1))
    start = trio.current_time()
    await process._sweep_all("test.3", 1)
    assert EXEC_WAIT <= trio.current_time() - start < EXEC_WAIT + 0.01
