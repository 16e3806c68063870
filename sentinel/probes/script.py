"""The `script` probe: run a command; exit 0 is healthy (keepalived's MISC_CHECK).

The command is an argv list run without a shell, in a new session so that it
leads its own process group. That group is the unit of cleanup: on timeout
the whole group is SIGKILLed (a `sleep 30 &` inside the script dies too, as
keepalived does for MISC_CHECK), and after a normal exit any stragglers are
killed as well, since they would otherwise hold our pipes open and pile up
with every probe interval.

A line `weight=N` on stdout reports the backend's weight (keepalived's
`misc_dynamic`, but on stdout rather than encoded in the exit code).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import trio

from sentinel.config import ProbeConfig, ScriptSpec
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes.base import Target, classify, failed

OUTPUT_CAP = 64 * 1024  # per stream; the tail is kept, where `weight=` and the last error sit
WEIGHT_MAX = 1_000_000
SHOWN = 200  # longest stderr line quoted in a failure detail


def parse_weight(stdout: bytes) -> tuple[int | None, str]:
    """The last `weight=N` line of `stdout`, and a note when that line was invalid."""
    value: str | None = None
    for raw in stdout.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line.startswith("weight="):
            value = line.removeprefix("weight=").strip()
    if value is None:
        return None, ""
    if value.isascii() and value.isdigit() and int(value) <= WEIGHT_MAX:
        return int(value), ""
    return None, f"ignored weight={value[:32]!r}: not an integer 0..{WEIGHT_MAX}"


def describe_exit(code: int, stderr: bytes) -> str:
    """`exit 3: <last stderr line>`, or `killed by SIGTERM` for a signal."""
    if code < 0:
        try:
            text = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            text = f"killed by signal {-code}"
    else:
        text = f"exit {code}"
    lines = [ln.strip() for ln in stderr.decode("utf-8", errors="replace").splitlines()]
    last = next((ln for ln in reversed(lines) if ln), "")
    if last:
        text += f": {last[:SHOWN]}"
    return text


class ScriptProbe:
    """Run `spec.command` per check; exit 0 is healthy, `weight=N` on stdout sets the weight.

    With `service_env` (the default) the command's environment is sentinel's
    own plus SENTINEL_SERVICE, SENTINEL_BACKEND, SENTINEL_HOST and
    SENTINEL_PORT describing the target; without it, sentinel's environment
    only.
    """

    def __init__(self, config: ProbeConfig, service_env: bool = True) -> None:
        if not isinstance(config.spec, ScriptSpec):
            raise TypeError(f"ScriptProbe needs a ScriptSpec, got {type(config.spec).__name__}")
        if not config.spec.command:
            raise ValueError("ScriptProbe needs a non-empty command")
        self._command = config.spec.command
        self._timeout = config.timing.timeout
        self._service_env = service_env

    def environment(self, target: Target) -> dict[str, str]:
        """The environment the command runs with for `target`."""
        env = dict(os.environ)
        if self._service_env:
            env.update(
                SENTINEL_SERVICE=target.service,
                SENTINEL_BACKEND=target.backend,
                SENTINEL_HOST=target.host,
                SENTINEL_PORT=str(target.port),
            )
        return env

    async def check(self, target: Target) -> ProbeResult:
        """Run the command once; failures come back as a result, cancellation propagates."""
        start = trio.current_time()
        try:
            proc = await trio.lowlevel.open_process(
                list(self._command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.environment(target),
                start_new_session=True,  # leads its own process group: killpg reaches its children
            )
        except OSError as exc:
            detail = f"cannot run {self._command[0]}: {exc.strerror or exc}"
            return failed(FailureKind.ERROR, detail, trio.current_time() - start)
        stdout, stderr = bytearray(), bytearray()
        code: int | None = None
        try:
            with trio.move_on_after(self._timeout):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain, proc.stdout, stdout)
                    nursery.start_soon(_drain, proc.stderr, stderr)
                    code = await proc.wait()
                    _kill_group(proc)  # stragglers would hold the pipes open until the timeout
        except Exception as exc:  # a bug or an odd pipe error: reported, not raised
            kind, text = classify(_unwrap(exc))
            return failed(kind, text, trio.current_time() - start)
        finally:
            if code is None:  # timed out, failed or cancelled: nothing may outlive the check
                _kill_group(proc)
            with trio.CancelScope(shield=True):
                await proc.wait()  # reap: prompt after SIGKILL
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        await pipe.aclose()
        latency = trio.current_time() - start
        if code is None:
            detail = f"no exit within {self._timeout * 1000:.0f}ms; process group killed"
            return failed(FailureKind.TIMEOUT, detail, latency)
        if code != 0:
            return failed(FailureKind.EXIT, describe_exit(code, bytes(stderr)), latency)
        weight, note = parse_weight(bytes(stdout))
        return ProbeResult(ok=True, latency=latency, detail=note, weight=weight)

    async def aclose(self) -> None:
        """Nothing outlives a check; present for the Probe protocol."""


def _kill_group(proc: trio.Process) -> None:
    """SIGKILL the process group `proc` leads, and `proc` itself if it left the group.

    After `proc` is reaped its PID stays reserved while other members of its
    group live, so killpg cannot hit an unrelated group then.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or not ours to signal
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


def _unwrap(exc: BaseException) -> BaseException:
    """The lone exception inside (nested) single-member groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
