"""Self-suspicion with real processes (SPEC 11): sentinel in a network namespace of its
own whose only link to the backends is blackholed sees every backend fail at once; it
suspects itself and drains nothing, and once the link is back it still publishes a real
death."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import BACKEND_SCRIPT, Processes, require_binary, start_sentinel, wait_until

pytestmark = pytest.mark.e2e
CHECKER_IP, NET_IP = "10.213.0.1", "10.213.0.2"  # inside the test's own namespaces only
SERVICES = {"a": (8001, 8002), "b": (8003, 8004), "c": (8005, 8006)}
CANARY_PORT = 8000


@dataclass(frozen=True)
class Namespaces:
    """`checker` runs sentinel; `net` the backends and the canary; one veth between."""

    checker: str
    net: str

    def run(self, ns: str, *argv: str) -> str:
        """`argv` inside namespace `ns`; its output (the test fails if it fails)."""
        done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, timeout=30, check=False)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return done.stdout

    def blackhole(self) -> None:
        """Drop everything the checker sends to the backends' host: no answer, no error."""
        self.run(self.checker, "nft", "add table inet blackhole; add chain inet blackhole "
                 "out { type filter hook output priority 0; }; add rule inet blackhole out "
                 f"ip daddr {NET_IP} drop")

    def restore(self) -> None:
        """Lift the blackhole."""
        self.run(self.checker, "nft", "delete table inet blackhole")


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Two namespaces joined by a veth pair, removed (with their links) at the end."""
    require_binary("ip")
    require_binary("nft")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = Namespaces(f"sentinel-chk-{os.getpid()}", f"sentinel-net-{os.getpid()}")
    made: list[str] = []
    try:
        for name in (ns.checker, ns.net):
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns.checker, "link", "add", "chk0", "type", "veth",
                        "peer", "name", "net0", "netns", ns.net], check=True)
        for name, dev, ip in ((ns.checker, "chk0", CHECKER_IP), (ns.net, "net0", NET_IP)):
            subprocess.run(["ip", "-n", name, "addr", "add", f"{ip}/30", "dev", dev],
                           check=True)
            subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)
        yield ns
    finally:
        for name in made:  # deleting a namespace deletes its end of the veth, and the pair
            subprocess.run(["ip", "netns", "delete", name], check=False)


def start_in(ns: Namespaces, procs: Processes, port: int, name: str
             ) -> subprocess.Popen[bytes]:
    """An HTTP backend in the `net` namespace, once it is listening."""
    proc = procs.start(["ip", "netns", "exec", ns.net, sys.executable, str(BACKEND_SCRIPT),
                        str(port), name, NET_IP], name)
    wait_until(lambda: "listening" in procs.log(name).read_text() or proc.poll() is not None,
               what=f"backend {name}")
    assert proc.poll() is None, procs.log(name).read_text()
    return proc


def api(ns: Namespaces, url: str) -> Any:
    """GET `url` from inside the checker's namespace (where sentinel's API listens)."""
    return json.loads(ns.run(ns.checker, sys.executable, "-c", "import sys, httpx; "
                             "print(httpx.get(sys.argv[1], timeout=5).text)", url))


def write_config(tmp_path: Path) -> tuple[Path, Path]:
    """Three services of two backends (http every 200 ms, fall 2), one canary, the mass
    rule; only a passing canary ends a suspicion."""
    state = tmp_path / "state"
    services = "\n".join(
        f"  {svc}:\n    backends: [{', '.join(f'{NET_IP}:{p}' for p in ports)}]"
        for svc, ports in SERVICES.items())
    config = tmp_path / "sentinel.yaml"
    config.write_text(f"""\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
canaries:
  - {{name: gw, address: "{NET_IP}:{CANARY_PORT}", probe: {{type: tcp, interval: 200ms,
     timeout: 150ms}}}}
suspect: {{mass_failure: 50%, max_suspect: 0}}
defaults:
  probe: {{type: http, path: /, interval: 200ms, fast_interval: 100ms, timeout: 150ms}}
  breaker: {{kind: threshold, fall: 2, rise: 2}}
  sinks: [doc]
sinks:
  doc: {{type: file, path: {state}/doc.json}}
services:
{services}
""")
    return config, state


def backends(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every backend entry of a state document."""
    return [b for svc in doc["services"].values() for b in svc["backends"]]


def test_a_blackholed_checker_suspects_itself_and_drains_nothing(
        namespaces: Namespaces, processes: Processes, tmp_path: Path) -> None:
    """With the checker's link blackholed every breaker turns down, yet every backend
    stays published up, /v1/state shows `suspect` and each service had a `suspect`
    event; back online, the suspicion ends without a single backend event; then a
    backend really killed is published down."""
    procs = {port: start_in(namespaces, processes, port, f"{svc}{i + 1}")
             for svc, ports in SERVICES.items() for i, port in enumerate(ports)}
    start_in(namespaces, processes, CANARY_PORT, "gw")
    config, state = write_config(tmp_path)
    _, url = start_sentinel(processes, config, state,
                            wrapper=["ip", "netns", "exec", namespaces.checker])
    wait_until(lambda: all(b["health"] == "up" and b["last_probe"] for b in backends(
        api(namespaces, f"{url}/v1/state"))), timeout=20, what="every backend probed up")

    namespaces.blackhole()
    doc = wait_until(lambda: (d := api(namespaces, f"{url}/v1/state"))["suspect"] and all(
        b["health"] == "down" for b in backends(d)) and d, timeout=20,
        what="suspect, with every breaker down")
    assert {b["state"] for b in backends(doc)} == {"up"}
    assert doc["suspect"]["reason"].startswith(("every canary fails: gw", "4 of 6", "5 of 6",
                                                "6 of 6"))

    namespaces.restore()
    wait_until(lambda: (d := api(namespaces, f"{url}/v1/state"))["suspect"] is None and all(
        b["health"] == "up" for b in backends(d)), timeout=20, what="suspicion over")
    events = api(namespaces, f"{url}/v1/events?after=0")["events"]
    assert [e for e in events if e["backend"]] == []
    assert sorted((e["service"], e["to"]) for e in events) == [
        (svc, to) for svc in SERVICES for to in ("normal", "suspect")]

    victim = SERVICES["b"][0]
    processes.kill(procs[victim])
    down = wait_until(lambda: [e for e in api(namespaces, f"{url}/v1/events?after=0")[
        "events"] if e["backend"] and e["to"] == "down"], timeout=20, what="b1 down")
    assert [(e["service"], e["backend"]) for e in down] == [("b", f"{NET_IP}:{victim}")]
