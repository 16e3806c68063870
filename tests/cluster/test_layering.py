"""The cluster's pure cores stay pure."""

from __future__ import annotations

import subprocess
import sys


def test_pure_cores_import_no_io() -> None:
    """assign, vote and config import neither Trio nor httpx (checked in a fresh
    interpreter, so nothing imported earlier hides it)."""
    code = ("import sys, sentinel.cluster.assign, sentinel.cluster.vote, "
            "sentinel.cluster.config; "
            "print(sorted(m for m in ('trio', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
