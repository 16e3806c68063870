"""Fixtures for the Maglev tests: the e2e `processes` fixture (processes killed by PID)."""

from tests.e2e.conftest import processes

__all__ = ["processes"]
