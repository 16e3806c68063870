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
from typing import Literal, TypeVar

from sentinel.config.model import Config
from sentinel.config.node import Node
from sentinel.config.sections import default_command, parse_command
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
T = TypeVar("T", bound=str)


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


def parse_options(node: Node) -> IpvsOptions:
    """`{type: ipvs, command: [...], driver: ipvsadm, resync: 30s, timeout: 10s}`."""
    e = node.as_map({"command", "driver", "resync", "timeout"})
    if "driver" in e and e["driver"].as_str() != "ipvsadm":
        raise e["driver"].error(f"unknown driver {e['driver'].describe()}; this build has "
                                f"`ipvsadm` (netlink is not available)")
    d = IpvsOptions()
    return IpvsOptions(
        command=parse_command(e["command"]) if "command" in e
        else default_command(node, "command", d.command),
        timeout=e["timeout"].as_duration() if "timeout" in e else d.timeout,
        resync=e["resync"].as_duration() if "resync" in e else d.resync)


def parse_binding(node: Node) -> IpvsBinding:
    """A service's `{sink: NAME, virtual: ..., scheduler: ..., ...}`."""
    e = node.as_map({"virtual", "scheduler", "flags", "persistent", "forward", "on_down",
                     "drain_timeout", "u_threshold", "l_threshold"})
    if "virtual" not in e:
        raise node.error("an ipvs binding needs `virtual` (tcp:VIP:PORT, udp:VIP:PORT or "
                         "fwmark:N)")
    try:
        virtual = parse_virtual(e["virtual"].as_str())
    except ValueError as exc:
        raise e["virtual"].error(str(exc)) from None
    scheduler = _choice(e.get("scheduler"), SCHEDULERS, "wlc")
    flags = frozenset[int]()
    if "flags" in e:
        node_flags = e["flags"]
        names = [item.as_str() for item in node_flags.as_list()] if node_flags.is_list else [
            part.strip() for part in node_flags.as_str().split(",") if part.strip()]
        try:
            flags = parse_flags(scheduler, names)
        except ValueError as exc:
            raise node_flags.error(str(exc)) from None
    persistent = None
    if "persistent" in e:
        seconds = e["persistent"].as_duration()
        persistent = max(1, round(seconds))
    upper = e["u_threshold"].as_int(0, 2**31 - 1) if "u_threshold" in e else 0
    lower = e["l_threshold"].as_int(0, 2**31 - 1) if "l_threshold" in e else 0
    if lower > upper:
        raise e["l_threshold"].error(f"must not exceed u_threshold ({upper}); the kernel "
                                     f"refuses it")
    return IpvsBinding(
        virtual=virtual, spec=ServiceSpec(scheduler, flags, persistent),
        forward=_choice(e.get("forward"), tuple(FORWARDS), "dr"),
        on_down=_choice(e.get("on_down"), ON_DOWN, "weight0"),
        drain_timeout=e["drain_timeout"].as_duration() if "drain_timeout" in e else 60.0,
        u_threshold=upper, l_threshold=lower)


def _choice(node: Node | None, allowed: tuple[T, ...], default: T) -> T:
    if node is None:
        return default
    value = node.as_str()
    for option in allowed:
        if value == option:
            return option
    raise node.error(f"expected one of {', '.join(allowed)}; got {node.describe()}")


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
