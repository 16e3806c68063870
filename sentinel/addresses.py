"""Addresses as sentinel reads and writes them: `host:port`, IPv6 literals in brackets,
and the canonical form addresses are matched and hashed by.

Every place that puts a host before `:port` (a Host header, a URL, the API's
listen address, an ipvsadm argument) goes through `join` or `bracketed`; every
place that reads `host:port` back goes through `split`; balancer logs, reports
and the Maglev hash compare `canonical` keys, so `[2001:DB8:0::1]:80` and
`[2001:db8::1]:80` are one backend. Pure: no I/O, no Trio.
"""

from __future__ import annotations

import ipaddress
import re

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_HOST_PORT = re.compile(r"\[([^\[\]\s]+)\]:(\d+)|([^:\[\]\s]+):(\d+)")


def ip_literal(host: str) -> IP | None:
    """The address `host` spells when it is an IP literal (a `%zone` suffix kept), None
    for a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def without_zone(host: str) -> str:
    """An IPv6 literal without its `%zone` (`fe80::1%eth0` -> `fe80::1`)."""
    return host.split("%", 1)[0]


def bracketed(host: str) -> str:
    """`host` as it stands before `:port` or in a URL: an IPv6 literal in brackets."""
    return f"[{host}]" if ":" in host else host


def join(host: str, port: int) -> str:
    """`10.0.0.1:80`, `[2001:db8::1]:80`, `web.example:8080`."""
    return f"{bracketed(host)}:{port}"


def split(text: str) -> tuple[str, int]:
    """`host:port` or `[IPv6]:port` (blanks around it ignored) to (host, port), the host
    without brackets; ValueError when it is neither. An IPv6 literal must be bracketed
    (`::1:80` could be either); what the host is otherwise is the caller's to check."""
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected host:port or [IPv6]:port, got {text!r}")
    return match.group(1) or match.group(3), int(match.group(2) or match.group(4))


def tcp_address(address: str) -> tuple[str, int] | None:
    """(host, port) for `host:port` or `[IPv6]:port`; None for anything else (a unix
    socket's path, where a socket may be either: HAProxy's runtime API)."""
    if "/" in address:
        return None
    try:
        return split(address)
    except ValueError:
        return None


def canonical(host: str, port: int) -> str:
    """`host:port` as addresses are compared and hashed: an IP literal in its compressed
    form (IPv6 bracketed), a host name lower-cased; brackets and blanks around `host`
    are ignored. The Maglev hash's backend key (docs/sinks.md, "The same table everywhere")."""
    host = host.strip().strip("[]").lower()
    ip = ip_literal(host)
    return join(ip.compressed, port) if ip is not None else f"{host}:{port}"
