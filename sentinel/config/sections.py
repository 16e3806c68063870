"""Parsing the `probe` and `breaker` sections, with `defaults` merged underneath."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from fractions import Fraction

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype

from sentinel.config.model import (
    DEFAULT_EXPECT_STATUS,
    AgentSpec,
    BreakerConfig,
    CircuitBreakerConfig,
    DnsSpec,
    GrpcSpec,
    HttpSpec,
    NginxBreakerConfig,
    ProbeConfig,
    ProbeSpec,
    ScriptSpec,
    StatusClass,
    TcpSpec,
    ThresholdBreakerConfig,
    Timing,
    WatchConfig,
)
from sentinel.config.node import Node
from sentinel.errors import ConfigError

TIMING_KEYS = {"type", "interval", "fast_interval", "down_interval", "timeout", "jitter"}
PROBE_KEYS = {
    "tcp": {"send", "expect", "tls", "sni", "verify", "watch"},
    "http": {"method", "path", "host", "headers", "expect_status", "expect_body", "verify",
             "watch"},
    "https": {"method", "path", "host", "headers", "expect_status", "expect_body", "verify"},
    "script": {"command"},
    "grpc": {"service", "tls", "sni", "verify"},
    "dns": {"name", "qtype", "expect_rcode", "expect_answer"},
    "agent": {"agent_port", "agent_send"},
}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
BREAKER_KEYS = {
    "nginx": {"max_fails", "fail_timeout", "passes", "window"},
    "threshold": {"rise", "fall"},
    "circuit": {"window", "min_calls", "failure_rate", "slow_call", "slow_rate", "open_for",
                "max_open_for", "half_open_trials"},
}


def merged(default: Node | None, own: Node | None, kind_key: str, shared: set[str],
           implicit: str) -> Node:
    """`own` over `default`; kind-specific defaults apply only when the kinds agree.
    A side without `kind_key` is of the `implicit` kind (tcp probes, nginx breakers)."""
    base = dict(default.as_map()) if default is not None else {}
    mine = dict(own.as_map()) if own is not None else {}
    base_kind = base[kind_key].raw if kind_key in base else implicit
    if kind_key in mine and mine[kind_key].raw != base_kind:
        base = {k: v for k, v in base.items() if k in shared}
    anchor = own or default
    if anchor is None:
        return Node({}, "", 1, 1, "")
    return anchor.derive({**base, **mine})


def _kind(node: Node, key: str, default: str, table: dict[str, set[str]],
          common: set[str]) -> str:
    """The `key` (type/kind) of a section, checked against `table`, and then the
    section's other keys against what that kind allows."""
    kind_node = node.as_map().get(key)
    kind = kind_node.as_str() if kind_node else default
    if kind not in table:
        raise (kind_node or node).error(f"expected one of {', '.join(table)}; got {kind!r}")
    node.as_map(common | table[kind])
    return kind


def parse_probe(node: Node) -> ProbeConfig:
    """A `probe` mapping (defaults already merged) to a ProbeConfig."""
    entries = node.as_map()
    ptype = _kind(node, "type", "tcp", PROBE_KEYS, TIMING_KEYS)
    timing = _timing(entries)
    spec: ProbeSpec
    if ptype == "tcp":
        spec = _tcp(entries)
    elif ptype == "script":
        spec = _script(entries, node)
    elif ptype == "grpc":
        spec = _grpc(entries)
    elif ptype == "dns":
        spec = _dns(entries, node)
    elif ptype == "agent":
        spec = _agent(entries)
    else:
        spec = _http(entries)
    watch = _watch(entries["watch"], spec) if "watch" in entries else None
    return ProbeConfig(type=ptype, timing=timing, spec=spec,  # type: ignore[arg-type]
                       watch=watch)


def _watch(node: Node, spec: ProbeSpec) -> WatchConfig | None:
    """`watch: true | false | {keepalive: DURATION}` (tcp without TLS, http)."""
    if node.is_map:
        e = node.as_map({"keepalive"})
        keepalive = e["keepalive"].as_duration() if "keepalive" in e else None
        if keepalive is not None and keepalive < 1:
            raise e["keepalive"].error("must be at least 1s (the kernel counts TCP "
                                       "keepalive in whole seconds)")
        watch: WatchConfig | None = WatchConfig(keepalive=keepalive)
    else:
        watch = WatchConfig() if node.as_bool() else None
    if watch is not None and isinstance(spec, TcpSpec) and spec.tls:
        raise node.error("not with `tls: true`: the held connection would be a TLS "
                         "handshake never started, which servers time out and log")
    return watch


def _timing(e: Mapping[str, Node]) -> Timing:
    interval = e["interval"].as_duration() if "interval" in e else 2.0
    fast = e["fast_interval"].as_duration() if "fast_interval" in e else interval
    down = e["down_interval"].as_duration() if "down_interval" in e else interval
    timeout = e["timeout"].as_duration() if "timeout" in e else min(1.0, interval)
    if timeout > interval:
        where = e.get("timeout") or e.get("interval")
        assert where is not None
        raise where.error(f"timeout ({_fmt(timeout)}) must not be longer than interval "
                          f"({_fmt(interval)})")
    for key, value, effect in (
            ("fast_interval", fast, "probing slows down after a failure"),
            ("down_interval", down, "a recovery is seen that much later")):
        if value > interval:  # `fast_interval: 200m`, meant as 200ms, took minutes to notice
            e[key].warn(f"{key} ({_fmt(value)}) is longer than interval ({_fmt(interval)}): "
                        f"{effect}")
    jitter = float(e["jitter"].as_share(Fraction(1, 2))) if "jitter" in e else 0.0
    return Timing(interval=interval, fast_interval=fast, down_interval=down, timeout=timeout,
                  jitter=jitter)


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def _regex(node: Node) -> str:
    text = node.as_str()
    try:
        re.compile(text)
    except re.error as exc:
        raise node.error(f"invalid regex {text!r}: {exc}") from None
    return text


def _bytes(node: Node) -> bytes:
    """Text with C-style escapes (`\\r\\n`, `\\x00`) as the bytes it spells."""
    try:
        return node.as_str().encode().decode("unicode_escape").encode("latin-1")
    except UnicodeDecodeError as exc:  # a `\x` escape cut short
        raise node.error(f"bad escape: {exc.reason}") from None
    except UnicodeEncodeError:  # `\u20ac`: a character, not a byte
        raise node.error("escapes above \\xff are not bytes; write the text itself "
                         "(sent as UTF-8) or \\xNN bytes") from None


def _tcp(e: Mapping[str, Node]) -> TcpSpec:
    send = _bytes(e["send"]) if "send" in e else None
    expect = re.compile(_regex(e["expect"]).encode()) if "expect" in e else None
    return TcpSpec(
        send=send, expect=expect,
        tls=e["tls"].as_bool() if "tls" in e else False,
        sni=e["sni"].as_str() if "sni" in e else None,
        verify=e["verify"].as_bool() if "verify" in e else True,
    )


def _http(e: Mapping[str, Node]) -> HttpSpec:
    path = _http_text(e["path"], "a path", spaces=False) if "path" in e else "/"
    if not path.startswith("/"):
        raise e["path"].error(f"must start with '/', got {path!r}")
    headers: tuple[tuple[str, str], ...] = ()
    if "headers" in e:
        headers = tuple((_token(value, name, "a header name", at_key=True),
                         _http_text(value, "a header value", spaces=True))
                        for name, value in e["headers"].items())
    return HttpSpec(
        method=_token(e["method"], e["method"].as_str(), "a method").upper() if "method" in e
        else "GET",
        path=path,
        host=_http_text(e["host"], "a Host header", spaces=False) if "host" in e else None,
        headers=headers,
        expect_status=_statuses(e["expect_status"]) if "expect_status" in e
        else DEFAULT_EXPECT_STATUS,
        expect_body=re.compile(_regex(e["expect_body"])) if "expect_body" in e else None,
        verify=e["verify"].as_bool() if "verify" in e else True,
    )


def _http_text(node: Node, what: str, *, spaces: bool) -> str:
    """Text that goes into the request as it is: printable ASCII (httpx encodes headers as
    ASCII; a path percent-encodes the rest), spaces and tabs only inside header values.
    A CR or LF would end the line and let the config write its own request."""
    text = node.as_str()
    for char in text:
        if not ("!" <= char <= "~" or (spaces and char in " \t")):
            rule = ("printable ASCII (spaces and tabs allowed)" if spaces
                    else "printable ASCII without spaces; percent-encode the rest (%20)")
            raise node.error(f"{what} must be {rule}, found {char!r}")
    return text


def _token(node: Node, text: str, what: str, *, at_key: bool = False) -> str:
    """A method or header name (the key of `node`): an RFC 9110 token."""
    if not _TOKEN.fullmatch(text):
        message = f"{what} must be a token (letters, digits and !#$%&'*+-.^_`|~), got {text!r}"
        raise node.key_error(message) if at_key else node.error(message)
    return text


def _statuses(node: Node) -> tuple[StatusClass, ...]:
    items = node.as_list() if node.is_list else [node]
    out = []
    for item in items:
        text = item.as_str().strip().lower()
        if re.fullmatch(r"[1-5]xx", text):
            out.append(StatusClass(int(text[0]) * 100, int(text[0]) * 100 + 99))
        elif re.fullmatch(r"\d{3}", text) and 100 <= int(text) <= 599:
            out.append(StatusClass(int(text), int(text)))
        else:
            raise item.error(f"expected a status code 100..599 or a class like 2xx, "
                             f"got {item.describe()}")
    if not out:
        raise node.error("must list at least one status")
    return tuple(out)


def parse_command(node: Node) -> tuple[str, ...]:
    """An argv list, or a string split as a shell would (never run through one);
    the program must exist and be executable."""
    if node.is_list:
        argv = [item.as_str() for item in node.as_list()]
    else:
        try:
            argv = shlex.split(node.as_str())
        except ValueError as exc:
            raise node.error(f"cannot split command: {exc}") from None
    if not argv:
        raise node.error("must not be empty")
    problem = _missing(argv[0])
    if problem:
        raise node.error(problem)
    return tuple(argv)


def default_command(node: Node, key: str, argv: tuple[str, ...]) -> tuple[str, ...]:
    """The command a sink runs when `key` is not set (`node` is the sink): its program
    is checked as a configured one would be, so `check` fails where `run` would."""
    problem = _missing(argv[0])
    if problem:
        raise node.error(f"`{key}` defaults to `{shlex.join(argv)}`: {problem}; install it "
                         f"or set `{key}`")
    return argv


def _missing(program: str) -> str | None:
    """Why `program` cannot be run here (looked up as exec does), or None."""
    if "/" in program:
        if not os.path.exists(program):
            return f"command not found: {program}"
        if not os.access(program, os.X_OK) or os.path.isdir(program):
            return f"command is not executable: {program}"
    elif not program.strip():
        return "the program name is empty"
    elif "\0" in program or shutil.which(program) is None:
        return f"command not found on PATH: {program}"
    return None


def _script(e: Mapping[str, Node], node: Node) -> ScriptSpec:
    if "command" not in e:
        raise node.error("a script probe needs `command`")
    return ScriptSpec(command=parse_command(e["command"]))


def _grpc(e: Mapping[str, Node]) -> GrpcSpec:
    service = e["service"].raw if "service" in e else ""
    if not isinstance(service, str):  # "" (the server as a whole) is allowed, unlike as_str
        raise e["service"].error(f"expected a gRPC service name, got {e['service'].describe()}")
    return GrpcSpec(
        service=service,
        tls=e["tls"].as_bool() if "tls" in e else False,
        sni=e["sni"].as_str() if "sni" in e else None,
        verify=e["verify"].as_bool() if "verify" in e else True,
    )


def _dns(e: Mapping[str, Node], node: Node) -> DnsSpec:
    if "name" not in e:
        raise node.error("a dns probe needs `name` (the name to query)")
    name = e["name"].as_str()
    try:
        dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise e["name"].error(f"not a DNS name: {name!r} ({exc})") from None
    qtype = e["qtype"].as_str().upper() if "qtype" in e else "A"
    try:
        rdtype = dns.rdatatype.from_text(qtype)
    except dns.exception.DNSException:
        raise e["qtype"].error(f"unknown query type {qtype!r}; expected a record type "
                               "such as A, AAAA, CNAME, MX, NS, SOA, SRV, TXT") from None
    if dns.rdatatype.is_metatype(rdtype):  # AXFR, IXFR, ANY, OPT...: not a health question
        raise e["qtype"].error(f"{qtype} is not a record type a probe can ask for")
    rcode = e["expect_rcode"].as_str().upper() if "expect_rcode" in e else "NOERROR"
    try:
        dns.rcode.from_text(rcode)
    except dns.exception.DNSException:
        raise e["expect_rcode"].error(f"unknown rcode {rcode!r}; expected one of NOERROR, "
                                      "NXDOMAIN, SERVFAIL, REFUSED, ...") from None
    answer: re.Pattern[str] | frozenset[str] | None = None
    if "expect_answer" in e:
        node_answer = e["expect_answer"]
        answer = (_addresses(node_answer) if node_answer.is_list
                  else re.compile(_regex(node_answer)))
    return DnsSpec(name=name, qtype=qtype, expect_rcode=rcode, expect_answer=answer)


def _addresses(node: Node) -> frozenset[str]:
    """A list of IP addresses, in canonical form."""
    out = set()
    for item in node.as_list():
        try:
            out.add(ipaddress.ip_address(item.as_str()).compressed)
        except ValueError:
            raise item.error(f"expected an IPv4 or IPv6 address, got {item.describe()}") from None
    if not out:
        raise node.error("must list at least one address (or be a regex)")
    return frozenset(out)


def _agent(e: Mapping[str, Node]) -> AgentSpec:
    return AgentSpec(
        agent_port=e["agent_port"].as_int(1, 65535) if "agent_port" in e else None,
        agent_send=_bytes(e["agent_send"]) if "agent_send" in e else None,
    )


def parse_breaker(node: Node) -> BreakerConfig:
    """A `breaker` mapping (defaults already merged) to one of the breaker configs."""
    e = node.as_map()
    kind = _kind(node, "kind", "nginx", BREAKER_KEYS, {"kind"})
    if kind == "nginx":
        window = e["window"].as_str() if "window" in e else "sliding"
        if window not in ("sliding", "chained"):
            raise e["window"].error(f"expected sliding or chained, got {window!r}")
        return NginxBreakerConfig(
            max_fails=e["max_fails"].as_int(0) if "max_fails" in e else 1,
            fail_timeout=e["fail_timeout"].as_duration() if "fail_timeout" in e else 10.0,
            passes=e["passes"].as_int(1) if "passes" in e else 1,
            window=window,  # type: ignore[arg-type]
        )
    if kind == "threshold":
        return ThresholdBreakerConfig(
            rise=e["rise"].as_int(1) if "rise" in e else 2,
            fall=e["fall"].as_int(1) if "fall" in e else 3,
        )
    return _circuit(e)


def parse_rate(node: Node) -> float:
    """A rate in (0, 1], written as a fraction (0.5) or a percent (50%)."""
    rate = node.as_share()
    if rate == 0:
        raise node.error("must be more than 0 (a rate of 0 would trip on every call)")
    return float(rate)  # the float nearest the exact rate: 7.2% compares as 0.072


def _circuit(e: Mapping[str, Node]) -> CircuitBreakerConfig:
    d = CircuitBreakerConfig()
    open_for = e["open_for"].as_duration() if "open_for" in e else d.open_for
    max_open = e["max_open_for"].as_duration() if "max_open_for" in e else max(
        d.max_open_for, open_for)
    if max_open < open_for:
        raise e["max_open_for"].error(f"must be at least open_for ({_fmt(open_for)})")
    return CircuitBreakerConfig(
        window=e["window"].as_duration() if "window" in e else d.window,
        min_calls=e["min_calls"].as_int(1) if "min_calls" in e else d.min_calls,
        failure_rate=parse_rate(e["failure_rate"]) if "failure_rate" in e else d.failure_rate,
        slow_call=e["slow_call"].as_duration() if "slow_call" in e else None,
        slow_rate=parse_rate(e["slow_rate"]) if "slow_rate" in e else d.slow_rate,
        open_for=open_for,
        max_open_for=max_open,
        half_open_trials=e["half_open_trials"].as_int(1) if "half_open_trials" in e
        else d.half_open_trials,
    )


__all__ = ["ConfigError", "default_command", "merged", "parse_breaker", "parse_command",
           "parse_probe"]
