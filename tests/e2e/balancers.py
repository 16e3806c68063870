"""Real nginx and HAProxy for end-to-end tests and the failover benchmark.

Each balancer runs in the foreground (`daemon off;` / `-db`) as a tracked
process in its own session, with its config, pid file, logs and stats socket
in a private directory, listening on loopback only. Also here: sentinel
configs built as data and helpers to read sentinel's API. Client traffic is
in `tests.e2e.traffic`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio
import yaml

from sentinel.model import BackendView, ServiceView, State
from sentinel.sinks.haproxy.runtime_api import ServerState, parse_servers_state
from sentinel.sinks.nginx.render import render_file, render_upstream
from tests.e2e.helpers import (
    LOOPBACK,
    Processes,
    free_port,
    port_open,
    require_binary,
    wait_until,
)

T = TypeVar("T")

NGINX_CONF = """\
{load_stream}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$msec $status $upstream_addr';
    access_log {dir}/access.log upstream;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/upstreams-http.conf;
    server {{
        listen {ip}:{http_port};
        location / {{
            proxy_pass http://web;
            proxy_connect_timeout 500ms;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""
NGINX_STREAM = """\
stream {{
    include {dir}/upstreams-stream.conf;
    server {{
        listen {ip}:{stream_port};
        proxy_pass web;
        proxy_connect_timeout 500ms;
    }}
}}
"""

HAPROXY_GLOBAL = """\
global
    stats socket {dir}/admin.sock mode 600 level admin
    pidfile {dir}/haproxy.pid
defaults
    mode tcp
    timeout connect 500ms
    timeout client 10s
    timeout server 10s
    retries 2
    option redispatch
"""


# -- fleets and views ---------------------------------------------------------------------

def fleet_view(service: str, ports: Mapping[str, int], down: Sequence[str] = ()) -> ServiceView:
    """A view of backends `name -> port` on loopback, all up but those in `down`."""
    return ServiceView(service, tuple(
        BackendView(name=name, address=f"{LOOPBACK}:{port}", host=LOOPBACK, port=port,
                    state=State.DOWN if name in down else State.UP,
                    weight=0 if name in down else 1, configured_weight=1)
        for name, port in ports.items()))


def sentinel_config(state_dir: Path, sinks: dict[str, Any], backends: Mapping[str, int],
                    bindings: list[dict[str, Any]], *, probe: dict[str, Any] | None = None,
                    breaker: dict[str, Any] | None = None) -> str:
    """A sentinel.yaml with one service `web` over `backends`, bound to `sinks` by
    `bindings` ({sink: NAME, ...options})."""
    document = {
        "version": 1, "state_dir": str(state_dir), "shutdown_timeout": "2s",
        "api": {"listen": "127.0.0.1:0"},
        "sinks": sinks,
        "services": {"web": {
            "probe": probe or {"type": "http", "path": "/healthz", "interval": "300ms",
                               "fast_interval": "100ms", "down_interval": "300ms",
                               "timeout": "250ms"},
            "breaker": breaker or {"kind": "nginx", "max_fails": 2, "fail_timeout": "1s"},
            "backends": [{"name": n, "address": f"{LOOPBACK}:{p}"} for n, p in backends.items()],
            "sinks": bindings}}}
    return yaml.safe_dump(document, sort_keys=False)


def events(url: str, backend: str | None = None) -> list[dict[str, Any]]:
    """GET /v1/events from the start, optionally only one backend's."""
    got = httpx.get(f"{url}/v1/events", params={"after": 0}, timeout=2).json()["events"]
    return [e for e in got if backend is None or e["backend"] == backend]


def sink_status(url: str, sink: str) -> dict[str, Any]:
    """The sink's entry under `sinks` in GET /v1/state."""
    status: dict[str, Any] = httpx.get(f"{url}/v1/state", timeout=2).json()["sinks"][sink]
    return status


def event_to(url: str, backend: str, to: str, after_seq: int = 0) -> dict[str, Any] | None:
    """The first event after `after_seq` taking `backend` to state `to`, if any yet."""
    return next((e for e in events(url, backend) if e["to"] == to and e["seq"] > after_seq),
                None)


# -- nginx --------------------------------------------------------------------------------

def stream_module(binary: str) -> str | None:
    """The line nginx.conf needs for `stream {}`: "" when built in, a `load_module` line
    when it is a dynamic module that is installed, None when unavailable."""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stderr
    if "--with-stream=dynamic" not in built:
        return "" if "--with-stream " in built + " " else None
    modules = re.search(r"--modules-path=(\S+)", built)
    module = Path(modules.group(1) if modules else "/usr/lib/nginx/modules",
                  "ngx_stream_module.so")
    return f"load_module {module};" if module.exists() else None


@dataclass
class Nginx:
    """A running nginx with an `http` upstream include for `web`, and a `stream` one
    when this nginx has the stream module (else stream_port is None)."""

    binary: str
    dir: Path
    http_port: int
    stream_port: int | None

    @property
    def conf(self) -> Path:
        """nginx.conf."""
        return self.dir / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        """The master's pid file."""
        return self.dir / "nginx.pid"

    def include(self, context: str) -> Path:
        """The upstream file sentinel writes for `context` (http or stream)."""
        return self.dir / f"upstreams-{context}.conf"

    def command(self, *extra: str) -> list[str]:
        """nginx's argv for this instance, e.g. command("-t")."""
        return [self.binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                "-c", str(self.conf), *extra]

    def workers(self) -> set[int]:
        """The master's children now (worker processes)."""
        master = int(self.pid_file.read_text())
        out = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    out.add(int(entry.name))
        return out

    def upstreams_tried(self, since_wall: float) -> list[str]:
        """Every upstream address nginx tried for requests logged after `since_wall`."""
        out: list[str] = []
        for line in (self.dir / "access.log").read_text().splitlines():
            msec, _, addrs = line.split(" ", 2)
            if float(msec) >= since_wall:
                out.extend(a.strip() for a in addrs.split(","))
        return out


def start_nginx(procs: Processes, dir: Path, first: ServiceView, *,
                template: str = NGINX_CONF, name: str = "nginx") -> Nginx:
    """nginx in the foreground on loopback free ports, its upstream files first rendered
    from `first`; `template` is NGINX_CONF or a variant of it (the failover benchmark's),
    `name` its log's."""
    binary = require_binary("nginx")
    (dir / "tmp").mkdir(parents=True, exist_ok=True)
    load_stream = stream_module(binary)
    nginx = Nginx(binary, dir, free_port(), None if load_stream is None else free_port())
    text = template.format(load_stream=load_stream or "", dir=dir, ip=LOOPBACK,
                           http_port=nginx.http_port)
    if nginx.stream_port is not None:
        text += NGINX_STREAM.format(dir=dir, ip=LOOPBACK, stream_port=nginx.stream_port)
    nginx.conf.write_text(text)
    for context in ("http", "stream"):
        nginx.include(context).write_text(render_file([render_upstream(first)], sink="first",
                                                      context=context))
    proc = procs.start(nginx.command("-g", "daemon off;"), name)
    ports = [p for p in (nginx.http_port, nginx.stream_port) if p is not None]
    wait_until(lambda: proc.poll() is not None or (
        all(port_open(p) for p in ports) and nginx.pid_file.exists()), what="nginx listening")
    if proc.poll() is not None:
        raise AssertionError(f"nginx exited: {procs.log(name).read_text()}")
    return nginx


# -- HAProxy ------------------------------------------------------------------------------

@dataclass
class HAProxy:
    """A running HAProxy (master-worker) with an admin stats socket."""

    dir: Path
    master_pid: int

    @property
    def socket(self) -> Path:
        """The `level admin` stats socket."""
        return self.dir / "admin.sock"

    def command(self, line: str) -> str:
        """One runtime API command, answered synchronously."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def servers(self, backend: str) -> dict[str, ServerState]:
        """`show servers state BACKEND` by server name."""
        return {s.server: s for s in parse_servers_state(
            self.command(f"show servers state {backend}"))}

    def stat(self, backend: str, server: str, column: str) -> str:
        """One column of `show stat` for one server (e.g. stot, status)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == backend and row.get("svname") == server:
                return row[column]
        raise KeyError(f"{backend}/{server}")

    def pid(self) -> int:
        """The worker answering on the socket (changes on every reload)."""
        for line in self.command("show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":")[1])
        raise KeyError("Pid")

    def reload(self) -> None:
        """A graceful reload (SIGUSR2 to the master): a new worker, runtime changes gone.

        A master just started can miss the signal (seen about once in ten runs: no
        "Reloading HAProxy" in its log), so it is sent again until a new worker answers.
        """
        before = self.pid()
        for _ in range(5):
            os.kill(self.master_pid, signal.SIGUSR2)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: self.pid() != before, timeout=2, what="a new worker")
                return
        raise AssertionError("HAProxy did not reload after five SIGUSR2")


def haproxy_backend(name: str, port: int, servers: Mapping[str, int],
                    server_options: str = "") -> str:
    """A frontend on loopback `port` and its backend `name` with `servers`."""
    lines = [f"frontend fe_{name}", f"    bind {LOOPBACK}:{port}",
             f"    default_backend {name}", f"backend {name}", "    balance roundrobin"]
    lines += [f"    server {s} {LOOPBACK}:{p} {server_options}".rstrip()
              for s, p in servers.items()]
    return "\n".join(lines) + "\n"


def start_haproxy(procs: Processes, dir: Path, sections: Sequence[str]) -> HAProxy:
    """HAProxy in the foreground, master-worker mode, with the given frontend/backend
    sections; returns once its socket answers."""
    binary = require_binary("haproxy")
    dir.mkdir(parents=True, exist_ok=True)
    conf = dir / "haproxy.cfg"
    conf.write_text(HAPROXY_GLOBAL.format(dir=dir) + "".join(sections))
    proc = procs.start([binary, "-W", "-db", "-f", str(conf)], "haproxy")
    haproxy = HAProxy(dir, proc.pid)
    wait_until(lambda: proc.poll() is not None or haproxy.pid(), what="HAProxy's socket")
    if proc.poll() is not None:
        raise AssertionError(f"haproxy exited: {procs.log('haproxy').read_text()}")
    return haproxy


async def eventually(check: Callable[[], T | None], *, what: str = "condition",
                     within: float = 10.0) -> T:
    """`wait_until` for async tests: polls in a worker thread, so Trio tasks (a sink's
    background work) keep running meanwhile."""
    return await trio.to_thread.run_sync(functools.partial(wait_until, check, what=what,
                                                           timeout=within))
