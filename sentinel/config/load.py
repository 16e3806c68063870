"""YAML file -> validated, frozen `Config`, in one pass that collects every error.

Each error names the file, line and column and the key path, e.g.
`sentinel.yaml:14:9: services.web.backends[1].address: port must be 1..65535, got 70000`.

Each sink kind parses its own options: the loader is handed the kinds by name
(`SinkParser`; `sentinel.sinks.registry.load_config` hands it every built-in
kind) and imports no sink module.
"""

from __future__ import annotations

import gc
import hashlib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Protocol, TypeVar

from sentinel.cluster.config import CLUSTER, parse_cluster
from sentinel.config.detect import (
    CANARIES,
    PASSIVE,
    SUSPECT,
    parse_canaries,
    parse_passive,
    parse_suspect,
)
from sentinel.config.model import (
    EXPORTERS,
    ApiConfig,
    BackendConfig,
    CheckConfig,
    Config,
    DampenConfig,
    InitState,
    MinUp,
    ProbeConfig,
    ServiceConfig,
    SinkBinding,
    SinkConfig,
    SinkScope,
    TelemetryConfig,
    TracesConfig,
)
from sentinel.config.node import Node, load_yaml
from sentinel.config.sections import (
    ADDRESS,
    AGENT,
    BREAKER,
    CHECK,
    HOST,
    PROBE,
    RATE_TEXT,
    REQUIRE,
    TIMING,
    merged,
    parse_address,
    parse_agent,
    parse_breaker,
    parse_checks,
    parse_probe,
)
from sentinel.config.tables import (
    PORT,
    Bool,
    Choice,
    Duration,
    Either,
    Field,
    FilePath,
    Float,
    Int,
    ListOf,
    MapOf,
    Name,
    Named,
    Ref,
    Rule,
    Section,
    Share,
    Str,
    Url,
    blank_refused,
    scalar,
)
from sentinel.errors import ConfigError, ConfigErrors, Mark
from sentinel.extras import missing
from sentinel.files import read_regular, unwritable

MAX_FILE_BYTES = 16 << 20
T = TypeVar("T")
NameProblem = tuple[str | None, str]  # (backend name, or None for the service; message)


class SinkParser(Protocol):
    """What the loader needs of a sink kind (`sentinel.sinks.base.SinkKind` is one)."""

    def parse_options(self, node: Node) -> object:
        """Validate the `sinks.NAME` mapping (minus `type`)."""
        ...

    def parse_binding(self, node: Node) -> object:
        """Validate a service's `{sink: NAME, ...}` extras."""
        ...

    def check_names(self, binding: object, service: str, backends: Sequence[str]
                    ) -> list[NameProblem]:
        """Which of a service's names the sink's target cannot take."""
        ...

    @property
    def scope(self) -> SinkScope:
        """Where the kind runs in a cluster unless a sink says otherwise (SPEC 12)."""
        ...

    @property
    def options(self) -> Section:
        """The table `parse_options` reads (`sentinel schema` walks it)."""
        ...

    @property
    def binding(self) -> Section:
        """The table `parse_binding` reads."""
        ...


SinkKinds = Mapping[str, SinkParser]  # by config name (`type:`)


# -- values ---------------------------------------------------------------------


def _version(node: Node) -> int:
    version = node.as_int()
    if version != 1:
        raise node.error(f"only version 1 is supported, got {node.describe()}")
    return version


def _token(node: Node, text: str) -> str:
    """A bearer token, without the blanks around it (a token file's newline); a token
    of only blanks would let no one in, or, checked as unset, everyone."""
    token = text.strip()
    if not token:
        raise node.error("the token is empty or blank")
    if not token.isprintable():
        raise node.error("the token holds control characters")
    return token


def _token_value(node: Node) -> str:
    return _token(node, node.as_str())


def _listen(node: Node) -> tuple[str, int]:
    text = node.as_str()
    if re.fullmatch(r".*:0", text):  # port 0: let the kernel choose (tests, demos)
        host, _ = parse_address(node.derive(text[:-1] + "1"))
        return host, 0
    return parse_address(node)




def _min_up_value(node: Node) -> MinUp:
    if node.is_percent:
        return MinUp(share=node.as_share())
    return MinUp(count=node.as_int(0))


# -- the tables -----------------------------------------------------------------

_API, _TRACES, _TELEMETRY = ApiConfig(), TracesConfig(), TelemetryConfig()
API = Section(
    Field("listen", Rule(_listen, scalar({"type": "string",
                                          "pattern": rf"^\s*{HOST}:({PORT}|0)\s*$"})),
          "host:port of the HTTP API (port 0: any free port); a non-loopback address "
          "requires a token", _API.listen),
    Field("token", Rule(_token_value, {"type": ["string", "number"], "pattern": r"\S"}),
          "bearer token for /v1/events and every POST"),
    Field("token_file", FilePath(), "a file holding the token"),
    doc="the HTTP API")
TRACES = Section(
    Field("exporter", Choice(EXPORTERS),
          "none | console (JSON on stdout) | otlp (needs the otlp extra)", _TRACES.exporter),
    Field("endpoint", Url(), "OTLP/HTTP base URL; /v1/traces is appended unless there",
          _TRACES.endpoint),
    Field("headers", MapOf(Str()), "sent with every export"),
    Field("timeout", Duration(), "one export request, retries included", _TRACES.timeout),
    Field("sample_ok", Share(), "share of successful probes traced (0.1 or 10%)",
          _TRACES.sample_ok))
METRICS = Section(
    Field("prometheus", Bool(), "GET /metrics on the API port", _TELEMETRY.prometheus))
TELEMETRY = Section(
    Field("service_name", Str(), "the resource's service.name", _TELEMETRY.service_name),
    Field("resource", MapOf(Str()), "extra OpenTelemetry resource attributes"),
    Field("traces", TRACES, "trace export"),
    Field("metrics", METRICS, "metrics"),
    doc="OpenTelemetry traces and Prometheus metrics")
_DAMPEN = DampenConfig()
DAMPEN = Section(
    Field("half_life", Duration(), "the flap penalty halves in this time", _DAMPEN.half_life),
    Field("suppress", Float(1), "penalty above which changes are held", _DAMPEN.suppress),
    Field("reuse", Float(1), "penalty below which they are published again (below "
          "suppress)", _DAMPEN.reuse),
    Field("max_suppress", Duration(), "the longest a backend is held (default: 4 x "
          "half_life)"),
    doc="BGP-style flap damping: each flap adds 1000 to a penalty that decays")
_BACKEND = BackendConfig(name="", address="", host="", port=0)
BACKEND = Section(
    Field("name", Name(), "its name in events, sinks and the API (default: the address)"),
    Field("address", ADDRESS, "host:port or [v6addr]:port; a host name is resolved at "
          "probe time", required="a backend needs `address`"),
    Field("weight", Int(1, 65535), "its weight when up", _BACKEND.weight),
    Field("backup", Bool(), "takes traffic only while no primary backend is up (nginx's "
          "backup)", _BACKEND.backup))
SERVICE = Section(
    Field("backends", ListOf(Either((ADDRESS, BACKEND)), min_items=1), "the backends: "
          "host:port, or a mapping with more", required="a service needs `backends`"),
    Field("probe", PROBE.merged(), "how each backend is checked (defaults.probe merged "
          "underneath)"),
    Field("checks", ListOf(CHECK, min_items=1), "several probes, each on its own "
          "schedule, instead of one `probe` (defaults.probe merged under each)"),
    Field("require", REQUIRE, "how many of `checks` must pass: all (the default), any or "
          "a number"),
    Field("agent", AGENT, "HAProxy's agent-check beside the probe (default: none)"),
    Field("breaker", BREAKER.merged(), "how results turn a backend down and up "
          "(defaults.breaker merged underneath)"),
    Field("sinks", ListOf(Ref("binding")), "the sinks this service publishes to: a name, "
          "or {sink: NAME, ...that kind's options}"),
    Field("slow_start", Duration(positive=False), "a recovered backend's weight ramps up "
          "over this time", 0.0),
    Field("min_up", Rule(_min_up_value, {"anyOf": [
        {"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\s*\d+\s*$"},
        {"type": "string", "pattern": RATE_TEXT}, {"$ref": "#/$defs/env"}]}),
          "panic guard: never publish fewer backends up than this count or percent "
          "(default 0: off); at most the service's backends"),
    Field("dampen", DAMPEN, "flap damping (default: off)"),
    Field("init_state", Choice(tuple(InitState)), "where a backend without a saved "
          "verdict starts", InitState.FULLY_UP),
    Field("passive", PASSIVE, "passive signals (default: off)"),
    doc="one service: its backends, how they are checked, where they are published")
DEFAULTS = SERVICE.without("backends")
SINK = Section(
    Field("type", Str(), "the sink kind; it picks the options the sink takes",
          required="a sink needs `type`"),
    Field("scope", Choice(("local", "leader")),
          "in a cluster: `local` runs on every member, `leader` on the leader alone "
          "(default: the kind's; local for balancers and file, leader for webhook and exec)"),
    doc="a named sink")
"""A sink's own keys; each sink kind's table (its `options`) holds the rest."""
BINDING = Section(
    Field("sink", Str(), "the name of a sink defined under `sinks`",
          required="expected a sink name or {sink: NAME, ...options}"),
    doc="a service's use of a sink, with that sink kind's per-service options")
"""A binding's own key; each sink kind's table (its `binding`) holds the rest."""
TOP = Section(
    Field("version", Rule(_version, scalar({"const": 1}, r"^\s*1\s*$")),
          "the configuration format; only 1", 1),
    Field("state_dir", FilePath(), "verdicts, overrides and the outbox survive restarts "
          "here (relative to this file)", "./state"),
    Field("shutdown_timeout", Duration(), "how long in-flight sink work may take at "
          "SIGTERM", 10.0),
    Field("max_in_flight", Int(1, 1_000_000), "cap on probes in flight", 1024),
    Field("api", API, "the HTTP API"),
    Field("telemetry", TELEMETRY, "traces and metrics"),
    Field("defaults", DEFAULTS, "merged under every service"),
    Field("sinks", Named(Ref("sink")), "named sinks; services list the names they "
          "publish to"),
    Field("services", Named(SERVICE), "the services, by name (at least one)",
          required="missing: name at least one service to check (an empty or cut-short "
          "file checks nothing)"),
    Field("cluster", CLUSTER, "several sentinels agreeing through etcd (SPEC 12)"),
    Field("canaries", CANARIES, "addresses probed but never published: while they fail, "
          "sentinel holds every down"),
    Field("suspect", SUSPECT, "the mass-failure rule"),
    doc="sentinel's configuration", extensions="^x-")
"""The whole file. Keys starting with `x-` are free: a place for anchors that services
merge in (`<<: *name`), as in Docker Compose."""


class _Collector:
    """Gathers ConfigErrors so one pass reports them all."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except ConfigErrors as many:
            self.errors.extend(many.errors)
        except ConfigError as one:
            self.errors.append(one)

    def run(self, fn: Callable[[], T]) -> T | None:
        with self.guard():
            return fn()
        return None


def load_file(path: str | os.PathLike[str], kinds: SinkKinds,
              env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at `path` with the sink `kinds` it may use; raise
    ConfigErrors listing every problem."""
    file = str(path)
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # -c /dev/zero must not fill the memory
    except OSError as exc:
        raise ConfigErrors([ConfigError(None, f"{file}: cannot read: {exc.strerror}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigErrors([ConfigError(None, f"{file}: larger than {MAX_FILE_BYTES >> 20} MB; "
                                              f"not a config file")])
    with _no_cyclic_gc():
        try:
            root = load_yaml(data, file, env)
        except ConfigError as one:  # not YAML, a duplicate key, an unset ${VAR}, an alias bomb
            raise ConfigErrors([one]) from None
        config = parse_config(root, file, kinds)
    if config.cluster is not None:  # members compare the file as written, before ${VAR}
        digest = hashlib.sha256(data).hexdigest()
        config = replace(config, cluster=replace(config.cluster, config_sha256=digest))
    return config


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic GC off while a config is built: its hundreds of thousands of new objects
    (nodes, then the config) set off full passes over the whole heap, two thirds of the
    load at 10,000 backends, and during a reload in its worker thread each pass holds the
    event loop. Reference counting still frees what the load drops; a cycle waits for the
    next pass. Two loads at once leave it enabled: the one that disabled it enables it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_config(root: Node, file: str, kinds: SinkKinds) -> Config:
    """Validate a composed document."""
    errors = _Collector()
    parsed = errors.run(lambda: _top(root))  # None: the top level itself is wrong
    top = parsed or {}
    errors.run(lambda: TOP.get(top, "version"))
    base = Path(file).resolve().parent
    state_dir = errors.run(lambda: _state_dir(root, top, base))
    shutdown = errors.run(lambda: TOP.get(top, "shutdown_timeout"))
    in_flight = errors.run(lambda: TOP.get(top, "max_in_flight"))
    api = errors.run(lambda: parse_api(top["api"])) if "api" in top else ApiConfig()
    telemetry = (errors.run(lambda: _telemetry(top["telemetry"])) if "telemetry" in top
                 else TelemetryConfig())
    sinks = _sinks(top.get("sinks"), kinds, errors)
    defaults = errors.run(lambda: _defaults(top.get("defaults"))) or {}
    services = _services(top.get("services"), defaults, sinks, kinds, errors)
    if parsed is not None:
        errors.run(lambda: _some_services(root, top))
    cluster = errors.run(lambda: parse_cluster(top["cluster"])) if "cluster" in top else None
    canaries = (errors.run(lambda: parse_canaries(top["canaries"])) or ()
                if "canaries" in top else ())
    suspect = (errors.run(lambda: parse_suspect(top["suspect"], tuple(services), canaries))
               if "suspect" in top else None)
    if errors.errors:
        # `defaults` are merged under every service: report a bad default once, not per service
        raise ConfigErrors(list({str(e): e for e in errors.errors}.values()))
    assert state_dir is not None
    assert api is not None
    assert telemetry is not None
    assert shutdown is not None
    assert in_flight is not None
    return Config(path=file, state_dir=state_dir, shutdown_timeout=shutdown,
                  max_in_flight=in_flight, api=api, telemetry=telemetry,
                  sinks=tuple(s for s in sinks.values() if s is not None),
                  services=tuple(services), cluster=cluster, canaries=canaries,
                  suspect=suspect,
                  warnings=tuple(dict.fromkeys(str(w) for w in ConfigErrors(root.warnings).errors)))


def _state_dir(root: Node, top: Mapping[str, Node], base: Path) -> str:
    """`state_dir` (relative to the file's directory): a directory, or one that can be
    made (`run` makes it): refused here when it, or the nearest part of it that exists,
    is something else (a file, say), which `run` could only refuse without a position."""
    path = base / TOP.get(top, "state_dir")
    problem = unwritable(path, directory=True)
    if problem:
        where = top.get("state_dir")
        raise (where.error(problem) if where is not None else ConfigError(
            Mark(root.file, root.line, root.column, "state_dir"),
            f"{path} (the default) {problem}"))
    return str(path)


def _some_services(root: Node, top: Mapping[str, Node]) -> None:
    """A configuration names at least one service: an empty file, or one cut short before
    `services:`, would start (or reload into) a sentinel that checks nothing."""
    node = top.get("services")
    if node is None:
        required = TOP["services"].required
        assert required is not None
        raise ConfigError(Mark(root.file, root.line, root.column, "services"), required)
    if node.raw is None or (node.is_map and not node.as_map()):
        raise node.error("names no service: name at least one service to check")


def _top(root: Node) -> Mapping[str, Node]:
    """The top-level keys; those starting with `x-` are free, a place for anchors that
    services merge in (`<<: *name`), as in Docker Compose."""
    extensions = [key for key in root.as_map() if key.startswith("x-")]
    return TOP.parse(root.without(*extensions))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_api(node: Node) -> ApiConfig:
    """The `api` section; a non-loopback listen address requires a token."""
    e = API.parse(node)
    host, port = API.get(e, "listen", (_API.host, _API.port))
    token = API.get(e, "token")
    if "token_file" in e:
        where = e["token_file"]
        if "token" in e:
            raise where.key_error("give `token` or `token_file`, not both")
        try:
            data = read_regular(API.get(e, "token_file"))
        except OSError as exc:
            raise where.error(f"cannot read token file: {exc.strerror}") from None
        try:
            token = _token(where, data.decode())
        except UnicodeDecodeError:
            raise where.error("the token file is not UTF-8 text") from None
    if not token and not _is_loopback(host):
        raise (e.get("listen") or node).error(
            f"listening on non-loopback address {host} requires api.token or api.token_file")
    return ApiConfig(host=host, port=port, token=token or None)


def _telemetry(node: Node) -> TelemetryConfig:
    e = TELEMETRY.parse(node)
    traces = _TRACES
    if "traces" in e:
        t = TRACES.parse(e["traces"])
        exporter = TRACES.get(t, "exporter")
        needs = missing("otlp", "the otlp exporter") if exporter == "otlp" else None
        if needs:
            raise t["exporter"].error(needs)
        endpoint = TRACES.get(t, "endpoint")
        traces = TracesConfig(
            exporter=exporter, endpoint=endpoint,
            headers=tuple(TRACES.get(t, "headers", {}).items()),
            timeout=TRACES.get(t, "timeout"), sample_ok=float(TRACES.get(t, "sample_ok")))
    prometheus = METRICS.get(METRICS.parse(e["metrics"]) if "metrics" in e else {},
                             "prometheus")
    return TelemetryConfig(
        service_name=TELEMETRY.get(e, "service_name"),
        resource=tuple(TELEMETRY.get(e, "resource", {}).items()), traces=traces,
        prometheus=prometheus)


def _sinks(node: Node | None, kinds: SinkKinds, errors: _Collector
           ) -> dict[str, SinkConfig | None]:
    """Every sink by name; None for one defined with errors (reported here, once: the
    services that use it are not told it is undefined)."""
    out: dict[str, SinkConfig | None] = {}
    if node is None:
        return out
    for name, entry in errors.run(lambda: list(node.items())) or []:
        out[name] = None
        with errors.guard():
            blank_refused(name, entry, key=True)
            e = entry.as_map()
            SINK.require(entry, e)
            kind = SINK.get(e, "type")
            if kind not in kinds:
                raise e["type"].error(f"unknown sink type {kind!r}; expected one of: "
                                      f"{', '.join(sorted(kinds))}")
            options = kinds[kind].parse_options(entry.without("type", "scope"))
            chosen = SINK.get(e, "scope", kinds[kind].scope)
            scope: SinkScope = "leader" if chosen == "leader" else "local"
            out[name] = SinkConfig(name=name, type=kind, options=options, scope=scope)
    return out


def _defaults(node: Node | None) -> Mapping[str, Node]:
    if node is None:
        return {}
    return DEFAULTS.parse(node)


def _services(node: Node | None, defaults: Mapping[str, Node],
              sinks: Mapping[str, SinkConfig | None], kinds: SinkKinds, errors: _Collector
              ) -> list[ServiceConfig]:
    out: list[ServiceConfig] = []
    if node is None:
        return out
    for name, entry in errors.run(lambda: list(node.items())) or []:
        if errors.run(lambda n=name, en=entry: blank_refused(n, en, key=True)) is None:  # type: ignore[misc]
            continue
        svc = errors.run(lambda n=name, en=entry: _service(n, en, defaults, sinks, kinds))  # type: ignore[misc]
        if svc is not None:
            out.append(svc)
    return out


def _service(name: str, node: Node, defaults: Mapping[str, Node],
             sinks: Mapping[str, SinkConfig | None], kinds: SinkKinds) -> ServiceConfig:
    own = SERVICE.parse(node)
    errors = _Collector()
    SERVICE.require(node, own)
    backends = errors.run(lambda: _backends(own["backends"])) or ()
    chosen = {**defaults, **own}
    probing = errors.run(lambda: _probing(own, defaults))
    agent = errors.run(lambda: parse_agent(chosen["agent"])) if "agent" in chosen else None
    breaker = errors.run(lambda: parse_breaker(
        merged(defaults.get("breaker"), own.get("breaker"), "kind", set(), "nginx")))
    bindings = errors.run(lambda: _bindings(chosen.get("sinks"), sinks, kinds)) or ()
    if backends:
        errors.run(lambda: _check_names(name, node, own["backends"], backends, bindings, sinks,
                                        kinds))
    slow_start = errors.run(lambda: SERVICE.get(chosen, "slow_start"))
    min_up = errors.run(lambda: _min_up(chosen, name, len(backends)))
    dampen = errors.run(lambda: _dampen(chosen["dampen"])) if "dampen" in chosen else None
    passive = (errors.run(lambda: parse_passive(chosen["passive"], bindings, sinks))
               if "passive" in chosen else None)
    init_state = errors.run(lambda: InitState(SERVICE.get(chosen, "init_state")))
    if errors.errors:
        raise ConfigErrors(errors.errors)
    assert probing
    probe, checks, require = probing
    assert breaker
    assert min_up is not None
    assert slow_start is not None
    assert init_state is not None
    return ServiceConfig(name=name, backends=backends, probe=probe, breaker=breaker,
                         sinks=bindings, slow_start=slow_start, min_up=min_up, dampen=dampen,
                         init_state=init_state, passive=passive, checks=checks,
                         require=require, agent=agent)


def _probing(own: Mapping[str, Node], defaults: Mapping[str, Node]
             ) -> tuple[ProbeConfig, tuple[CheckConfig, ...], int]:
    """The service's one `probe`, or its `checks` (the first of them as its `probe`) and
    how many must pass. A service's own `probe` or `checks` wins over the defaults'; the
    defaults' `probe` is merged under each check as under a `probe:`."""
    if "probe" in own and "checks" in own:
        raise own["checks"].key_error("give either `probe` or `checks`, not both")
    base = defaults.get("probe")
    checks_node = own.get("checks") or (None if "probe" in own else defaults.get("checks"))
    if checks_node is None:
        if "require" in own:
            raise own["require"].key_error("`require` applies to `checks:`; this service "
                                           "has one `probe`")
        probe = parse_probe(merged(base, own.get("probe"), "type", TIMING.keys, "tcp"))
        return probe, (), 1
    checks, require = parse_checks(checks_node, base, own.get("require")
                                   or defaults.get("require"))
    return checks[0].probe, checks, require


def _backends(node: Node) -> tuple[BackendConfig, ...]:
    items = node.as_list()
    if not items:
        raise node.error("must list at least one backend")
    out: list[BackendConfig] = []
    errors = _Collector()
    seen: set[str] = set()
    for item in items:
        with errors.guard():
            backend = _backend(item)
            if backend.name in seen:
                where = item.get("name") if item.is_map else None
                raise (where or item).error(f"duplicate backend name {backend.name!r}")
            seen.add(backend.name)
            out.append(backend)
    if errors.errors:
        raise ConfigErrors(errors.errors)
    return tuple(out)


def _backend(item: Node) -> BackendConfig:
    if not item.is_map:
        host, port = parse_address(item)
        address = item.as_str().strip()
        return BackendConfig(name=address, address=address, host=host, port=port)
    e = BACKEND.parse(item)
    BACKEND.require(item, e)
    host, port = BACKEND.get(e, "address")
    address = e["address"].as_str().strip()
    return BackendConfig(name=BACKEND.get(e, "name", address), address=address, host=host,
                         port=port, weight=BACKEND.get(e, "weight"),
                         backup=BACKEND.get(e, "backup"))


def _bindings(node: Node | None, sinks: Mapping[str, SinkConfig | None], kinds: SinkKinds
              ) -> tuple[SinkBinding, ...]:
    if node is None:
        return ()
    out = []
    for item in node.as_list():
        if item.is_map:
            BINDING.require(item, item.as_map())
        ref = item.as_map()["sink"] if item.is_map else item
        name = ref.as_str()
        if name not in sinks:
            known = ", ".join(sorted(sinks)) or "none defined"
            raise ref.error(f"undefined sink {name!r} (defined: {known})")
        sink = sinks[name]
        if sink is None:  # its definition's errors are reported where it is defined
            continue
        extras = item.without("sink") if item.is_map else item.derive({})
        out.append(SinkBinding(sink=name, options=kinds[sink.type].parse_binding(extras)))
    return tuple(out)


def _check_names(service: str, node: Node, backends_node: Node,
                 backends: tuple[BackendConfig, ...], bindings: tuple[SinkBinding, ...],
                 sinks: Mapping[str, SinkConfig | None], kinds: SinkKinds) -> None:
    """Names each bound sink writes where a balancer parses them (nginx upstreams,
    HAProxy backends and servers) must be names that balancer accepts."""
    where = {  # backend name -> its node: the `name:` if given, else the address
        backend.name: (item.get("name") or item.get("address") or item) if item.is_map else item
        for item, backend in zip(backends_node.as_list(), backends, strict=True)}
    problems: list[ConfigError] = []
    for binding in bindings:
        sink = sinks[binding.sink]
        assert sink is not None
        for culprit, message in kinds[sink.type].check_names(
                binding.options, service, [b.name for b in backends]):
            text = f"{message} (sink {binding.sink})"
            problems.append(node.key_error(text) if culprit is None
                            else where[culprit].error(text))
    if problems:
        raise ConfigErrors(problems)


def _min_up(e: Mapping[str, Node], service: str, backends: int) -> MinUp:
    min_up: MinUp = SERVICE.get(e, "min_up", MinUp())
    count = min_up.count
    if min_up.share is None and backends and count > backends:
        # the guard would hold every dead backend up, always
        raise e["min_up"].error(f"min_up ({count}) is more than the {backends} "
                                f"backend{'s' if backends != 1 else ''} of service {service}")
    return min_up


def _dampen(node: Node) -> DampenConfig:
    e = DAMPEN.parse(node)
    half_life = DAMPEN.get(e, "half_life")
    suppress = DAMPEN.get(e, "suppress")
    reuse = DAMPEN.get(e, "reuse")
    if reuse >= suppress:
        raise (e.get("reuse") or node).error(
            f"reuse ({reuse:g}) must be below suppress ({suppress:g})")
    max_suppress = DAMPEN.get(e, "max_suppress", 4 * half_life)
    return DampenConfig(half_life=half_life, suppress=suppress, reuse=reuse,
                        max_suppress=max_suppress)
