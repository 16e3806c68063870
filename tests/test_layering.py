"""The pure cores import no I/O framework: loaded in a fresh interpreter, trio stays out."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["sentinel.breakers", "sentinel.engine.suspect",
                                    "sentinel.passive.reports"])
def test_pure_core_does_not_import_trio(module: str) -> None:
    """Importing the module alone leaves trio (and hence any I/O) unimported."""
    code = f"import sys, {module}; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"
