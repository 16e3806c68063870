"""The ipvs sink's configuration: bindings, options, and `sentinel check`'s warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config.node import load_yaml
from sentinel.errors import ConfigError, ConfigErrors
from sentinel.sinks.ipvs.options import IpvsBinding, parse_binding, warnings
from sentinel.sinks.ipvs.table import ServiceSpec, Virtual
from sentinel.sinks.registry import load_config
from tests.config import run_sentinel
from tests.sinks.ipvs import config_file


def binding(text: str) -> IpvsBinding:
    """Parse a binding's options written as a YAML flow mapping."""
    return parse_binding(load_yaml(text, "sentinel.yaml"))


def test_binding_defaults_and_every_option() -> None:
    """Defaults are wlc, dr, weight0; every option is carried, persistence in seconds."""
    assert binding("{virtual: 'tcp:10.0.0.1:80'}") == IpvsBinding(Virtual("tcp", "10.0.0.1", 80))
    full = binding("{virtual: 'udp:[2001:db8::1]:53', scheduler: mh, flags: 'mh-port,"
                   "mh-fallback', persistent: 5m, forward: nat, on_down: drain_then_remove, "
                   "drain_timeout: 30s, u_threshold: 100, l_threshold: 50}")
    assert full.spec == ServiceSpec("mh", frozenset({1, 2}), persistent=300)
    assert (full.forward, full.on_down, full.drain_timeout) == ("nat", "drain_then_remove", 30)
    assert (full.u_threshold, full.l_threshold) == (100, 50)


@pytest.mark.parametrize(("text", "message"), [
    ("{scheduler: rr}", "needs `virtual`"),
    ("{virtual: 'tcp:example.com:80'}", "not an IP address"),
    ("{virtual: 'fwmark:7', scheduler: maglev}", "expected one of rr, wrr"),
    ("{virtual: 'fwmark:7', scheduler: sh, flags: [mh-port]}", "unknown flag 'mh-port'"),
    ("{virtual: 'fwmark:7', forward: masq}", "expected one of dr, nat, tun"),
    ("{virtual: 'fwmark:7', on_down: drop}", "expected one of weight0, remove"),
    ("{virtual: 'fwmark:7', l_threshold: 5}", "must not exceed u_threshold"),
    ("{virtual: 'fwmark:7', weight: 5}", "unknown key 'weight'"),
])
def test_binding_errors(text: str, message: str) -> None:
    """Each mistake is a ConfigError that says what is wrong."""
    with pytest.raises(ConfigError, match=message):
        binding(text)


def set_sysctls(directory: Path, **values: int) -> Path:
    """A stand-in for /proc/sys/net/ipv4/vs with the given settings."""
    directory.mkdir(exist_ok=True)
    for name, value in values.items():
        (directory / name).write_text(f"{value}\n")
    return directory


@pytest.mark.parametrize(("binding_text", "expected"), [
    ("virtual: 'tcp:10.0.0.1:80', scheduler: mh", ["mh without mh-fallback"]),
    ("virtual: 'tcp:10.0.0.1:80', scheduler: mh, flags: [mh-fallback]", []),
    ("virtual: 'tcp:10.0.0.1:80', scheduler: mh, on_down: remove",
     ["on_down remove: packets of connections"]),
    ("virtual: 'tcp:10.0.0.1:80', persistent: 300s", ["expire_quiescent_template"]),
    ("virtual: 'tcp:10.0.0.1:80', on_down: drain_then_remove",
     ["on_down drain_then_remove: packets"]),
])
def test_warnings_for_risky_combinations(tmp_path: Path, binding_text: str,
                                         expected: list[str]) -> None:
    """Risky combinations are named, each with the service, sink and virtual."""
    found = warnings(load_config(config_file(tmp_path, binding_text)),
                     set_sysctls(tmp_path / "vs"))
    assert len(found) == len(expected), found
    for text, part in zip(found, expected, strict=True):
        assert text.startswith("service web (lvs, tcp:10.0.0.1:80): ")
        assert part in text


def test_kernel_settings_silence_their_warnings(tmp_path: Path) -> None:
    """With expire_quiescent_template=1 and expire_nodest_conn=1 the kernel already does
    the safe thing: no warning."""
    config = load_config(config_file(tmp_path, "virtual: 'tcp:10.0.0.1:80', persistent: 60, "
                                               "on_down: remove"))
    sysctls = set_sysctls(tmp_path / "vs", expire_quiescent_template=1, expire_nodest_conn=1)
    assert warnings(config, sysctls) == []


def test_unknown_driver_is_an_error(tmp_path: Path) -> None:
    """Only the ipvsadm driver exists; another one is refused with the reason."""
    with pytest.raises(ConfigErrors, match="unknown driver 'netlink'"):
        load_config(config_file(tmp_path, "virtual: 'fwmark:1'", driver=", driver: netlink"))


def test_check_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    """`sentinel check` reports ok, prints each warning on stderr, and still exits 0."""
    path = config_file(tmp_path, "virtual: 'tcp:10.0.0.1:80', scheduler: mh")
    done = run_sentinel("check", "-c", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{path}: ok" in done.stdout
    assert "warning: service web (lvs, tcp:10.0.0.1:80): mh without mh-fallback" in done.stderr
