"""Fixtures for the IPVS tests: one QEMU VM per session, its table cleared for each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import require_binary
from tests.sinks.ipvs.vm import Vm
from tests.sinks.ipvs.vmimage import ImageUnavailable


@pytest.fixture(scope="session")
def ipvs_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    """A booted VM with a real IPVS table (skipped without qemu, except under CI=true)."""
    require_binary("qemu-system-x86_64")
    vm = Vm(tmp_path_factory.mktemp("ipvs-vm"))
    try:
        vm.start()
    except ImageUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the IPVS test VM is required under CI=true: {exc}")
        pytest.skip(f"no IPVS test VM: {exc}")
    try:
        yield vm
    finally:
        vm.close()


@pytest.fixture
def vm(ipvs_vm: Vm) -> Vm:
    """The session's VM with an empty IPVS table."""
    cleared = ipvs_vm.ipvsadm("-C")
    assert cleared.returncode == 0, cleared.stderr
    return ipvs_vm


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A fresh state directory."""
    path = tmp_path / "state"
    path.mkdir()
    return path
