"""What every passive source produces (a `Signal`) and how an address a balancer names
is mapped back to the backends configured at it (`BackendIndex`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sentinel.addresses import canonical, without_zone
from sentinel.config.model import ServiceConfig

Key = tuple[str, str]  # (service, backend)


@dataclass(frozen=True, slots=True)
class Signal:
    """One failure of one backend, as a balancer or a client saw it on real traffic."""

    service: str
    backend: str
    source: str  # "nginx error log", "haproxy show stat", "report from lb1"
    error: str  # "upstream timed out"

    @property
    def reason(self) -> str:
        """How reasons and logs name it: `passive: nginx error log: upstream timed out`."""
        return f"passive: {self.source}: {self.error}"


class BackendIndex:
    """Backends by the address balancers name them with, and services by upstream name.

    A balancer logs the address it connected to; a backend configured by host name is
    found only if the balancer logs that same name (nginx logs the IP it resolved).
    """

    __slots__ = ("_by_address", "_by_upstream", "_keys")

    def __init__(self, services: Iterable[ServiceConfig],
                 upstreams: dict[str, str] | None = None) -> None:
        """`upstreams`: balancer upstream name -> service (default: the service's name)."""
        self._keys: set[Key] = set()
        self._by_address: dict[str, list[Key]] = {}
        self._by_upstream: dict[str, list[Key]] = {}
        names = upstreams or {}
        for svc in services:
            keys = [(svc.name, b.name) for b in svc.backends]
            self._keys.update(keys)
            for b in svc.backends:
                self._by_address.setdefault(_key(b.host, b.port), []).append(
                    (svc.name, b.name))
            self._by_upstream.setdefault(svc.name, []).extend(keys)
        for upstream, service in names.items():
            self._by_upstream[upstream] = [k for k in self._by_upstream.get(service, [])
                                           if k[0] == service]

    def known(self, key: Key) -> bool:
        """True when (service, backend) is configured."""
        return key in self._keys

    def at(self, address: str) -> list[Key]:
        """The backends at `host:port` (as a balancer wrote it); [] when none."""
        host, _, port = address.rpartition(":")  # also `::1:80`, unbracketed, as it was
        if not port.isdigit():
            return []
        return self._by_address.get(_key(host, int(port)), [])

    def upstream(self, name: str) -> list[Key]:
        """Every backend of the service a balancer's upstream `name` stands for."""
        return self._by_upstream.get(name, [])


def _key(host: str, port: int) -> str:
    """The canonical address, zone left out: balancers log link-local IPv6 without it."""
    return canonical(without_zone(host), port)
