"""The IPVS table as data: parse what ipvsadm prints, diff it against the desired table.

Pure functions, no I/O: the `ipvs` sink (sentinel/sinks/ipvs/sink.py) reads the
kernel's table through these parsers and applies what `diff` returns.

Listings parsed (ipvsadm 1.31 against Linux 6.1, samples in tests/sinks/ipvs/):

    ipvsadm -Ln                      ipvsadm -Ln --thresholds
    TCP  10.0.0.1:80 wlc persistent 300      (same service lines)
      -> 127.0.0.2:80   Route 3 0 0            -> 127.0.0.2:80   100 50 0 0
    UDP  [2001:db8::1]:53 mh (mh-fallback,mh-port)
    FWM  8 IPv6 rr

and `ipvsadm -Sn` (`-A -t 10.0.0.1:80 -s wlc -p 300`, `-a -t ... -r ... -g -w 3`),
which shows neither thresholds nor connection counts.

Two ipvsadm pitfalls shape `diff`:
- `-e`/`-E` resend the whole entry: whatever is left out is reset (the
  forwarding method to `-g`, the weight to 1, the thresholds to 0; the
  persistence, flags and netmask of a service). So every edit restates it all.
- With `-g` (dr) and `-i` (tun) the kernel forces the real server's port to
  the service's port (0 for a fwmark service): a backend at 127.0.0.2:8080
  behind tcp:10.0.0.1:80 shows as 127.0.0.2:80. Desired keys use that port.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from sentinel.addresses import join

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf",
              "mh")
FORWARDS = {"dr": "-g", "nat": "-m", "tun": "-i"}
_FORWARD_NAMES = {"Route": "dr", "Masq": "nat", "Tunnel": "tun", "Local": "local",
                  "Bypass": "bypass"}
_FLAG_BITS = {"flag-1": 1, "flag-2": 2, "flag-3": 3, "sh-fallback": 1, "sh-port": 2,
              "mh-fallback": 1, "mh-port": 2}
_PROTOCOL_OPTION = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service", "fwmark": "-f"}
_LISTED_PROTOCOL = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp", "FWM": "fwmark"}
_ADDRESS = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+))(?::(\d+))?$")

RealKey = tuple[str, int]  # (normalised IP, port as the kernel keeps it)


@dataclass(frozen=True, slots=True)
class Virtual:
    """A virtual service: `tcp:VIP:PORT`, `udp:...`, `sctp:...` or `fwmark:N[/ipv6]`."""

    protocol: str  # tcp | udp | sctp | fwmark
    address: str = ""  # normalised IP; "" for fwmark
    port: int = 0
    fwmark: int = 0
    ipv6: bool = False

    def argv(self) -> tuple[str, ...]:
        """How ipvsadm names this service (`-t 10.0.0.1:80`, `-f 7 -6`)."""
        if self.protocol == "fwmark":
            return ("-f", str(self.fwmark), "-6") if self.ipv6 else ("-f", str(self.fwmark))
        return (_PROTOCOL_OPTION[self.protocol], join(self.address, self.port))

    def real_port(self, forward: str, port: int) -> int:
        """The port the kernel keeps for a real server: forced to ours except with nat."""
        return port if forward == "nat" else self.port

    def __str__(self) -> str:
        if self.protocol == "fwmark":
            return f"fwmark:{self.fwmark}/ipv6" if self.ipv6 else f"fwmark:{self.fwmark}"
        return f"{self.protocol}:{join(self.address, self.port)}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What `-A`/`-E` set. `flags` are scheduler flag bits 1..3 (flag-N, sh-*, mh-*)."""

    scheduler: str
    flags: frozenset[int] = frozenset()
    persistent: int | None = None  # seconds
    netmask: str | None = None  # persistence granularity; None is ipvsadm's default
    one_packet: bool = False
    pe: str | None = None

    def argv(self) -> tuple[str, ...]:
        """`-s SCHED [-b FLAGS] [-p SECONDS]`: the whole entry, as -E resets the rest."""
        args: list[str] = ["-s", self.scheduler]
        if self.flags:
            args += ["-b", ",".join(flag_name(self.scheduler, bit) for bit in sorted(self.flags))]
        if self.persistent is not None:
            args += ["-p", str(self.persistent)]
        return tuple(args)


@dataclass(frozen=True, slots=True)
class RealServer:
    """One real server as the kernel has it (or as it is wanted)."""

    address: str
    port: int
    forward: str  # dr | nat | tun (local, bypass only as read)
    weight: int
    u_threshold: int = 0
    l_threshold: int = 0
    active: int = 0  # connection counters: read, never compared
    inactive: int = 0

    @property
    def key(self) -> RealKey:
        """Its identity within a service."""
        return (self.address, self.port)

    def same_settings(self, other: RealServer) -> bool:
        """True when forwarding, weight and thresholds agree (counters are ignored)."""
        return (self.forward, self.weight, self.u_threshold, self.l_threshold) == (
            other.forward, other.weight, other.u_threshold, other.l_threshold)

    def describe(self) -> str:
        """`127.0.0.2:80 dr weight 3` (thresholds when set)."""
        text = f"{join(*self.key)} {self.forward} weight {self.weight}"
        if self.u_threshold or self.l_threshold:
            text += f" thresholds {self.u_threshold}/{self.l_threshold}"
        return text


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """A virtual service in the kernel's table, with its real servers."""

    virtual: Virtual
    spec: ServiceSpec
    reals: Mapping[RealKey, RealServer] = field(default_factory=dict)


Table = dict[Virtual, ServiceEntry]


@dataclass(frozen=True, slots=True)
class DesiredService:
    """What one service should be: its spec, the real servers wanted (with their
    settings), and the real servers that must not be there (owned, not wanted)."""

    virtual: Virtual
    spec: ServiceSpec
    reals: Mapping[RealKey, RealServer]
    absent: frozenset[RealKey] = frozenset()


# -- addresses -------------------------------------------------------------------


def normalise_ip(text: str) -> str:
    """An IP literal in the form ipvsadm prints it (IPv6 compressed); ValueError if not one."""
    return ipaddress.ip_address(text.strip("[]")).compressed


def split_address(text: str) -> RealKey:
    """`10.0.0.1:80` / `[::1]:53` / `10.0.0.1` (port 0) -> (normalised IP, port)."""
    match = _ADDRESS.match(text)
    if match is None:
        raise ValueError(f"not an IP address with a port: {text!r}")
    return normalise_ip(match.group(1) or match.group(2)), int(match.group(3) or 0)


def parse_virtual(text: str) -> Virtual:
    """`tcp:10.0.0.1:80`, `udp:[2001:db8::1]:53`, `sctp:...`, `fwmark:7`, `fwmark:7/ipv6`."""
    protocol, sep, rest = text.strip().partition(":")
    protocol = protocol.lower()
    if not sep or protocol not in _PROTOCOL_OPTION:
        raise ValueError(f"expected tcp:VIP:PORT, udp:VIP:PORT, sctp:VIP:PORT or fwmark:N, "
                         f"got {text!r}")
    if protocol == "fwmark":
        mark, slash, family = rest.partition("/")
        if not mark.isdigit() or not 0 < int(mark) < 2**32 or family not in (
                ("ipv6", "ipv4") if slash else ("",)):
            raise ValueError(f"expected fwmark:N (1..4294967295), optionally /ipv6, got {text!r}")
        return Virtual("fwmark", fwmark=int(mark), ipv6=family == "ipv6")
    address, port = split_address(rest)
    if not 0 < port < 65536:
        raise ValueError(f"the virtual service needs a port 1..65535, got {text!r}")
    return Virtual(protocol, address, port, ipv6=":" in address)


def flag_name(scheduler: str, bit: int) -> str:
    """A flag bit as ipvsadm names it for `scheduler` (sh-port, mh-fallback, flag-3)."""
    if scheduler in ("sh", "mh") and bit in (1, 2):
        return f"{scheduler}-{'fallback' if bit == 1 else 'port'}"
    return f"flag-{bit}"


def parse_flags(scheduler: str, names: Iterable[str]) -> frozenset[int]:
    """Flag names -> bits; ValueError for an unknown name or one of another scheduler."""
    bits = set()
    for name in names:
        bit = _FLAG_BITS.get(name)
        prefix = name.partition("-")[0]
        if bit is None or (prefix in ("sh", "mh") and prefix != scheduler):
            known = ", ".join(sorted({flag_name(scheduler, b) for b in (1, 2, 3)}))
            raise ValueError(f"unknown flag {name!r} for scheduler {scheduler} "
                             f"(known: {known})")
        bits.add(bit)
    return frozenset(bits)


# -- parsing ---------------------------------------------------------------------


def parse_listing(text: str) -> Table:
    """Parse `ipvsadm -Ln` (whole table or one service with `-L -n -t ...`)."""
    return _parse_list(text, thresholds=False)


def parse_thresholds(text: str, table: Table) -> Table:
    """Merge `ipvsadm -Ln --thresholds` into `table` (which came from `-Ln`)."""
    merged: Table = {}
    limits = _parse_list(text, thresholds=True)
    for virtual, entry in table.items():
        other = limits.get(virtual)
        reals = {key: replace(real, u_threshold=other.reals[key].u_threshold,
                              l_threshold=other.reals[key].l_threshold)
                 if other and key in other.reals else real
                 for key, real in entry.reals.items()}
        merged[virtual] = replace(entry, reals=reals)
    return merged


def _parse_list(text: str, *, thresholds: bool) -> Table:
    table: Table = {}
    current: ServiceEntry | None = None
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0] in ("IP", "Prot") or words[:2] == ["->", "RemoteAddress:Port"]:
            continue
        try:
            if words[0] == "->":
                if current is None:
                    raise ValueError("a real server before any service")
                real = _real_line(words[1:], current.virtual, thresholds)
                current = replace(current, reals={**current.reals, real.key: real})
            else:
                current = _service_line(words)
            table[current.virtual] = current
        except (ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"cannot parse ipvsadm's line {number} {line.strip()!r}: "
                             f"{exc}") from None
    return table


def _service_line(words: list[str]) -> ServiceEntry:
    protocol = _LISTED_PROTOCOL[words[0]]
    rest = words[1:]
    if protocol == "fwmark":
        ipv6 = len(rest) > 1 and rest[1] == "IPv6"
        virtual = Virtual("fwmark", fwmark=int(rest[0]), ipv6=ipv6)
        rest = rest[2:] if ipv6 else rest[1:]
    else:
        address, port = split_address(rest[0])
        virtual = Virtual(protocol, address, port, ipv6=":" in address)
        rest = rest[1:]
    scheduler, rest = rest[0], rest[1:]
    flags: frozenset[int] = frozenset()
    persistent = netmask = pe = None
    one_packet = False
    while rest:
        word, rest = rest[0], rest[1:]
        if word.startswith("("):
            flags = parse_flags(scheduler, word.strip("()").split(","))
        elif word == "persistent":
            persistent, rest = int(rest[0]), rest[1:]
        elif word == "mask":
            netmask, rest = rest[0], rest[1:]
        elif word == "pe":
            pe, rest = rest[0], rest[1:]
        elif word == "ops":
            one_packet = True
        else:
            raise ValueError(f"unexpected {word!r}")
    return ServiceEntry(virtual, ServiceSpec(scheduler, flags, persistent, netmask, one_packet,
                                             pe))


def _real_line(words: list[str], virtual: Virtual, thresholds: bool) -> RealServer:
    address, port = split_address(words[0])
    if thresholds:  # Uthreshold Lthreshold ActiveConn InActConn
        upper, lower, active, inactive = (int(w) for w in words[1:5])
        return RealServer(address, port, "", 0, upper, lower, active, inactive)
    forward, weight, active, inactive = words[1], int(words[2]), int(words[3]), int(words[4])
    return RealServer(address, port, _FORWARD_NAMES[forward], weight, active=active,
                      inactive=inactive)


# -- diff ------------------------------------------------------------------------


def diff(desired: DesiredService, actual: ServiceEntry | None) -> list[tuple[str, ...]]:
    """The fewest ipvsadm edits (argv without the command) from `actual` to `desired`.

    The service first (`-A`, or `-E` restating it whole), then real servers:
    edits (`-e`, restating forwarding, weight and thresholds), additions, and
    removals last, so capacity is added before it is taken away. Real servers
    neither wanted nor in `absent` are someone else's and are left alone."""
    virtual = desired.virtual.argv()
    edits: list[tuple[str, ...]] = []
    if actual is None:
        edits.append(("-A", *virtual, *desired.spec.argv()))
    elif actual.spec != desired.spec:
        edits.append(("-E", *virtual, *desired.spec.argv()))
    have = actual.reals if actual else {}
    changed, added = [], []
    for key, want in desired.reals.items():
        real_argv = (*virtual, "-r", join(*key), FORWARDS[want.forward],
                     "-w", str(want.weight), "-x", str(want.u_threshold),
                     "-y", str(want.l_threshold))
        if key not in have:
            added.append(("-a", *real_argv))
        elif not have[key].same_settings(want):
            changed.append(("-e", *real_argv))
    removed = [("-d", *virtual, "-r", join(*key))
               for key in sorted(desired.absent) if key in have and key not in desired.reals]
    return edits + changed + added + removed


def drift(before: ServiceEntry, after: ServiceEntry | None, owned: Iterable[RealKey]
          ) -> list[str]:
    """What changed in a service between two readings, in words: the spec and the real
    servers in `owned` (others are someone else's business). Empty when nothing did."""
    if after is None:
        return [f"{before.virtual} was deleted"]
    notes = []
    if before.spec != after.spec:
        notes.append(f"{before.virtual} changed from {' '.join(before.spec.argv())} to "
                     f"{' '.join(after.spec.argv())}")
    for key in sorted(owned):
        old, new = before.reals.get(key), after.reals.get(key)
        if old is not None and new is None:
            notes.append(f"real server {join(*key)} was deleted")
        elif old is None and new is not None:
            notes.append(f"real server {new.describe()} was added")
        elif old is not None and new is not None and not old.same_settings(new):
            notes.append(f"real server {old.describe()} became {new.describe()}")
    return notes


def drain_finished(real: RealServer | None, started: float, now: float, timeout: float) -> bool:
    """`drain_then_remove`: delete once no connection is left or `timeout` has passed."""
    return real is None or (real.active == 0 and real.inactive == 0) or now - started >= timeout
