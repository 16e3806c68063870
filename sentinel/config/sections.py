"""Parsing the `probe` and `breaker` sections, with `defaults` merged underneath.

`PROBE` and `BREAKER` are their field tables (see `sentinel.config.tables`): the keys
each probe type and breaker kind takes, read here and walked by `sentinel schema`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import socket
from collections.abc import Mapping
from fractions import Fraction

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype

from sentinel.addresses import ip_literal, split, without_zone
from sentinel.config.model import (
    DEFAULT_EXPECT_STATUS,
    NGINX_WINDOWS,
    AgentSpec,
    BreakerConfig,
    CheckConfig,
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
from sentinel.config.tables import (
    PORT,
    Bool,
    Choice,
    Duration,
    Field,
    FilePath,
    Int,
    JsonSchema,
    Rule,
    Section,
    Share,
    Str,
    Variants,
    scalar,
)
from sentinel.errors import ConfigError
from sentinel.files import unwritable
from sentinel.timefmt import duration

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")


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


# -- values ---------------------------------------------------------------------


def _regex(node: Node) -> str:
    text = node.as_str()
    try:
        re.compile(text)
    except re.error as exc:
        raise node.error(f"invalid regex {text!r}: {exc}") from None
    return text


def _text_regex(node: Node) -> re.Pattern[str]:
    return re.compile(_regex(node))


def _bytes_regex(node: Node) -> re.Pattern[bytes]:
    return re.compile(_regex(node).encode())


def _bytes(node: Node) -> bytes:
    """Text with C-style escapes (`\\r\\n`, `\\x00`) as the bytes it spells."""
    try:
        return node.as_str().encode().decode("unicode_escape").encode("latin-1")
    except UnicodeDecodeError as exc:  # a `\x` escape cut short
        raise node.error(f"bad escape: {exc.reason}") from None
    except UnicodeEncodeError:  # `\u20ac`: a character, not a byte
        raise node.error("escapes above \\xff are not bytes; write the text itself "
                         "(sent as UTF-8) or \\xNN bytes") from None


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


def _method(node: Node) -> str:
    return _token(node, node.as_str(), "a method").upper()


def _path(node: Node) -> str:
    path = _http_text(node, "a path", spaces=False)
    if not path.startswith("/"):
        raise node.error(f"must start with '/', got {path!r}")
    return path


def _host(node: Node) -> str:
    return _http_text(node, "a Host header", spaces=False)


def _headers(node: Node) -> tuple[tuple[str, str], ...]:
    return tuple((_token(value, name, "a header name", at_key=True),
                  _http_text(value, "a header value", spaces=True))
                 for name, value in node.items())


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


def parse_address(node: Node) -> tuple[str, int]:
    """`host:port` or `[v6addr]:port` to (host, port)."""
    text = node.as_str().strip()
    try:
        host, port = split(text)
    except ValueError:
        hint = " (write IPv6 addresses as [addr]:port)" if text.count(":") > 1 else ""
        raise node.error(f"expected host:port{hint}, got {text!r}") from None
    if text.startswith("["):
        if not isinstance(ip_literal(without_zone(host)), ipaddress.IPv6Address):
            raise node.error(f"invalid IPv6 address {host!r}")
    elif not _HOST.match(host):  # `a;b:80` would end nginx's `server` line early
        raise node.error(f"invalid host {host!r}: an IPv4 address or a DNS name (letters, "
                         f"digits and .-_)")
    if not 1 <= port <= 65535:
        raise node.error(f"port must be 1..65535, got {port}")
    return host, port


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
        if os.path.isdir(program):
            return f"command is a directory: {program}"
        if not os.access(program, os.X_OK):
            return f"command is not executable: {program}"
    elif not program.strip():
        return "the program name is empty"
    elif "\0" in program or shutil.which(program) is None:
        # exec skips a file on PATH it may not run, and fails "permission denied" if
        # no other is found: name it
        found = None if "\0" in program else shutil.which(program, mode=os.F_OK)
        if found is not None:
            return f"command is not executable: {found} (found on PATH for {program})"
        return f"command not found on PATH: {program}"
    return None


def writable(node: Node, path: str, *, directory: bool = False) -> str:
    """`path` (read from `node`), refused at `node` when sentinel could never write the
    file there (with `directory`: files in that directory) on this machine, so `check`
    fails where `run` would retry for ever: a directory where the file goes, a file
    where a directory must be."""
    problem = unwritable(path, directory=directory)
    if problem:
        raise node.error(problem)
    return path


def _output_file(node: Node) -> str:
    return writable(node, node.as_path())


OUTPUT_FILE = Rule(_output_file, FilePath().schema())
"""A path sentinel writes a file at (missing directories are made)."""


def parse_source(node: Node) -> str:
    """A local IP address to connect from (HAProxy's `source`), in canonical form; local
    means bindable here, checked by binding to it, so any 127.0.0.0/8 address counts."""
    text = node.as_str()
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise node.error(f"expected an IP address of this host, got {text!r}") from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # the address is checked, no port is taken (probes bind the same way)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
        try:
            sock.bind((ip.compressed, 0))
        except OSError as exc:
            raise node.error(f"{ip.compressed} is not an address of this host (binding to "
                             f"it failed: {exc.strerror or exc})") from None
    return ip.compressed


def _grpc_service(node: Node) -> str:
    service = node.raw
    if not isinstance(service, str):  # "" (the server as a whole) is allowed, unlike as_str
        raise node.error(f"expected a gRPC service name, got {node.describe()}")
    return service


def _dns_name(node: Node) -> str:
    name = node.as_str()
    try:
        dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise node.error(f"not a DNS name: {name!r} ({exc})") from None
    return name


def _qtype(node: Node) -> str:
    qtype = node.as_str().upper()
    try:
        rdtype = dns.rdatatype.from_text(qtype)
    except dns.exception.DNSException:
        raise node.error(f"unknown query type {qtype!r}; expected a record type "
                         "such as A, AAAA, CNAME, MX, NS, SOA, SRV, TXT") from None
    if dns.rdatatype.is_metatype(rdtype):  # AXFR, IXFR, ANY, OPT...: not a health question
        raise node.error(f"{qtype} is not a record type a probe can ask for")
    return qtype


def _rcode(node: Node) -> str:
    rcode = node.as_str().upper()
    try:
        dns.rcode.from_text(rcode)
    except dns.exception.DNSException:
        raise node.error(f"unknown rcode {rcode!r}; expected one of NOERROR, "
                         "NXDOMAIN, SERVFAIL, REFUSED, ...") from None
    return rcode


def _expect_answer(node: Node) -> re.Pattern[str] | frozenset[str]:
    return _addresses(node) if node.is_list else _text_regex(node)


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


def parse_rate(node: Node) -> float:
    """A rate in (0, 1], written as a fraction (0.5) or a percent (50%)."""
    rate = node.as_share()
    if rate == 0:
        raise node.error("must be more than 0 (a rate of 0 would trip on every call)")
    return float(rate)  # the float nearest the exact rate: 7.2% compares as 0.072


def _agent_type(node: Node) -> str:
    if node.as_str() != "agent":
        raise node.error(f"an agent block is of type agent, got {node.describe()}")
    return "agent"


def _require_word(node: Node) -> str | int:
    if node.raw in ("all", "any"):
        return str(node.raw)
    if isinstance(node.raw, str):
        raise node.error(f"expected all, any or a number of checks, got {node.describe()}")
    return node.as_int(1)


def _watch(node: Node) -> WatchConfig | None:
    """`watch: true | false | {keepalive: DURATION}` (tcp without TLS, http)."""
    if not node.is_map:
        return WatchConfig() if node.as_bool() else None
    keepalive: float | None = _WATCH_OPTIONS.get(_WATCH_OPTIONS.parse(node), "keepalive")
    if keepalive is not None and keepalive < 1:
        raise node.as_map()["keepalive"].error("must be at least 1s (the kernel counts TCP "
                                               "keepalive in whole seconds)")
    return WatchConfig(keepalive=keepalive)


# -- what JSON Schema can say of those values -----------------------------------

TEXT: JsonSchema = {"type": ["string", "number"]}
REGEX: JsonSchema = {"type": ["string", "number"], "format": "regex"}
COMMAND: JsonSchema = {"anyOf": [
    {"type": "string", "pattern": r"\S"},
    {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1}],
    "description": "an argv list, or a string split as a shell would (never run by one)"}
# "No character outside the set" rather than `^[set]*$`: Python's `$` also matches before
# a final newline, which is the very character these keep out of a request.
TOKEN: JsonSchema = {"type": "string", "minLength": 1,
                     "not": {"pattern": "[^!#$%&'*+.^_`|~0-9A-Za-z-]"}}
_VISIBLE: JsonSchema = {"type": "string", "not": {"pattern": "[^!-~]"}}
RATE_TEXT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*%?\s*$"
RATE: JsonSchema = scalar({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, RATE_TEXT)
_STATUS = scalar({"type": "integer", "minimum": 100, "maximum": 599},
                 r"^\s*([1-5][xX][xX]|[1-5]\d\d)\s*$")
_ADDRESS = scalar({"type": "string", "pattern": r"^[0-9A-Fa-f:.]+$"})
HOST = r"(\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9_.-]+)"
ADDRESS = Rule(parse_address, scalar({"type": "string", "pattern": rf"^\s*{HOST}:{PORT}\s*$"}))
"""`host:port` or `[v6addr]:port`, as (host, port)."""

# -- the tables -----------------------------------------------------------------

PROBE_TYPES = ("tcp", "http", "https", "script", "grpc", "dns", "agent")
_T = Timing()
TIMING = Section(
    Field("type", Str(), "the probe type: " + " | ".join(PROBE_TYPES)),
    Field("interval", Duration(), "time between probes", _T.interval),
    Field("fast_interval", Duration(), "after a failure, until the breaker settles "
          "(default: interval)"),
    Field("down_interval", Duration(), "while the backend is down (default: interval)"),
    Field("timeout", Duration(), "a probe taking longer fails (default: the smaller of 1s "
          "and interval); at most interval"),
    Field("jitter", Share(Fraction(1, 2)), "each delay stretched by a random share in "
          "+-jitter, up to 50%", Fraction(0)),
)
"""The keys every probe type takes; merged from `defaults` even when the type differs."""
_TCP, _HTTP, _GRPC = TcpSpec(), HttpSpec(), GrpcSpec()
_TLS = Field("tls", Bool(), "speak TLS", _TCP.tls)
_SNI = Field("sni", Str(), "the TLS server name (default: the backend's host)")
_VERIFY = Field("verify", Bool(), "verify the server's TLS certificate", _TCP.verify)
_SOURCE = Field("source", Rule(parse_source, scalar({
    "type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})),
                "the local IP address probes connect from (default: the kernel's choice)")
HTTP = Section(
    Field("method", Rule(_method, scalar(TOKEN)),
          "the request method", _HTTP.method),
    Field("path", Rule(_path, scalar({**_VISIBLE, "pattern": "^/"})),
          "the request path: printable ASCII, percent-encode the rest", _HTTP.path),
    Field("host", Rule(_host, scalar(_VISIBLE)),
          "the Host header (default: the backend's address)"),
    Field("headers", Rule(_headers, {
        "type": ["object", "null"], "propertyNames": TOKEN,
        "additionalProperties": scalar({"type": ["string", "number"],
                                        "not": {"pattern": "[^\t -~]"}})}),
          "request headers: name -> value"),
    Field("expect_status", Rule(_statuses, {"anyOf": [
        _STATUS, {"type": "array", "items": _STATUS, "minItems": 1}]}),
          "healthy statuses: codes (301) or classes (2xx); default 2xx and 3xx"),
    Field("expect_body", Rule(_text_regex, REGEX), "a regex the body must match"),
    _VERIFY, _SOURCE,
)
_WATCH_OPTIONS = Section(Field("keepalive", Duration(), "TCP keepalive idle time on the "
                               "held connection, at least 1s (default: off, so the "
                               "connection carries nothing)"))
_WATCH = Field("watch", Rule(_watch, {"anyOf": [
    Bool().schema(), {**_WATCH_OPTIONS.schema(), "type": "object"}]}),
               "hold one idle connection per backend; its loss brings the next probe "
               "forward (not with tls)")
PROBE = Variants("type", {
    "tcp": Section(
        Field("send", Rule(_bytes, TEXT), "bytes to send once connected (\\r\\n, \\xNN "
              "escapes)"),
        Field("expect", Rule(_bytes_regex, REGEX), "a regex on what is read back"),
        _TLS, _SNI, _VERIFY, _SOURCE, _WATCH),
    "http": Section(*HTTP, _WATCH),
    "https": HTTP,
    "script": Section(
        Field("command", Rule(parse_command, COMMAND), "the check to run; exit 0 is "
              "healthy, a `weight=N` line on stdout sets the weight",
              required="a script probe needs `command`")),
    "grpc": Section(
        Field("service", Rule(_grpc_service, {"type": "string"}), "the service asked "
              "about (\"\": the server as a whole)", _GRPC.service),
        _TLS, _SNI, _VERIFY, _SOURCE),
    "dns": Section(
        Field("name", Rule(_dns_name, TEXT), "the name to query",
              required="a dns probe needs `name` (the name to query)"),
        Field("qtype", Rule(_qtype, scalar({"type": "string"})), "the record type asked "
              "for", DnsSpec().qtype),
        Field("expect_rcode", Rule(_rcode, scalar({"type": "string"})), "the rcode of a "
              "healthy answer", DnsSpec().expect_rcode),
        Field("expect_answer", Rule(_expect_answer, {"anyOf": [
            REGEX, {"type": "array", "items": _ADDRESS, "minItems": 1}]}),
              "a regex over the answer section, or the addresses it must hold"), _SOURCE),
    "agent": Section(
        Field("agent_port", Int(1, 65535), "the agent's port (default: the backend's)"),
        Field("agent_send", Rule(_bytes, TEXT), "text sent to the agent first (escapes as "
              "in tcp send)"), _SOURCE),
}, common=TIMING, default="tcp", doc="how each backend is checked")
CHECK = Variants("type", PROBE.variants, common=Section(
    *TIMING, Field("name", Str(), "what reasons and /v1/state call this check (default: "
                   "its type; two checks of one type need names)")),
    default="tcp", doc="one of a service's checks: a probe with its own schedule",
    merged_under_defaults=True)
REQUIRE = Rule(_require_word, {"anyOf": [
    {"enum": ["all", "any"]}, {"type": "integer", "minimum": 1}]})
"""How many of a service's checks must pass: all, any or a number."""
AGENT = Section(
    Field("type", Rule(_agent_type, {"const": "agent"}),
          "agent (the only type an agent block can be)"),
    TIMING["interval"], TIMING["timeout"],
    Field("port", Int(1, 65535), "the agent's port (default: the backend's)"),
    Field("send", Rule(_bytes, TEXT), "text sent to the agent first (escapes as in tcp "
          "send)"),
    PROBE.variants["agent"]["agent_port"], PROBE.variants["agent"]["agent_send"], _SOURCE,
    doc="HAProxy's agent-check beside the health probe: the agent's answers set the "
        "backend's weight and admin state")
_NGINX, _THRESHOLD, _CIRCUIT = NginxBreakerConfig(), ThresholdBreakerConfig(), \
    CircuitBreakerConfig()
# The most probes a breaker count may ask for (max_fails, passes, rise, fall, min_calls,
# half_open_trials). Each one is a probe: 1000 keeps a dead backend in rotation for 100 s
# at a 100ms fast_interval and 17 minutes at 1s, where nginx and HAProxy default to 1 to
# 3 and Resilience4j's minimum number of calls to 100; slower detection is asked for with
# a longer interval. Unbounded, `max_fails: 1000000000` was taken, nginx's breaker kept
# every failure time within fail_timeout, and `sentinel check` (which steps the breaker
# probe by probe, at most MAX_PROBES) printed `never` for breakers that do flip (`rise:
# 30000`, or 10000 with five checks): below this bound its answer is exact.
MAX_COUNT = 1000
_COUNT_0, _COUNT_1 = Int(0, MAX_COUNT), Int(1, MAX_COUNT)
BREAKER = Variants("kind", {
    "nginx": Section(
        Field("max_fails", _COUNT_0, "failures within fail_timeout that take a backend down "
              "(0: never)", _NGINX.max_fails),
        Field("fail_timeout", Duration(), "the failure window, and how long a backend stays "
              "down before a trial", _NGINX.fail_timeout),
        Field("passes", _COUNT_1, "successful trials that bring it back", _NGINX.passes),
        Field("window", Choice(NGINX_WINDOWS),
              "sliding (as nginx documents) or chained (as nginx's code does)",
              _NGINX.window)),
    "threshold": Section(
        Field("rise", _COUNT_1, "consecutive successes that bring a backend up", _THRESHOLD.rise),
        Field("fall", _COUNT_1, "consecutive failures that take it down", _THRESHOLD.fall)),
    "circuit": Section(
        Field("window", Duration(), "the sliding window calls are counted in",
              _CIRCUIT.window),
        Field("min_calls", _COUNT_1, "calls in the window before the rates count",
              _CIRCUIT.min_calls),
        Field("failure_rate", Rule(parse_rate, RATE), "failed share that opens the circuit",
              _CIRCUIT.failure_rate),
        Field("slow_call", Duration(), "a call slower than this is slow (default: none)"),
        Field("slow_rate", Rule(parse_rate, RATE), "slow share that opens the circuit",
              _CIRCUIT.slow_rate),
        Field("open_for", Duration(), "how long it stays open; doubles on each re-open",
              _CIRCUIT.open_for),
        Field("max_open_for", Duration(), "the most open_for doubles to (default: the larger "
              "of 60s and open_for)"),
        Field("half_open_trials", _COUNT_1, "trial calls while half-open",
              _CIRCUIT.half_open_trials)),
}, common=Section(Field("kind", Str(), "the breaker kind: nginx | threshold | circuit")),
    default="nginx", doc="how probe results turn a backend down and up")


# -- reading the sections -------------------------------------------------------


def parse_probe(node: Node) -> ProbeConfig:
    """A `probe` mapping (defaults already merged) to a ProbeConfig."""
    entries = node.as_map()
    ptype = PROBE.parse(node)
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
    source = parse_source(entries["source"]) if "source" in entries else None
    watch = PROBE.variants[ptype].get(entries, "watch") if "watch" in entries else None
    if watch is not None and isinstance(spec, TcpSpec) and spec.tls:
        raise entries["watch"].error("not with `tls: true`: the held connection would be a "
                                     "TLS handshake never started, which servers time out "
                                     "and log")
    return ProbeConfig(type=ptype, timing=timing, spec=spec,  # type: ignore[arg-type]
                       source=source, watch=watch)


def _timing(e: Mapping[str, Node]) -> Timing:
    interval = TIMING.get(e, "interval")
    fast = TIMING.get(e, "fast_interval", interval)
    down = TIMING.get(e, "down_interval", interval)
    timeout = TIMING.get(e, "timeout", min(1.0, interval))
    if timeout > interval:
        where = e.get("timeout") or e.get("interval")
        assert where is not None
        raise where.error(f"timeout ({duration(timeout)}) must not be longer than "
                          f"interval ({duration(interval)})")
    for key, value, effect in (
            ("fast_interval", fast, "probing slows down after a failure"),
            ("down_interval", down, "a recovery is seen that much later")):
        if value > interval:  # `fast_interval: 200m`, meant as 200ms, took minutes to notice
            e[key].warn(f"{key} ({duration(value)}) is longer than interval "
                        f"({duration(interval)}): {effect}")
    return Timing(interval=interval, fast_interval=fast, down_interval=down, timeout=timeout,
                  jitter=float(TIMING.get(e, "jitter")))


def _tcp(e: Mapping[str, Node]) -> TcpSpec:
    tcp = PROBE.variants["tcp"]
    return TcpSpec(send=tcp.get(e, "send"), expect=tcp.get(e, "expect"),
                   tls=tcp.get(e, "tls"), sni=tcp.get(e, "sni"), verify=tcp.get(e, "verify"))


def _http(e: Mapping[str, Node]) -> HttpSpec:
    path = HTTP.get(e, "path")
    headers = HTTP.get(e, "headers", ())
    return HttpSpec(
        method=HTTP.get(e, "method"), path=path, host=HTTP.get(e, "host"), headers=headers,
        expect_status=HTTP.get(e, "expect_status", DEFAULT_EXPECT_STATUS),
        expect_body=HTTP.get(e, "expect_body"), verify=HTTP.get(e, "verify"))


def _script(e: Mapping[str, Node], node: Node) -> ScriptSpec:
    script = PROBE.variants["script"]
    script.require(node, e)
    return ScriptSpec(command=script.get(e, "command"))


def _grpc(e: Mapping[str, Node]) -> GrpcSpec:
    grpc = PROBE.variants["grpc"]
    return GrpcSpec(service=grpc.get(e, "service"), tls=grpc.get(e, "tls"),
                    sni=grpc.get(e, "sni"), verify=grpc.get(e, "verify"))


def _dns(e: Mapping[str, Node], node: Node) -> DnsSpec:
    table = PROBE.variants["dns"]
    table.require(node, e)
    return DnsSpec(name=table.get(e, "name"), qtype=table.get(e, "qtype"),
                   expect_rcode=table.get(e, "expect_rcode"),
                   expect_answer=table.get(e, "expect_answer"))


def _agent(e: Mapping[str, Node]) -> AgentSpec:
    agent = PROBE.variants["agent"]
    return AgentSpec(agent_port=agent.get(e, "agent_port"),
                     agent_send=agent.get(e, "agent_send"))


def parse_agent(node: Node) -> ProbeConfig:
    """A service's `agent:` block (HAProxy's `agent-check` beside `check`): `interval`
    and `timeout` of its own, `port` and `send` (or the agent probe's `agent_port` and
    `agent_send`, so a `probe:` block moves here unchanged)."""
    e = AGENT.parse(node)
    AGENT.get(e, "type")
    renamed: dict[str, Node] = {}
    for short, long in (("port", "agent_port"), ("send", "agent_send")):
        if short in e and long in e:
            raise e[long].key_error(f"`{short}` and `{long}` are the same setting; give one")
        if short in e or long in e:
            renamed[long] = e[short] if short in e else e[long]
    timing = {k: v for k, v in e.items() if k in ("interval", "timeout")}
    source = parse_source(e["source"]) if "source" in e else None
    return ProbeConfig(type="agent", timing=_timing(timing), spec=_agent(renamed),
                       source=source)


def parse_checks(node: Node, default: Node | None, require: Node | None
                 ) -> tuple[tuple[CheckConfig, ...], int]:
    """A service's `checks:` (each entry a probe section with an optional `name`, the
    defaults' `probe` merged under it as under `probe:`) and `require`: `all`, `any`
    or how many must pass."""
    items = node.as_list()
    if not items:
        raise node.error("must list at least one check")
    checks: list[CheckConfig] = []
    names: dict[str, Node] = {}
    for item in items:
        if item.raw is None:  # as_map takes null for an empty section: here it is a slip
            raise item.error("an empty entry is no check: give a probe section "
                             "({type: http, ...})")
        item.as_map()
        name_node = item.get("name")
        probe = parse_probe(merged(default, item.without("name"), "type", TIMING.keys, "tcp"))
        name = name_node.as_str() if name_node is not None else probe.type
        if name in names:
            where = name_node or item
            raise where.error(f"two checks named {name!r}: give each a `name`")
        names[name] = item
        checks.append(CheckConfig(name, probe))
    if require is None:
        return tuple(checks), len(checks)
    word = _require_word(require)
    if word == "all":
        return tuple(checks), len(checks)
    if word == "any":
        return tuple(checks), 1
    assert isinstance(word, int)
    if word > len(checks):
        raise require.error(f"require ({word}) is more than the {len(checks)} check"
                            f"{'s' if len(checks) != 1 else ''} listed")
    return tuple(checks), word



def parse_breaker(node: Node) -> BreakerConfig:
    """A `breaker` mapping (defaults already merged) to one of the breaker configs."""
    e = node.as_map()
    kind = BREAKER.parse(node)
    table = BREAKER.variants[kind]
    if kind == "nginx":
        window = table.get(e, "window")
        return NginxBreakerConfig(
            max_fails=table.get(e, "max_fails"), fail_timeout=table.get(e, "fail_timeout"),
            passes=table.get(e, "passes"), window=window)
    if kind == "threshold":
        return ThresholdBreakerConfig(rise=table.get(e, "rise"), fall=table.get(e, "fall"))
    return _circuit(e)


def _circuit(e: Mapping[str, Node]) -> CircuitBreakerConfig:
    table = BREAKER.variants["circuit"]
    open_for = table.get(e, "open_for")
    max_open = table.get(e, "max_open_for", max(_CIRCUIT.max_open_for, open_for))
    if max_open < open_for:
        raise e["max_open_for"].error(f"must be at least open_for ({duration(open_for)})")
    return CircuitBreakerConfig(
        window=table.get(e, "window"), min_calls=table.get(e, "min_calls"),
        failure_rate=table.get(e, "failure_rate"), slow_call=table.get(e, "slow_call"),
        slow_rate=table.get(e, "slow_rate"),
        open_for=open_for, max_open_for=max_open,
        half_open_trials=table.get(e, "half_open_trials"))


__all__ = ["OUTPUT_FILE", "ConfigError", "default_command", "merged", "parse_agent",
           "parse_breaker", "parse_checks", "parse_command", "parse_probe", "writable"]
