"""Running an argv without a shell, bounded in time, killing everything it started.

Every command sentinel runs goes through `run_command`: the script probe, the
exec sink, nginx's test and reload, ipvsadm. The child leads its own
session (start_new_session), so its process group is the unit of cleanup:
on timeout or cancellation the whole group is SIGKILLed (a `sleep 30 &`
inside a script dies too, as keepalived does for MISC_CHECK), and after a
normal exit any stragglers are killed as well, since they would otherwise
hold our pipes open and pile up with every run.

A descendant that calls setsid() (a daemonising helper, `setsid cmd &`)
leaves that group and session, and once the script exits it is not even a
descendant any more. So every run marks its environment (SENTINEL_RUN=ID,
inherited by everything it starts, as Jenkins' process-tree killer marks
builds) and, when the group is killed, a sweep of /proc SIGKILLs any
process carrying the mark. Only processes started after the child are read
(PIDs grow between wraps of the PID space), so a sweep costs a listing of
/proc and a read of a few environments. A process caught in the middle of an
exec shows no environment for a moment (the kernel has switched to the new
image and not yet laid out its arguments), so such a process, neither a
zombie nor a kernel thread, is looked at again for up to EXEC_WAIT: swept
once, a `setsid sleep 600 &` whose exec of `sleep` was under way survived
about one run in a thousand on a loaded 2-core machine. A cgroup would hold
them without the sweep, but needs a delegated cgroup v2 subtree that
sentinel cannot count on; a process that clears its environment escapes the
mark.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import trio

OUTPUT_CAP = 64 * 1024  # per stream; the tail is kept, where results and last errors sit
SHOWN = 200  # longest line quoted in an error text
SHOWN_LINES = 3  # most lines quoted when several say why
MARK = "SENTINEL_RUN"  # environment variable naming the run every process it starts is of
SWEEPS = 3  # passes over /proc: a marked process may fork while it is being killed
EXEC_WAIT = 0.05  # seconds a sweep looks again at processes seen mid-exec (see above)
EXEC_POLL = 0.002  # ...this far apart
_PF_KTHREAD = 0x00200000  # /proc/PID/stat flags: a kernel thread (it has no environment)
_runs = itertools.count(1)


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

    def describe_exit(self, why: re.Pattern[str] | None = None) -> str:
        """`exit 3: <last stderr line>`, or `killed by SIGTERM` for a signal. With `why`,
        the stderr lines it matches are quoted instead (joined by "; "), when there are
        any: a program's last line is often a summary ("test failed") and the reason
        came before it."""
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
        reasons = [ln[:SHOWN] for ln in lines if why is not None and why.search(ln)]
        quoted = "; ".join(reasons[:SHOWN_LINES]) or next(
            (ln[:SHOWN] for ln in reversed(lines) if ln), "")
        return f"{text}: {quoted}" if quoted else text


async def run_command(argv: Sequence[str], *, time_limit: float,
                      env: Mapping[str, str] | None = None, stdin: bytes = b"",
                      output_cap: int = OUTPUT_CAP) -> ProcessOutcome:
    """Run `argv` (no shell) for at most `time_limit` seconds, with `stdin` as its
    standard input, keeping the last `output_cap` bytes of each output stream (the
    default, 64 KiB, holds a script's verdict; a listing to parse wants it whole).
    Raises OSError when the program cannot be started."""
    run = f"{os.getpid()}.{next(_runs)}"
    marked = dict(os.environ if env is None else env)
    marked[MARK] = run
    proc = await trio.lowlevel.open_process(
        list(argv), stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=marked)
    stdout, stderr = bytearray(), bytearray()
    code: int | None = None
    try:
        with trio.move_on_after(time_limit):
            async with trio.open_nursery() as nursery:
                if proc.stdin is not None:
                    nursery.start_soon(_feed, proc.stdin, stdin)
                nursery.start_soon(_drain, proc.stdout, stdout, output_cap)
                nursery.start_soon(_drain, proc.stderr, stderr, output_cap)
                code = await proc.wait()
                with trio.CancelScope(shield=True):  # stragglers would hold the pipes open
                    await _kill_run(proc, run)  # until the limit
    finally:
        with trio.CancelScope(shield=True):
            if code is None:  # timed out, failed or cancelled: nothing may outlive the run
                await _kill_run(proc, run)
            await proc.wait()  # reap: prompt after SIGKILL
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    await pipe.aclose()
    return ProcessOutcome(code, bytes(stdout), bytes(stderr))


async def _kill_run(proc: trio.Process, run: str) -> None:
    """SIGKILL the process group `proc` leads, `proc` itself if it left the group, and
    every process marked with `run` (those that left the session: see the docstring).

    After `proc` is reaped its PID stays reserved while other members of its
    group live, so killpg cannot hit an unrelated group then.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode is None:  # the leader may have moved itself to a new group
        proc.kill()
    await _sweep_all(run, proc.pid)


async def _sweep_all(run: str, first: int) -> None:
    """Sweep until a pass kills nothing (at most SWEEPS passes while they do) and no
    process is left that may be mid-exec (looked at again until EXEC_WAIT)."""
    deadline = trio.current_time() + EXEC_WAIT
    kills = 0
    while True:
        killed, unsure = _sweep(run, first)
        kills += 1 if killed else 0
        if killed and kills < SWEEPS:
            continue  # a marked process may fork while it is being killed
        if not unsure or trio.current_time() >= deadline:
            return
        await trio.sleep(EXEC_POLL)  # one caught mid-exec shows its environment soon


def _sweep(run: str, first: int) -> tuple[int, int]:
    """SIGKILL the live processes from PID `first` on whose environment carries the mark
    of `run`; how many it killed, and how many showed no environment though alive and
    not kernel threads (perhaps mid-exec: look again)."""
    mark = f"{MARK}={run}\0".encode()
    killed = unsure = 0
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs: the process group kill is all there is
        return 0, 0
    for entry in entries:
        if not entry.isdigit() or int(entry) < first:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                data = environ.read()
        except OSError:  # gone already, or not ours to read
            continue
        if not data:
            unsure += _mid_exec(entry)
        elif data.startswith(mark) or b"\0" + mark in data:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
    return killed, unsure


def _mid_exec(pid: str) -> bool:
    """Whether a process that shows no environment may be in the middle of an exec: it
    is neither a zombie (the run's own child, before it is reaped) nor a kernel thread."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):  # gone already
        return False
    return fields[0] not in (b"Z", b"X") and not int(fields[6]) & _PF_KTHREAD


async def _feed(stream: trio.abc.SendStream, data: bytes) -> None:
    """Write `data` to the child's standard input and close it (EOF)."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the child exited, or closed its input, without reading it all: its exit says
    finally:
        await stream.aclose()


async def _drain(stream: trio.abc.ReceiveStream | None, tail: bytearray, cap: int) -> None:
    """Read `stream` to EOF, keeping only its last `cap` bytes in `tail`."""
    if stream is None:
        return
    while chunk := await stream.receive_some(OUTPUT_CAP):
        tail += chunk
        if len(tail) > cap:
            del tail[:-cap]
