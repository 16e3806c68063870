"""Scale, side by side: sentinel and HAProxy 2.6 checking the same loopback fleet.

    .venv/bin/python bench/scale_bench.py [--cases tcp:100 http:5000 tcp:5000@100ms ...]
                                          [--warmup 5] [--window 10] [--before DIR]

A case is MODE:N[@INTERVAL] (default interval 1s). For each case one fleet
serves N ports on 127.0.0.1: nginx (C; 5,000 `listen` ports per nginx process,
one worker each, `return 200` to any request), so the fleet is not the
bottleneck. Against that fleet, one after the other (never both at once, so
neither steals the other's CPU):

- sentinel: a real `sentinel run` (one service, N backends, the given
  interval, timeout 500 ms or the interval if shorter, `max_fails: 1` so a
  single failed probe is a down event; telemetry at its defaults, Prometheus
  metrics on);
- HAProxy: one backend with `server ... check inter 1s fall 1 rise 1` per
  port (`option httpchk GET /healthz` for HTTP; `timeout connect`/`check` as
  sentinel's timeout), its own config and stats socket in a temp dir; run
  twice: with its default thread count (one per CPU it may use; the row
  names the number, read from `show info`) and with `nbthread 1`, HAProxy at
  its cheapest CPU per check (no thread hand-offs). sentinel's "vs HAProxy"
  column gives both ratios.

With `--before DIR` (another checkout of sentinel, say a git worktree of an
older commit), that tree's sentinel runs each case too, right before this
one's and under the same conditions ("sentinel before", its commit named
under the table): before and after measured in one run, on one machine
state. It runs under DIR/.venv/bin/python if that exists, else under this
interpreter; either way from DIR, so `-m sentinel` imports DIR's code.

Each runs `--warmup` seconds, then is measured over `--window` seconds: CPU
seconds per second (utime + stime of the process and its threads from
/proc/PID/stat), CPU per check (and its user / system split), peak RSS (VmHWM), checks per second,
schedule lateness p50/p99 (sentinel's `engine.lateness_ms` over its last
8,192 probes, read once after the window: no API call is made inside it, as a
`GET /v1/state` of thousands of backends holds sentinel's event loop for a
while; "warned" if sentinel logged its late-probe warning during the run;
HAProxy does not expose lateness), and false downs: the fleet never fails,
so every down is false (sentinel: down events; HAProxy: `chkdown`, summed
over servers). Checks per second are counted the same way for both: the
kernel's `ActiveOpens` (connects started) over the window. That count is
per network namespace, so the whole benchmark re-executes itself under
`unshare --net` (it needs root) with only loopback up: other work on the
machine neither adds to the count nor takes the fleet's ports. (nginx could
not count them: a plain TCP check, HAProxy's or sentinel's, resets before
its last handshake ACK, so the fleet never accepts it.) Every process is
killed by PID (its process group) when its run ends. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from probe_bench import (
    backend_lines,
    cpu_times,
    kill,
    launch_sentinel,
    peak_rss_mib,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
PORTS_PER_NGINX = 5000
PORT_RANGE = range(10000, 32768)  # below Linux's ephemeral range: no clash with checkers
NETNS_ENV = "SENTINEL_SCALE_BENCH_NETNS"
DEFAULT_CASES = ["tcp:100", "tcp:1000", "tcp:5000", "tcp:10000", "http:100", "http:1000",
                 "http:5000", "tcp:5000@100ms", "http:5000@200ms"]
NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  server {{
{listens}
    location / {{ return 200 "ok"; }}
  }}
  server {{ listen 127.0.0.1:{status}; location / {{ stub_status; }} }}
}}
"""
SENTINEL_CONF = """\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
services:
  fleet:
    probe: {{type: {mode}, {extra}interval: {interval}, fast_interval: {interval},
             down_interval: {interval}, timeout: {timeout}}}
    breaker: {{kind: nginx, max_fails: 1, fail_timeout: 5s}}
    backends:
{backends}
"""
HAPROXY_CONF = """\
global
    maxconn 2000
    stats socket {dir}/stats.sock mode 600 level admin
{nbthread}defaults
    mode {hmode}
    timeout connect {timeout}
    timeout check {timeout}
    timeout client 5s
    timeout server 5s
backend fleet
{httpchk}    default-server check inter {interval} fall 1 rise 1
{servers}
"""


@dataclass(frozen=True, slots=True)
class Case:
    """One row pair: MODE:N[@INTERVAL]."""

    mode: str
    n: int
    interval_ms: int

    @classmethod
    def parse(cls, text: str) -> Case:
        """`tcp:5000` or `http:5000@100ms`."""
        m = re.fullmatch(r"(tcp|http):(\d+)(?:@(\d+)ms)?", text)
        if not m or not 1 <= int(m.group(2)) <= 15000:
            raise argparse.ArgumentTypeError(f"expected MODE:N[@MSms] with N <= 15000: {text}")
        return cls(m.group(1), int(m.group(2)), int(m.group(3) or 1000))

    @property
    def timeout_ms(self) -> int:
        """500 ms, or the interval if shorter (a timeout may not exceed it)."""
        return min(500, self.interval_ms)


@dataclass(frozen=True, slots=True)
class Row:
    """One checker measured on one case."""

    case: Case
    checker: str
    threads: int | None  # HAProxy's; None for sentinel
    checks_per_s: float
    cpu_per_s: float
    user_per_s: float  # of cpu_per_s, in user space (the rest in the kernel)
    rss_mib: float
    late_p50: float | None
    late_p99: float | None
    false_downs: int
    downs_exact: bool  # False: more events than the API still holds (at least this many)
    late_warning: bool | None

    @property
    def us_per_check(self) -> float:
        """CPU microseconds per check."""
        return self.cpu_per_s / self.checks_per_s * 1e6 if self.checks_per_s else 0.0

    @property
    def user_us_per_check(self) -> float:
        """User-space CPU microseconds per check (the rest is system time)."""
        return self.user_per_s / self.checks_per_s * 1e6 if self.checks_per_s else 0.0


# -- the fleet ------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` ports of PORT_RANGE nobody has bound on 127.0.0.1."""
    ports: list[int] = []
    for port in PORT_RANGE:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"only {len(ports)} free ports in {PORT_RANGE}")


class Fleet:
    """N ports served by nginx processes (PORTS_PER_NGINX each), killed by PID on exit."""

    def __init__(self, n: int, workdir: Path, ports: list[int] | None = None) -> None:
        """`ports`: serve these (a fleet started again), else `n` free ones."""
        self.procs: list[subprocess.Popen[bytes]] = []
        shards = -(-n // PORTS_PER_NGINX)
        self.status_ports = free_ports(shards)
        self.ports = ports if ports is not None else [
            p for p in free_ports(n + shards) if p not in self.status_ports][:n]
        for i, status in enumerate(self.status_ports):
            mine = self.ports[i * PORTS_PER_NGINX:(i + 1) * PORTS_PER_NGINX]
            d = workdir / f"nginx{i}"
            (d / "tmp").mkdir(parents=True)
            listens = "\n".join(f"    listen 127.0.0.1:{p} backlog=1024;" for p in mine)
            (d / "nginx.conf").write_text(NGINX_CONF.format(dir=d, listens=listens,
                                                            status=status))
            self.procs.append(subprocess.Popen(
                ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log"),
                 "-g", "daemon off;"], start_new_session=True, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while True:  # nginx binds every listener before its worker answers stub_status
            with contextlib.suppress(OSError, ValueError, httpx.HTTPError):
                self.accepts()
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.close()
                raise RuntimeError(f"nginx did not come up (see {workdir}/nginx*/error.log)")
            time.sleep(0.1)

    def accepts(self) -> int:
        """Connections the fleet accepted so far (stub_status, summed over processes)."""
        total = 0
        for port in self.status_ports:
            text = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
            total += int(text.splitlines()[2].split()[0])
        return total

    def close(self) -> None:
        """Kill every nginx (master and workers: one process group each)."""
        for proc in self.procs:
            kill(proc)


def active_opens() -> int:
    """The kernel's count of connect()s (Tcp ActiveOpens in /proc/net/snmp)."""
    names, values = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                     if line.startswith("Tcp:")]
    return int(values[names.index("ActiveOpens")])


# -- the checkers -----------------------------------------------------------------------


def measure_sentinel(case: Case, fleet: Fleet, workdir: Path, warmup: float,
                     window: float, tree: Path = ROOT, label: str = "sentinel") -> Row:
    """A real `sentinel run` of checkout `tree` over the fleet, measured over `window`."""
    state = workdir / "sentinel"
    backends = backend_lines(fleet.ports)
    config = workdir / "sentinel.yaml"
    config.write_text(SENTINEL_CONF.format(
        state=state, mode=case.mode, extra="path: /healthz, " if case.mode == "http" else "",
        interval=f"{case.interval_ms}ms", timeout=f"{case.timeout_ms}ms", backends=backends))
    log_path = workdir / "sentinel.log"
    venv_python = tree / ".venv" / "bin" / "python"
    proc = launch_sentinel(config, log_path, tree,
                           str(venv_python) if venv_python.exists() else sys.executable)
    try:
        url = wait_for(state / "api.url", proc, timeout=60)
        time.sleep(warmup)
        # No API call inside the window: GET /v1/state with thousands of backends holds
        # the event loop for 100-250 ms here, which would show as lateness.
        checks0, cpu0, t0 = active_opens(), cpu_times(proc.pid), time.monotonic()
        time.sleep(window)
        checks1, cpu1, t1 = active_opens(), cpu_times(proc.pid), time.monotonic()
        warned = "probes are running late" in log_path.read_text()
        with httpx.Client(base_url=url, timeout=60) as client:
            after = client.get("/v1/state").json()
            events = client.get("/v1/events", params={"after": 0}).json()["events"]
        rss = peak_rss_mib(proc.pid)
    finally:
        kill(proc)
    late = after["engine"]["lateness_ms"]  # the last 8,192 probes before the request
    # A fresh state dir: seq counts every event since start. More events than the API
    # holds shows as "at least" the downs among those it still has.
    downs = [e["reason"] for e in events if e["to"] == "down"]
    if downs:
        print(f"{case}: {label} downs, e.g. {Counter(downs).most_common(3)}", file=sys.stderr)
    elapsed = t1 - t0
    return Row(case, label, None, (checks1 - checks0) / elapsed,
               (sum(cpu1) - sum(cpu0)) / elapsed, (cpu1[0] - cpu0[0]) / elapsed, rss,
               late["p50"], late["p99"], len(downs), after["seq"] == len(events), warned)


def measure_haproxy(case: Case, fleet: Fleet, workdir: Path, warmup: float,
                    window: float, *, nbthread: int | None = None) -> Row:
    """HAProxy checking the fleet with its own health checks, measured over `window`;
    `nbthread` None leaves HAProxy's default (a thread per CPU it may use)."""
    d = workdir / f"haproxy-{nbthread or 'default'}"
    d.mkdir()
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(fleet.ports))
    (d / "haproxy.cfg").write_text(HAPROXY_CONF.format(
        dir=d, hmode=case.mode, timeout=f"{case.timeout_ms}ms",
        interval=f"{case.interval_ms}ms", servers=servers,
        nbthread=f"    nbthread {nbthread}\n" if nbthread else "",
        httpchk="    option httpchk GET /healthz\n" if case.mode == "http" else ""))
    with open(d / "haproxy.log", "wb") as log:
        proc = subprocess.Popen(["haproxy", "-f", str(d / "haproxy.cfg"), "-db"], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_socket(d / "stats.sock", proc, timeout=60)
        time.sleep(warmup)
        checks0, cpu0, t0 = active_opens(), cpu_times(proc.pid), time.monotonic()
        time.sleep(window)
        checks1, cpu1, t1 = active_opens(), cpu_times(proc.pid), time.monotonic()
        rss = peak_rss_mib(proc.pid)
        stats = haproxy_stats(d / "stats.sock")
        threads = int(haproxy_command(d / "stats.sock", "show info").split(
            "Nbthread:", 1)[1].split()[0])
    finally:
        kill(proc)
    elapsed = t1 - t0
    downs = sum(int(row["chkdown"] or 0) for row in stats if row["svname"] != "BACKEND")
    label = ("HAProxy, nbthread 1" if nbthread == 1
             else f"HAProxy, {threads} thread{'' if threads == 1 else 's'}")
    return Row(case, label, threads, (checks1 - checks0) / elapsed,
               (sum(cpu1) - sum(cpu0)) / elapsed, (cpu1[0] - cpu0[0]) / elapsed, rss,
               None, None, downs, True, None)


def measure_haproxy_one_thread(case: Case, fleet: Fleet, workdir: Path, warmup: float,
                               window: float) -> Row:
    """HAProxy with `nbthread 1`: its lowest CPU per check."""
    return measure_haproxy(case, fleet, workdir, warmup, window, nbthread=1)


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until HAProxy's stats socket exists (it is up, its checks are scheduled)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy did not come up (exit {proc.poll()}; see its log)")
        time.sleep(0.05)


def haproxy_command(path: Path, command: str) -> str:
    """One runtime API command over the stats socket, its whole answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def haproxy_stats(path: Path) -> list[dict[str, str]]:
    """`show stat` over the stats socket, as one dict per line."""
    lines = haproxy_command(path, "show stat").strip().splitlines()
    header = lines[0].lstrip("# ").split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]


Measure = Callable[[Case, Fleet, Path, float, float], Row]


# -- the table ----------------------------------------------------------------------------


def table(rows: list[Row], window: float, before: str | None = None) -> str:
    """The Markdown table docs/performance.md carries."""
    threads = max((r.threads or 0 for r in rows), default=0)
    out = ["| probe | backends | interval | checker | checks/s (asked) | CPU s/s | "
           f"CPU us/check (user + sys) | vs HAProxy 1 / {threads} threads | peak RSS MiB | "
           "lateness p50 / p99 ms | false downs |",
           "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        c = r.case
        ratio, late = "", "n/a"
        if r.threads is None:  # a sentinel row
            refs = sorted((h for h in rows if h.case == c and h.threads and h.checks_per_s),
                          key=lambda h: h.threads or 0)
            ratio = " / ".join(f"{r.us_per_check / h.us_per_check:.2f}x" for h in refs)
            late = f"{r.late_p50:.1f} / {r.late_p99:.1f}" + (" (warned)" if r.late_warning
                                                               else "")
        asked = c.n * 1000 / c.interval_ms
        out.append(f"| {c.mode} | {c.n:,} | {c.interval_ms} ms | {r.checker} | "
                   f"{r.checks_per_s:,.0f} ({asked:,.0f}) | {r.cpu_per_s:.3f} | "
                   f"{r.us_per_check:.0f} ({r.user_us_per_check:.0f} + "
                   f"{r.us_per_check - r.user_us_per_check:.0f}) | {ratio} | "
                   f"{r.rss_mib:.1f} | {late} | "
                   f"{'' if r.downs_exact else '>= '}{r.false_downs} |")
    note = f"each row measured over a {window:g} s window"
    if before:
        note += f"; sentinel before: {before}"
    return "\n".join(out) + f"\n\n({note})"


def in_private_netns(marker: str, script: str, argv: list[str] | None) -> None:
    """Run `script` again under `unshare --net` (it needs root) unless this is that run
    (`marker` set in the environment); there, bring loopback up. The kernel's connection
    counters are per namespace: only the benchmark's processes count."""
    if os.environ.get(marker) != "1":
        os.environ[marker] = "1"
        os.execvp("unshare", ["unshare", "--net", "--", sys.executable, script,
                              *(sys.argv[1:] if argv is None else argv)])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every case, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", type=Case.parse,
                        default=[Case.parse(c) for c in DEFAULT_CASES],
                        help=f"MODE:N[@MSms] (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="another sentinel checkout to measure too, before this one")
    args = parser.parse_args(argv)
    if args.before is not None and not (args.before / "sentinel" / "__main__.py").exists():
        parser.error(f"--before {args.before}: not a sentinel checkout")
    if not 1 <= args.window <= 120 or not 0 <= args.warmup <= 60:
        parser.error("--window must be 1..120 s and --warmup 0..60 s")
    in_private_netns(NETNS_ENV, __file__, argv)
    measures: list[Measure] = [measure_sentinel, measure_haproxy_one_thread, measure_haproxy]
    before = None
    if args.before is not None:
        tree = args.before.resolve()
        measures.insert(0, partial(measure_sentinel, tree=tree, label="sentinel before"))
        before = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
                                capture_output=True, text=True).stdout.strip() or str(tree)
    rows: list[Row] = []
    for case in args.cases:
        with tempfile.TemporaryDirectory(prefix="sentinel-scale-") as tmp:
            workdir = Path(tmp)
            fleet = Fleet(case.n, workdir)
            try:
                for i, measure in enumerate(measures):
                    run_dir = workdir / f"run{i}"
                    run_dir.mkdir()
                    row = measure(case, fleet, run_dir, args.warmup, args.window)
                    print(f"{case}: {row.checker} {row.checks_per_s:.0f}/s "
                          f"{row.us_per_check:.0f} us/check, {row.false_downs} false downs",
                          file=sys.stderr)
                    rows.append(row)
            finally:
                fleet.close()
    print(table(rows, args.window, before))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
