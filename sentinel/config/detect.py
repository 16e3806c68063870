"""Parsing the detection sections: `canaries:` and `suspect:` (SPEC 11) at the top,
`passive:` (SPEC 10) per service or in defaults."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sentinel.config.model import (
    CanaryConfig,
    PassiveConfig,
    ServiceConfig,
    SinkBinding,
    SinkConfig,
    SuspectConfig,
)
from sentinel.config.node import Node
from sentinel.config.sections import TIMING_KEYS, merged, parse_probe, parse_rate
from sentinel.errors import ConfigError, ConfigErrors

CANARY_KEYS = {"name", "address", "probe"}
SUSPECT_KEYS = {"mass_failure", "window", "max_suspect"}
PASSIVE_KEYS = {"nginx_error_log", "haproxy", "count"}
HAPROXY_KEYS = {"sink", "interval"}


def parse_canaries(node: Node) -> tuple[CanaryConfig, ...]:
    """`canaries:`: a list of `host:port` or `{name, address, probe}` (a tcp probe unless
    `probe` says otherwise; `defaults` do not apply: a gateway is not a web backend)."""
    items = node.as_list()
    if not items:
        raise node.error("must list at least one canary (or leave `canaries` out)")
    out: list[CanaryConfig] = []
    errors: list[ConfigError] = []
    for item in items:
        try:
            canary = _canary(item)
        except ConfigError as exc:
            errors.append(exc)
            continue
        if any(c.name == canary.name for c in out):
            where = item.get("name") if item.is_map else None
            errors.append((where or item).error(f"duplicate canary name {canary.name!r}"))
        out.append(canary)
    if errors:
        raise ConfigErrors(errors)
    return tuple(out)


def _canary(item: Node) -> CanaryConfig:
    from sentinel.config.load import parse_address  # load.py imports this module

    e = item.as_map(CANARY_KEYS) if item.is_map else {"address": item}
    if "address" not in e:
        raise item.error("a canary needs `address`")
    host, port = parse_address(e["address"])
    address = e["address"].as_str().strip()
    probe = parse_probe(merged(None, e.get("probe"), "type", TIMING_KEYS, "tcp"))
    return CanaryConfig(name=e["name"].as_str() if "name" in e else address, address=address,
                        host=host, port=port, probe=probe)


def parse_suspect(node: Node, services: tuple[ServiceConfig, ...],
                  canaries: tuple[CanaryConfig, ...]) -> SuspectConfig:
    """`suspect: {mass_failure, window, max_suspect}`. `window` defaults to twice the
    longest probe interval; `max_suspect: 0` (only canaries end it) needs canaries."""
    e = node.as_map(SUSPECT_KEYS)
    d = SuspectConfig()
    mass = parse_rate(e["mass_failure"]) if "mass_failure" in e else d.mass_failure
    if mass >= 1:
        raise e["mass_failure"].error("must be below 100% (more than all backends never "
                                      "turn down)")
    longest = max((c.probe.timing.interval for s in services for c in s.entries),
                  default=d.window / 2)
    window = e["window"].as_duration() if "window" in e else 2 * longest
    max_suspect = (e["max_suspect"].as_duration(positive=False) if "max_suspect" in e
                   else d.max_suspect)
    if max_suspect == 0 and not canaries:
        raise e["max_suspect"].error("0 (only a passing canary ends a suspicion) needs "
                                     "`canaries`")
    return SuspectConfig(mass_failure=mass, window=window, max_suspect=max_suspect)


def parse_passive(node: Node, bindings: tuple[SinkBinding, ...],
                  sinks: Mapping[str, SinkConfig | None]) -> PassiveConfig:
    """`passive: {nginx_error_log: PATH, haproxy: SINK | {sink, interval}, count}`.

    The log may not exist yet (rotation, a first start) but its directory must. The
    haproxy sink must be one this service publishes to: its binding names the HAProxy
    backend and servers whose counters are read."""
    e = node.as_map(PASSIVE_KEYS)
    log_path = None
    if "nginx_error_log" in e:
        log_path = e["nginx_error_log"].as_str()
        if not Path(log_path).parent.is_dir():
            raise e["nginx_error_log"].error(
                f"directory {str(Path(log_path).parent)!r} does not exist")
    sink, interval = None, PassiveConfig().haproxy_interval
    if "haproxy" in e:
        sink, interval = _haproxy(e["haproxy"], bindings, sinks, interval)
    return PassiveConfig(nginx_error_log=log_path, haproxy=sink, haproxy_interval=interval,
                         count=e["count"].as_bool() if "count" in e else False)


def _haproxy(node: Node, bindings: tuple[SinkBinding, ...],
             sinks: Mapping[str, SinkConfig | None], interval: float) -> tuple[str, float]:
    e = node.as_map(HAPROXY_KEYS) if node.is_map else {"sink": node}
    if "sink" not in e:
        raise node.error("expected a haproxy sink's name or {sink: NAME, interval: ...}")
    ref = e["sink"]
    name = ref.as_str()
    if name in sinks and sinks[name] is None:  # its own errors are reported already
        return name, interval
    found = sinks.get(name)
    kind = found.type if found is not None else None
    if kind != "haproxy":
        known = ", ".join(sorted(n for n, s in sinks.items() if s and s.type == "haproxy"))
        what = "undefined sink" if kind is None else f"{kind} sink"
        raise ref.error(f"{what} {name!r}; expected a haproxy sink "
                        f"({known or 'none defined'})")
    if not any(b.sink == name for b in bindings):
        raise ref.error(f"this service does not publish to {name!r}: add it to its "
                        "`sinks` (its backend and server names are read from there)")
    return name, e["interval"].as_duration() if "interval" in e else interval
