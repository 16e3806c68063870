"""A small client for HAProxy's runtime API (the stats socket), on Trio.

One connection per command in non-interactive mode: send `COMMAND\\n`, read
until HAProxy closes. Every answer ends with an empty line; a `set` command
that worked answers nothing else, so any text in its answer is an error
("No such server.", "Permission denied" when the socket lacks `level admin`).

The parsers are pure functions over the answer text, tested without HAProxy.
`show servers state` (format version 1) has one line per server:

    be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight ...

where `srv_admin_state` is a bit set (haproxy `include/haproxy/server-t.h`):
0x01 forced maintenance (`state maint`), 0x08 forced drain (`state drain`).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from sentinel.addresses import tcp_address
from sentinel.errors import SinkRejected
from sentinel.sinks.base import unavailable

ADMIN_FMAINT = 0x01
ADMIN_FDRAIN = 0x08
READ_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server's line of `show servers state`."""

    backend: str
    server: str
    address: str
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int  # bit set, see the module docstring
    weight: int  # srv_uweight: the weight `set server ... weight` sets

    @property
    def admin(self) -> str:
        """The runtime admin state as `set server ... state` names it."""
        if self.admin_state & ADMIN_FMAINT:
            return "maint"
        if self.admin_state & ADMIN_FDRAIN:
            return "drain"
        return "ready"


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What `show info` says about the HAProxy process behind the socket."""

    pid: int
    start_time: int  # Unix seconds; 0 when this HAProxy does not report it
    uptime: int  # seconds

    def restarted_since(self, earlier: ProcessInfo) -> bool:
        """True when this is another process than `earlier` (a reload or a restart):
        runtime changes made to `earlier` are gone."""
        return (self.pid != earlier.pid or self.start_time != earlier.start_time
                or self.uptime < earlier.uptime)


def parse_info(text: str) -> ProcessInfo:
    """Parse `show info` (`Name: value` lines)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        return ProcessInfo(pid=int(fields["Pid"]),
                           start_time=int(fields.get("Start_time_sec", "0")),
                           uptime=int(fields.get("Uptime_sec", "0")))
    except (KeyError, ValueError):
        raise SinkRejected(f"unexpected answer to `show info`: {_first_line(text)!r}") from None


def parse_servers_state(text: str) -> list[ServerState]:
    """Parse `show servers state [BACKEND]`; an unknown backend is a SinkRejected."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != "1":
        raise SinkRejected(_first_line(text) or "empty answer")
    out = []
    for line in lines[1:]:
        if line.startswith("#"):
            continue
        f = line.split()
        try:
            out.append(ServerState(backend=f[1], server=f[3], address=f[4],
                                   op_state=int(f[5]), admin_state=int(f[6]),
                                   weight=int(f[7])))
        except (IndexError, ValueError):
            raise SinkRejected(f"unexpected `show servers state` line: {line!r}") from None
    return out


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


class RuntimeApi:
    """HAProxy's runtime API at `address`: a unix socket path or `host:port`."""

    def __init__(self, address: str, *, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        self._tcp = tcp_address(address)

    async def command(self, line: str) -> str:
        """Send one command, return the whole answer."""
        if "\n" in line or ";" in line:
            raise ValueError(f"one command per call: {line!r}")
        with unavailable(f"haproxy socket {self.address}", time_limit=self.timeout):
            stream = await self._connect()
            async with stream:
                await stream.send_all(line.encode() + b"\n")
                answer = bytearray()
                while chunk := await stream.receive_some(65536):
                    answer += chunk
                    if len(answer) > READ_LIMIT:
                        raise SinkRejected(f"haproxy: answer to {line!r} is too long")
        return answer.decode(errors="replace")

    async def _connect(self) -> trio.abc.Stream:
        if self._tcp is not None:
            return await trio.open_tcp_stream(*self._tcp)
        return await trio.open_unix_socket(self.address)

    async def set(self, line: str) -> None:
        """Run a command that answers nothing when it works (`set server ...`)."""
        answer = (await self.command(line)).strip()
        if answer:
            hint = " (the stats socket needs `level admin`)" if "ermission" in answer else ""
            raise SinkRejected(f"haproxy refused `{line}`: {_first_line(answer)}{hint}")

    async def info(self) -> ProcessInfo:
        """`show info`: which process answers."""
        return parse_info(await self.command("show info"))

    async def servers_state(self, backend: str) -> list[ServerState]:
        """`show servers state BACKEND`."""
        try:
            return parse_servers_state(await self.command(f"show servers state {backend}"))
        except SinkRejected as exc:
            raise SinkRejected(f"haproxy backend {backend!r}: {exc}") from None
