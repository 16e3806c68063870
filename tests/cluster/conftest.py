"""Fixtures for the cluster tests: a real etcd on loopback (skipped without the
binary, except under CI=true), shared by the session or owned by one test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sentinel.cluster.etcd import EtcdClient
from tests.cluster.etcd_server import EtcdServer, running_etcd

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the tests that do not stop it; each test keeps to its own `prefix`."""
    with running_etcd(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd this test may pause, stop and restart."""
    with running_etcd(tmp_path / "etcd") as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test in this session uses."""
    return f"/sentinel/test{next(_prefixes)}/"


@pytest.fixture
async def client(etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    """A client of the session's etcd."""
    c = EtcdClient([etcd.url], timeout=5.0)
    try:
        yield c
    finally:
        await c.aclose()
