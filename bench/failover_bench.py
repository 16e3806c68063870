"""Failover time through real balancers: from a backend's death to the balancer no longer
choosing it, and from its restart to the balancer sending it traffic again.

    .venv/bin/python bench/failover_bench.py [--trials 7]

One fleet for every row, in one run: three HTTP backend processes on loopback,
one nginx and one HAProxy in front of them, and a real `sentinel run` with an
nginx sink and a HAProxy sink on the same service (http probe every 1 s,
200 ms after a failure, breaker nginx `max_fails: 2`, `fail_timeout: 2s`).
HAProxy also balances the same three backends through two more backends that
use its own health checks: `check inter 1s fall 3 rise 2` (the reference row)
and plain `check` (its defaults, inter 2s). Each trial kills one backend
(SIGKILL, at a random phase of the probe cycle), and once every balancer has
taken it out and sentinel's `fail_timeout` has passed, starts it again.

How "out" and "back" are seen:
- HAProxy: `show servers state` polled every 10 ms: sentinel's server in
  `maint`, HAProxy's own checked servers stopped; back: `ready` / running.
- nginx: client traffic through it every 10 ms with `$msec $upstream_addr`
  in the access log (nginx's own passive checks off: `max_fails=0`): out is
  the last request nginx tried on the dead backend, back the first request
  the restarted one answered.

Prints a Markdown table: median and max over the trials, and sentinel's own
verdict time (the event) for comparison. Every process is killed by PID.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sentinel.sinks.haproxy.runtime_api import parse_servers_state  # noqa: E402
from tests.e2e.balancers import (  # noqa: E402
    HAProxy,
    Nginx,
    events,
    fleet_view,
    haproxy_backend,
    sentinel_config,
    start_haproxy,
    start_nginx,
)
from tests.e2e.helpers import (  # noqa: E402
    LOOPBACK,
    Processes,
    free_port,
    start_backend,
    start_sentinel,
    wait_until,
)
from tests.e2e.traffic import Traffic  # noqa: E402

NAMES = ("web1", "web2", "web3")
FAIL_TIMEOUT = 2.0
PROBE = {"type": "http", "path": "/healthz", "interval": "1s", "fast_interval": "200ms",
         "down_interval": "1s", "timeout": "500ms"}
BREAKER = {"kind": "nginx", "max_fails": 2, "fail_timeout": f"{FAIL_TIMEOUT:g}s"}
ROWS = {  # row -> (balancer, health checks)
    "nginx": ("nginx + sentinel", "sentinel: interval 1s, fast_interval 200ms, max_fails 2"),
    "be_sentinel": ("HAProxy + sentinel", "sentinel: same settings, same run"),
    "be_check_1s": ("HAProxy alone (reference)", "check inter 1s fall 3 rise 2"),
    "be_check_default": ("HAProxy alone", "check (defaults: inter 2s fall 3 rise 2)"),
}
HAPROXY_OPTIONS = {"be_sentinel": "", "be_check_1s": "check inter 1s fall 3 rise 2",
                   "be_check_default": "check"}


@dataclass
class Times:
    """Per row, seconds from the kill to out of rotation and from the restart to serving."""

    out: dict[str, list[float]] = field(default_factory=dict)
    back: dict[str, list[float]] = field(default_factory=dict)
    verdict: list[float] = field(default_factory=list)  # sentinel's down event

    def add(self, kind: str, row: str, seconds: float) -> None:
        """Record one measurement."""
        (self.out if kind == "out" else self.back).setdefault(row, []).append(seconds)


def haproxy_states(haproxy: HAProxy) -> dict[tuple[str, str], tuple[str, int]]:
    """(backend, server) -> (admin state, op state) for every server, in one command."""
    return {(s.backend, s.server): (s.admin, s.op_state)
            for s in parse_servers_state(haproxy.command("show servers state"))}


def is_out(row: str, state: tuple[str, int]) -> bool:
    """Whether HAProxy no longer picks the server: maint (sentinel) or stopped (checks)."""
    return state[0] == "maint" if row == "be_sentinel" else state[1] == 0


def is_back(row: str, state: tuple[str, int]) -> bool:
    """Whether HAProxy picks the server again."""
    return state[0] == "ready" if row == "be_sentinel" else state[1] == 2


def poll_haproxy(haproxy: HAProxy, victim: str, since: float, done: Callable[..., bool],
                 timeout: float = 20.0) -> dict[str, float]:
    """Poll every 10 ms until `done(row, state)` holds for every HAProxy row; the seconds
    from `since` at which each first did."""
    seen: dict[str, float] = {}
    deadline = time.time() + timeout
    while len(seen) < len(HAPROXY_OPTIONS) and time.time() < deadline:
        states = haproxy_states(haproxy)
        now = time.time()
        for row in HAPROXY_OPTIONS:
            if row not in seen and done(row, states[(row, victim)]):
                seen[row] = now - since
        time.sleep(0.01)
    return seen


def nginx_log(nginx: Nginx) -> list[tuple[float, str, list[str]]]:
    """(time, status, upstream addresses tried) per access log line."""
    out = []
    for line in (nginx.dir / "access.log").read_text().splitlines():
        msec, status, addrs = line.split(" ", 2)
        out.append((float(msec), status, [a.strip() for a in addrs.split(",")]))
    return out


def nginx_out(nginx: Nginx, address: str, killed: float, until: float) -> float | None:
    """Seconds from the kill to the last request nginx tried on `address` before `until`."""
    tried = [t for t, _, addrs in nginx_log(nginx) if killed <= t < until and address in addrs]
    return tried[-1] - killed if tried else None


def nginx_back(nginx: Nginx, address: str, restarted: float) -> float | None:
    """Seconds from the restart to the first request `address` answered."""
    return next((t - restarted for t, status, addrs in nginx_log(nginx)
                 if t >= restarted and status == "200" and addrs[-1] == address), None)


@dataclass
class Fleet:
    """The running fleet, balancers and sentinel of one benchmark run."""

    procs: Processes
    ports: dict[str, int]
    backends: dict[str, subprocess.Popen[bytes]]
    nginx: Nginx
    haproxy: HAProxy
    url: str

    def trial(self, victim: str, times: Times) -> None:
        """Kill `victim`, see every balancer drop it, restart it, see every one take it back."""
        address = f"{LOOPBACK}:{self.ports[victim]}"
        wait_until(lambda: all(is_back(row, s) for (row, _), s in
                               haproxy_states(self.haproxy).items()), timeout=30,
                   what="every server in rotation")
        time.sleep(random.uniform(1.0, 2.0))  # a random phase of the probe cycle
        seq = max((e["seq"] for e in events(self.url)), default=0)
        killed = time.time()
        self.procs.kill(self.backends[victim])
        for row, seconds in poll_haproxy(self.haproxy, victim, killed, is_out).items():
            times.add("out", row, seconds)
        down = wait_until(lambda: next((e for e in events(self.url, victim)
                                        if e["seq"] > seq and e["to"] == "down"), None),
                          what=f"{victim} down event")
        times.verdict.append(datetime.fromisoformat(
            down["time"].replace("Z", "+00:00")).timestamp() - killed)
        time.sleep(FAIL_TIMEOUT + 0.5)  # past the breaker's hold, then restart
        out = nginx_out(self.nginx, address, killed, time.time())
        if out is not None:
            times.add("out", "nginx", out)
        self.backends[victim] = start_backend(self.procs, self.ports[victim], victim)
        restarted = time.time()
        for row, seconds in poll_haproxy(self.haproxy, victim, restarted, is_back).items():
            times.add("back", row, seconds)
        times.add("back", "nginx", wait_until(
            lambda: nginx_back(self.nginx, address, restarted), timeout=20,
            what=f"nginx serving {victim} again"))


def start_fleet(procs: Processes, workdir: Path) -> Fleet:
    """Three backends, nginx, HAProxy (sentinel's backend and two checked ones), sentinel."""
    ports = {name: free_port() for name in NAMES}
    backends = {name: start_backend(procs, port, name) for name, port in ports.items()}
    nginx = start_nginx(procs, workdir / "nginx", fleet_view("web", ports))
    haproxy = start_haproxy(procs, workdir / "haproxy", [
        haproxy_backend(row, free_port(), ports, options)
        for row, options in HAPROXY_OPTIONS.items()])
    sinks = {"edge": {"type": "nginx", "file": str(nginx.include("http")),
                      "test": nginx.command("-t"), "reload": nginx.command("-s", "reload"),
                      "pid_file": str(nginx.pid_file)},
             "lb": {"type": "haproxy", "socket": str(haproxy.socket)}}
    config = workdir / "sentinel.yaml"
    config.write_text(sentinel_config(
        workdir / "state", sinks, ports,
        [{"sink": "edge", "params": "max_fails=0"}, {"sink": "lb", "backend": "be_sentinel"}],
        probe=PROBE, breaker=BREAKER))
    url = start_sentinel(procs, config, workdir / "state")[1]
    return Fleet(procs, ports, backends, nginx, haproxy, url)


def run(trials: int, workdir: Path) -> Times:
    """Start everything; kill and restart backends `trials` times under nginx traffic."""
    (workdir / "logs").mkdir()
    procs = Processes(workdir / "logs")
    times = Times()
    try:
        fleet = start_fleet(procs, workdir)
        with Traffic(fleet.nginx.http_port, gap=0.01, duration=600, limit=100_000):
            for trial in range(trials):
                victim = NAMES[trial % len(NAMES)]
                fleet.trial(victim, times)
                print(f"trial {trial + 1}/{trials}: {victim} done", file=sys.stderr)
    finally:
        procs.close()
    return times


def cell(values: list[float]) -> str:
    """`median / max` in seconds, or a dash."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def table(times: Times, trials: int) -> str:
    """The Markdown table of one run."""
    lines = ["| balancer | health checks | kill -> out of rotation, s (median / max) | "
             "restart -> serving, s (median / max) |", "| --- | --- | ---: | ---: |"]
    for row, (balancer, checks) in ROWS.items():
        lines.append(f"| {balancer} | {checks} | {cell(times.out.get(row, []))} | "
                     f"{cell(times.back.get(row, []))} |")
    lines.append(f"\n{trials} trials; sentinel's down verdict (the event) came "
                 f"{cell(times.verdict)} s after the kill.")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
        times = run(args.trials, Path(tmp))
    print(table(times, args.trials))


if __name__ == "__main__":
    main()
