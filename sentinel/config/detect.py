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
from sentinel.config.sections import (
    ADDRESS,
    PROBE,
    RATE_TEXT,
    TIMING,
    merged,
    parse_probe,
    parse_rate,
)
from sentinel.config.tables import (
    Bool,
    Duration,
    Either,
    Field,
    ListOf,
    Rule,
    Section,
    Str,
    scalar,
)
from sentinel.errors import ConfigError, ConfigErrors

CANARY = Section(
    Field("name", Str(), "its name in /v1/state and the logs (default: the address)"),
    Field("address", ADDRESS, "host:port to probe", required="a canary needs `address`"),
    Field("probe", PROBE, "how it is probed: tcp unless given (defaults do not apply)"),
)
CANARIES = ListOf(Either((ADDRESS, CANARY)), min_items=1)
"""`canaries:`: addresses probed but never published, vouching for the checker's network."""
_SUSPECT = SuspectConfig()
SUSPECT = Section(
    Field("mass_failure", Rule(parse_rate, scalar(
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, RATE_TEXT)),
          "more than this share of all backends (across two services or more) turning "
          "down within `window` makes sentinel suspect itself; below 100%",
          _SUSPECT.mass_failure),
    Field("window", Duration(), "default: twice the longest probe interval"),
    Field("max_suspect", Duration(positive=False), "the longest a suspicion lasts (0: until "
          "a canary passes, which needs canaries)", _SUSPECT.max_suspect),
    doc="doubting itself when many backends fail at once")
HAPROXY = Section(
    Field("sink", Str(), "a haproxy sink this service publishes to",
          required="expected a haproxy sink's name or {sink: NAME, interval: ...}"),
    Field("interval", Duration(), "how often `show stat` is read",
          PassiveConfig().haproxy_interval),
)
PASSIVE = Section(
    Field("nginx_error_log", Str(), "an nginx error log to follow (its directory must "
          "exist)"),
    Field("haproxy", Either((Str(), HAPROXY)), "read HAProxy's per-server error counters "
          "through this haproxy sink's socket"),
    Field("count", Bool(), "passive failures count in the breaker (default: they only "
          "trigger a probe)", PassiveConfig().count),
    doc="failures seen by the balancers (SPEC 10)")


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
    e = CANARY.parse(item) if item.is_map else {"address": item}
    CANARY.require(item, e)
    host, port = CANARY.get(e, "address")
    address = e["address"].as_str().strip()
    probe = parse_probe(merged(None, e.get("probe"), "type", TIMING.keys, "tcp"))
    return CanaryConfig(name=CANARY.get(e, "name", address), address=address,
                        host=host, port=port, probe=probe)


def parse_suspect(node: Node, services: tuple[ServiceConfig, ...],
                  canaries: tuple[CanaryConfig, ...]) -> SuspectConfig:
    """`suspect: {mass_failure, window, max_suspect}`. `window` defaults to twice the
    longest probe interval; `max_suspect: 0` (only canaries end it) needs canaries."""
    e = SUSPECT.parse(node)
    mass = SUSPECT.get(e, "mass_failure")
    if mass >= 1:
        raise e["mass_failure"].error("must be below 100% (more than all backends never "
                                      "turn down)")
    longest = max((c.probe.timing.interval for s in services for c in s.entries),
                  default=_SUSPECT.window / 2)
    window = SUSPECT.get(e, "window", 2 * longest)
    max_suspect = SUSPECT.get(e, "max_suspect")
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
    e = PASSIVE.parse(node)
    log_path = PASSIVE.get(e, "nginx_error_log")
    if log_path is not None and not Path(log_path).parent.is_dir():
        raise e["nginx_error_log"].error(
            f"directory {str(Path(log_path).parent)!r} does not exist")
    sink, interval = None, PassiveConfig().haproxy_interval
    if "haproxy" in e:
        sink, interval = _haproxy(e["haproxy"], bindings, sinks, interval)
    return PassiveConfig(nginx_error_log=log_path, haproxy=sink, haproxy_interval=interval,
                         count=PASSIVE.get(e, "count"))


def _haproxy(node: Node, bindings: tuple[SinkBinding, ...],
             sinks: Mapping[str, SinkConfig | None], interval: float) -> tuple[str, float]:
    e = HAPROXY.parse(node) if node.is_map else {"sink": node}
    HAPROXY.require(node, e)
    ref = e["sink"]
    name = HAPROXY.get(e, "sink")
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
    return name, HAPROXY.get(e, "interval", interval)
