"""Failover time through real balancers, by fault: from a backend's failure to the balancer
no longer choosing it, and from its recovery to the balancer sending it traffic again.

    .venv/bin/python bench/failover_bench.py [--trials 7]

One fleet for every row, in one run: three HTTP backend processes on loopback, two
nginx and one HAProxy in front of them, and two real `sentinel run`s:

- sentinel A publishes two services over the same three backends to both balancers:
  `plain` (probes only) and `watched` (the same probes, `watch: true`);
- sentinel B has a canary (a fourth backend process, never faulted) and publishes
  `gated` (`watch: true`) to HAProxy only: the canary gate's cost (SPEC 11).

HAProxy also balances the three backends with its own HTTP checks (`option httpchk`):
`inter 1s fall 3 rise 2` and the same with `fastinter 100ms`. Three faults, each
`--trials` times at a random phase of the probe cycle, on the backends in turn:

- crashed: SIGKILL (the kernel closes its sockets; restarted to recover);
- hung: SIGSTOP (accepts nothing, answers nothing; SIGCONT to recover);
- 503: the process answers every request 503 (SIGUSR1 toggles it).

How "out" and "back" are seen:
- HAProxy: `show servers state` polled every 10 ms: sentinel's server in `maint`,
  HAProxy's own checked servers stopped; back: `ready` / running.
- nginx (one per sentinel A service, each with its own sink, so that one's reload
  never waits for the other's `min_reload_interval`): client traffic every 10 ms
  from two threads, `$msec $request_time $upstream_addr` in the access log (nginx's
  own passive checks off: `max_fails=0`): out is the start of the last request nginx
  tried on the faulty backend, back the start of the first request it answered again.

Prints the settings and a Markdown table: median and max over the trials, and
sentinel's own verdict times (the events) for comparison. Every process is killed by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sentinel.sinks.haproxy.runtime_api import parse_servers_state  # noqa: E402
from tests.e2e.balancers import (  # noqa: E402
    NGINX_CONF,
    HAProxy,
    Nginx,
    events,
    fleet_view,
    haproxy_backend,
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
FAULTS = ("crashed", "hung", "503")
FAIL_TIMEOUT = 2.0
PROBE = {"type": "http", "path": "/healthz", "interval": "500ms", "fast_interval": "50ms",
         "down_interval": "500ms", "timeout": "150ms"}
BREAKER = {"kind": "nginx", "max_fails": 2, "fail_timeout": f"{FAIL_TIMEOUT:g}s"}
SENTINEL = "interval 500ms, fast_interval 50ms, timeout 150ms, max_fails 2"
CHECK = "option httpchk GET /healthz, timeout check 150ms"
HAPROXY_OPTIONS = {  # backend -> server options (own checks) or "" (sentinel publishes)
    "be_plain": "", "be_watched": "", "be_gated": "",
    "be_check": "check inter 1s fall 3 rise 2",
    "be_check_fast": "check inter 1s fastinter 100ms fall 3 rise 2",
}
ROWS = {  # row -> (balancer, health checks)
    "nginx_plain": ("nginx + sentinel", f"sentinel: {SENTINEL}"),
    "nginx_watched": ("nginx + sentinel", "sentinel: same, `watch: true`"),
    "be_plain": ("HAProxy + sentinel", f"sentinel: {SENTINEL}"),
    "be_watched": ("HAProxy + sentinel", "sentinel: same, `watch: true`"),
    "be_gated": ("HAProxy + sentinel", "sentinel: same, `watch: true`, a canary"),
    "be_check": ("HAProxy alone", f"{HAPROXY_OPTIONS['be_check']}; {CHECK}"),
    "be_check_fast": ("HAProxy alone", f"{HAPROXY_OPTIONS['be_check_fast']}; {CHECK}"),
}
SERVICES = {"plain": "nginx_plain", "watched": "nginx_watched"}  # sentinel A's, on nginx


def _timed(template: str) -> str:
    """The e2e tests' nginx.conf with each request's duration logged (so a request's start
    is known) and a hung backend's request moved to the next one after 300 ms."""
    edits = (("'$msec $status $upstream_addr'", "'$msec $request_time $status $upstream_addr'"),
             ("proxy_next_upstream error timeout;",
              "proxy_read_timeout 300ms;\n            proxy_next_upstream error timeout;"))
    for old, new in edits:
        if old not in template:
            raise AssertionError(f"tests/e2e/balancers.py's NGINX_CONF lost {old!r}")
        template = template.replace(old, new)
    return template


NGINX_TIMED = _timed(NGINX_CONF)


@dataclass
class Times:
    """Per fault and row, seconds from the fault to out of rotation and from the recovery
    to serving; per fault and sentinel service, to its down verdict."""

    out: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    back: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    verdict: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, table: dict[tuple[str, str], list[float]], fault: str, row: str,
            seconds: float) -> None:
        """Record one measurement."""
        table.setdefault((fault, row), []).append(seconds)


def haproxy_states(haproxy: HAProxy) -> dict[tuple[str, str], tuple[str, int]]:
    """(backend, server) -> (admin state, op state) for every server, in one command."""
    return {(s.backend, s.server): (s.admin, s.op_state)
            for s in parse_servers_state(haproxy.command("show servers state"))}


def checked(row: str) -> bool:
    """Whether the HAProxy backend uses its own checks (not sentinel's)."""
    return bool(HAPROXY_OPTIONS[row])


def is_out(row: str, state: tuple[str, int]) -> bool:
    """Whether HAProxy no longer picks the server: maint (sentinel) or stopped (checks)."""
    return state[1] == 0 if checked(row) else state[0] == "maint"


def is_back(row: str, state: tuple[str, int]) -> bool:
    """Whether HAProxy picks the server again."""
    return state[1] == 2 if checked(row) else state[0] == "ready"


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


@dataclass
class Front:
    """An nginx in front of the backends for one sentinel A service."""

    nginx: Nginx

    def log(self) -> list[tuple[float, str, list[str]]]:
        """(request start, status, upstream addresses tried) per access log line."""
        out = []
        for line in (self.nginx.dir / "access.log").read_text().splitlines():
            msec, request_time, status, addrs = line.split(" ", 3)
            out.append((float(msec) - float(request_time), status,
                        [a.strip() for a in addrs.split(",")]))
        return out

    def out(self, address: str, fault: float, until: float) -> float | None:
        """Seconds from the fault to the start of the last request tried on `address`
        before `until`."""
        tried = [t for t, _, addrs in self.log() if fault <= t < until and address in addrs]
        return tried[-1] - fault if tried else None

    def back(self, address: str, recovered: float) -> float | None:
        """Seconds from the recovery to the start of the first request `address` answered."""
        return next((t - recovered for t, status, addrs in self.log()
                     if t >= recovered and status == "200" and addrs[-1] == address), None)


def start_front(procs: Processes, dir: Path, service: str, ports: dict[str, int]) -> Front:
    """nginx proxying to upstream `web` (the service's, through its binding), first rendered
    with every backend up (one nginx per service: a reload for one never waits for the
    other's)."""
    return Front(start_nginx(procs, dir, fleet_view("web", ports), template=NGINX_TIMED,
                             name=f"nginx-{service}"))


def haproxy_sections(ports: dict[str, int]) -> list[str]:
    """A frontend and backend per HAProxy row; the checked ones with HTTP checks."""
    sections = []
    for row, options in HAPROXY_OPTIONS.items():
        text = haproxy_backend(row, free_port(), ports, options)
        if options:
            text = text.replace("    balance roundrobin\n", "    balance roundrobin\n    "
                                "option httpchk GET /healthz\n    timeout check 150ms\n")
        sections.append(text)
    return sections


def sentinel_yaml(state: Path, sinks: dict[str, Any], services: dict[str, Any],
                  canaries: list[str] | None = None) -> str:
    """A sentinel.yaml with the given sinks and services (and canaries)."""
    document: dict[str, Any] = {"version": 1, "state_dir": str(state),
                                "shutdown_timeout": "2s", "api": {"listen": "127.0.0.1:0"}}
    if canaries:
        document["canaries"] = canaries
    document["sinks"] = sinks
    document["services"] = services
    return yaml.safe_dump(document, sort_keys=False)


def service(ports: dict[str, int], bindings: list[dict[str, Any]], *, watch: bool) -> dict[
        str, Any]:
    """A service over the three backends with the bench's probe and breaker."""
    return {"probe": {**PROBE, "watch": watch}, "breaker": BREAKER,
            "backends": [{"name": n, "address": f"{LOOPBACK}:{p}"} for n, p in ports.items()],
            "sinks": bindings}


@dataclass
class Fleet:
    """The running fleet, balancers and sentinels of one benchmark run."""

    procs: Processes
    ports: dict[str, int]
    backends: dict[str, subprocess.Popen[bytes]]
    fronts: dict[str, Front]  # sentinel A service -> its nginx
    haproxy: HAProxy
    urls: dict[str, str]  # sentinel service -> its sentinel's API

    def ready(self) -> None:
        """Wait until every HAProxy server is in rotation again."""
        wait_until(lambda: all(is_back(row, s) for (row, _), s in
                               haproxy_states(self.haproxy).items()), timeout=30,
                   what="every server in rotation")

    def fault(self, fault: str, victim: str) -> None:
        """Break `victim` as `fault` says."""
        proc = self.backends[victim]
        if fault == "crashed":
            self.procs.kill(proc)
        elif fault == "hung":
            os.kill(proc.pid, signal.SIGSTOP)
        else:
            os.kill(proc.pid, signal.SIGUSR1)

    def recover(self, fault: str, victim: str) -> None:
        """Undo `fault` on `victim`."""
        if fault == "crashed":
            self.backends[victim] = start_backend(self.procs, self.ports[victim], victim)
        elif fault == "hung":
            os.kill(self.backends[victim].pid, signal.SIGCONT)
        else:
            os.kill(self.backends[victim].pid, signal.SIGUSR1)

    def trial(self, fault: str, victim: str, times: Times) -> None:
        """Break `victim`, see every balancer drop it, recover it, see every one take it
        back."""
        address = f"{LOOPBACK}:{self.ports[victim]}"
        self.ready()
        time.sleep(random.uniform(1.0, 2.0))  # a random phase of the probe cycle
        seqs = {url: max((e["seq"] for e in events(url)), default=0)
                for url in set(self.urls.values())}
        broke = time.time()
        self.fault(fault, victim)
        for row, seconds in poll_haproxy(self.haproxy, victim, broke, is_out).items():
            times.add(times.out, fault, row, seconds)
        for name, url in self.urls.items():
            down = wait_until(lambda u=url, s=name: next(
                (e for e in events(u, victim) if e["seq"] > seqs[u] and e["service"] == s
                 and e["to"] == "down"), None), what=f"{name}/{victim} down event")
            times.add(times.verdict, fault, name, datetime.fromisoformat(
                down["time"].replace("Z", "+00:00")).timestamp() - broke)
        time.sleep(FAIL_TIMEOUT + 0.5)  # past the breakers' hold, then recover
        for name, row in SERVICES.items():
            out = self.fronts[name].out(address, broke, time.time())
            if out is not None:
                times.add(times.out, fault, row, out)
        self.recover(fault, victim)
        recovered = time.time()
        for row, seconds in poll_haproxy(self.haproxy, victim, recovered, is_back).items():
            times.add(times.back, fault, row, seconds)
        for name, row in SERVICES.items():
            times.add(times.back, fault, row, wait_until(
                lambda n=name: self.fronts[n].back(address, recovered), timeout=20,
                what=f"nginx serving {victim} again for {name}"))


def start_fleet(procs: Processes, workdir: Path) -> Fleet:
    """Backends and a canary, nginx, HAProxy, and the two sentinels."""
    ports = {name: free_port() for name in NAMES}
    backends = {name: start_backend(procs, port, name) for name, port in ports.items()}
    canary = free_port()
    start_backend(procs, canary, "gw")
    fronts = {name: start_front(procs, workdir / f"nginx-{name}", name, ports)
              for name in SERVICES}
    haproxy = start_haproxy(procs, workdir / "haproxy", haproxy_sections(ports))
    sinks: dict[str, Any] = {f"edge_{name}": {
        "type": "nginx", "file": str(f.nginx.include("http")), "test": f.nginx.command("-t"),
        "reload": f.nginx.command("-s", "reload"), "pid_file": str(f.nginx.pid_file)}
        for name, f in fronts.items()}
    lb = {"type": "haproxy", "socket": str(haproxy.socket)}
    urls: dict[str, str] = {}
    a = workdir / "a"
    a.mkdir()
    (a / "sentinel.yaml").write_text(sentinel_yaml(a / "state", {**sinks, "lb": lb}, {
        name: service(ports, [{"sink": f"edge_{name}", "upstream": "web",
                               "params": "max_fails=0"},
                              {"sink": "lb", "backend": f"be_{name}"}], watch=name != "plain")
        for name in SERVICES}))
    url = start_sentinel(procs, a / "sentinel.yaml", a / "state", "sentinel-a")[1]
    urls.update({name: url for name in SERVICES})
    b = workdir / "b"
    b.mkdir()
    (b / "sentinel.yaml").write_text(sentinel_yaml(b / "state", {"lb": lb}, {
        "gated": service(ports, [{"sink": "lb", "backend": "be_gated"}], watch=True)},
        canaries=[f"{LOOPBACK}:{canary}"]))
    urls["gated"] = start_sentinel(procs, b / "sentinel.yaml", b / "state", "sentinel-b")[1]
    return Fleet(procs, ports, backends, fronts, haproxy, urls)


def run(trials: int, workdir: Path) -> Times:
    """Start everything; break and recover backends `trials` times per fault under nginx
    traffic."""
    (workdir / "logs").mkdir()
    procs = Processes(workdir / "logs")
    times = Times()
    try:
        fleet = start_fleet(procs, workdir)
        with contextlib.ExitStack() as stack:
            for front in fleet.fronts.values():
                for _ in range(2):  # a request stuck on a hung backend stalls one thread
                    stack.enter_context(Traffic(front.nginx.http_port, gap=0.01,
                                                duration=3600, limit=1_000_000))
            for fault in FAULTS:
                for trial in range(trials):
                    victim = NAMES[trial % len(NAMES)]
                    fleet.trial(fault, victim, times)
                    print(f"{fault} {trial + 1}/{trials}: {victim} done", file=sys.stderr)
    finally:
        procs.close()
    return times


def cell(values: list[float]) -> str:
    """`median / max` in seconds, or a dash."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def table(times: Times, trials: int) -> str:
    """The settings and the Markdown table of one run."""
    lines = [f"sentinel: http probe {json.dumps(PROBE)}, breaker {json.dumps(BREAKER)}; "
             "nginx with params max_fails=0, proxy_read_timeout 300ms",
             f"HAProxy checks: {CHECK}", "",
             "| fault | balancer | health checks | fault -> out of rotation, s (median / max) "
             "| recovery -> serving, s (median / max) |",
             "| --- | --- | --- | ---: | ---: |"]
    for fault in FAULTS:
        for row, (balancer, checks) in ROWS.items():
            lines.append(f"| {fault} | {balancer} | {checks} | "
                         f"{cell(times.out.get((fault, row), []))} | "
                         f"{cell(times.back.get((fault, row), []))} |")
    lines.append(f"\n{trials} trials per fault; sentinel's down verdict (the event), s "
                 "after the fault (median / max):")
    for fault in FAULTS:
        verdicts = ", ".join(f"{name} {cell(times.verdict.get((fault, name), []))}"
                             for name in ("plain", "watched", "gated"))
        lines.append(f"- {fault}: {verdicts}")
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
