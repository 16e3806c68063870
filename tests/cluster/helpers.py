"""Small builders shared by the cluster tests."""

from __future__ import annotations

import math
import re
import socket
from typing import Any

import trio

from sentinel.cluster.config import ClusterConfig
from sentinel.cluster.etcd import EtcdClient
from sentinel.cluster.membership import Lease, Membership
from tests.cluster.etcd_server import EtcdServer


def cluster_config(etcd: EtcdServer, prefix: str, node: str, **options: Any) -> ClusterConfig:
    """A member's configuration on `etcd` under `prefix` (lease 2 s, and etcd's own
    endpoint, unless given)."""
    options.setdefault("lease_ttl", 2)
    options.setdefault("config_sha256", "c0ffee")
    options.setdefault("endpoints", (etcd.url,))
    return ClusterConfig(node=node, prefix=prefix, **options)


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
    endpoint cut off mid-stream by a partition, or its host frozen). After `forget()`
    the connections open until then pass nothing more, none is closed, while new ones
    pass as before (a stateful firewall or NAT that forgot those flows). With `delay`,
    what etcd sends arrives that much later (a slow etcd, or a long way to it), on the
    connections that carried a request for `delayed` alone when given; what it is sent
    is not delayed. `requests` lists each request relayed to etcd: (trio time it
    reached the relay, its path)."""

    def __init__(self, etcd: EtcdServer, *, delay: float = 0.0,
                 delayed: bytes | None = None) -> None:
        self._target = etcd.client_port
        self._silent = trio.Event()
        self._delay = delay
        self._delayed = delayed
        self._flows: set[_Flow] = set()  # the connections open now
        self.requests: list[tuple[float, bytes]] = []
        self.url = ""  # once running

    def silence(self) -> None:
        """From now on nothing passes."""
        self._silent.set()

    def forget(self, path: bytes | None = None) -> int:
        """The connections open now (only those that carried a request for `path`, when
        given) pass nothing more; returns how many that were not forgotten before."""
        flows = [f for f in self._flows
                 if not f.forgotten and (path is None or path in f.paths)]
        for flow in flows:
            flow.forgotten = True
        return len(flows)

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
        flow = _Flow()
        self._flows.add(flow)
        try:
            async with near:
                far = await trio.open_tcp_stream("127.0.0.1", self._target)
                async with far, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, near, far, flow, False)
                    nursery.start_soon(self._pump, far, near, flow, True)
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # one side went away (a client gave up, etcd stopped): so does the relay
        finally:
            self._flows.discard(flow)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, flow: _Flow,
                    answers: bool) -> None:
        """Pass what `source` sends on to `sink`: etcd's `answers` each chunk `delay`
        seconds after it came when delayed (a latency: chunks do not wait for one
        another), the requests to it at once, noted."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def deliver() -> None:
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    if self._silent.is_set() or flow.forgotten:
                        await trio.sleep_forever()  # dropped: no answer, no FIN, no RST
                    await sink.send_all(data)
            await sink.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            async with send:
                while data := await source.receive_some(65536):
                    delay = 0.0
                    if not answers:
                        for path in _REQUEST.findall(data):
                            flow.paths.add(path)
                            self.requests.append((trio.current_time(), path))
                    elif self._delayed is None or self._delayed in flow.paths:
                        delay = self._delay
                    await send.send((trio.current_time() + delay, data))


_REQUEST = re.compile(rb"(?:GET|POST|PUT|DELETE) (\S+) HTTP/1\.1\r\n")


class _Flow:
    """One connection through a `SilentRelay`: the paths it carried requests for, and
    whether the relay forgot it."""

    def __init__(self) -> None:
        self.paths: set[bytes] = set()
        self.forgotten = False
