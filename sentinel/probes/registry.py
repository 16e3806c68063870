"""Probe kinds, registered by their config name.

`make_probe(config)` builds the probe a service's `probe:` section asks for;
one probe object serves all of the service's backends (`check(target)`).
"""

from __future__ import annotations

from collections.abc import Callable

from sentinel.config.model import ProbeConfig
from sentinel.probes.agent import AgentProbe
from sentinel.probes.base import Probe, Target, classify, failed
from sentinel.probes.dns import DnsProbe
from sentinel.probes.grpc import GrpcProbe
from sentinel.probes.http import LeanHttpProbe
from sentinel.probes.https import HttpProbe
from sentinel.probes.script import ScriptProbe
from sentinel.probes.tcp import TcpProbe

__all__ = [
    "PROBE_KINDS",
    "AgentProbe",
    "DnsProbe",
    "GrpcProbe",
    "HttpProbe",
    "LeanHttpProbe",
    "Probe",
    "ScriptProbe",
    "Target",
    "TcpProbe",
    "classify",
    "failed",
    "make_probe",
]

PROBE_KINDS: dict[str, Callable[[ProbeConfig], Probe]] = {
    "tcp": TcpProbe,  # raw sockets unless TLS (see tcp.py)
    "http": LeanHttpProbe,  # raw sockets; httpx stays for HTTPS
    "https": HttpProbe,
    "script": ScriptProbe,
    "grpc": GrpcProbe,  # per task: HTTP/2 through h2 on a Trio stream
    "dns": DnsProbe,  # per task: dnspython's Trio backend
    "agent": AgentProbe,  # per task: HAProxy's agent-check, one line read
}


def make_probe(config: ProbeConfig) -> Probe:
    """The probe for `config`; a type with no registered kind raises ValueError."""
    try:
        kind = PROBE_KINDS[config.type]
    except KeyError:
        known = ", ".join(sorted(PROBE_KINDS))
        raise ValueError(f"unknown probe type {config.type!r} (known: {known})") from None
    return kind(config)
