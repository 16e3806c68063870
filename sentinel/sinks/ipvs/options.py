"""Configuration of the `ipvs` sink, and the risky combinations `sentinel check` warns of.

    sinks:
      lvs: {type: ipvs, command: ipvsadm, driver: ipvsadm, resync: 30s, timeout: 10s}
    services:
      web:
        sinks:
          - {sink: lvs, virtual: tcp:10.0.0.1:80, scheduler: wlc, forward: dr,
             persistent: 300s, flags: [mh-fallback], on_down: weight0,
             drain_timeout: 60s, u_threshold: 0, l_threshold: 0}

`virtual` is `tcp:VIP:PORT`, `udp:...`, `sctp:...` (IPv6 in brackets) or
`fwmark:N` (`fwmark:N/ipv6` for an IPv6 firewall-mark service).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sentinel.config.model import Config
from sentinel.config.node import Node
from sentinel.config.sections import COMMAND, default_command, parse_command
from sentinel.config.tables import Choice, Duration, Field, Int, Rule, Section, scalar
from sentinel.sinks.ipvs.table import (
    FORWARDS,
    SCHEDULERS,
    ServiceSpec,
    Virtual,
    parse_flags,
    parse_virtual,
)

OnDown = Literal["weight0", "remove", "drain_then_remove"]
ON_DOWN: tuple[OnDown, ...] = ("weight0", "remove", "drain_then_remove")
SYSCTL_DIR = Path("/proc/sys/net/ipv4/vs")


@dataclass(frozen=True, slots=True)
class IpvsOptions:
    """The `sinks.NAME` mapping of an ipvs sink."""

    command: tuple[str, ...] = ("ipvsadm",)
    timeout: float = 10.0  # per ipvsadm call
    resync: float = 30.0  # full re-read and drift repair


@dataclass(frozen=True, slots=True)
class IpvsBinding:
    """One service's virtual service and how its backends become real servers."""

    virtual: Virtual
    spec: ServiceSpec = field(default_factory=lambda: ServiceSpec("wlc"))
    forward: str = "dr"
    on_down: OnDown = "weight0"
    drain_timeout: float = 60.0
    u_threshold: int = 0
    l_threshold: int = 0


def _driver(node: Node) -> str:
    if node.as_str() != "ipvsadm":
        raise node.error(f"unknown driver {node.describe()}; this build has `ipvsadm` "
                         f"(netlink is not available)")
    return "ipvsadm"


def _virtual(node: Node) -> Virtual:
    try:
        return parse_virtual(node.as_str())
    except ValueError as exc:
        raise node.error(str(exc)) from None


def _flag_names(node: Node) -> list[str]:
    """A list of flag names, or one string of them separated by commas."""
    if node.is_list:
        return [item.as_str() for item in node.as_list()]
    return [part.strip() for part in node.as_str().split(",") if part.strip()]


_O, _B = IpvsOptions(), IpvsBinding(virtual=Virtual("fwmark", fwmark=1))
_FORWARDS = tuple(FORWARDS)
_VIRTUAL = (r"^\s*(([Tt][Cc][Pp]|[Uu][Dd][Pp]|[Ss][Cc][Tt][Pp]):(\[[0-9A-Fa-f:.]+\]|[0-9.]+)"
            r":\d+|[Ff][Ww][Mm][Aa][Rr][Kk]:\d+(/ipv[46])?)\s*$")
_FLAG = {"type": "string", "pattern": r"^(flag-[123]|[sm]h-(fallback|port))$"}
_THRESHOLD = Int(0, 2**31 - 1)
OPTIONS = Section(
    Field("command", Rule(parse_command, COMMAND), "the ipvsadm to run", _O.command),
    Field("driver", Rule(_driver, scalar({"const": "ipvsadm"})), "how the kernel's table "
          "is changed: ipvsadm (the only one in this build)", "ipvsadm"),
    Field("resync", Duration(), "how often the kernel's table is read back and drift "
          "repaired", _O.resync),
    Field("timeout", Duration(), "per ipvsadm call", _O.timeout))
BINDING = Section(
    Field("virtual", Rule(_virtual, scalar({"type": "string", "pattern": _VIRTUAL})),
          "the virtual service: tcp:VIP:PORT, udp:..., sctp:... (IPv6 in brackets) or "
          "fwmark:N (fwmark:N/ipv6)",
          required="an ipvs binding needs `virtual` (tcp:VIP:PORT, udp:VIP:PORT or "
                   "fwmark:N)"),
    Field("scheduler", Choice(SCHEDULERS),
          "ipvsadm -s", _B.spec.scheduler),
    Field("flags", Rule(_flag_names, {"anyOf": [
        {"type": "string"}, {"type": "array", "items": _FLAG}]}),
          "scheduler flags (ipvsadm -b): a list, or names separated by commas"),
    Field("persistent", Duration(), "persistence timeout, in whole seconds (ipvsadm -p)"),
    Field("forward", Choice(_FORWARDS),
          "dr (-g), nat (-m) or tun (-i)", _B.forward),
    Field("on_down", Choice(ON_DOWN),
          "weight0: a down real server keeps its connections at weight 0; remove: it is "
          "deleted; drain_then_remove: deleted after drain_timeout", _B.on_down),
    Field("drain_timeout", Duration(), "drain_then_remove waits this long", _B.drain_timeout),
    Field("u_threshold", _THRESHOLD, "real server's upper connection threshold (0: none)",
          _B.u_threshold),
    Field("l_threshold", _THRESHOLD, "its lower threshold; at most u_threshold",
          _B.l_threshold))


def parse_options(node: Node) -> IpvsOptions:
    """`{type: ipvs, command: [...], driver: ipvsadm, resync: 30s, timeout: 10s}`."""
    e = OPTIONS.parse(node)
    OPTIONS.get(e, "driver")
    return IpvsOptions(
        command=OPTIONS.get(e, "command") if "command" in e
        else default_command(node, "command", _O.command),
        timeout=OPTIONS.get(e, "timeout"), resync=OPTIONS.get(e, "resync"))


def parse_binding(node: Node) -> IpvsBinding:
    """A service's `{sink: NAME, virtual: ..., scheduler: ..., ...}`."""
    e = BINDING.parse(node)
    BINDING.require(node, e)
    virtual = BINDING.get(e, "virtual")
    scheduler = BINDING.get(e, "scheduler")
    flags = frozenset[int]()
    if "flags" in e:
        try:
            flags = parse_flags(scheduler, BINDING.get(e, "flags"))
        except ValueError as exc:
            raise e["flags"].error(str(exc)) from None
    persistent = None
    if "persistent" in e:
        persistent = max(1, round(BINDING.get(e, "persistent")))
    upper = BINDING.get(e, "u_threshold")
    lower = BINDING.get(e, "l_threshold")
    if lower > upper:
        raise e["l_threshold"].error(f"must not exceed u_threshold ({upper}); the kernel "
                                     f"refuses it")
    return IpvsBinding(
        virtual=virtual, spec=ServiceSpec(scheduler, flags, persistent),
        forward=BINDING.get(e, "forward"), on_down=BINDING.get(e, "on_down"),
        drain_timeout=BINDING.get(e, "drain_timeout"), u_threshold=upper, l_threshold=lower)


def warnings(config: Config, sysctl_dir: Path = SYSCTL_DIR) -> list[str]:
    """Risky ipvs combinations in `config`, one sentence each (for `sentinel check`).

    The kernel's `net.ipv4.vs` settings are read from `sysctl_dir` when present
    (sentinel check usually runs on the director), so a warning is left out
    when the setting already makes the combination safe."""
    kinds = {sink.name: sink for sink in config.sinks if sink.type == "ipvs"}
    out: list[str] = []
    for svc in config.services:
        for binding in svc.sinks:
            options = binding.options
            if binding.sink in kinds and isinstance(options, IpvsBinding):
                where = f"service {svc.name} ({binding.sink}, {options.virtual})"
                out += [f"{where}: {text}" for text in _risks(options, sysctl_dir)]
    return out


def _risks(binding: IpvsBinding, sysctl_dir: Path) -> list[str]:
    spec = binding.spec
    risks = []
    keeps_down = binding.on_down == "weight0"
    if spec.scheduler == "mh" and 1 not in spec.flags and keeps_down:
        risks.append("mh without mh-fallback and on_down weight0: a weight-0 real server "
                     "keeps its slots in the kernel's Maglev table, so new flows hashed to "
                     "it are dropped; add `flags: [mh-fallback]` or use on_down: remove")
    if spec.persistent is not None and keeps_down and _sysctl(
            sysctl_dir, "expire_quiescent_template") != 1:
        risks.append("persistent with on_down weight0: clients with a persistence template "
                     "keep reaching a weight-0 (down) real server until it expires; set "
                     "net.ipv4.vs.expire_quiescent_template=1")
    if binding.on_down != "weight0" and _sysctl(sysctl_dir, "expire_nodest_conn") != 1:
        risks.append(f"on_down {binding.on_down}: packets of connections still open to a "
                     f"deleted real server are dropped silently until the entry times out; "
                     f"set net.ipv4.vs.expire_nodest_conn=1 so clients learn at once")
    return risks


def _sysctl(directory: Path, name: str) -> int | None:
    try:
        return int((directory / name).read_text().strip())
    except (OSError, ValueError):
        return None
