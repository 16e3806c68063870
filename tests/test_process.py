"""`sentinel.process.run_command`: standard input and how much output it keeps."""

from __future__ import annotations

import trio

from sentinel.process import OUTPUT_CAP, run_command


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
