"""Configuration of the `haproxy` sink: its options, a service's binding, and the
backend and server names HAProxy can parse.

    sinks:
      lb: {type: haproxy, socket: /run/haproxy/admin.sock, timeout: 2s, resync: 30s,
           watch: 1s}
    services:
      web:
        sinks:
          - {sink: lb, backend: web_pool, servers: {web1: srv1}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sentinel.addresses import tcp_address
from sentinel.config.load import NameProblem
from sentinel.config.node import Node
from sentinel.config.tables import Duration, Field, FilePath, Rule, Section, scalar

HAPROXY_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
NAME_RULE = "letters, digits and _.:-"


@dataclass(frozen=True, slots=True)
class HAProxyOptions:
    """The `sinks.NAME` mapping of a haproxy sink."""

    socket: str
    timeout: float = 2.0  # per runtime API command
    resync: float = 30.0  # full drift repair
    watch: float = 1.0  # `show info`, to notice a reload or restart


@dataclass(frozen=True, slots=True)
class HAProxyBinding:
    """A service's names in HAProxy."""

    backend: str | None = None  # defaults to the service name
    servers: Mapping[str, str] = field(default_factory=dict)  # sentinel name -> HAProxy name


def _servers(node: Node) -> dict[str, str]:
    servers = {key: value.as_str() for key, value in node.items()}
    for key, value in servers.items():
        if not HAPROXY_NAME.match(value):
            raise node.as_map()[key].error(f"not a HAProxy server name: {value!r} "
                                           f"({NAME_RULE})")
    return servers


def _backend(node: Node) -> str:
    backend = node.as_str()
    if not HAPROXY_NAME.match(backend):
        raise node.error(f"not a HAProxy backend name: {backend!r} ({NAME_RULE})")
    return backend


_D = HAProxyOptions(socket="")
_NAME = scalar({"type": "string", "pattern": HAPROXY_NAME.pattern})
OPTIONS = Section(
    Field("socket", FilePath(), "HAProxy's runtime API: a unix socket path or host:port",
          required="a haproxy sink needs `socket` (a unix socket path or host:port)"),
    Field("timeout", Duration(), "per runtime API command", _D.timeout),
    Field("resync", Duration(), "how often HAProxy's state is read back and drift repaired",
          _D.resync),
    Field("watch", Duration(), "how often `show info` is read to notice a reload or restart",
          _D.watch))
BINDING = Section(
    Field("backend", Rule(_backend, _NAME), "the HAProxy backend (default: the service's "
          "name)"),
    Field("servers", Rule(_servers, {"type": ["object", "null"], "additionalProperties": _NAME}),
          "HAProxy server names by sentinel backend name (default: the same names)"))


def parse_options(node: Node) -> HAProxyOptions:
    """`{type: haproxy, socket: /run/haproxy/admin.sock | host:port, timeout, resync, watch}`."""
    e = OPTIONS.parse(node)
    OPTIONS.require(node, e)
    socket = OPTIONS.get(e, "socket")
    tcp = tcp_address(socket)
    if tcp is not None and not 0 < tcp[1] < 65536:
        raise e["socket"].error(f"port must be 1..65535, got {tcp[1]}")
    return HAProxyOptions(socket=socket, timeout=OPTIONS.get(e, "timeout"),
                          resync=OPTIONS.get(e, "resync"), watch=OPTIONS.get(e, "watch"))


def parse_binding(node: Node) -> HAProxyBinding:
    """`{sink: NAME, backend: HAPROXY_BACKEND, servers: {web1: srv1, ...}}`."""
    e = BINDING.parse(node)
    servers = BINDING.get(e, "servers", {})
    return HAProxyBinding(backend=BINDING.get(e, "backend"), servers=servers)


def check_names(binding: object, service: str, backends: Sequence[str]) -> list[NameProblem]:
    """The HAProxy backend is the service's name and each server its backend's name,
    unless the binding maps them; HAProxy has no proxy or server by a name it cannot parse,
    so every command for the service would fail."""
    if not isinstance(binding, HAProxyBinding):
        return []
    problems: list[NameProblem] = []
    if binding.backend is None and not HAPROXY_NAME.match(service):
        problems.append((None, f"{service!r} is not a valid HAProxy backend name ({NAME_RULE});"
                               f" set `backend:` in the binding or rename the service"))
    problems += [(name, f"{name!r} is not a valid HAProxy server name ({NAME_RULE}); give "
                        f"the backend a `name:` or map it in the binding's `servers:`")
                 for name in backends
                 if name not in binding.servers and not HAPROXY_NAME.match(name)]
    return problems
