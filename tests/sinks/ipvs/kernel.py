"""Helpers for the real-kernel tests: loopback backends, a running engine, table reads."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import trio

from sentinel.engine.engine import Engine
from sentinel.sinks.ipvs.table import (
    ServiceEntry,
    Virtual,
    parse_listing,
    parse_thresholds,
    parse_virtual,
)
from sentinel.sinks.registry import load_config
from tests.sinks.ipvs.vm import Vm

CONFIG = """\
version: 1
state_dir: {state_dir}
defaults:
  probe: {{type: tcp, interval: 100ms, timeout: 100ms}}
  breaker: {{kind: threshold, rise: 1, fall: 1}}
sinks:
  lvs: {{type: ipvs, command: {command}, resync: {resync}}}
services:
{services}
"""


class Backend:
    """A real TCP listener on the host's loopback that can be killed and brought back
    on the same address."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._sock = self._listen(0)
        self.port = int(self._sock.getsockname()[1])

    @property
    def address(self) -> str:
        """host:port as the config names it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def kill(self) -> None:
        """Stop listening: connections are refused from now on."""
        self._sock.close()

    def restore(self) -> None:
        """Listen again on the same port."""
        self._sock = self._listen(self.port)

    def _listen(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        sock.listen(64)
        return sock


@contextlib.contextmanager
def backends(*hosts: str) -> Iterator[list[Backend]]:
    """Listening backends on `hosts`, closed at the end."""
    made = [Backend(host) for host in hosts]
    try:
        yield made
    finally:
        for backend in made:
            backend.kill()


def write_config(state_dir: Path, vm: Vm, services: str, resync: str = "60s") -> Path:
    """A config file for the engine: every service publishes to the `lvs` ipvs sink."""
    path = state_dir.parent / "sentinel.yaml"
    path.write_text(CONFIG.format(state_dir=state_dir, command=vm.command, resync=resync,
                                  services=services))
    return path


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Engine]:
    """The real engine on `config`, stopped (sinks drained) at the end."""
    engine = Engine(load_config(config))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        try:
            yield engine
        finally:
            engine.stop()


def read_entry(vm: Vm, virtual: Virtual) -> ServiceEntry | None:
    """The kernel's entry for `virtual`, read with ipvsadm inside the VM."""
    listing = vm.ipvsadm("-L", "-n", *virtual.argv())
    if listing.returncode != 0:
        assert "No such service" in listing.stderr, listing.stderr
        return None
    limits = vm.ipvsadm("-L", "-n", "--thresholds", *virtual.argv())
    return parse_thresholds(limits.stdout, parse_listing(listing.stdout)).get(virtual)


def weights(entry: ServiceEntry | None) -> dict[str, int]:
    """`{"127.0.0.2:80": 3, ...}` for the entry's real servers."""
    if entry is None:
        return {}
    return {(f"[{a}]:{p}" if ":" in a else f"{a}:{p}"): r.weight
            for (a, p), r in entry.reals.items()}


def read_back(vm: Vm, virtual: str, since: int = 0) -> list[ServiceEntry]:
    """Every entry for `virtual` that the sink read from the kernel (its listings
    forwarded through the VM from call `since` on), in order: the table as the sink saw
    it after each of its edits, however fast or slow the test's own reads are."""
    target = parse_virtual(virtual)
    entries = []
    for argv, outcome in vm.forwarded[since:]:
        if argv[1:3] == ["-L", "-n"] and "--thresholds" not in argv and outcome.returncode == 0:
            entry = parse_listing(outcome.stdout).get(target)
            if entry is not None:
                entries.append(entry)
    return entries


async def wait_for(vm: Vm, virtual: str, check: Callable[[ServiceEntry | None], bool],
                   *, within: float = 60.0, what: str = "the table"
                   ) -> ServiceEntry | None:
    """Poll the kernel's entry for `virtual` until `check` holds (AssertionError after
    `within` seconds, naming `what` and the last entry seen). The bound is generous:
    QEMU emulates the CPU in software, and on a loaded machine each command into the
    VM (the sink's and these reads) can take seconds."""
    target = parse_virtual(virtual)
    entry = None
    with trio.move_on_after(within):
        while True:
            entry = await trio.to_thread.run_sync(read_entry, vm, target)
            if check(entry):
                return entry
            await trio.sleep(0.05)
    raise AssertionError(f"timed out after {within:g}s waiting for {what}; last: "
                         f"{weights(entry) if entry else entry}")
