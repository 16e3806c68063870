"""Small builders shared by the cluster tests."""

from __future__ import annotations

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
