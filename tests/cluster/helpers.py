"""Small builders shared by the cluster tests."""

from __future__ import annotations

import socket
from typing import Any

import trio

from sentinel.cluster.config import ClusterConfig
from sentinel.cluster.etcd import EtcdClient
from sentinel.cluster.membership import Lease, Membership
from tests.cluster.etcd_server import EtcdServer


def cluster_config(etcd: EtcdServer, prefix: str, node: str, **options: Any) -> ClusterConfig:
    """A member's configuration on `etcd` under `prefix` (lease 2 s unless given)."""
    options.setdefault("lease_ttl", 2)
    options.setdefault("config_sha256", "c0ffee")
    return ClusterConfig(endpoints=(etcd.url,), node=node, prefix=prefix, **options)


def client_for(config: ClusterConfig) -> EtcdClient:
    """A client with the member's endpoints, call deadline and etcd user."""
    return EtcdClient(config.endpoints, timeout=config.call_timeout, user=config.user,
                      password=config.password)


def member(etcd: EtcdServer, prefix: str, node: str, **options: object) -> Membership:
    """A Membership for `node` with its own client."""
    config = cluster_config(etcd, prefix, node, **options)
    return Membership(client_for(config), config, api_url=f"http://127.0.0.1:99/{node}",
                      version="0.1.0")


class Sessions:
    """Records the terms a member ran: each lease started and ended."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []

    async def __call__(self, lease: Lease) -> None:
        self.started.append(lease.id)
        try:
            await trio.sleep_forever()
        finally:
            self.ended.append(lease.id)


class Blackhole:
    """A loopback endpoint whose connects get no answer, as one cut off by a partition
    (its SYNs dropped): a listener whose one-place accept queue is taken."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._queued = socket.create_connection(self._listener.getsockname())

    def close(self) -> None:
        """Close both sockets."""
        self._queued.close()
        self._listener.close()


class SilentRelay:
    """A loopback TCP relay to etcd that can go silent: after `silence()` no byte passes
    on any connection, none is closed, and new ones are taken and left waiting (an
    endpoint cut off mid-stream by a partition, or its host frozen)."""

    def __init__(self, etcd: EtcdServer) -> None:
        self._target = etcd.client_port
        self._silent = trio.Event()
        self.url = ""  # once running

    def silence(self) -> None:
        """From now on nothing passes."""
        self._silent.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Relay until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, near: trio.SocketStream) -> None:
        if self._silent.is_set():
            await trio.sleep_forever()
        far = await trio.open_tcp_stream("127.0.0.1", self._target)
        async with far, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, near, far)
            nursery.start_soon(self._pump, far, near)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while data := await source.receive_some(65536):
            if self._silent.is_set():
                await trio.sleep_forever()  # dropped: no answer, no FIN, no RST
            await sink.send_all(data)
        await sink.send_eof()
