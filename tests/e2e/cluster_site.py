"""Three `sentinel run` processes agreeing through a real etcd, for end-to-end tests.

`ClusterSite` starts (all by PID, through the test's `Processes`): etcd,
HTTP backend processes, one webhook receiver process shared by the members,
and members from ONE configuration file (node, state dir, API address and
sink paths come from the environment, as SPEC 12 intends), each with its
own state dir, file sink (`view.json`) and Maglev sink, and the webhook sink
(leader scope). Helpers read what each member's sinks wrote and what the
receiver got.

Everything listens on `host` (loopback by default). A member may run in its
own network namespace (`tests.e2e.netns`): the services then listen on the
namespace's gateway address, which is this namespace's own too, so one
configuration reaches them from everywhere; that member's API listens on
its side of the pair (a non-loopback address: the token is set for all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.etcd_server import EtcdServer
from tests.e2e.helpers import (
    LOOPBACK,
    ROOT,
    Processes,
    free_port,
    port_open,
    start_backend,
    start_sentinel,
    wait_until,
)
from tests.e2e.netns import Netns

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RECEIVER = ROOT / "tests" / "sinks" / "webhook" / "receiver_server.py"
TOKEN = "cluster-e2e-token"
LEASE_TTL = 2  # seconds: the members' lease_ttl
CONFIG = """\
version: 1
state_dir: ${{SENTINEL_STATE}}
api: {{listen: "${{SENTINEL_API:-127.0.0.1:0}}", token: {token}}}
shutdown_timeout: 2s
cluster:
  etcd: [{etcd}]
  prefix: /sentinel/e2e/
  node: ${{SENTINEL_NODE}}
  lease_ttl: {lease_ttl}s
  probers: {probers}
defaults:
  probe: {{type: http, path: /, interval: 200ms, timeout: 200ms}}
  breaker: {{kind: threshold, fall: 2, rise: 2}}
sinks:
  view: {{type: file, path: "${{SENTINEL_STATE}}/view.json"}}
  ring: {{type: maglev, table_size: 251, dir: "${{SENTINEL_STATE}}/maglev"}}
  ops: {{type: webhook, url: "{hook}", secret: {secret}, initial_delay: 100ms,
        max_delay: 500ms}}
services:
  web:
    backends:
{backends}
    sinks: [view, ring, ops]
"""


@dataclass
class Member:
    """One `sentinel run` of the cluster."""

    name: str
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def state(self) -> dict[str, Any]:
        """GET /v1/state."""
        return dict(httpx.get(f"{self.url}/v1/state", timeout=5).json())

    def view(self) -> dict[str, Any] | None:
        """What its file sink last wrote (None before the first write)."""
        path = self.state_dir / "view.json"
        return json.loads(path.read_text()) if path.exists() else None

    def states(self) -> dict[str, str] | None:
        """{backend: state} of service web in its file sink."""
        doc = self.view()
        if doc is None:
            return None
        return {b["name"]: b["state"] for b in doc["services"]["web"]["backends"]}

    def maglev(self) -> bytes | None:
        """Its Maglev table of service web."""
        path = self.state_dir / "maglev" / "web.maglev"
        return path.read_bytes() if path.exists() else None

    def post(self, path: str) -> httpx.Response:
        """POST to its API (with the token)."""
        return httpx.post(f"{self.url}{path}", timeout=15,
                          headers={"Authorization": f"Bearer {TOKEN}"})


@dataclass
class ClusterSite:
    """etcd, backends, a receiver and the members; see the module docstring."""

    root: Path
    procs: Processes
    etcd: EtcdServer
    backends: dict[str, int] = field(default_factory=dict)  # name -> port
    backend_procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    hook_port: int = 0
    host: str = LOOPBACK  # where etcd, the backends and the receiver listen
    namespaces: dict[str, Netns] = field(default_factory=dict)  # member -> its own

    def start(self, backends: int = 6, members: int = 3, probers: int | str = 2) -> None:
        """Everything, in order; returns once every member reports itself ok and its
        file sink shows every backend up."""
        for i in range(1, backends + 1):
            self.start_backend(f"web{i}")
        self.hook_port = free_port(self.host)
        control = self.root / "receiver"
        control.mkdir()
        (control / "accept").touch()
        self.procs.start([sys.executable, str(RECEIVER), str(self.hook_port),
                          str(self.root / "deliveries.jsonl"), str(control), self.host],
                         "receiver")
        wait_until(lambda: port_open(self.hook_port, self.host), what="the webhook receiver")
        lines = "\n".join(f"      - {{name: {name}, address: {self.host}:{port}}}"
                          for name, port in self.backends.items())
        (self.root / "sentinel.yaml").write_text(CONFIG.format(
            etcd=self.etcd.url, probers=probers, backends=lines, secret=SECRET, token=TOKEN,
            lease_ttl=LEASE_TTL,
            hook=f"http://{self.host}:{self.hook_port}/hook"))
        for i in range(1, members + 1):
            self.start_member(f"n{i}")
        everyone = dict.fromkeys(self.backends, "up")
        self.wait_all(lambda m: m.states() == everyone and m.state()["cluster"]["ok"]
                      and len(m.state()["cluster"]["members"]) == members,
                      what="every member ok, every backend up")

    def start_backend(self, name: str) -> None:
        """A backend process (on its old port when it ran before)."""
        port = self.backends.get(name) or free_port(self.host)
        self.backends[name] = port
        self.backend_procs[name] = start_backend(self.procs, port, name, self.host)

    def kill_backend(self, name: str) -> None:
        """SIGKILL a backend process."""
        self.procs.kill(self.backend_procs.pop(name))

    def start_member(self, name: str) -> Member:
        """`sentinel run` as member `name` (its state dir kept across restarts)."""
        member = self.members.get(name) or Member(name, self.root / name)
        member.state_dir.mkdir(exist_ok=True)
        env = {**os.environ, "SENTINEL_NODE": name, "SENTINEL_STATE": str(member.state_dir)}
        space = self.namespaces.get(name)
        if space is not None:
            env["SENTINEL_API"] = f"{space.ns_ip}:0"
        member.proc, member.url = start_sentinel(
            self.procs, self.root / "sentinel.yaml", member.state_dir, name, env=env,
            wrapper=space.wrap() if space is not None else ())
        self.members[name] = member
        return member

    def live(self) -> list[Member]:
        """The members whose process runs."""
        return [m for m in self.members.values() if m.proc is not None
                and m.proc.poll() is None]

    def leader(self) -> Member:
        """The live member every live member names as leader (waits for agreement)."""
        def agreed() -> str | None:
            live = self.live()
            names = {m.state()["cluster"]["leader"] for m in live}
            name = names.pop() if len(names) == 1 else None
            return name if name in {m.name for m in live} else None

        return self.members[wait_until(agreed, timeout=15, what="one agreed leader")]

    def wait_all(self, check: Any, *, what: str, timeout: float = 20.0) -> None:
        """Wait until `check(member)` holds for every live member."""
        wait_until(lambda: all(check(m) for m in self.live()), timeout=timeout, what=what)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every POST the receiver answered 2xx: webhook-id and the event."""
        path = self.root / "deliveries.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["status"] == 200:
                out.append({"id": record["headers"]["webhook-id"],
                            "event": json.loads(record["body"])})
        return out

