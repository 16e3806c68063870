"""Running an argv without a shell, bounded in time, killing its whole process group.

Shared by the script probe and the exec sink. The child leads its own
session (start_new_session), so its process group is the unit of cleanup:
on timeout or cancellation the whole group is SIGKILLed (a `sleep 30 &`
inside a script dies too, as keepalived does for MISC_CHECK), and after a
normal exit any stragglers are killed as well, since they would otherwise
hold our pipes open and pile up with every run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import trio

OUTPUT_CAP = 64 * 1024  # per stream; the tail is kept, where results and last errors sit
SHOWN = 200  # longest line quoted in an error text


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

    def describe_exit(self) -> str:
        """`exit 3: <last stderr line>`, or `killed by SIGTERM` for a signal."""
        code = self.returncode
        if code is None:
            return "timed out"
        if code < 0:
            try:
                text = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                text = f"killed by signal {-code}"
        else:
            text = f"exit {code}"
        lines = [ln.strip() for ln in self.stderr.decode("utf-8", errors="replace").splitlines()]
        last = next((ln for ln in reversed(lines) if ln), "")
        return f"{text}: {last[:SHOWN]}" if last else text


async def run_command(argv: Sequence[str], *, time_limit: float,
                      env: Mapping[str, str] | None = None) -> ProcessOutcome:
    """Run `argv` (no shell) for at most `time_limit` seconds, keeping the last 64 KiB
    of each output stream. Raises OSError when the program cannot be started."""
    proc = await trio.lowlevel.open_process(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, env=dict(env) if env is not None else None)
    stdout, stderr = bytearray(), bytearray()
    code: int | None = None
    try:
        with trio.move_on_after(time_limit):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, proc.stdout, stdout)
                nursery.start_soon(_drain, proc.stderr, stderr)
                code = await proc.wait()
                _kill_group(proc)  # stragglers would hold the pipes open until the limit
    finally:
        if code is None:  # timed out, failed or cancelled: nothing may outlive the run
            _kill_group(proc)
        with trio.CancelScope(shield=True):
            await proc.wait()  # reap: prompt after SIGKILL
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    await pipe.aclose()
    return ProcessOutcome(code, bytes(stdout), bytes(stderr))


def _kill_group(proc: trio.Process) -> None:
    """SIGKILL the process group `proc` leads, and `proc` itself if it left the group.

    After `proc` is reaped its PID stays reserved while other members of its
    group live, so killpg cannot hit an unrelated group then.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode is None:  # the leader may have moved itself to a new group
        proc.kill()


async def _drain(stream: trio.abc.ReceiveStream | None, tail: bytearray) -> None:
    """Read `stream` to EOF, keeping only its last OUTPUT_CAP bytes in `tail`."""
    if stream is None:
        return
    while chunk := await stream.receive_some(OUTPUT_CAP):
        tail += chunk
        if len(tail) > OUTPUT_CAP:
            del tail[:-OUTPUT_CAP]
