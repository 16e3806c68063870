"""Running an argv without a shell, bounded in time, killing its whole process group.

Shared by the script probe and the exec sink: the child leads its own session
(start_new_session), so on timeout or cancellation `killpg` takes its
children with it, as keepalived's MISC_CHECK does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import trio

OUTPUT_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """How a command ended. `returncode` is None when it was killed on timeout."""

    returncode: int | None
    stdout: bytes
    stderr: bytes

    @property
    def timed_out(self) -> bool:
        """True when the command was killed for running too long."""
        return self.returncode is None

    def last_line(self) -> str:
        """The last non-empty line of stderr, else of stdout (for error texts)."""
        for stream in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in stream.decode(errors="replace").splitlines()]
            lines = [ln for ln in lines if ln]
            if lines:
                return lines[-1][:200]
        return ""


async def run_command(argv: Sequence[str], *, time_limit: float,
                      env: Mapping[str, str] | None = None) -> ProcessOutcome:
    """Run `argv` (no shell) for at most `time_limit` seconds; output capped at 64 KiB each.

    Raises OSError when the program cannot be started.
    """
    proc = await trio.lowlevel.open_process(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, env=dict(env) if env is not None else None)
    out, err = bytearray(), bytearray()
    finished = False
    try:
        with trio.move_on_after(time_limit):
            async with trio.open_nursery() as nursery:
                assert proc.stdout is not None
                assert proc.stderr is not None
                nursery.start_soon(_drain, proc.stdout, out)
                nursery.start_soon(_drain, proc.stderr, err)
                await proc.wait()
                finished = True
                # Output still open after exit means children hold it: give them the timeout.
    finally:
        _kill_group(proc.pid)
        with trio.CancelScope(shield=True):
            await proc.wait()
    returncode = proc.returncode if finished else None
    return ProcessOutcome(returncode, bytes(out), bytes(err))


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    async with stream:
        while chunk := await stream.receive_some(16384):
            if len(into) < OUTPUT_LIMIT:
                into.extend(chunk[: OUTPUT_LIMIT - len(into)])


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
