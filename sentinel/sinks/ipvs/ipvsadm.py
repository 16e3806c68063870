"""The `ipvsadm` driver of the ipvs sink: reads the kernel's table, applies edits.

Each call runs the configured command (default `ipvsadm`; any argv, e.g. a
wrapper that reaches another network namespace) through `sentinel.process`:
no shell, bounded by `timeout`, its process group killed when it runs over.
Reading takes two listings, because no single one shows everything: `-L -n`
(forwarding, weight, connection counters) and `-L -n --thresholds` (upper and
lower connection thresholds). Edits go in one `ipvsadm -R` call, one edit per
line on its standard input: ipvsadm carries on past a failing line and
reports it on stderr, and the sink's read-back tells what did not take.
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.errors import SinkRejected
from sentinel.process import ProcessOutcome, run_command
from sentinel.sinks.base import unavailable
from sentinel.sinks.ipvs.table import ServiceEntry, Table, Virtual, parse_listing, parse_thresholds

SHOWN = 600  # characters of ipvsadm's output quoted in an error
LISTING_CAP = 64 * 1024 * 1024  # a listing is parsed whole: ~60 bytes a real server


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

    async def _process(self, args: Sequence[str], stdin: bytes) -> ProcessOutcome:
        self.calls += 1
        with unavailable(self._name(*args)):
            outcome = await run_command([*self.command, *args], time_limit=self.timeout,
                                        stdin=stdin, output_cap=LISTING_CAP)
            if outcome.timed_out:
                raise TimeoutError(f"timed out after {self.timeout:g}s")
        return outcome

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
