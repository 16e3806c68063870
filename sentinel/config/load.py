"""YAML file -> validated, frozen `Config`, in one pass that collects every error.

Each error names the file, line and column and the key path, e.g.
`sentinel.yaml:14:9: services.web.backends[1].address: port must be 1..65535, got 70000`.

Each sink kind parses its own options: the loader is handed the kinds by name
(`SinkParser`; `sentinel.sinks.registry.load_config` hands it every built-in
kind) and imports no sink module.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Protocol, TypeVar

from sentinel.cluster.config import parse_cluster
from sentinel.config.detect import parse_canaries, parse_passive, parse_suspect
from sentinel.config.model import (
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
    TelemetryConfig,
    TracesConfig,
)
from sentinel.config.node import Node, load_yaml
from sentinel.config.sections import (
    TIMING_KEYS,
    merged,
    parse_agent,
    parse_breaker,
    parse_checks,
    parse_probe,
)
from sentinel.errors import ConfigError, ConfigErrors
from sentinel.extras import missing

TOP_KEYS = {"version", "state_dir", "shutdown_timeout", "max_in_flight", "api", "telemetry",
            "defaults", "sinks", "services", "cluster", "canaries", "suspect"}
SERVICE_KEYS = {"backends", "probe", "checks", "require", "agent", "breaker", "sinks",
                "slow_start", "min_up", "dampen", "init_state", "passive"}
BACKEND_KEYS = {"name", "address", "weight", "backup"}
MAX_FILE_BYTES = 16 << 20
_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")
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


SinkKinds = Mapping[str, SinkParser]  # by config name (`type:`)


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
    try:
        root = load_yaml(data, file, env)
    except ConfigError as one:  # not YAML, a duplicate key, an unset ${VAR}, an alias bomb
        raise ConfigErrors([one]) from None
    config = parse_config(root, file, kinds)
    if config.cluster is not None:  # members compare the file as written, before ${VAR}
        digest = hashlib.sha256(data).hexdigest()
        config = replace(config, cluster=replace(config.cluster, config_sha256=digest))
    return config


def parse_config(root: Node, file: str, kinds: SinkKinds) -> Config:
    """Validate a composed document."""
    errors = _Collector()
    top = errors.run(lambda: _top(root)) or {}
    if "version" in top:
        errors.run(lambda: _version(top["version"]))
    base = Path(file).resolve().parent
    state_dir = (errors.run(lambda: str(base / top["state_dir"].as_path()))
                 if "state_dir" in top else str(base / "state"))
    shutdown = (errors.run(lambda: top["shutdown_timeout"].as_duration())
                if "shutdown_timeout" in top else 10.0)
    in_flight = (errors.run(lambda: top["max_in_flight"].as_int(1, 1_000_000))
                 if "max_in_flight" in top else 1024)
    api = errors.run(lambda: parse_api(top["api"])) if "api" in top else ApiConfig()
    telemetry = (errors.run(lambda: _telemetry(top["telemetry"])) if "telemetry" in top
                 else TelemetryConfig())
    sinks = _sinks(top.get("sinks"), kinds, errors)
    defaults = errors.run(lambda: _defaults(top.get("defaults"))) or {}
    services = _services(top.get("services"), defaults, sinks, kinds, errors)
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


def _top(root: Node) -> Mapping[str, Node]:
    """The top-level keys; those starting with `x-` are free, a place for anchors that
    services merge in (`<<: *name`), as in Docker Compose."""
    extensions = [key for key in root.as_map() if key.startswith("x-")]
    return root.without(*extensions).as_map(TOP_KEYS)


def _version(node: Node) -> None:
    if node.as_int() != 1:
        raise node.error(f"only version 1 is supported, got {node.describe()}")


def parse_address(node: Node) -> tuple[str, int]:
    """`host:port` or `[v6addr]:port` to (host, port)."""
    text = node.as_str().strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%a-zA-Z]+)\]:(\d+)", text) or re.fullmatch(
        r"([^:\[\]\s]+):(\d+)", text)
    if not m:
        hint = " (write IPv6 addresses as [addr]:port)" if text.count(":") > 1 else ""
        raise node.error(f"expected host:port{hint}, got {text!r}")
    host, port = m.group(1), int(m.group(2))
    if text.startswith("["):
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise node.error(f"invalid IPv6 address {host!r}") from None
    elif not _HOST.match(host):  # `a;b:80` would end nginx's `server` line early
        raise node.error(f"invalid host {host!r}: an IPv4 address or a DNS name (letters, "
                         f"digits and .-_)")
    if not 1 <= port <= 65535:
        raise node.error(f"port must be 1..65535, got {port}")
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_api(node: Node) -> ApiConfig:
    """The `api` section; a non-loopback listen address requires a token."""
    e = node.as_map({"listen", "token", "token_file"})
    host, port = ("127.0.0.1", 9900)
    if "listen" in e:
        host, port = _listen(e["listen"])
    token = _token(e["token"], e["token"].as_str()) if "token" in e else None
    if "token_file" in e:
        where = e["token_file"]
        try:
            data = Path(where.as_path()).read_bytes()
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


def _token(node: Node, text: str) -> str:
    """A bearer token, without the blanks around it (a token file's newline); a token
    of only blanks would let no one in, or, checked as unset, everyone."""
    token = text.strip()
    if not token:
        raise node.error("the token is empty or blank")
    if not token.isprintable():
        raise node.error("the token holds control characters")
    return token


def _listen(node: Node) -> tuple[str, int]:
    text = node.as_str()
    if re.fullmatch(r".*:0", text):  # port 0: let the kernel choose (tests, demos)
        host, _ = parse_address(node.derive(text[:-1] + "1"))
        return host, 0
    return parse_address(node)


def _telemetry(node: Node) -> TelemetryConfig:
    e = node.as_map({"service_name", "resource", "traces", "metrics"})
    traces = TracesConfig()
    if "traces" in e:
        t = e["traces"].as_map({"exporter", "endpoint", "headers", "timeout", "sample_ok"})
        exporter = t["exporter"].as_str() if "exporter" in t else "none"
        if exporter not in ("none", "console", "otlp"):
            raise t["exporter"].error(f"expected none, console or otlp; got {exporter!r}")
        needs = missing("otlp", "the otlp exporter") if exporter == "otlp" else None
        if needs:
            raise t["exporter"].error(needs)
        endpoint = t["endpoint"].as_url() if "endpoint" in t else traces.endpoint
        traces = TracesConfig(
            exporter=exporter,  # type: ignore[arg-type]
            endpoint=endpoint, headers=_string_map(t.get("headers")),
            timeout=t["timeout"].as_duration() if "timeout" in t else traces.timeout,
            sample_ok=t["sample_ok"].as_float(0, 1) if "sample_ok" in t else traces.sample_ok,
        )
    prometheus = True
    if "metrics" in e:
        m = e["metrics"].as_map({"prometheus"})
        prometheus = m["prometheus"].as_bool() if "prometheus" in m else True
    return TelemetryConfig(
        service_name=e["service_name"].as_str() if "service_name" in e else "sentinel",
        resource=_string_map(e.get("resource")), traces=traces, prometheus=prometheus)


def _string_map(node: Node | None) -> tuple[tuple[str, str], ...]:
    """A mapping of strings (OTLP headers, resource attributes) as pairs."""
    return tuple((k, v.as_str()) for k, v in node.items()) if node is not None else ()


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
            e = entry.as_map()
            if "type" not in e:
                raise entry.error("a sink needs `type`")
            kind = e["type"].as_str()
            if kind not in kinds:
                raise e["type"].error(f"unknown sink type {kind!r}; expected one of: "
                                      f"{', '.join(sorted(kinds))}")
            options = kinds[kind].parse_options(entry.without("type"))
            out[name] = SinkConfig(name=name, type=kind, options=options)
    return out


def _defaults(node: Node | None) -> Mapping[str, Node]:
    if node is None:
        return {}
    return node.as_map(SERVICE_KEYS - {"backends"})


def _services(node: Node | None, defaults: Mapping[str, Node],
              sinks: Mapping[str, SinkConfig | None], kinds: SinkKinds, errors: _Collector
              ) -> list[ServiceConfig]:
    out: list[ServiceConfig] = []
    if node is None:
        return out
    for name, entry in errors.run(lambda: list(node.items())) or []:
        svc = errors.run(lambda n=name, en=entry: _service(n, en, defaults, sinks, kinds))  # type: ignore[misc]
        if svc is not None:
            out.append(svc)
    return out


def _service(name: str, node: Node, defaults: Mapping[str, Node],
             sinks: Mapping[str, SinkConfig | None], kinds: SinkKinds) -> ServiceConfig:
    own = node.as_map(SERVICE_KEYS)
    errors = _Collector()
    if "backends" not in own:
        raise node.error("a service needs `backends`")
    backends = errors.run(lambda: _backends(own["backends"])) or ()

    def pick(key: str) -> Node | None:
        return own.get(key) or defaults.get(key)

    probing = errors.run(lambda: _probing(own, defaults))
    agent_node = pick("agent")
    agent = errors.run(lambda: parse_agent(agent_node)) if agent_node else None
    breaker = errors.run(lambda: parse_breaker(
        merged(defaults.get("breaker"), own.get("breaker"), "kind", set(), "nginx")))
    bindings = errors.run(lambda: _bindings(pick("sinks"), sinks, kinds)) or ()
    if backends:
        errors.run(lambda: _check_names(name, node, own["backends"], backends, bindings, sinks,
                                        kinds))
    slow = pick("slow_start")
    slow_start = errors.run(lambda: slow.as_duration(positive=False)) if slow else 0.0
    min_up_node = pick("min_up")
    min_up = errors.run(lambda: _min_up(min_up_node, name, len(backends))) if min_up_node \
        else MinUp()
    dampen_node = pick("dampen")
    dampen = errors.run(lambda: _dampen(dampen_node)) if dampen_node else None
    passive_node = pick("passive")
    passive = (errors.run(lambda: parse_passive(passive_node, bindings, sinks))
               if passive_node else None)
    init_node = pick("init_state")
    init_state = (errors.run(lambda: InitState(init_node.as_choice(tuple(InitState))))
                  if init_node else InitState.FULLY_UP)
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
        probe = parse_probe(merged(base, own.get("probe"), "type", TIMING_KEYS, "tcp"))
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
    e = item.as_map(BACKEND_KEYS)
    if "address" not in e:
        raise item.error("a backend needs `address`")
    host, port = parse_address(e["address"])
    address = e["address"].as_str().strip()
    return BackendConfig(
        name=e["name"].as_str() if "name" in e else address,
        address=address, host=host, port=port,
        weight=e["weight"].as_int(1, 65535) if "weight" in e else 1,
        backup=e["backup"].as_bool() if "backup" in e else False,
    )


def _bindings(node: Node | None, sinks: Mapping[str, SinkConfig | None], kinds: SinkKinds
              ) -> tuple[SinkBinding, ...]:
    if node is None:
        return ()
    out = []
    for item in node.as_list():
        ref = item.get("sink") if item.is_map else item
        if ref is None:
            raise item.error("expected a sink name or {sink: NAME, ...options}")
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


def _min_up(node: Node, service: str, backends: int) -> MinUp:
    if str(node.raw).strip().endswith("%"):
        return MinUp(percent=node.as_share() * 100)
    count = node.as_int(0)
    if backends and count > backends:  # the guard would hold every dead backend up, always
        raise node.error(f"min_up ({count}) is more than the {backends} "
                         f"backend{'s' if backends != 1 else ''} of service {service}")
    return MinUp(count=count)


def _dampen(node: Node) -> DampenConfig:
    e = node.as_map({"half_life", "suppress", "reuse", "max_suppress"})
    d = DampenConfig()
    half_life = e["half_life"].as_duration() if "half_life" in e else d.half_life
    suppress = e["suppress"].as_float(1) if "suppress" in e else d.suppress
    reuse = e["reuse"].as_float(1) if "reuse" in e else d.reuse
    if reuse >= suppress:
        raise (e.get("reuse") or node).error(
            f"reuse ({reuse:g}) must be below suppress ({suppress:g})")
    max_suppress = (e["max_suppress"].as_duration() if "max_suppress" in e
                    else 4 * half_life)
    return DampenConfig(half_life=half_life, suppress=suppress, reuse=reuse,
                        max_suppress=max_suppress)
