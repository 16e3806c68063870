"""The `ipvsadm` driver of the ipvs sink: reads the kernel's table, applies edits.

Each call runs the configured command (default `ipvsadm`; any argv, e.g. a
wrapper that reaches another network namespace) with `trio.run_process`, no
shell, bounded by `timeout`. Reading takes two listings, because no single
one shows everything: `-L -n` (forwarding, weight, connection counters) and
`-L -n --thresholds` (upper and lower connection thresholds). Edits go in one
`ipvsadm -R` call, one edit per line on its standard input: ipvsadm carries on
past a failing line and reports it on stderr, and the sink's read-back tells
what did not take.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import trio

from sentinel.errors import SinkRejected
from sentinel.sinks.base import unavailable
from sentinel.sinks.ipvs.table import ServiceEntry, Table, Virtual, parse_listing, parse_thresholds

SHOWN = 600  # characters of ipvsadm's output quoted in an error


class Ipvsadm:
    """Runs `command` (an argv prefix standing for ipvsadm)."""

    def __init__(self, command: Sequence[str], timeout: float) -> None:
        self.command = tuple(command)
        self.timeout = timeout
        self.calls = 0  # how many times the command ran (for benchmarks and tests)

    async def read_all(self) -> Table:
        """The whole table."""
        listing = await self._run("-L", "-n")
        limits = await self._run("-L", "-n", "--thresholds")
        return parse_thresholds(limits or "", self._parse(listing))

    async def read(self, virtual: Virtual) -> ServiceEntry | None:
        """One service, or None when the kernel has no such service."""
        listing = await self._run("-L", "-n", *virtual.argv(), missing_ok=True)
        if listing is None:
            return None
        limits = await self._run("-L", "-n", "--thresholds", *virtual.argv(), missing_ok=True)
        table = self._parse(listing)
        if limits is not None:
            table = parse_thresholds(limits, table)
        return table.get(virtual)

    async def apply(self, edits: Sequence[Sequence[str]]) -> str:
        """Run `edits` through `ipvsadm -R`; returns what ipvsadm said on stderr (its
        complaints about lines it could not apply: only the read-back tells what took)."""
        if not edits:
            return ""
        script = "".join(" ".join(edit) + "\n" for edit in edits)
        result = await self._process(("-R",), script.encode())
        said = result.stderr.decode(errors="replace").strip()
        if result.returncode != 0 and not said:  # its exit code is the last line's
            said = f"{self._name('-R')} exited {result.returncode}"
        return said

    async def _run(self, *args: str, missing_ok: bool = False) -> str | None:
        result = await self._process(args, b"")
        stderr = result.stderr.decode(errors="replace").strip()
        if result.returncode != 0:
            if missing_ok and "No such service" in stderr:
                return None
            raise SinkRejected(f"{self._name(*args)} failed (exit {result.returncode}): "
                               f"{_text(result.stderr)}")
        return result.stdout.decode(errors="replace")

    async def _process(self, args: Sequence[str], stdin: bytes
                       ) -> subprocess.CompletedProcess[bytes]:
        argv = [*self.command, *args]
        self.calls += 1
        with unavailable(self._name(*args), time_limit=self.timeout):
            return await trio.run_process(argv, stdin=stdin, capture_stdout=True,
                                          capture_stderr=True, check=False)

    def _parse(self, listing: str | None) -> Table:
        try:
            return parse_listing(listing or "")
        except ValueError as exc:
            raise SinkRejected(f"{self.command[0]}: {exc}") from None

    def _name(self, *args: str) -> str:
        return " ".join([*self.command, *args][:len(self.command) + 4])


def _text(data: bytes) -> str:
    text = " ".join(data.decode(errors="replace").split())
    return text[-SHOWN:] or "no error text"
