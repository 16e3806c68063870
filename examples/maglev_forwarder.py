"""A Maglev data plane: a Trio TCP forwarder that follows sentinel's published table.

    python examples/maglev_forwarder.py --table state/maglev/web.json \\
        --listen 127.0.0.1:8000 [--poll 50ms] [--status status.json]

Each client connection is a flow keyed by the client's (address, port). The
forwarder hashes the key to a slot of the table (`sentinel.sinks.maglev.table.flow_slot`,
the documented SHA-256 hash) and relays bytes to the backend in that slot.
Like a packet-level Maglev balancer it looks the flow up again for every chunk
the client sends: when a new table generation maps the flow elsewhere (its
backend failed, or came back), the flow is re-hashed: the old upstream
connection is closed and the next bytes go to the new backend. Flows whose
slot did not change keep their upstream connection; in sentinel's `stable`
mode that is every flow of a backend that is still up.

The table pair (`.json` + `.maglev`) is polled every `--poll`; a pair whose
sha256 does not match (a newer one landing mid-read) is read again at the next
poll. While the table points at a backend that refuses connections (sentinel
has not noticed its death yet) the flow waits for the next generation.
`--status FILE` keeps a small JSON document with the bound address, the table
generation in use and the count of re-hashed flows (tests poll it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from sentinel.addresses import canonical
from sentinel.config.node import Node
from sentinel.errors import ConfigError
from sentinel.sinks.maglev.table import NO_BACKEND, lookup, read_files

WAIT_FOR_TABLE = 10.0  # seconds a flow waits for a table that gives it a live backend


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One table generation: the slots and each backend's name and address."""

    generation: int
    table: bytes
    names: list[str]
    addresses: list[str]

    def target(self, key: str) -> tuple[str, str, int] | None:
        """(name, host, port) for a flow key, None when the slot has no backend."""
        _, index = lookup(self.table, key)
        if index == NO_BACKEND:
            return None
        host, _, port = self.addresses[index].rpartition(":")
        return self.names[index], host.strip("[]"), int(port)


class Forwarder:
    """The current table plus the flows relayed through it."""

    def __init__(self, table: Path, status: Path | None) -> None:
        self.table_path = table
        self.status_path = status
        self.snapshot: Snapshot | None = None
        self.listen = ""
        self.moves = 0
        self._changed = trio.Event()

    def reload(self) -> None:
        """Take the table pair on disk when it is a new generation."""
        try:
            doc, table = read_files(self.table_path)
        except (OSError, ValueError):
            return
        if self.snapshot and self.snapshot.generation == doc["generation"]:
            return
        self.snapshot = Snapshot(doc["generation"], table, doc["backends"], doc["addresses"])
        print(f"table generation {doc['generation']} ({doc['state']})", flush=True)
        self._changed.set()
        self._changed = trio.Event()
        self.write_status()

    def write_status(self) -> None:
        """Publish listen address, generation and move count to --status (atomically)."""
        if self.status_path is None:
            return
        doc = {"listen": self.listen, "moves": self.moves,
               "generation": self.snapshot.generation if self.snapshot else None}
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.status_path)

    async def watch(self, poll: float) -> None:
        """Re-read the table every `poll` seconds."""
        while True:
            self.reload()
            await trio.sleep(poll)

    async def wait_for_new_table(self) -> None:
        """Until the next generation (at most WAIT_FOR_TABLE seconds)."""
        with trio.move_on_after(WAIT_FOR_TABLE):
            await self._changed.wait()

    async def serve_flow(self, client: trio.SocketStream) -> None:
        """Relay one client connection, re-hashing it whenever the table moves its slot."""
        host, port = client.socket.getpeername()[:2]
        flow = Flow(self, client, canonical(host, port))
        try:
            async with trio.open_nursery() as nursery:
                async for data in client:
                    await flow.send(data, nursery)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await flow.close_upstream()
            await trio.aclose_forcefully(client)


class Flow:
    """One client flow and its current upstream connection."""

    def __init__(self, forwarder: Forwarder, client: trio.SocketStream, key: str) -> None:
        self.forwarder = forwarder
        self.client = client
        self.key = key
        self.backend: str | None = None
        self.upstream: trio.SocketStream | None = None
        self.scope: trio.CancelScope | None = None

    async def send(self, data: bytes | bytearray, nursery: trio.Nursery) -> None:
        """Deliver `data` to the backend the current table names for this flow."""
        deadline = trio.current_time() + WAIT_FOR_TABLE
        while trio.current_time() < deadline:
            snapshot = self.forwarder.snapshot
            target = snapshot.target(self.key) if snapshot else None
            if target is None:
                await self.forwarder.wait_for_new_table()
                continue
            name, host, port = target
            if self.upstream is None or name != self.backend:
                if self.backend is not None and name != self.backend:
                    self.forwarder.moves += 1
                    self.forwarder.write_status()
                    print(f"flow {self.key}: {self.backend} -> {name}", flush=True)
                await self.close_upstream()
                try:
                    self.upstream = await trio.open_tcp_stream(host, port)
                except OSError:
                    await self.forwarder.wait_for_new_table()
                    continue
                self.backend = name
                self.scope = await nursery.start(self._pump, self.upstream)
            try:
                await self.upstream.send_all(data)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.close_upstream()
        raise trio.BrokenResourceError(f"no live backend for {self.key}")

    async def _pump(self, upstream: trio.SocketStream, *,
                    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Backend -> client, until the backend closes or the flow moves."""
        with trio.CancelScope() as scope:
            task_status.started(scope)
            try:
                async for chunk in upstream:
                    await self.client.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            if self.upstream is upstream:  # the backend went away: reconnect on next data
                self.upstream = None

    async def close_upstream(self) -> None:
        """Drop the current upstream connection and its pump."""
        if self.scope is not None:
            self.scope.cancel()
            self.scope = None
        if self.upstream is not None:
            await trio.aclose_forcefully(self.upstream)
            self.upstream = None


async def main(args: argparse.Namespace) -> None:
    """Load the table, then serve flows and follow the table until killed."""
    host, _, port = args.listen.rpartition(":")
    forwarder = Forwarder(Path(args.table), Path(args.status) if args.status else None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forwarder.watch, args.poll)
        while forwarder.snapshot is None:
            await forwarder.wait_for_new_table()
        listeners = await trio.open_tcp_listeners(int(port), host=host.strip("[]"))
        bound = listeners[0].socket.getsockname()
        forwarder.listen = f"{bound[0]}:{bound[1]}"
        forwarder.write_status()
        print(f"listening on {forwarder.listen}", flush=True)
        await trio.serve_listeners(forwarder.serve_flow, listeners)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True, help="SERVICE.json (or .maglev) to follow")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (0: any port)")
    parser.add_argument("--poll", default="50ms", help="how often to re-read the table")
    parser.add_argument("--status", help="keep a JSON status document here")
    args = parser.parse_args(argv)
    try:
        args.poll = Node(args.poll, "--poll", 1, 1, "").as_duration()
    except ConfigError as exc:
        parser.error(f"--poll: {exc.message}")
    return args


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, parse_args(sys.argv[1:]))
