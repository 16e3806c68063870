"""Probe cost: N loopback backends probed every second over TCP, HTTP, gRPC and DNS.

    .venv/bin/python bench/probe_bench.py --n 100 1000 [--modes tcp http grpc dns] [--window 10]

For each (mode, N) it starts a fleet process serving N sockets on 127.0.0.1
(one selectors loop; for tcp/http, HTTP/1.1 200 to any request, close on EOF
or reset; for grpc, a canned HTTP/2 SERVING answer to the Health/Check
request; for dns, an A record answered from N UDP sockets) and a real
`sentinel run` subprocess probing all of them every 1 s.
After a warm-up it measures, over a fixed window:

- sentinel's CPU seconds per second (utime + stime from /proc/PID/stat),
- its peak RSS (VmHWM from /proc/PID/status),
- schedule lateness p50/p99/max (GET /v1/state `engine.lateness_ms`: how late
  probes started against their due time, over the engine's recent probes),
- probes per second actually run (`engine.probes` delta), and that all N are up.

Every process is killed by PID when a case ends. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
MODES = ["tcp", "http", "grpc", "dns"]
EXTRA = {"http": "path: /healthz, ", "dns": "name: fleet.example, "}  # per-mode probe keys
CONFIG = """\
version: 1
state_dir: {state}
api: {{listen: "127.0.0.1:0"}}
services:
  fleet:
    probe: {{type: {mode}, {extra}interval: 1s, fast_interval: 1s, down_interval: 1s,
             timeout: 500ms}}
    breaker: {{kind: nginx, max_fails: 1, fail_timeout: 5s}}
    backends:
{backends}
"""


# -- the fleet: N listening sockets in one process ------------------------------


def serve_fleet(n: int, mode: str) -> None:
    """Listen on N ports of 127.0.0.1, print them as one JSON line, serve until killed."""
    sel = selectors.DefaultSelector()
    ports = []
    udp = mode == "dns"
    answer = grpc_answer() if mode == "grpc" else RESPONSE
    for _ in range(n):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", 0))
        if not udp:
            lsock.listen(64)
        lsock.setblocking(False)
        sel.register(lsock, selectors.EVENT_READ, None)
        ports.append(lsock.getsockname()[1])
    print(json.dumps(ports), flush=True)
    while True:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if udp:
                _answer_dns(sock)
            elif key.data is None:
                with contextlib.suppress(BlockingIOError):
                    conn, _ = sock.accept()
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, bytearray())
            else:
                _serve_conn(sel, sock, key.data, answer, mode == "grpc")


def _serve_conn(sel: selectors.BaseSelector, conn: socket.socket, buf: bytearray,
                answer: bytes, grpc: bool) -> None:
    """HTTP: read a request head, answer 200 and close. gRPC: answer the first bytes
    (sentinel sends its whole request at once), close on EOF. Close on EOF or reset."""
    try:
        data = conn.recv(4096)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if data and grpc:
        if not buf:
            buf += b"answered"
            with contextlib.suppress(OSError):
                conn.send(answer)
        return
    buf += data
    if data and b"\r\n\r\n" not in buf:
        return
    if data:
        with contextlib.suppress(OSError):
            conn.send(answer)
    sel.unregister(conn)
    conn.close()


def grpc_answer() -> bytes:
    """What an HTTP/2 server says to sentinel's Health/Check on a fresh connection: its
    SETTINGS, the ack, and a SERVING answer (the same bytes for every connection, as
    each starts with empty HPACK tables)."""
    import h2.config
    import h2.connection
    import h2.events

    from sentinel.config.model import GrpcSpec
    from sentinel.probes.grpc import request_bytes

    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    for event in server.receive_data(request_bytes(GrpcSpec(), "fleet:1", 1.0)):
        if isinstance(event, h2.events.StreamEnded):
            server.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
            server.send_data(1, b"\x00\x00\x00\x00\x02\x08\x01")
            server.send_headers(1, [("grpc-status", "0")], end_stream=True)
    return server.data_to_send()


def _answer_dns(sock: socket.socket) -> None:
    """Answer the query waiting on `sock` with one A record, 192.0.2.1 (by hand: the
    query's header and question, QR and RA set, one answer pointing at the question)."""
    try:
        query, peer = sock.recvfrom(512)
    except BlockingIOError:
        return
    flags = bytes([query[2] | 0x80, 0x80])
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([192, 0, 2, 1])
    sock.sendto(query[:2] + flags + query[4:6] + b"\x00\x01\x00\x00\x00\x00" + query[12:]
                + answer, peer)


# -- measuring one case -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One measured case."""

    mode: str
    n: int
    probes_per_s: float
    up: int
    cpu_per_s: float
    peak_rss_mib: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def backend_lines(ports: list[int]) -> str:
    """The `backends:` entries of a generated config, one per fleet port."""
    return "\n".join(f'      - {{name: b{i}, address: "127.0.0.1:{p}"}}'
                     for i, p in enumerate(ports))


def launch_sentinel(config: Path, log_path: Path, tree: Path = ROOT,
                    python: str = sys.executable) -> subprocess.Popen[bytes]:
    """`sentinel run -c CONFIG` (warnings only) in its own session, output to `log_path`;
    the sentinel of checkout `tree` (run from there, so `-m sentinel` imports its code)
    under interpreter `python`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [python, "-m", "sentinel", "--log-level", "warning", "run", "-c",
             str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=tree,
            start_new_session=True)


def cpu_times(pid: int) -> tuple[float, float]:
    """utime and stime of `pid` (user and system CPU) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` in seconds."""
    return sum(cpu_times(pid))


def peak_rss_mib(pid: int) -> float:
    """VmHWM of `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The contents of `path` once it exists (sentinel writes api.url when listening)."""
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if proc.poll() is not None:
            raise RuntimeError(f"sentinel exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout:g}s")
        time.sleep(0.05)
    return path.read_text().strip()


def kill(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group `proc` leads (by PID) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def measure(mode: str, n: int, warmup: float, window: float, workdir: Path) -> Row:
    """Run the fleet and sentinel for one case and measure sentinel over `window`."""
    procs: list[subprocess.Popen[Any]] = []
    try:
        fleet = subprocess.Popen([sys.executable, __file__, "--serve-fleet", str(n),
                                  "--fleet-mode", mode],
                                 stdout=subprocess.PIPE, start_new_session=True, cwd=ROOT)
        procs.append(fleet)
        assert fleet.stdout is not None
        ports = json.loads(fleet.stdout.readline())
        state = workdir / f"{mode}-{n}"
        backends = backend_lines(ports)
        extra = EXTRA.get(mode, "")
        config = workdir / f"{mode}-{n}.yaml"
        config.write_text(CONFIG.format(state=state, mode=mode, extra=extra,
                                        backends=backends))
        sentinel = launch_sentinel(config, workdir / f"{mode}-{n}.log")
        procs.append(sentinel)
        url = wait_for(state / "api.url", sentinel, timeout=30)
        time.sleep(warmup)
        with httpx.Client(base_url=url, timeout=10) as client:
            before_probes = client.get("/v1/state").json()["engine"]["probes"]
            cpu_before, t_before = cpu_seconds(sentinel.pid), time.monotonic()
            time.sleep(window)
            cpu_after, t_after = cpu_seconds(sentinel.pid), time.monotonic()
            doc = client.get("/v1/state").json()
        elapsed = t_after - t_before
        engine = doc["engine"]
        late = engine["lateness_ms"]
        return Row(mode, n, (engine["probes"] - before_probes) / elapsed,
                   doc["services"]["fleet"]["up"], (cpu_after - cpu_before) / elapsed,
                   peak_rss_mib(sentinel.pid), late["p50"], late["p99"], late["max"])
    finally:
        for proc in reversed(procs):
            kill(proc)


def table(rows: list[Row], window: float) -> str:
    """The Markdown table docs/performance.md carries."""
    lines = ["| probe | backends | probes/s | up | CPU s/s | peak RSS MiB | "
             "lateness p50 ms | p99 ms | max ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.mode} | {r.n} | {r.probes_per_s:.0f} | {r.up} | {r.cpu_per_s:.3f} | "
              f"{r.peak_rss_mib:.1f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.2f} |"
              for r in rows]
    return "\n".join(lines) + f"\n\n(measured over a {window:g} s window per row)"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every case, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000],
                        help="backend counts (default: 100 1000)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=MODES)
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--serve-fleet", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--fleet-mode", choices=MODES, default="tcp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fleet:
        serve_fleet(args.serve_fleet, args.fleet_mode)
        return 0
    if not 1 <= args.window <= 120 or not 0 <= args.warmup <= 60:
        parser.error("--window must be 1..120 s and --warmup 0..60 s")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        for mode in args.modes:
            for n in args.n:
                row = measure(mode, n, args.warmup, args.window, Path(tmp))
                print(f"{mode} n={n}: {row}", file=sys.stderr)
                rows.append(row)
    print(table(rows, args.window))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
