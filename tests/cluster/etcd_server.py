"""A real etcd for the cluster tests: one member on loopback, its own data dir, by PID.

`EtcdServer` starts Debian's `etcd` (3.4) on two free loopback ports (client
and peer) with a data directory under the test's tmp dir, waits until its
`/health` says true, and can pause it (SIGSTOP: a hung etcd that still
accepts connections), resume it, stop it (SIGTERM, reaped) and start it
again on the same ports and data, so the keys survive a restart the way
they do in production. Heartbeat and election are shortened so the minimum
lease etcd grants is 1 s (etcd grants at least 1.5 x the election timeout).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import trustme

from sentinel.cluster.etcd import b64, prefix_end
from tests.e2e.helpers import Processes, free_port, require_binary, wait_until


class EtcdServer:
    """One etcd process this test owns."""

    def __init__(self, procs: Processes, data_dir: Path, name: str = "etcd",
                 ca: trustme.CA | None = None, host: str = "127.0.0.1",
                 flags: Sequence[str] = (), ports: tuple[int, int] | None = None) -> None:
        self._procs = procs
        self._ca = ca  # with a CA: https, and clients must show a certificate it signed
        self._data_dir = data_dir
        self._name = name
        self._host = host  # the client address (peers stay on loopback)
        self._flags = tuple(flags)  # more of etcd's options (its auth tokens, ...)
        self._binary = require_binary("etcd")
        # (client, peer): another etcd's, to take its place once it has stopped
        self.client_port, self.peer_port = ports or (free_port(host), free_port())
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client endpoint, http(s)://HOST:PORT."""
        scheme = "https" if self._ca else "http"
        return f"{scheme}://{self._host}:{self.client_port}"

    def _tls_options(self) -> tuple[list[str], httpx.Client]:
        """etcd's TLS flags and a client for its health check (plain without a CA)."""
        if self._ca is None:
            return [], httpx.Client(timeout=2)
        tls = self._data_dir.parent / "tls"
        tls.mkdir(exist_ok=True)
        server = self._ca.issue_cert("127.0.0.1")
        server.private_key_and_cert_chain_pem.write_to_path(str(tls / "server.pem"))
        self._ca.cert_pem.write_to_path(str(tls / "ca.pem"))
        client = self._ca.issue_cert("sentinel")
        client.private_key_and_cert_chain_pem.write_to_path(str(tls / "client.pem"))
        flags = ["--cert-file", str(tls / "server.pem"), "--key-file", str(tls / "server.pem"),
                 "--trusted-ca-file", str(tls / "ca.pem"), "--client-cert-auth"]
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        client.configure_cert(context)
        return flags, httpx.Client(timeout=2, verify=context)

    @property
    def pid(self) -> int:
        """The running etcd's PID."""
        assert self._proc is not None, "etcd is not running"
        return self._proc.pid

    def start(self) -> None:
        """Start etcd and wait (bounded) until it reports itself healthy."""
        peer = f"http://127.0.0.1:{self.peer_port}"
        tls_flags, http = self._tls_options()
        self._proc = self._procs.start([
            self._binary, "--name", self._name, "--data-dir", str(self._data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self._name}={peer}",
            "--heartbeat-interval", "50", "--election-timeout", "500", *tls_flags,
            *self._flags,
        ], self._name)
        proc = self._proc

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"etcd exited {proc.returncode}: "
                                     f"{self._procs.log(self._name).read_text()[-2000:]}")
            answer = http.get(f"{self.url}/health")
            return answer.status_code == 200 and answer.json().get("health") == "true"

        with http:
            wait_until(healthy, timeout=30, what=f"etcd healthy on {self.url}")

    def stop(self) -> None:
        """Stop etcd (SIGTERM to its PID, then reaped); its data dir stays."""
        assert self._proc is not None, "etcd is not running"
        os.kill(self._proc.pid, signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
        self._procs.kill(self._proc, signal.SIGTERM)
        self._proc = None

    def wipe(self) -> None:
        """Delete the data dir of a stopped etcd: it starts again empty, at revision 1 (as
        one restored from an older snapshot starts behind what clients saw)."""
        assert self._proc is None, "stop etcd first"
        shutil.rmtree(self._data_dir)

    def pause(self) -> None:
        """Freeze etcd (SIGSTOP): connections are accepted by the kernel, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused etcd (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def compact(self) -> int:
        """Compact the history up to the current revision; returns that revision."""
        head = httpx.post(f"{self.url}/v3/kv/range",
                          json={"key": base64.b64encode(b"\0").decode()}, timeout=5)
        revision = int(head.json()["header"]["revision"])
        answer = httpx.post(f"{self.url}/v3/kv/compaction",
                            json={"revision": str(revision), "physical": True}, timeout=10)
        answer.raise_for_status()
        return revision

    def proposals(self) -> int | None:
        """Writes etcd has committed through raft since it started (its metrics)."""
        for line in httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith("etcd_server_proposals_committed_total "):
                return int(float(line.split()[1]))
        return None

    def enable_auth(self, user: str, password: str) -> None:
        """Turn on etcd's authentication with `user` as root (through the gateway)."""
        for path, body in (("/v3/auth/user/add", {"name": user, "password": password}),
                           ("/v3/auth/role/add", {"name": "root"}),
                           ("/v3/auth/user/grant", {"user": user, "role": "root"}),
                           ("/v3/auth/enable", {})):
            httpx.post(f"{self.url}{path}", json=body, timeout=5).raise_for_status()

    def add_user(self, user: str, password: str, prefix: str) -> None:
        """A user (and a role of its name) that may read and write the keys under
        `prefix`; before `enable_auth`."""
        role = {"name": user, "perm": {"permType": "READWRITE", "key": b64(prefix),
                                       "range_end": b64(prefix_end(prefix))}}
        for path, body in (("/v3/auth/user/add", {"name": user, "password": password}),
                           ("/v3/auth/role/add", {"name": user}),
                           ("/v3/auth/role/grant", role),
                           ("/v3/auth/user/grant", {"user": user, "role": user})):
            httpx.post(f"{self.url}{path}", json=body, timeout=5).raise_for_status()

    def token(self, user: str, password: str) -> str:
        """A fresh auth token for `user`."""
        answer = httpx.post(f"{self.url}/v3/auth/authenticate",
                            json={"name": user, "password": password}, timeout=5)
        answer.raise_for_status()
        return str(answer.json()["token"])

    def as_root(self, root: tuple[str, str], path: str, body: dict[str, object]) -> None:
        """An auth-store call (`path` under /v3/auth/) made as the root user."""
        answer = httpx.post(f"{self.url}/v3/auth/{path}", json=body, timeout=5,
                            headers={"Authorization": self.token(*root)})
        answer.raise_for_status()
        assert "error" not in answer.json(), answer.text

    def refuses(self, token: str, key: str) -> str:
        """etcd's error for a read of `key` with `token` ("" when it takes it; a simple
        token's TTL starts again when it is taken)."""
        answer = httpx.post(f"{self.url}/v3/kv/range", json={"key": b64(key)}, timeout=5,
                            headers={"Authorization": token})
        return "" if answer.status_code == 200 else str(answer.json().get("message"))


@contextmanager
def running_etcd(base: Path, ca: trustme.CA | None = None, host: str = "127.0.0.1",
                 flags: Sequence[str] = ()) -> Iterator[EtcdServer]:
    """A started etcd with its data and log under `base` (https with client certificates
    when `ca` is given), its clients served on `host`, more of its options in `flags`,
    killed by PID at the end."""
    logs = base / "logs"
    logs.mkdir(parents=True)
    procs = Processes(logs)
    try:
        server = EtcdServer(procs, base / "data", ca=ca, host=host, flags=flags)
        server.start()
        yield server
    finally:
        procs.close()
