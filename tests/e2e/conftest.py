"""Fixtures for end-to-end tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Processes
from tests.e2e.site import Site, make_site


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT back its default. A shell without job control starts a background
    command (`./dev.sh test &`) with SIGINT ignored, every process a test starts would
    inherit that, and a test that stops one with SIGINT (Ctrl-C) would wait in vain."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
