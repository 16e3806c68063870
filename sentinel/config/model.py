"""The validated configuration: frozen values built once by `config.load`.

Durations are floats in seconds. Every sink kind parses its own options
(see `sentinel.sinks`), so this module only carries them as opaque values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Literal

from sentinel.addresses import join
from sentinel.cluster.config import ClusterConfig

# -- probes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """When a backend is probed: `interval` normally, `fast_interval` while a
    breaker is counting towards a change, `down_interval` while down."""

    interval: float = 2.0
    fast_interval: float = 2.0
    down_interval: float = 2.0
    timeout: float = 1.0
    jitter: float = 0.0  # each delay is stretched by a random fraction in +-jitter


@dataclass(frozen=True, slots=True)
class TcpSpec:
    """`tcp` probe: connect; optionally send bytes and expect a regex back; TLS."""

    send: bytes | None = None
    expect: re.Pattern[bytes] | None = None
    tls: bool = False
    sni: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class StatusClass:
    """One `expect_status` entry: an exact code (`301`) or a class (`2xx`)."""

    low: int
    high: int

    def matches(self, code: int) -> bool:
        """True when `code` falls in this entry."""
        return self.low <= code <= self.high


DEFAULT_EXPECT_STATUS = (StatusClass(200, 299), StatusClass(300, 399))


@dataclass(frozen=True, slots=True)
class HttpSpec:
    """`http`/`https` probe: one request, status and optional body regex."""

    method: str = "GET"
    path: str = "/"
    host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    expect_status: tuple[StatusClass, ...] = DEFAULT_EXPECT_STATUS
    expect_body: re.Pattern[str] | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class ScriptSpec:
    """`script` probe: argv run without a shell; exit 0 is healthy."""

    command: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcSpec:
    """`grpc` probe: grpc.health.v1.Health/Check for `service` over HTTP/2 (h2c or TLS)."""

    service: str = ""
    tls: bool = False
    sni: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class DnsSpec:
    """`dns` probe: one query for `name`/`qtype`; the rcode and optionally the answer judged.
    `expect_answer` is a regex over the answer section (str) or a set of addresses."""

    name: str = "."
    qtype: str = "A"
    expect_rcode: str = "NOERROR"
    expect_answer: re.Pattern[str] | frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """`agent` probe: HAProxy's agent-check; `agent_port` None means the backend's port."""

    agent_port: int | None = None
    agent_send: bytes | None = None


ProbeSpec = TcpSpec | HttpSpec | ScriptSpec | GrpcSpec | DnsSpec | AgentSpec
ProbeType = Literal["tcp", "http", "https", "script", "grpc", "dns", "agent"]


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """`watch:` (tcp, http; SPEC 9): one idle connection held per backend, whose loss
    brings the next probe forward (`sentinel.engine.watch`)."""

    keepalive: float | None = None  # TCP keepalive idle time; None: off (no traffic at all)


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """A service's probe: its kind, its timing and its kind-specific settings; `source`
    the local IP address network probes connect from (None: the kernel's choice)."""

    type: ProbeType = "tcp"
    timing: Timing = field(default_factory=Timing)
    spec: ProbeSpec = field(default_factory=TcpSpec)
    source: str | None = None
    watch: WatchConfig | None = None  # tcp and http only


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One entry of a service's `checks:`: a probe with its own schedule, and its name
    (the probe's type unless given) as reasons and /v1/state show it."""

    name: str
    probe: ProbeConfig


# -- breakers ----------------------------------------------------------------


NginxWindow = Literal["sliding", "chained"]
NGINX_WINDOWS: tuple[NginxWindow, ...] = ("sliding", "chained")


@dataclass(frozen=True, slots=True)
class NginxBreakerConfig:
    """nginx's max_fails/fail_timeout; `window: chained` is nginx's own code."""

    max_fails: int = 1
    fail_timeout: float = 10.0
    passes: int = 1
    window: NginxWindow = "sliding"


@dataclass(frozen=True, slots=True)
class ThresholdBreakerConfig:
    """HAProxy's fall/rise consecutive counts."""

    rise: int = 2
    fall: int = 3


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """Closed/open/half-open over a sliding time window."""

    window: float = 10.0
    min_calls: int = 5
    failure_rate: float = 0.5
    slow_call: float | None = None
    slow_rate: float = 1.0
    open_for: float = 5.0
    max_open_for: float = 60.0
    half_open_trials: int = 3


BreakerConfig = NginxBreakerConfig | ThresholdBreakerConfig | CircuitBreakerConfig


class InitState(StrEnum):
    """Where a backend with no saved verdict starts (`init_state`, HAProxy 3's
    `init-state`); each breaker's module docstring says what it means for its counters."""

    FULLY_UP = "fully-up"  # up; the full failure count takes it down (the default)
    UP = "up"  # up; the first failed probe takes it down
    DOWN = "down"  # down; the first passed probe brings it up
    FULLY_DOWN = "fully-down"  # down; the full rise/passes/trials bring it up


# -- services and sinks ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One backend of a service."""

    name: str
    address: str
    host: str
    port: int
    weight: int = 1
    backup: bool = False


@dataclass(frozen=True, slots=True)
class SinkBinding:
    """A service's use of a named sink, with that sink kind's per-service options."""

    sink: str
    options: object = None


@dataclass(frozen=True, slots=True)
class MinUp:
    """The panic guard: never publish fewer than this many backends up."""

    count: int = 0
    share: Fraction | None = None  # exact: 7.2% of 1,000 backends is 72, not 73

    def required(self, total: int) -> int:
        """How many of `total` backends must stay published up."""
        if self.share is not None:
            return min(total, math.ceil(self.share * total))
        return min(total, self.count)


@dataclass(frozen=True, slots=True)
class DampenConfig:
    """BGP-style flap damping: penalty 1000 per flap, halving every `half_life`."""

    half_life: float = 60.0
    suppress: float = 2000.0
    reuse: float = 750.0
    max_suppress: float = 240.0


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """One service: its backends, how they are probed and judged, where published.

    A service has either one `probe` or several `checks` (then `probe` is the first of
    them), of which `require` must pass; `agent` is HAProxy's agent-check beside them."""

    name: str
    backends: tuple[BackendConfig, ...]
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    breaker: BreakerConfig = field(default_factory=NginxBreakerConfig)
    sinks: tuple[SinkBinding, ...] = ()
    slow_start: float = 0.0
    min_up: MinUp = field(default_factory=MinUp)
    dampen: DampenConfig | None = None
    init_state: InitState = InitState.FULLY_UP
    passive: PassiveConfig | None = None
    checks: tuple[CheckConfig, ...] = ()  # `checks:`; empty for a service with one `probe`
    require: int = 1  # how many of `checks` must pass (`all` is their number)
    agent: ProbeConfig | None = None  # an `agent` probe config: its own timing, port, send

    @property
    def entries(self) -> tuple[CheckConfig, ...]:
        """What probes each backend: the `checks`, or the one `probe` named by its type."""
        return self.checks or (CheckConfig(self.probe.type, self.probe),)


@dataclass(frozen=True, slots=True)
class PassiveConfig:
    """`passive:` on a service (SPEC 10): where its balancers' failures are read, and
    whether they count in the breaker (`count`) or only trigger a probe (default)."""

    nginx_error_log: str | None = None  # path of an nginx error log to follow
    haproxy: str | None = None  # a haproxy sink (bound to this service) to read `show stat`
    haproxy_interval: float = 1.0  # how often `show stat` is read
    count: bool = False


SinkScope = Literal["local", "leader"]


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """A named sink: its kind, that kind's parsed options, and in a cluster (SPEC 12)
    where it runs: on every member (`local`: balancers) or on the leader alone
    (`leader`: notifications)."""

    name: str
    type: str
    options: object = None
    scope: SinkScope = "local"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Where the HTTP API listens and the token it requires."""

    host: str = "127.0.0.1"
    port: int = 9900
    token: str | None = None

    @property
    def listen(self) -> str:
        """host:port as Hypercorn binds it."""
        return join(self.host, self.port)


Exporter = Literal["none", "console", "otlp"]
EXPORTERS: tuple[Exporter, ...] = ("none", "console", "otlp")


@dataclass(frozen=True, slots=True)
class TracesConfig:
    """Trace export settings."""

    exporter: Exporter = "none"
    endpoint: str = "http://127.0.0.1:4318"  # OTLP/HTTP base URL; /v1/traces is appended
    headers: tuple[tuple[str, str], ...] = ()  # sent with every export (e.g. an API key)
    timeout: float = 10.0  # one export, retries included
    sample_ok: float = 0.1


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """OpenTelemetry and Prometheus settings."""

    service_name: str = "sentinel"
    resource: tuple[tuple[str, str], ...] = ()  # extra OpenTelemetry resource attributes
    traces: TracesConfig = field(default_factory=TracesConfig)
    prometheus: bool = True


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """A canary (SPEC 11): probed like a backend, never published; it vouches for the
    checker's own network."""

    name: str
    address: str
    host: str
    port: int
    probe: ProbeConfig = field(default_factory=ProbeConfig)


@dataclass(frozen=True, slots=True)
class SuspectConfig:
    """`suspect:` (SPEC 11): the mass-failure rule and how long a suspicion may last."""

    mass_failure: float = 0.5  # a fraction of all backends: more than this turning down...
    window: float = 4.0  # ...within this (default at load: twice the longest interval)
    max_suspect: float = 60.0  # 0: only a passing canary ends a suspicion


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration file."""

    path: str
    state_dir: str
    shutdown_timeout: float = 10.0
    max_in_flight: int = 1024
    api: ApiConfig = field(default_factory=ApiConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    sinks: tuple[SinkConfig, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    cluster: ClusterConfig | None = None  # several sentinels agreeing through etcd
    # risky but valid settings, `file:line:col: path: message` (`sentinel check` prints them)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    canaries: tuple[CanaryConfig, ...] = ()
    suspect: SuspectConfig | None = None
