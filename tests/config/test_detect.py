"""The detection settings load: `init_state` (per service and in defaults), `canaries`,
`suspect` and `passive`; each mistake is one positioned line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from sentinel.config.model import Config, InitState, PassiveConfig, SuspectConfig, WatchConfig
from sentinel.errors import ConfigErrors
from sentinel.sinks.registry import load_config
from tests.config import check_schema_verdict, service_named, whole, write_config


def load(tmp_path: Path, text: str) -> Config:
    """Load `text` (dedented) as sentinel.yaml in tmp_path."""
    return load_config(write_config(tmp_path, textwrap.dedent(text)))


def errors(tmp_path: Path, text: str) -> list[str]:
    """The error lines loading `text` gives, file name relative."""
    with pytest.raises(ConfigErrors) as caught:
        load(tmp_path, text)
    return [str(e).replace(f"{tmp_path}/", "") for e in caught.value.errors]


def test_init_state_per_service_and_from_defaults(tmp_path: Path) -> None:
    """`init_state` in defaults applies to every service that does not set its own; the
    default is fully-up."""
    config = load(tmp_path, """\
        defaults: {init_state: down}
        services:
          a: {backends: [127.0.0.1:80]}
          b: {backends: [127.0.0.1:81], init_state: up}
        """)
    assert [s.init_state for s in config.services] == [InitState.DOWN, InitState.UP]
    plain = load(tmp_path, "services: {a: {backends: [127.0.0.1:80]}}\n")
    assert plain.services[0].init_state is InitState.FULLY_UP


def test_init_state_unknown_value(tmp_path: Path) -> None:
    """An unknown init_state names the four values, at its position."""
    assert errors(tmp_path, """\
        services:
          a: {backends: [127.0.0.1:80], init_state: half-up}
        """) == ["sentinel.yaml:2:45: services.a.init_state: expected one of fully-up, up, "
                 "down, fully-down; got 'half-up'"]


def test_canaries_suspect_and_passive_load(tmp_path: Path) -> None:
    """Canaries (an address, or a block with its own probe), the suspect rule (window
    defaulting to twice the longest interval) and a service's passive sources."""
    (tmp_path / "log").mkdir()
    config = load(tmp_path, f"""\
        sinks:
          lb: {{type: haproxy, socket: /run/haproxy.sock}}
        canaries:
          - 10.0.0.1:53
          - {{name: up, address: "[::1]:443", probe: {{type: http, path: /ping}}}}
        suspect: {{mass_failure: 40%, max_suspect: 0}}
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {{interval: 3s}}
            sinks: [lb]
            passive:
              nginx_error_log: {tmp_path}/log/error.log
              haproxy: {{sink: lb, interval: 500ms}}
              count: true
          db: {{backends: [127.0.0.1:81]}}
        """)
    gw, up = config.canaries
    assert (gw.name, gw.host, gw.port, gw.probe.type) == ("10.0.0.1:53", "10.0.0.1", 53, "tcp")
    assert (up.name, up.host, up.port, up.probe.type) == ("up", "::1", 443, "http")
    assert config.suspect == SuspectConfig(mass_failure=0.4, window=6.0, max_suspect=0.0)
    assert service_named(config, "web").passive == PassiveConfig(
        nginx_error_log=f"{tmp_path}/log/error.log", haproxy="lb", haproxy_interval=0.5,
        count=True)
    assert service_named(config, "db").passive is None
    assert load(tmp_path, "services: {a: {backends: [127.0.0.1:80]}}\n").suspect is None


# (config, the loader's error, why the schema cannot refuse it: "" when it does)
TOP_MISTAKES = [
    ("canaries: []\n",
     "sentinel.yaml:1:11: canaries: must list at least one canary (or leave `canaries` out)",
     ""),
    ("canaries: [10.0.0.1:53, {name: 10.0.0.1:53, address: 10.0.0.2:53}]\n",
     "sentinel.yaml:1:32: canaries[1].name: duplicate canary name '10.0.0.1:53'",
     "names unique across the list, an address standing for a name"),
    ("canaries: [{name: gw}]\n", "sentinel.yaml:1:12: canaries[0]: a canary needs `address`",
     ""),
    ("canaries: [{address: 10.0.0.1:53, probe: {type: udp}}]\n",
     "sentinel.yaml:1:49: canaries[0].probe.type: expected one of tcp, http, https, script, "
     "grpc, dns, agent; got 'udp'", ""),
    ("suspect: {mass_failure: 100%}\n",
     "sentinel.yaml:1:25: suspect.mass_failure: must be below 100% (more than all backends "
     "never turn down)", "a percent written as text is bounded by the loader"),
    ("suspect: {max_suspect: 0}\n",
     "sentinel.yaml:1:24: suspect.max_suspect: 0 (only a passing canary ends a suspicion) "
     "needs `canaries`", "a rule across sections"),
    ("suspect: {maxsuspect: 1s}\n",
     "sentinel.yaml:1:11: suspect.maxsuspect: unknown key 'maxsuspect'; expected one of: "
     "mass_failure, max_suspect, window", ""),
]


@pytest.mark.parametrize(("text", "expected"), [m[:2] for m in TOP_MISTAKES])
def test_top_level_detection_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    """Each canaries/suspect mistake is one positioned line."""
    assert errors(tmp_path, whole(text)) == [expected]


REFERENCE = "a reference to a sink defined elsewhere, and its kind"
PASSIVE_MISTAKES = [
    ("{nginx_error_log: /nonexistent/dir/error.log}",
     "sentinel.yaml:6:32: services.web.passive.nginx_error_log: directory '/nonexistent/dir' "
     "does not exist", "about this machine: the directory must exist"),
    ("{haproxy: nope}",
     "sentinel.yaml:6:24: services.web.passive.haproxy: undefined sink 'nope'; expected a "
     "haproxy sink (lb)", REFERENCE),
    ("{haproxy: out}",
     "sentinel.yaml:6:24: services.web.passive.haproxy: file sink 'out'; expected a haproxy "
     "sink (lb)", REFERENCE),
    ("{haproxy: {sink: lb}}",
     "sentinel.yaml:6:31: services.web.passive.haproxy.sink: this service does not publish "
     "to 'lb': add it to its `sinks` (its backend and server names are read from there)",
     REFERENCE),
    ("{count: maybe}",
     "sentinel.yaml:6:22: services.web.passive.count: expected true or false, got 'maybe'",
     ""),
    ("{tail: x}",
     "sentinel.yaml:6:15: services.web.passive.tail: unknown key 'tail'; expected one of: "
     "count, haproxy, nginx_error_log", ""),
]


def _with_passive(passive: str) -> str:
    return textwrap.dedent(f"""\
        sinks: {{lb: {{type: haproxy, socket: /run/h.sock}}, out: {{type: file, path: x}}}}
        services:
          web:
            backends: [127.0.0.1:80]
            sinks: [out]
            passive: {passive}
        """)


@pytest.mark.parametrize(("passive", "expected"), [m[:2] for m in PASSIVE_MISTAKES])
def test_passive_mistakes(tmp_path: Path, passive: str, expected: str) -> None:
    """Each passive mistake is one positioned line."""
    assert errors(tmp_path, _with_passive(passive)) == [expected]


@pytest.mark.parametrize(("text", "expected", "loader_only"), [
    *TOP_MISTAKES, *((_with_passive(p), e, why) for p, e, why in PASSIVE_MISTAKES)])
def test_schema_refuses_what_it_can(text: str, expected: str, loader_only: str) -> None:
    """The schema refuses each detection mistake at its key path, unless only the loader
    can see it (`loader_only` says why)."""
    check_schema_verdict(yaml.safe_load(whole(text)), expected.split(": ")[1], loader_only)


def test_watch_on_tcp_and_http_probes(tmp_path: Path) -> None:
    """`watch: true`, or a block with `keepalive`; off by default and with `false`."""
    config = load(tmp_path, """\
        defaults: {probe: {type: http, watch: true}}
        services:
          a: {backends: [127.0.0.1:80]}
          b: {backends: [127.0.0.1:81], probe: {type: tcp, watch: {keepalive: 30s}}}
          c: {backends: [127.0.0.1:82], probe: {watch: false}}
          d: {backends: [127.0.0.1:83], probe: {type: tcp}}
        """)
    assert [s.probe.watch for s in config.services] == [
        WatchConfig(), WatchConfig(keepalive=30.0), None, None]


# (probe, the loader's error, why the schema cannot refuse it: "" when it does)
WATCH_MISTAKES = [
    ("{type: tcp, tls: true, watch: true}",
     "sentinel.yaml:2:70: services.a.probe.watch: not with `tls: true`: the held "
     "connection would be a TLS handshake never started, which servers time out and log",
     "a rule across two fields"),
    ("{type: tcp, watch: {keepalive: 500ms}}",
     "sentinel.yaml:2:71: services.a.probe.watch.keepalive: must be at least 1s (the "
     "kernel counts TCP keepalive in whole seconds)",
     "a lower bound on a duration written as text"),
    ("{type: https, watch: true}",
     "sentinel.yaml:2:54: services.a.probe.watch: unknown key 'watch'", ""),
    ("{type: tcp, watch: sometimes}",
     "sentinel.yaml:2:59: services.a.probe.watch: expected true or false, got 'sometimes'",
     ""),
]


def _with_probe(probe: str) -> str:
    return textwrap.dedent(f"""\
        services:
          a: {{backends: [127.0.0.1:80], probe: {probe}}}
        """)


@pytest.mark.parametrize(("probe", "expected"), [m[:2] for m in WATCH_MISTAKES])
def test_watch_mistakes(tmp_path: Path, probe: str, expected: str) -> None:
    """watch is for tcp (without TLS) and http; keepalive in whole seconds."""
    found = errors(tmp_path, _with_probe(probe))
    assert [e.split("; expected one of")[0] for e in found] == [expected]


@pytest.mark.parametrize(("probe", "expected", "loader_only"), WATCH_MISTAKES)
def test_schema_refuses_watch_mistakes(probe: str, expected: str, loader_only: str) -> None:
    """The schema refuses each watch mistake at its key path, unless only the loader can
    see it (`loader_only` says why)."""
    check_schema_verdict(yaml.safe_load(_with_probe(probe)), expected.split(": ")[1],
                         loader_only)
