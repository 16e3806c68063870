"""Failover through a real HAProxy: `sentinel run` drives servers over the runtime API,
traffic follows; drain keeps open connections; reloads and hand edits are repaired."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sentinel.errors import SinkRejected
from sentinel.sinks.base import Update
from sentinel.sinks.haproxy.options import HAProxyBinding, HAProxyOptions
from sentinel.sinks.haproxy.sink import HAProxySink
from tests.e2e.balancers import (
    HAProxy,
    event_to,
    eventually,
    fleet_view,
    haproxy_backend,
    sentinel_config,
    sink_status,
    start_haproxy,
)
from tests.e2e.helpers import Processes, free_port, start_backend, start_sentinel, wait_until
from tests.e2e.traffic import KeepAlive, Traffic, fetch

pytestmark = pytest.mark.e2e
NAMES = ("web1", "web2", "web3")
SERVERS = {"web1": "s1", "web2": "s2", "web3": "s3"}  # sentinel name -> HAProxy name


@dataclass
class Fleet:
    """Three backend processes, and HAProxy's backend `be_web` (servers s1..s3, no checks
    of its own) behind a frontend on `port`."""

    ports: dict[str, int]
    backends: dict[str, subprocess.Popen[bytes]]
    haproxy: HAProxy
    port: int

    def admin(self, name: str) -> str:
        """The runtime admin state (ready, drain, maint) of a backend's server."""
        return self.haproxy.servers("be_web")[SERVERS[name]].admin


def fleet(processes: Processes, tmp_path: Path) -> Fleet:
    """Start three backends and HAProxy in front of them."""
    ports = {name: free_port() for name in NAMES}
    backends = {name: start_backend(processes, port, name) for name, port in ports.items()}
    port = free_port()
    servers = {SERVERS[name]: p for name, p in ports.items()}
    haproxy = start_haproxy(processes, tmp_path / "haproxy",
                            [haproxy_backend("be_web", port, servers)])
    return Fleet(ports, backends, haproxy, port)


def run_sentinel(processes: Processes, tmp_path: Path, f: Fleet, resync: str = "30s",
                 **options: Any) -> str:
    """`sentinel run` with the haproxy sink, names mapped (`options`: sentinel_config's
    probe and breaker); returns its API URL."""
    state = tmp_path / "state"
    config = tmp_path / "sentinel.yaml"
    sinks = {"lb": {"type": "haproxy", "socket": str(f.haproxy.socket), "watch": "200ms",
                    "resync": resync}}
    config.write_text(sentinel_config(state, sinks, f.ports,
                                      [{"sink": "lb", "backend": "be_web", "servers": SERVERS}],
                                      **options))
    return start_sentinel(processes, config, state)[1]


def test_killed_backend_leaves_haproxy_rotation_and_returns_after_restart(
        processes: Processes, tmp_path: Path) -> None:
    """Kill one backend under traffic: the event says why, its server goes to maint and
    HAProxy sends it nothing more; restart it: ready again and serving."""
    f = fleet(processes, tmp_path)
    url = run_sentinel(processes, tmp_path, f)
    with Traffic(f.port) as traffic:
        assert set(traffic.wait_for(30, time.monotonic())) == set(NAMES)
        processes.kill(f.backends["web2"])
        down = wait_until(lambda: event_to(url, "web2", "down"), what="web2 down event")
        assert "refused" in down["reason"]
        wait_until(lambda: f.admin("web2") == "maint", what="s2 in maint")
        sessions = f.haproxy.stat("be_web", "s2", "stot")
        answers = traffic.wait_for(30, time.monotonic())
        assert None not in answers
        assert "web2" not in answers
        assert f.haproxy.stat("be_web", "s2", "stot") == sessions  # never chosen since

        start_backend(processes, f.ports["web2"], "web2")
        up = wait_until(lambda: event_to(url, "web2", "up", down["seq"]), what="web2 up")
        assert up["from"] == "down"
        wait_until(lambda: f.admin("web2") == "ready", what="s2 ready")
        back = time.monotonic()
        wait_until(lambda: traffic.since(back)["web2"] >= 3, what="traffic to web2 again")
        assert traffic.since(back)[None] == 0


def test_drain_through_the_api_keeps_the_open_connection(
        processes: Processes, tmp_path: Path) -> None:
    """POST .../drain: HAProxy gives the server no new connections while one already open
    keeps being answered by it; POST .../ready brings new connections back."""
    f = fleet(processes, tmp_path)
    url = run_sentinel(processes, tmp_path, f)
    wait_until(lambda: f.admin("web1") == "ready", what="sentinel's first apply")
    held = KeepAlive(f.port)
    try:
        name = held.get()
        answer = httpx.post(f"{url}/v1/backends/web/{name}/drain", timeout=5)
        assert answer.status_code == 200
        wait_until(lambda: f.admin(name) == "drain", what=f"{name} draining")
        assert name not in {fetch(f.port) for _ in range(9)}
        assert [held.get() for _ in range(3)] == [name] * 3
        httpx.post(f"{url}/v1/backends/web/{name}/ready", timeout=5)
        wait_until(lambda: f.admin(name) == "ready", what=f"{name} ready")
        assert name in {fetch(f.port) for _ in range(9)}
    finally:
        held.close()


async def test_reload_and_hand_edits_are_repaired_by_the_background_task(
        processes: Processes, tmp_path: Path) -> None:
    """A HAProxy reload forgets runtime state and a hand edit sets a server back: the
    sink notices the new process through `show info` and re-asserts, and the periodic
    resync repairs the drift."""
    f = fleet(processes, tmp_path)
    sink = HAProxySink("lb", HAProxyOptions(str(f.haproxy.socket), resync=0.5, watch=0.1))
    binding = HAProxyBinding(backend="be_web", servers=SERVERS)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        await sink.apply(Update(fleet_view("web", f.ports, down=["web2"]), options=binding))
        assert f.admin("web2") == "maint"
        await trio.to_thread.run_sync(f.haproxy.reload)
        await eventually(lambda: f.admin("web2") == "maint", what="re-asserted after reload")
        f.haproxy.command("set server be_web/s2 state ready")
        f.haproxy.command("set server be_web/s1 weight 7")
        await eventually(lambda: f.admin("web2") == "maint"
                         and f.haproxy.servers("be_web")["s1"].weight == 1,
                         what="drift repaired")
        nursery.cancel_scope.cancel()


def test_background_errors_show_in_state(processes: Processes, tmp_path: Path) -> None:
    """The sink's watch and re-assert run with no apply to fail, yet /v1/state shows
    them: HAProxy gone is the socket error; HAProxy back without a server sentinel
    manages is the failed re-assert naming it; HAProxy back as configured is ok again."""
    f = fleet(processes, tmp_path)
    # lenient checks: a probe slowed by a loaded machine must not cause an apply here;
    # no periodic resync (it would name the missing server as drift it is repairing)
    url = run_sentinel(processes, tmp_path, f, resync="1h",
                       probe={"type": "tcp", "interval": "1s", "timeout": "1s"},
                       breaker={"kind": "threshold", "fall": 5, "rise": 1})
    wait_until(lambda: f.admin("web1") == "ready" and sink_status(url, "lb")["applied"] >= 1,
               what="sentinel's first apply")
    assert sink_status(url, "lb")["ok"] is True
    applied = sink_status(url, "lb")["applied"]

    def kill_haproxy() -> dict[str, Any]:
        os.killpg(f.haproxy.master_pid, signal.SIGKILL)
        return wait_until(lambda: "watching" in ((s := sink_status(url, "lb"))["last_error"]
                                                 or "") and s,
                          what="the watch failing in /v1/state")

    gone = kill_haproxy()
    assert gone["ok"] is False
    assert gone["last_error"].startswith(f"watching HAProxy: haproxy socket {f.haproxy.socket}")
    f.haproxy = start_haproxy(processes, f.haproxy.dir, [haproxy_backend(
        "be_web", f.port, {"s1": f.ports["web1"], "s2": f.ports["web2"]})])
    missing = wait_until(lambda: "s3" in ((s := sink_status(url, "lb"))["last_error"] or "")
                         and s, what="the failed re-assert in /v1/state")
    assert missing["ok"] is False
    assert missing["last_error"] == ("re-asserting web: haproxy backend 'be_web' has no server "
                                     "'s3' (it has: s1, s2)")
    kill_haproxy()
    f.haproxy = start_haproxy(processes, f.haproxy.dir, [haproxy_backend(
        "be_web", f.port, {SERVERS[name]: port for name, port in f.ports.items()})])
    wait_until(lambda: sink_status(url, "lb")["ok"] and f.admin("web3") == "ready",
               what="ok again once HAProxy is back as configured")
    assert sink_status(url, "lb")["applied"] == applied  # all of it was background work


async def test_unknown_names_are_clear_errors(processes: Processes, tmp_path: Path) -> None:
    """An unknown backend or server name is a SinkRejected naming it; a service with good
    names is still applied by the same sink."""
    f = fleet(processes, tmp_path)
    sink = HAProxySink("lb", HAProxyOptions(str(f.haproxy.socket)))
    with pytest.raises(SinkRejected, match="haproxy backend 'web': Can't find backend"):
        await sink.apply(Update(fleet_view("web", f.ports)))
    with pytest.raises(SinkRejected, match="backend 'be_web' has no server 'web1', 'web2'"):
        await sink.apply(Update(fleet_view("other", f.ports), options=HAProxyBinding(
            backend="be_web", servers={"web3": "s3"})))
    await sink.apply(Update(fleet_view("web", f.ports, down=["web3"]), options=HAProxyBinding(
        backend="be_web", servers=SERVERS)))
    assert f.admin("web3") == "maint"


async def test_a_service_removed_from_the_config_is_let_go(
        processes: Processes, tmp_path: Path) -> None:
    """After a reload drops a service, resync stops re-asserting its servers."""
    f = fleet(processes, tmp_path)
    sink = HAProxySink("lb", HAProxyOptions(str(f.haproxy.socket), resync=0.2, watch=0.1))
    sink.bind(frozenset({"web", "old"}))
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        await sink.apply(Update(fleet_view("old", f.ports, down=["web3"]),
                                options=HAProxyBinding(backend="be_web", servers=SERVERS)))
        await sink.apply(Update(fleet_view("web", {"web1": f.ports["web1"]}, down=["web1"]),
                                options=HAProxyBinding(backend="be_web", servers=SERVERS)))
        sink.bind(frozenset({"web"}))
        f.haproxy.command("set server be_web/s3 state ready")
        f.haproxy.command("set server be_web/s1 state ready")
        await eventually(lambda: f.admin("web1") == "maint", what="web's drift repaired")
        await trio.sleep(0.5)  # two more resyncs
        assert f.admin("web3") == "ready"
        nursery.cancel_scope.cancel()
