"""Several sentinels agreeing through etcd, at scale (SPEC 12, issue 14).

    .venv/bin/python bench/cluster_bench.py [--backends 3000] [--trials 20]
                                            [--warmup 10] [--window 10]

One loopback fleet of `--backends` TCP backends (nginx, as in scale_bench.py,
plus a separate nginx serving 10% of them, killed at once for the mass
failure, and ten Python backend processes killed one by one), probed every
1 s (timeout 500 ms, nginx breaker `max_fails: 1`, `fail_timeout: 2s`), one
etcd (Debian's 3.4, its own data dir). Three set-ups in turn, each three
processes at once, as three balancers would run them:

- the cluster: three `sentinel run` members of one configuration,
  `probers: 2` (quorum 2), `lease_ttl: 5s`;
- three independent sentinels (the same configuration without `cluster:`),
  each probing every backend;
- three HAProxy 2.6 (`nbthread 1`, its cheapest CPU per check), each checking
  every backend (`check inter 1s fall 1 rise 1`).

Measured, after `--warmup` seconds, over `--window` seconds with nothing else
asked of them: CPU seconds per second of the three processes together (and
etcd's own), checks per second (the kernel's ActiveOpens: the benchmark runs
itself under `unshare --net`, so only these processes count), etcd writes per
second (its `etcd_server_proposals_committed_total`; lease renewals are not
writes in etcd 3.4 and are counted apart) and each process's peak RSS.

Then, for the cluster and the independent sentinels: `--trials` kills of one
backend process (SIGKILL at a random moment of the probe cycle), timed from
the kill until each sentinel's `GET /v1/stream` carries the down event: for
the cluster the last of the three members to see the agreed view, for the
independent sentinels each one's own event. Last, the cluster's mass failure:
the 10% nginx killed at once; etcd writes until every member has every down
event, and how long that took.

Prints Markdown tables. Every process is killed by PID (its process group).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from probe_bench import backend_lines, cpu_seconds, kill, peak_rss_mib, wait_for
from scale_bench import (
    HAPROXY_CONF,
    Fleet,
    active_opens,
    free_ports,
    in_private_netns,
    wait_for_socket,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.etcd_server import EtcdServer, running_etcd  # noqa: E402
from tests.e2e.helpers import BACKEND_SCRIPT, port_open  # noqa: E402

NETNS_ENV = "SENTINEL_CLUSTER_BENCH_NETNS"
VICTIMS = 10
CONFIG = """\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
{cluster}services:
  fleet:
    probe: {{type: tcp, interval: 1s, fast_interval: 1s, down_interval: 1s, timeout: 500ms}}
    breaker: {{kind: nginx, max_fails: 1, fail_timeout: 2s}}
    backends:
{backends}
"""
CLUSTER = """\
cluster:
  etcd: [{etcd}]
  prefix: /bench/
  node: ${{SENTINEL_NODE}}
  lease_ttl: 5s
  probers: 2
"""


@dataclass
class Load:
    """Three processes measured over one window."""

    name: str
    cpu_per_s: float
    checks_per_s: float
    rss_mib: list[float]
    events: int | None = None  # published in the window (none expected: nothing fails)
    etcd_cpu_per_s: float | None = None
    etcd_writes_per_s: float | None = None
    renewals_per_s: float | None = None
    observation_writes: int | None = None


@dataclass
class Stream:
    """One sentinel's GET /v1/stream, read in a thread: (monotonic time, event) pairs."""

    url: str
    seen: list[tuple[float, dict[str, object]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Read until the process ends."""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind = ""
        try:
            with httpx.stream("GET", f"{self.url}/v1/stream", timeout=None) as response:
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "event":
                        at = time.monotonic()
                        with self.lock:
                            self.seen.append((at, json.loads(line[6:])))
        except httpx.HTTPError:
            return

    def first(self, backend: str, to: str, after: float) -> float | None:
        """When the first event of `backend` going `to` arrived after `after`."""
        with self.lock:
            return next((t for t, e in self.seen if t >= after and e["backend"] == backend
                         and e["to"] == to), None)

    def count(self, to: str, after: float) -> int:
        """Events going `to` that arrived after `after`."""
        with self.lock:
            return sum(1 for t, e in self.seen if t >= after and e["to"] == to)


class Bench:
    """The fleet, etcd and the processes of one run."""

    def __init__(self, workdir: Path, backends: int, etcd: EtcdServer) -> None:
        self.workdir = workdir
        self.etcd = etcd
        mass = backends // 10
        self.fleet = Fleet(backends - mass - VICTIMS, workdir / "fleet")
        self.mass_dir = workdir / "mass"
        self.mass: Fleet | None = Fleet(mass, self.mass_dir)
        self.mass_ports = self.mass.ports
        self.victim_ports = free_ports(VICTIMS)
        self.victims: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.victim_ports:
            self.start_victim(port)
        self.ports = [*self.fleet.ports, *self.mass_ports, *self.victim_ports]
        self.names = {port: f"b{i}" for i, port in enumerate(self.ports)}

    def start_victim(self, port: int) -> None:
        """A backend process on `port` (until it accepts)."""
        self.victims[port] = subprocess.Popen(
            [sys.executable, str(BACKEND_SCRIPT), str(port)], start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(lambda: port_open(port), 10, f"the backend on {port}")

    def restore_mass(self) -> None:
        """The 10% shard serving again (after the mass failure)."""
        if self.mass is None:
            self.mass = Fleet(len(self.mass_ports), self.mass_dir / "again",
                              ports=self.mass_ports)

    def close(self) -> None:
        """Kill every backend."""
        self.fleet.close()
        if self.mass is not None:
            self.mass.close()
        for proc in self.victims.values():
            kill(proc)

    @contextmanager
    def sentinels(self, cluster: bool) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
        """Three `sentinel run` (members of one cluster, or independent), ready."""
        kind = "member" if cluster else "alone"
        config = self.workdir / f"{kind}.yaml"
        config.write_text(CONFIG.format(
            state="${SENTINEL_STATE}", backends=backend_lines(self.ports),
            cluster=CLUSTER.format(etcd=self.etcd.url) if cluster else ""))
        procs: list[tuple[subprocess.Popen[bytes], str]] = []
        try:
            for i in range(1, 4):
                state = self.workdir / f"{kind}{i}"
                env = {**os.environ, "SENTINEL_NODE": f"n{i}", "SENTINEL_STATE": str(state)}
                with open(self.workdir / f"{kind}{i}.log", "wb") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "sentinel", "--log-level", "warning", "run",
                         "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                        start_new_session=True, env=env)
                procs.append((proc, wait_for(state / "api.url", proc, timeout=120)))
            if cluster:
                until(lambda: all(len(state_doc(url)["cluster"]["members"]) == 3
                                  and state_doc(url)["cluster"]["ok"]
                                  for _, url in procs), 120, "three members, ok")
            yield procs
        finally:
            for proc, _ in procs:
                kill(proc)

    def etcd_counter(self, name: str) -> float:
        """One counter of etcd's /metrics."""
        for line in httpx.get(f"{self.etcd.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise RuntimeError(f"etcd has no {name}")


def state_doc(url: str) -> dict[str, Any]:
    """GET /v1/state."""
    return dict(httpx.get(f"{url}/v1/state", timeout=60).json())


def renewals(url: str) -> float:
    """sentinel_cluster_lease_renewals_total of one member."""
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("sentinel_cluster_lease_renewals_total "):
            return float(line.split()[1])
    return 0.0


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` (errors count as false) until true; RuntimeError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(name: str, pids: list[int], warmup: float, window: float, bench: Bench,
            urls: Sequence[str] = (), *, cluster: bool = False) -> Load:
    """CPU, checks and RSS of `pids` (and etcd's load for a cluster) over `window`; the
    events and observation writes of sentinels (`urls`) read just before and after it."""
    time.sleep(warmup)
    etcd_pid = bench.etcd.pid
    before = [state_doc(url) for url in urls]
    writes0 = bench.etcd_counter("etcd_server_proposals_committed_total")
    renew0 = sum(renewals(url) for url in urls) if cluster else 0.0
    checks0, t0 = active_opens(), time.monotonic()
    cpu0, etcd0 = sum(cpu_seconds(p) for p in pids), cpu_seconds(etcd_pid)
    time.sleep(window)
    cpu1, etcd1 = sum(cpu_seconds(p) for p in pids), cpu_seconds(etcd_pid)
    checks1, t1 = active_opens(), time.monotonic()
    writes1 = bench.etcd_counter("etcd_server_proposals_committed_total")
    renew1 = sum(renewals(url) for url in urls) if cluster else 0.0
    after = [state_doc(url) for url in urls]
    elapsed = t1 - t0
    load = Load(name, (cpu1 - cpu0) / elapsed, (checks1 - checks0) / elapsed,
                [peak_rss_mib(p) for p in pids])
    if urls:  # the cluster's seq is one for all; independent ones count their own
        counts = [a["seq"] - b["seq"] for a, b in zip(after, before, strict=True)]
        load.events = max(counts) if cluster else sum(counts)
    if cluster:
        load.etcd_cpu_per_s = (etcd1 - etcd0) / elapsed
        load.etcd_writes_per_s = (writes1 - writes0) / elapsed
        load.renewals_per_s = (renew1 - renew0) / elapsed
        load.observation_writes = sum(
            a["cluster"]["observations"]["writes"] - b["cluster"]["observations"]["writes"]
            for a, b in zip(after, before, strict=True))
    print(f"{name}: {load}", file=sys.stderr)
    return load


def kill_trials(bench: Bench, urls: list[str], trials: int, *, agreed: bool) -> list[float]:
    """Seconds from a backend process's SIGKILL to its down event: the last of the three
    sentinels (`agreed`), else each sentinel's own (three samples per kill)."""
    streams = [Stream(url) for url in urls]
    for stream in streams:
        stream.start()
    time.sleep(2)  # the streams' snapshot of the state is in
    samples: list[float] = []
    rng = random.Random(14)
    for trial in range(trials):
        port = bench.victim_ports[trial % VICTIMS]
        name = bench.names[port]
        time.sleep(rng.uniform(0, 1))  # a random moment of the probe cycle
        killed = time.monotonic()
        kill(bench.victims.pop(port))
        until(lambda n=name, k=killed: all(s.first(n, "down", k) for s in streams), 30,
              f"{name} down everywhere")
        seen = [s.first(name, "down", killed) or 0.0 for s in streams]
        samples += [max(seen) - killed] if agreed else [t - killed for t in seen]
        bench.start_victim(port)
        back = time.monotonic()
        until(lambda n=name, b=back: all(s.first(n, "up", b) for s in streams), 30,
              f"{name} up")
    return samples


def mass_failure(bench: Bench, urls: list[str]) -> tuple[int, float, float]:
    """Kill the 10% shard: (etcd writes until every member has every down, seconds that
    took, writes per second)."""
    streams = [Stream(url) for url in urls]
    for stream in streams:
        stream.start()
    time.sleep(2)
    assert bench.mass is not None
    writes0 = bench.etcd_counter("etcd_server_proposals_committed_total")
    killed = time.monotonic()
    bench.mass.close()
    bench.mass = None
    want = len(bench.mass_ports)
    until(lambda: all(s.count("down", killed) >= want for s in streams), 120,
          "every member has every down")
    took = time.monotonic() - killed
    writes = int(bench.etcd_counter("etcd_server_proposals_committed_total") - writes0)
    return writes, took, writes / took


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def haproxy(bench: Bench, warmup: float, window: float) -> Load:
    """Three HAProxy processes (nbthread 1), each checking every backend."""
    procs = []
    try:
        for i in range(3):
            d = bench.workdir / f"haproxy{i}"
            d.mkdir()
            servers = "\n".join(f"    server s{n} 127.0.0.1:{p}" for n, p in
                                enumerate(bench.ports))
            (d / "haproxy.cfg").write_text(HAPROXY_CONF.format(
                dir=d, hmode="tcp", timeout="500ms", interval="1s", servers=servers,
                nbthread="    nbthread 1\n", httpchk=""))
            with open(d / "haproxy.log", "wb") as log:
                procs.append(subprocess.Popen(["haproxy", "-f", str(d / "haproxy.cfg"), "-db"],
                                              stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            wait_for_socket(d / "stats.sock", procs[-1], timeout=60)
        return measure("3 HAProxy (nbthread 1), each checking all", [p.pid for p in procs],
                       warmup, window, bench)
    finally:
        for proc in procs:
            kill(proc)


def tables(backends: int, loads: list[Load], cluster_kill: list[float],
           alone_kill: list[float], mass: tuple[int, float, float], trials: int,
           window: float) -> str:
    """The tables docs/performance.md carries."""
    out = [f"{backends:,} TCP backends at 1 s, three balancers; {window:g} s window.", "",
           "| set-up | checks/s | CPU s/s (3 processes) | vs 3 HAProxy | etcd CPU s/s | "
           "etcd writes/s | lease renewals/s | verdicts written | false events | "
           "peak RSS per process MiB |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    reference = loads[-1].cpu_per_s

    def cell(value: float | None, form: str) -> str:
        return "" if value is None else format(value, form)

    for load in loads:
        out.append(f"| {load.name} | {load.checks_per_s:,.0f} | {load.cpu_per_s:.3f} | "
                   f"{load.cpu_per_s / reference:.2f}x | {cell(load.etcd_cpu_per_s, '.3f')} | "
                   f"{cell(load.etcd_writes_per_s, '.1f')} | "
                   f"{cell(load.renewals_per_s, '.1f')} | "
                   f"{cell(load.observation_writes, 'd')} | {cell(load.events, 'd')} | "
                   f"{' / '.join(f'{r:.0f}' for r in load.rss_mib)} |")
    mass_writes, took, rate = mass
    out += ["", f"Kill to down ({trials} kills of one backend process):", "",
            "| | samples | p50 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: |",
            f"| cluster: agreed view on all three members | {len(cluster_kill)} | "
            f"{pct(cluster_kill, 0.5):.0f} | {pct(cluster_kill, 0.99):.0f} | "
            f"{max(cluster_kill) * 1000:.0f} |",
            f"| independent sentinel: its own event | {len(alone_kill)} | "
            f"{pct(alone_kill, 0.5):.0f} | {pct(alone_kill, 0.99):.0f} | "
            f"{max(alone_kill) * 1000:.0f} |",
            "", f"Mass failure of 10% ({backends // 10} backends at once): {mass_writes} etcd "
            f"writes until every member had every down event, in {took:.2f} s "
            f"({rate:.0f} writes/s)."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every set-up, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=int, default=3000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args(argv)
    if not 100 <= args.backends <= 10000 or not 1 <= args.trials <= 200:
        parser.error("--backends must be 100..10000 and --trials 1..200")
    in_private_netns(NETNS_ENV, __file__, argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="sentinel-cluster-") as tmp:
        workdir = Path(tmp)
        with running_etcd(workdir / "etcd") as etcd:
            bench = Bench(workdir, args.backends, etcd)
            try:
                with bench.sentinels(cluster=True) as members:
                    urls = [url for _, url in members]
                    cluster = measure("cluster of 3, probers: 2",
                                      [p.pid for p, _ in members], args.warmup,
                                      args.window, bench, urls, cluster=True)
                    cluster_kill = kill_trials(bench, urls, args.trials, agreed=True)
                    mass = mass_failure(bench, urls)
                bench.restore_mass()
                with bench.sentinels(cluster=False) as alone:
                    independent = measure("3 independent sentinels, each probing all",
                                          [p.pid for p, _ in alone], args.warmup,
                                          args.window, bench, [url for _, url in alone])
                    alone_kill = kill_trials(bench, [url for _, url in alone], args.trials,
                                             agreed=False)
                reference = haproxy(bench, args.warmup, args.window)
            finally:
                bench.close()
    print(tables(args.backends, [cluster, independent, reference], cluster_kill,
                 alone_kill, mass, args.trials, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
