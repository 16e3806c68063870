"""A sentinel installation for end-to-end tests: config writer, state_dir, file sink, API token.

`Site.write` renders a config with fast HTTP probes (every 400ms, 100ms apart
once one fails, down at the second failure), so transitions show within a
second yet one probe slowed by a loaded machine flips nothing. Every service
publishes to the file sink `doc`, whose document `Site.doc_backends` reads.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.helpers import (
    Processes,
    SentinelApi,
    free_port,
    read_json,
    start_backend,
    start_sentinel,
    wait_until,
)

Backends = dict[str, list[str]]  # service -> backend names; each backend gets its own port

SCRIPT = """#!/bin/sh
echo $$ >> {pids}
{body}
"""


@dataclass
class Site:
    """One sentinel installation under tmp_path: config, state_dir, file sink, token, ports."""

    root: Path
    token: str
    ports: dict[str, int]

    @property
    def config(self) -> Path:
        """The config file `sentinel run -c` reads (and reloads)."""
        return self.root / "sentinel.yaml"

    @property
    def state_dir(self) -> Path:
        """The instance's state_dir."""
        return self.root / "state"

    @property
    def doc(self) -> Path:
        """Where the file sink writes the state document."""
        return self.root / "out" / "state.json"

    def write(self, services: Backends, *, min_up: str = "0", shutdown: str = "5s",
              expect_body: str = "ok", sinks: dict[str, str] | None = None) -> None:
        """Write the config: an HTTP probe every 400ms, down at 2 failures in 1s, every
        service publishing to the file sink `doc` (and to `sinks`, name -> flow mapping)."""
        sinks = sinks or {}
        lines = ["version: 1", f"state_dir: {self.state_dir}", f"shutdown_timeout: {shutdown}",
                 f'api: {{listen: "127.0.0.1:0", token_file: {self.root / "token"}}}',
                 "sinks:", f"  doc: {{type: file, path: {self.doc}}}",
                 *(f"  {name}: {spec}" for name, spec in sinks.items()),
                 "defaults:",
                 "  probe: {type: http, path: /healthz, interval: 400ms, fast_interval: 100ms,"
                 f" down_interval: 200ms, timeout: 400ms, expect_body: '{expect_body}'}}",
                 "  breaker: {kind: nginx, max_fails: 2, fail_timeout: 1s}",
                 "services:"]
        for service, names in services.items():
            lines += [f"  {service}:", f'    min_up: "{min_up}"', "    backends:"]
            for name in names:
                port = self.ports.setdefault(name, free_port())
                lines.append(f'      - {{name: {name}, address: "127.0.0.1:{port}"}}')
            lines.append(f"    sinks: [doc{''.join(', ' + s for s in sinks)}]")
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, processes: Processes, **options: Any
              ) -> tuple[subprocess.Popen[bytes], SentinelApi]:
        """`sentinel run -c CONFIG` and a client for its API (with the token)."""
        proc, url = start_sentinel(processes, self.config, self.state_dir, **options)
        return proc, SentinelApi(url, self.token)

    def script(self, name: str, body: str) -> tuple[Path, Path]:
        """An executable shell script that appends its PID to a file, then runs `body`;
        returns the script and the PID file."""
        path, pids = self.root / name, self.root / f"{name}.pids"
        path.write_text(SCRIPT.format(pids=pids, body=body))
        path.chmod(0o755)
        return path, pids

    def doc_backends(self, service: str) -> dict[str, str] | None:
        """name -> state in the file sink's document (None before it is written)."""
        doc = read_json(self.doc)
        if doc is None or service not in doc["services"]:
            return None
        return {b["name"]: b["state"] for b in doc["services"][service]["backends"]}


def make_site(root: Path) -> Site:
    """A fresh installation under `root` with a random API token in a token file."""
    token = f"tok-{secrets.token_hex(16)}"
    (root / "token").write_text(token + "\n")
    return Site(root, token, {})


def start_backends(processes: Processes, site: Site, *names: str
                   ) -> dict[str, subprocess.Popen[bytes]]:
    """One HTTP backend process per name, on the site's port for that name."""
    return {n: start_backend(processes, site.ports.setdefault(n, free_port()), n)
            for n in names}


def states(api: SentinelApi, service: str) -> dict[str, str]:
    """name -> published state in GET /v1/state."""
    return {b["name"]: b["state"] for b in api.state()["services"][service]["backends"]}


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(backend, from, to, reason) per event."""
    return [(e["backend"], e["from"], e["to"], e["reason"]) for e in events]


def replay(names: list[str], events: list[dict[str, Any]]) -> dict[str, str]:
    """Each backend's state after applying `events` to all of `names` starting up."""
    now = dict.fromkeys(names, "up")
    for event in events:
        if event["backend"]:
            assert now[event["backend"]] == event["from"], event
            now[event["backend"]] = event["to"]
    return now


def view(doc: dict[str, Any] | None) -> dict[str, Any]:
    """What a state document publishes: per service panic/up/total and each backend's
    state, weight, since and override (no probe times or counters)."""
    assert doc is not None
    return {name: (svc["panic"], svc["up"], svc["total"],
                   [(b["name"], b["state"], b["weight"], b["since"], b["override"])
                    for b in svc["backends"]])
            for name, svc in doc["services"].items()}


def quiet_for(api: SentinelApi, probes: int) -> None:
    """Wait until the engine has started `probes` more probes."""
    start = api.probes()
    wait_until(lambda: api.probes() >= start + probes, what=f"{probes} more probes")
