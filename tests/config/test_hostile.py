"""Hostile input to the loader: whatever bytes the file holds, the answer is positioned
config errors (in the loader and from `sentinel check`: exit 2, no traceback), never a
UnicodeDecodeError, ReaderError, ConstructorError, ValueError, RecursionError or
OverflowError."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.errors import ConfigError, ConfigErrors
from sentinel.sinks.registry import load_config
from tests.config import run_sentinel
from tests.config.hostile import CASES, GOOD, Case


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    return [str(e) for e in caught.value.errors]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_file_is_one_positioned_error(case: Case, tmp_path: Path) -> None:
    """Each hostile file is one `file:line:col: ...` error in the loader and in `check`."""
    path = tmp_path / "sentinel.yaml"
    path.write_bytes(case.data)
    assert _errors(path) == [case.expected.format(file=path)]
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr.splitlines()) == (
        2, "", [case.expected.format(file="sentinel.yaml")])


def test_a_file_too_large_to_be_a_config(tmp_path: Path) -> None:
    """A file past 16 MB (or /dev/zero) is refused after reading 16 MB, not swallowed whole."""
    path = tmp_path / "sentinel.yaml"
    with path.open("wb") as f:
        f.truncate((16 << 20) + 1)
    assert _errors(path) == [f"{path}: larger than 16 MB; not a config file"]


def test_a_date_is_kept_as_written(tmp_path: Path) -> None:
    """No setting is a date: a backend named 2024-01-01 (a YAML timestamp) keeps that name."""
    path = tmp_path / "sentinel.yaml"
    path.write_text("services:\n  web:\n    backends: [{name: 2024-1-1, address: h:80}]\n")
    assert load_config(path).services[0].backends[0].name == "2024-1-1"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.integers(0, 400))
def test_any_bytes_anywhere_are_config_errors_only(tmp_path: Path, junk: bytes, at: int) -> None:
    """Random bytes spliced into a valid config: it loads, or every problem is a
    ConfigError; nothing else escapes."""
    path = tmp_path / "fuzz.yaml"
    good = GOOD.encode()
    path.write_bytes(good[:at] + junk + good[at:])
    with contextlib.suppress(ConfigError):
        load_config(path)
