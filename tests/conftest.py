"""Fixtures for every test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from sentinel.telemetry.logs import NOISY


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and the levels `setup_logging` sets back after each
    test. A `sentinel` command run in-process installs a handler on that test's captured
    stderr, which pytest closes when the test ends: left in place, every later log line
    printed an "I/O operation on closed file" traceback."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in NOISY}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the real-time tests `slow`: every end-to-end test (real processes, balancers,
    a browser) and every cluster test (a real etcd), so `-m 'not slow'` runs the rest in
    a fraction of the time."""
    for item in items:
        if item.get_closest_marker("e2e") or "cluster" in item.path.parts:
            item.add_marker(pytest.mark.slow)
