"""Tests for the configuration loader and the `sentinel` command line.

`run_sentinel` runs the real console entry point (`python -m sentinel`) as a
subprocess, so exit codes, stdout and stderr are what an operator sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

COMMAND_TIMEOUT = 30.0


def run_sentinel(*args: str, cwd: Path, env: Mapping[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    """Run `sentinel ARGS` in `cwd`; on timeout the child is killed and reaped."""
    environ = dict(os.environ if env is None else env)
    return subprocess.run([sys.executable, "-m", "sentinel", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)


def write_config(directory: Path, text: str, name: str = "sentinel.yaml") -> Path:
    """Write a config file into `directory` and return its path."""
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def error_lines(path: Path) -> list[str]:
    """The `file:line:col: key.path: message` lines loading `path` fails with."""
    from sentinel.errors import ConfigErrors
    from sentinel.sinks.registry import load_config

    try:
        load_config(path)
    except ConfigErrors as caught:
        return [str(e) for e in caught.errors]
    raise AssertionError(f"{path} loaded without errors")
