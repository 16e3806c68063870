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

import os

import trio

from sentinel.config.model import ProbeConfig, ScriptSpec
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes.base import Target, classify, failed, spawn_trouble
from sentinel.process import run_command

WEIGHT_MAX = 1_000_000


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
            outcome = await run_command(self._command, time_limit=self._timeout,
                                        env=self.environment(target))
        except OSError as exc:
            local = spawn_trouble(exc)
            if local is not None:
                return failed(FailureKind.LOCAL, local, trio.current_time() - start)
            detail = f"cannot run {self._command[0]}: {exc.strerror or exc}"
            return failed(FailureKind.ERROR, detail, trio.current_time() - start)
        except Exception as exc:  # a bug or an odd pipe error: reported, not raised
            kind, text = classify(_unwrap(exc))
            return failed(kind, text, trio.current_time() - start)
        latency = trio.current_time() - start
        if outcome.timed_out:
            detail = f"no exit within {self._timeout * 1000:.0f}ms; process group killed"
            return failed(FailureKind.TIMEOUT, detail, latency)
        if outcome.returncode != 0:
            return failed(FailureKind.EXIT, outcome.describe_exit(), latency)
        weight, note = parse_weight(outcome.stdout)
        return ProbeResult(ok=True, latency=latency, detail=note, weight=weight)

    async def aclose(self) -> None:
        """Nothing outlives a check; present for the Probe protocol."""


def _unwrap(exc: BaseException) -> BaseException:
    """The lone exception inside (nested) single-member groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
