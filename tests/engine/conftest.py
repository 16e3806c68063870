"""Fixtures for the tests here, shared with `tests.probes.conftest`."""

from __future__ import annotations

from tests.probes.conftest import http_server, refused_port, serve  # noqa: F401 - shared fixtures
