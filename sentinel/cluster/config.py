"""The `cluster:` section (SPEC 12) -> a frozen, validated `ClusterConfig`.

```yaml
cluster:
  etcd: [http://127.0.0.1:2379]   # endpoints (a single URL is also accepted)
  prefix: /sentinel/prod/         # all keys live under it ("/" appended when missing)
  node: ${SENTINEL_NODE}          # this member's unique name: letters, digits, . _ -
  zone: a                         # optional
  lease_ttl: 5s                   # whole seconds (etcd counts leases in seconds)
  probers: 2                      # or "all" (the default)
  quorum: 2                       # default: a majority of probers
  tls: {ca: ca.pem, cert: client.pem, key: client.key}   # optional, https:// endpoints
  user: sentinel                  # optional, with password
  password: ${ETCD_PASSWORD}
```
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sentinel.config.node import Node
from sentinel.config.tables import (
    DURATION,
    PORT,
    URL_HOST,
    Field,
    Int,
    Rule,
    Section,
    Str,
    scalar,
)
from sentinel.errors import ConfigError, ConfigErrors
from sentinel.timefmt import duration

_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_LEASE_TTL = 3600


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """Files for TLS to etcd: the CA that signed its certificate, and optionally a
    client certificate and key (etcd's --client-cert-auth)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        """An SSL context trusting `ca` (else the system's CAs) with the client pair."""
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """How this member joins the cluster (SPEC 12)."""

    endpoints: tuple[str, ...]
    node: str
    prefix: str = "/sentinel/"
    zone: str | None = None
    lease_ttl: int = 5  # seconds
    probers: int | None = None  # None: every live member probes every backend
    quorum: int | None = None  # None: a majority of the backend's live probers
    tls: EtcdTls | None = None
    user: str | None = None
    password: str | None = None
    config_sha256: str = ""  # of the file as written, before ${VAR}; set by the loader

    @property
    def call_timeout(self) -> float:
        """The deadline of one call to etcd: a third of the lease, so a hung etcd is
        noticed well within `lease_ttl`."""
        return self.lease_ttl / 3

    def budget(self) -> dict[str, object]:
        """What agreeing adds to each service's detection budget (`sentinel check`).

        A backend goes down once `quorum` of its probers' breakers have flipped,
        each on the single-node budget; then the agreement path: the prober's
        write, the leader's watch, the leader's fenced write, each member's
        watch. That is milliseconds while etcd is well (bench/cluster_bench.py);
        the worst, while etcd answers each of the two writes at the very end of
        its deadline, is two call deadlines. A prober lost at the same moment
        costs up to `lease_ttl` before the others take its backends over."""
        return {"probers": self.probers if self.probers is not None else "all",
                "quorum": self.quorum if self.quorum is not None else "majority",
                "agreement_max_seconds": round(2 * self.call_timeout, 3),
                "reassignment_seconds": self.lease_ttl}

    def describe_budget(self) -> str:
        """`budget()` as `sentinel check` prints it."""
        probers = (f"{self.probers} member{'' if self.probers == 1 else 's'}"
                   if self.probers is not None else "every member")
        quorum = (f"quorum {self.quorum}" if self.quorum is not None
                  else "a majority of them")
        writes = duration(2 * self.call_timeout, rounded=True)
        return (f"cluster: each backend probed by {probers}, down on {quorum}; every budget "
                f"above plus the agreement path (2 etcd writes, 2 watch deliveries: "
                f"milliseconds when etcd is well, at most {writes} when each write waits out "
                f"its deadline); a prober lost at the same time adds up to "
                f"{duration(self.lease_ttl)} (lease_ttl) before another takes its backends over")

    def quorum_for(self, probers: int) -> int:
        """Down votes needed for a backend with `probers` live probers (`quorum`, or a
        majority: with `probers: N` of N, with `probers: all` of the live members)."""
        if self.quorum is not None:
            return self.quorum
        return (self.probers if self.probers is not None else probers) // 2 + 1


def parse_cluster(node: Node) -> ClusterConfig:
    """The `cluster` mapping; every problem found is reported, each at its value."""
    e = CLUSTER.parse(node)
    errors = CLUSTER.missing(node, e)

    def field(key: str, fallback: object = None) -> Any:
        default = CLUSTER[key].default if fallback is None else fallback
        try:
            return CLUSTER.get(e, key, default)
        except ConfigError as exc:
            errors.append(exc)
            return default

    endpoints: tuple[str, ...] = field("etcd", ())
    name: str = field("node", "")
    prefix: str = field("prefix")
    zone: str | None = field("zone")
    lease_ttl: int = field("lease_ttl")
    probers: int | None = field("probers")
    quorum: int | None = field("quorum")
    tls: EtcdTls | None = field("tls")
    user: str | None = field("user")
    password: str | None = field("password")
    if quorum is not None and probers is not None and quorum > probers:
        errors.append(e["quorum"].error(f"must be at most probers ({probers}), got {quorum}"))
    if (user is None) != (password is None):
        missing, given = ("password", "user") if password is None else ("user", "password")
        errors.append(e[given].error(f"`{given}` needs `{missing}` too"))
    schemes = {urlsplit(u).scheme for u in endpoints}
    if tls is not None and schemes != {"https"}:
        errors.append(e["tls"].error("tls needs every etcd endpoint to be https://"))
    if len(schemes) > 1:
        errors.append(e["etcd"].error("endpoints mix http:// and https://"))
    if errors:
        raise ConfigErrors(errors)
    return ClusterConfig(endpoints=endpoints, node=name, prefix=prefix, zone=zone,
                         lease_ttl=lease_ttl, probers=probers, quorum=quorum, tls=tls,
                         user=user, password=password)


def _endpoints(node: Node) -> tuple[str, ...]:
    items = node.as_list() if node.is_list else [node]
    if not items:
        raise node.error("needs at least one endpoint")
    return tuple(_endpoint(item) for item in items)


def _endpoint(node: Node) -> str:
    text = node.as_str().strip()
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise node.error(f"invalid URL {text!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise node.error(f"expected http://host:port or https://host:port, got {text!r}")
    if url.path not in ("", "/") or url.query or url.fragment or url.username:
        raise node.error(f"expected http://host:port or https://host:port without a path "
                         f"or credentials, got {text!r}")
    return f"{url.scheme}://{url.netloc}" if port else f"{url.scheme}://{url.netloc}:2379"


def _node_name(node: Node) -> str:
    text = "" if node.raw is None else node.as_str()
    if not text:
        raise node.error("must not be empty (each member needs its own name)")
    if not _NODE.fullmatch(text):
        raise node.error(f"must be letters, digits, '.', '_' or '-' (it is part of etcd "
                         f"keys), got {text!r}")
    return text


def _prefix(node: Node) -> str:
    text = node.as_str()
    return text if text.endswith("/") else text + "/"


def _lease_ttl(node: Node) -> int:
    seconds = node.as_duration()
    if seconds != int(seconds) or not 1 <= seconds <= MAX_LEASE_TTL:
        raise node.error(f"must be whole seconds from 1s to {MAX_LEASE_TTL}s (etcd counts "
                         f"leases in seconds), got {node.describe()}")
    return int(seconds)


def _probers(node: Node) -> int | None:
    if node.raw == "all":
        return None
    if isinstance(node.raw, str) and not node.raw.strip().isdigit():
        raise node.error(f"expected a number of members or \"all\", got {node.describe()}")
    return node.as_int(1)


def _tls(node: Node) -> EtcdTls:
    e = TLS.parse(node)
    files: dict[str, str] = {}
    for key, value in e.items():
        path = str(Path(value.file).resolve().parent / value.as_str())  # as state_dir
        if not Path(path).is_file():
            raise value.error(f"no such file: {path}")
        files[key] = path
    if ("cert" in files) != ("key" in files):
        given = "cert" if "cert" in files else "key"
        raise e[given].error("a client certificate needs both `cert` and `key`")
    tls = EtcdTls(ca=files.get("ca"), cert=files.get("cert"), key=files.get("key"))
    try:
        tls.context()
    except (ssl.SSLError, OSError) as exc:
        raise node.error(f"cannot use these TLS files: {exc}") from None
    return tls


TLS = Section(
    Field("ca", Str(), "the CA that signed etcd's certificate (default: the system's CAs)"),
    Field("cert", Str(), "a client certificate (etcd's --client-cert-auth), with key"),
    Field("key", Str(), "the client certificate's key"),
    doc="TLS to etcd; paths relative to this file; every endpoint https://")
_ENDPOINT = scalar({"type": "string",
                    "pattern": rf"^\s*https?://{URL_HOST}(:{PORT})?/?\s*$"})
_DEFAULT = ClusterConfig(endpoints=(), node="")
CLUSTER = Section(
    Field("etcd", Rule(_endpoints, {"anyOf": [
        _ENDPOINT, {"type": "array", "items": _ENDPOINT, "minItems": 1}]}),
          "etcd endpoints: http(s)://host:port, one or a list",
          required="cluster needs `etcd`"),
    Field("prefix", Rule(_prefix, {"type": ["string", "number"]}), "every key lives under "
          "it (\"/\" appended when missing)", _DEFAULT.prefix),
    Field("node", Rule(_node_name, scalar({"type": "string",
                                           "pattern": f"^{_NODE.pattern}$"})),
          "this member's unique name: letters, digits, . _ -",
          required="cluster needs `node`"),
    Field("zone", Str(), "this member's zone: a backend's probers span zones"),
    Field("lease_ttl", Rule(_lease_ttl, dict(DURATION)), "a member that stops renewing "
          f"leaves after this; whole seconds, 1s to {MAX_LEASE_TTL}s", _DEFAULT.lease_ttl),
    Field("probers", Rule(_probers, {"anyOf": [
        {"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\s*\d+\s*$"},
        {"const": "all"}, {"$ref": "#/$defs/env"}]}),
          "sentinels probing each backend (default: all, every member)"),
    Field("quorum", Int(1), "probers that must say down (default: a majority of probers); "
          "at most probers"),
    Field("tls", Rule(_tls, TLS), "TLS to etcd"),
    Field("user", Str(), "etcd user, with password"),
    Field("password", Str(), "etcd password, with user"),
    doc="several sentinels agreeing through etcd (SPEC 12)")
