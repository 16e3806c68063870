"""`sentinel probe URL`: one probe now, with the same code the engine runs."""

from __future__ import annotations

import sys
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from sentinel.config.model import HttpSpec, ProbeConfig, ScriptSpec, TcpSpec, Timing
from sentinel.config.node import Node
from sentinel.config.sections import parse_command, parse_probe
from sentinel.errors import ConfigError
from sentinel.model import ProbeResult
from sentinel.probes.base import Target
from sentinel.probes.registry import make_probe

USAGE = ("tcp://host:port, http(s)://host:port/path, grpc(s)://host:port/service, "
         "dns://server[:port]/name?qtype=A, agent://host:port or script:/path/to/cmd")
DEFAULT_PORTS = {"http": 80, "https": 443, "dns": 53}
SECTIONS = ("grpc", "grpcs", "dns", "agent")  # built by the config's own parser


def parse_probe_url(url: str, timeout: float) -> tuple[ProbeConfig, Target]:
    """A probe and its target from one of the URLs in USAGE."""
    timing = Timing(interval=timeout, fast_interval=timeout, down_interval=timeout,
                    timeout=timeout)
    if url.startswith("script:"):
        command = url[len("script:"):]
        if not command.strip():
            raise ConfigError(None, f"no command in {url!r}")
        # the same checks as a config file's `command`: a missing program is a bad argument
        argv = parse_command(Node(command, url, 1, 1, ""))
        return (ProbeConfig("script", timing, ScriptSpec(argv)),
                Target("cli", argv[0], "", 0))
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # `http://[::1` (unclosed), `tcp://[zz]:80` (no IPv6 address)
        raise ConfigError(None, f"bad URL {url!r}: {exc}") from None
    if parts.scheme not in ("tcp", "http", "https", *SECTIONS) or not parts.hostname:
        raise ConfigError(None, f"expected {USAGE}, got {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        raise ConfigError(None, f"bad port in {url!r}") from None
    if port is None:
        article = "an" if parts.scheme[0] in "aeiou" else "a"
        raise ConfigError(None, f"{article} {parts.scheme} URL needs a port: {url!r}")
    target = Target("cli", parts.netloc, parts.hostname, port)
    if parts.scheme in SECTIONS:
        return _section(url, parts.scheme, unquote(parts.path.lstrip("/")),
                        parse_qs(parts.query), timeout), target
    if parts.scheme == "tcp":
        return ProbeConfig("tcp", timing, TcpSpec()), target
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ProbeConfig(parts.scheme, timing, HttpSpec(path=path)), target  # type: ignore[arg-type]


def _section(url: str, scheme: str, path: str, query: dict[str, list[str]],
             timeout: float) -> ProbeConfig:
    """The probe a config section would give, checked by the config's own parser (so a
    bad qtype reads as it would in a file)."""
    kind = "grpc" if scheme == "grpcs" else scheme
    keys: dict[str, object] = {"type": kind, "interval": timeout, "timeout": timeout}
    if kind == "grpc":
        keys.update(service=path, tls=scheme == "grpcs")
    elif scheme == "dns":
        if not path:
            raise ConfigError(None, f"no name to query in {url!r} (dns://server/name)")
        keys.update(name=path, qtype=query.get("qtype", ["A"])[-1])
    section = {k: Node(v, url, 1, 1, k) for k, v in keys.items()}
    return parse_probe(Node(section, url, 1, 1, ""))


def format_result(result: ProbeResult) -> str:
    """`healthy in 1.2ms` or `unhealthy (connect): connection refused in 0.3ms`."""
    took = f"{result.latency * 1000:.1f}ms"
    if result.ok:
        weight = f", weight={result.weight}" if result.weight is not None else ""
        note = f" ({result.detail})" if result.detail else ""
        return f"healthy in {took}{weight}{note}"
    kind = result.failure.value if result.failure else "error"
    return f"unhealthy ({kind}): {result.error} in {took}"


def probe_once(url: str, timeout_text: str) -> int:
    """Run one probe; exit 0 healthy, 1 unhealthy, 2 bad arguments."""
    try:
        timeout = Node(timeout_text, "--timeout", 1, 1, "").as_duration()
        config, target = parse_probe_url(url, timeout)
    except ConfigError as exc:
        print(f"sentinel probe: {exc.message}", file=sys.stderr)
        return 2

    async def once() -> ProbeResult:
        probe = make_probe(config)
        try:
            return await probe.check(target)
        finally:
            await probe.aclose()

    result = trio.run(once)
    print(f"{url}: {format_result(result)}")
    return 0 if result.ok else 1
