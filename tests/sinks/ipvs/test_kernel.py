"""The ipvs sink against a real kernel's IPVS table (Debian's kernel under QEMU).

A real engine probes real loopback listeners on the host and publishes to the
ipvs sink, whose ipvsadm `command` is the forwarder into the VM; the tests
read the kernel's table back with ipvsadm inside the VM.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from sentinel.sinks.base import Update
from sentinel.sinks.ipvs.options import IpvsOptions
from sentinel.sinks.ipvs.sink import IpvsSink
from sentinel.sinks.registry import load_config
from tests.sinks.ipvs.kernel import (
    backends,
    read_back,
    running,
    wait_for,
    weights,
    write_config,
)
from tests.sinks.ipvs.vm import Vm
from tests.sinks.ipvs.vmimage import MISSING_SCHEDULER
from tests.sinks.views import backend, view

pytestmark = pytest.mark.e2e


def service(name: str, addresses: list[str], binding: str, extra: str = "") -> str:
    """A service entry of the config (YAML, indented under `services:`)."""
    listed = ", ".join(f"{{name: b{i}, address: '{a}', weight: {w}}}"
                       for i, (a, w) in enumerate(_weighted(addresses)))
    return (f"  {name}:\n    backends: [{listed}]\n{extra}"
            f"    sinks: [{{sink: lvs, {binding}}}]\n")


def _weighted(addresses: list[str]) -> list[tuple[str, int]]:
    return [(a.rsplit("=", 1)[0], int(a.rsplit("=", 1)[1])) if "=" in a else (a, 1)
            for a in addresses]


async def test_down_is_weight0_and_recovery_ramps_up(vm: Vm, state_dir: Path) -> None:
    """A killed backend reads back as weight 0 (thresholds and forwarding restated);
    restored, its weight climbs back through the slow-start steps to its own."""
    with backends("127.0.0.2", "127.0.0.3") as (one, two):
        services = service("web", [f"{one.address}=10", f"{two.address}=10"],
                           "virtual: 'tcp:10.0.0.1:80', scheduler: wrr, forward: dr, "
                           "u_threshold: 100, l_threshold: 50", "    slow_start: 5s\n")
        async with running(write_config(state_dir, vm, services)):
            virtual = "tcp:10.0.0.1:80"
            entry = await wait_for(vm, virtual, lambda e: weights(e) == {
                "127.0.0.2:80": 10, "127.0.0.3:80": 10}, what="both up at weight 10")
            assert entry is not None
            assert entry.spec.scheduler == "wrr"
            one.kill()
            entry = await wait_for(vm, virtual, lambda e: weights(e).get("127.0.0.2:80") == 0,
                                   what="the killed backend at weight 0")
            assert entry is not None
            real = entry.reals[("127.0.0.2", 80)]
            assert (real.forward, real.u_threshold, real.l_threshold) == ("dr", 100, 50)
            since = len(vm.forwarded)
            one.restore()
            await wait_for(vm, virtual, lambda e: weights(e).get("127.0.0.2:80") == 10,
                           what="the ramp back to weight 10")
            ramp = [weights(e).get("127.0.0.2:80") for e in read_back(vm, virtual, since)]
            assert set(ramp) & set(range(1, 10)), f"no slow-start step read back: {ramp}"


async def test_remove_deletes_and_restores_the_real_server(vm: Vm, state_dir: Path) -> None:
    """on_down remove: a killed backend's real server is deleted, restored it comes back;
    a real server added by hand to the same service is left alone."""
    with backends("127.0.0.2", "127.0.0.3") as (one, two):
        services = service("web", [one.address, two.address],
                           "virtual: 'tcp:10.0.0.2:8080', forward: nat, on_down: remove")
        async with running(write_config(state_dir, vm, services)):
            virtual = "tcp:10.0.0.2:8080"
            await wait_for(vm, virtual, lambda e: len(weights(e)) == 2, what="two reals")
            added = vm.ipvsadm("-a", "-t", "10.0.0.2:8080", "-r", "127.0.0.9:9", "-m")
            assert added.returncode == 0, added.stderr
            one.kill()
            await wait_for(vm, virtual, lambda e: one.address not in weights(e)
                           and two.address in weights(e), what="the dead one deleted")
            one.restore()
            entry = await wait_for(vm, virtual, lambda e: one.address in weights(e),
                                   what="the restored one back")
            assert "127.0.0.9:9" in weights(entry)


async def test_drain_then_remove_waits_for_connections(vm: Vm, state_dir: Path) -> None:
    """drain_then_remove: a real server without connections is deleted at once; one with
    a connection stays at weight 0 until drain_timeout, then is deleted."""
    with backends("127.0.0.2", "127.0.0.3") as (busy, idle):
        services = service("web", [f"{busy.address}=10", f"{idle.address}=1"],
                           "virtual: 'tcp:10.0.0.3:80', scheduler: fo, "
                           "on_down: drain_then_remove, drain_timeout: 2s")
        async with running(write_config(state_dir, vm, services)):
            virtual = "tcp:10.0.0.3:80"
            await wait_for(vm, virtual, lambda e: len(weights(e)) == 2, what="two reals")
            # a connection from inside the VM to the VIP: fo sends it to the heaviest
            made = vm.run("ip addr add 10.0.0.3/32 dev lo; (nc 10.0.0.3 80 </dev/null "
                          ">/dev/null 2>&1 &); sleep 0.3")
            assert made.returncode == 0, made.stderr
            await wait_for(vm, virtual, lambda e: e is not None and e.reals[
                ("127.0.0.2", 80)].inactive > 0, what="a connection to the busy one")
            since = len(vm.forwarded)
            busy.kill()
            idle.kill()
            started = trio.current_time()
            await wait_for(vm, virtual, lambda e: not weights(e),
                           what="the busy one deleted after drain_timeout")
            assert trio.current_time() - started >= 1.5
            # the state in between lasts drain_timeout, shorter than a slow read from
            # here: read it from the sink's own listings (each drain poll lists first)
            seen = [weights(e) for e in read_back(vm, virtual, since)]
            assert {"127.0.0.2:80": 0} in seen, f"never the busy one alone at 0: {seen}"


async def test_drift_is_repaired_and_reported(vm: Vm, state_dir: Path) -> None:
    """A hand edit of an owned real server is undone by the periodic resync and
    counted as a conflict; a service the sink does not own is left alone."""
    with backends("127.0.0.2") as (one,):
        services = service("web", [f"{one.address}=5"], "virtual: 'tcp:10.0.0.4:80'")
        async with running(write_config(state_dir, vm, services, resync="300ms")) as engine:
            virtual = "tcp:10.0.0.4:80"
            await wait_for(vm, virtual, lambda e: weights(e) == {"127.0.0.2:80": 5})
            for args in (["-A", "-t", "10.9.9.9:80", "-s", "rr"],
                         ["-e", "-t", "10.0.0.4:80", "-r", "127.0.0.2:80", "-w", "77"]):
                edited = vm.ipvsadm(*args)
                assert edited.returncode == 0, edited.stderr
            await wait_for(vm, virtual, lambda e: weights(e) == {"127.0.0.2:80": 5},
                           what="the hand edit undone")
            sink = engine.runners["lvs"].sink
            assert isinstance(sink, IpvsSink)
            assert sink.conflicts >= 1
            other = await wait_for(vm, "tcp:10.9.9.9:80", lambda e: e is not None)
            assert other is not None
            assert other.spec.scheduler == "rr"


async def test_fwmark_and_ipv6_services(vm: Vm, state_dir: Path) -> None:
    """A fwmark service (nat keeps the backends' ports) and an IPv6 UDP service with mh
    flags are created and follow their backends."""
    with backends("127.0.0.2", "::1", "::1") as (four, six_a, six_b):
        services = (service("marked", [four.address], "virtual: 'fwmark:7', forward: nat")
                    + service("six", [six_a.address, six_b.address],
                              "virtual: 'udp:[2001:db8::1]:53', forward: nat, "
                              "scheduler: mh, flags: [mh-fallback, mh-port]"))
        async with running(write_config(state_dir, vm, services)):
            marked = await wait_for(vm, "fwmark:7", lambda e: weights(e) == {four.address: 1})
            assert marked is not None
            assert marked.reals[("127.0.0.2", four.port)].forward == "nat"
            six = await wait_for(vm, "udp:[2001:db8::1]:53", lambda e: len(weights(e)) == 2)
            assert six is not None
            assert (six.spec.scheduler, six.spec.flags) == ("mh", frozenset({1, 2}))
            six_b.kill()
            await wait_for(vm, "udp:[2001:db8::1]:53",
                           lambda e: weights(e) == {six_a.address: 1, six_b.address: 0})


async def test_missing_scheduler_is_a_clear_error(vm: Vm, state_dir: Path) -> None:
    """A scheduler the kernel lacks fails the apply with a message naming it; the engine
    goes on and reports it in the sink's statistics."""
    with backends("127.0.0.2") as (one,):
        services = service("web", [one.address],
                           f"virtual: 'tcp:10.0.0.5:80', scheduler: {MISSING_SCHEDULER}")
        async with running(write_config(state_dir, vm, services)) as engine:
            runner = engine.runners["lvs"]
            with trio.fail_after(60):  # QEMU: see wait_for
                while not runner.statistics().last_error:  # noqa: ASYNC110 - a counter
                    await trio.sleep(0.05)
            error = runner.statistics().last_error
            assert f"no IPVS scheduler {MISSING_SCHEDULER!r}" in error, error
            assert "Scheduler or persistence engine not found" in error


async def test_converged_table_needs_no_edits(vm: Vm, state_dir: Path) -> None:
    """With dr the kernel forces the service port: a backend on another port is not
    seen as different, so applying the same view again runs no edit."""
    sink, binding = direct_sink(vm, state_dir, "virtual: 'tcp:10.0.0.6:80', forward: dr")
    update = Update(view("web", backend("b0", 8080, weight=3)), (), binding)
    await sink.apply(update)
    entry = await wait_for(vm, "tcp:10.0.0.6:80", lambda e: e is not None)
    assert weights(entry) == {"127.0.0.1:80": 3}
    calls = sink.driver.calls
    await sink.apply(update)
    assert sink.driver.calls - calls == 2, "only the two reads, no edit"


async def test_ownership_survives_a_restart(vm: Vm, state_dir: Path) -> None:
    """A backend dropped from the config is deleted, even by a new sink after a restart
    (ownership is kept in the state directory); a real server added by hand is not."""
    sink, binding = direct_sink(vm, state_dir, "virtual: 'tcp:10.0.0.7:80', forward: nat")
    await sink.apply(Update(view("web", backend("b0", 8080), backend("b1", 8081)), (),
                            binding))
    added = vm.ipvsadm("-a", "-t", "10.0.0.7:80", "-r", "127.0.0.9:9", "-m")
    assert added.returncode == 0, added.stderr
    restarted, _ = direct_sink(vm, state_dir, "virtual: 'tcp:10.0.0.7:80', forward: nat")
    await restarted.apply(Update(view("web", backend("b0", 8080)), (), binding))
    entry = await wait_for(vm, "tcp:10.0.0.7:80", lambda e: e is not None)
    assert weights(entry) == {"127.0.0.1:8080": 1, "127.0.0.9:9": 1}


def direct_sink(vm: Vm, state_dir: Path, binding: str) -> tuple[IpvsSink, object]:
    """An ipvs sink (not run by an engine) on the VM, and the parsed `binding`."""
    config = load_config(write_config(state_dir, vm, service("web", ["127.0.0.1:1"], binding)))
    options = config.sinks[0].options
    assert isinstance(options, IpvsOptions)
    return IpvsSink("lvs", options, state_dir), config.services[0].sinks[0].options


async def test_a_virtual_service_it_created_is_deleted_when_a_reload_drops_it(
        vm: Vm, state_dir: Path) -> None:
    """A reload drops two services: the virtual service sentinel created is deleted (its
    real servers with it); the one someone else created before sentinel took it over is
    left as it is, and so is one sentinel never managed."""
    for args in (["-A", "-t", "10.0.0.9:80", "-s", "rr"], ["-A", "-t", "10.9.9.9:80"]):
        made = vm.ipvsadm(*args)
        assert made.returncode == 0, made.stderr
    with backends("127.0.0.2", "127.0.0.3") as (one, two):
        both = (service("web", [one.address], "virtual: 'tcp:10.0.0.8:80'")
                + service("theirs", [two.address], "virtual: 'tcp:10.0.0.9:80', scheduler: rr")
                + service("kept", [two.address], "virtual: 'tcp:10.0.0.10:80'"))
        config = write_config(state_dir, vm, both)
        async with running(config) as engine:
            await wait_for(vm, "tcp:10.0.0.8:80", lambda e: len(weights(e)) == 1)
            await wait_for(vm, "tcp:10.0.0.9:80", lambda e: len(weights(e)) == 1)
            await wait_for(vm, "tcp:10.0.0.10:80", lambda e: len(weights(e)) == 1)
            write_config(state_dir, vm, service("kept", [two.address],
                                                "virtual: 'tcp:10.0.0.10:80'"))
            assert await engine.reload_from_file(str(config)) == []
            await wait_for(vm, "tcp:10.0.0.8:80", lambda e: e is None,
                           what="the virtual service sentinel created deleted")
            theirs = await wait_for(vm, "tcp:10.0.0.9:80", lambda e: e is not None)
            assert weights(theirs) == {"127.0.0.3:80": 1}  # left as it was
            assert weights(await wait_for(vm, "tcp:10.0.0.10:80", lambda e: e is not None)
                           ) == {"127.0.0.3:80": 1}
            assert await wait_for(vm, "tcp:10.9.9.9:80", lambda e: e is not None)


async def test_a_virtual_service_it_created_is_deleted_at_the_next_start(
        vm: Vm, state_dir: Path) -> None:
    """Sentinel stopped, the service dropped from the config: the next start deletes the
    virtual service it had created (ownership is kept in the state directory)."""
    with backends("127.0.0.2") as (one,):
        config = write_config(state_dir, vm, service("web", [one.address],
                                                     "virtual: 'tcp:10.0.0.11:80'"))
        async with running(config):
            await wait_for(vm, "tcp:10.0.0.11:80", lambda e: len(weights(e)) == 1)
        config = write_config(state_dir, vm, service("api", [one.address],
                                                     "virtual: 'tcp:10.0.0.12:80'"))
        async with running(config):
            await wait_for(vm, "tcp:10.0.0.12:80", lambda e: len(weights(e)) == 1)
            await wait_for(vm, "tcp:10.0.0.11:80", lambda e: e is None,
                           what="the virtual service of the earlier run deleted")
