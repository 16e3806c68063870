"""Small builders shared by the cluster tests."""

from __future__ import annotations

from typing import Any

from sentinel.cluster.config import ClusterConfig
from sentinel.cluster.etcd import EtcdClient
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
