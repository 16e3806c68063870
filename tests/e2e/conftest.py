"""Fixtures for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Processes
from tests.e2e.site import Site, make_site


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Processes started by the test, killed and reaped by PID when it ends."""
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A fresh sentinel installation under tmp_path, with a random API token."""
    return make_site(tmp_path)
