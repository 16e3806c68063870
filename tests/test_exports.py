"""The public API of `sentinel` (trio's `_tests/test_exports.py`): what
`sentinel/__init__.py` offers, where each name lives, and the console script."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

import sentinel

PUBLIC = {
    "load_config": "sentinel.sinks.registry",
    "Config": "sentinel.config.model",
    "Engine": "sentinel.engine.engine",
    "SentinelError": "sentinel.errors",
    "ConfigError": "sentinel.errors",
    "ConfigErrors": "sentinel.errors",
    "SinkError": "sentinel.errors",
    "SinkUnavailable": "sentinel.errors",
    "SinkRejected": "sentinel.errors",
    "StateError": "sentinel.errors",
    "OutboxLocked": "sentinel.errors",
    "StartupError": "sentinel.errors",
    "BadRequest": "sentinel.errors",
    "SignatureError": "sentinel.errors",
    "ProtocolError": "sentinel.errors",
    "NoResponse": "sentinel.errors",
    "BadFrame": "sentinel.errors",
    "ResolveError": "sentinel.errors",
    "IllegalTransition": "sentinel.errors",
    "EtcdError": "sentinel.errors",
    "EtcdCompacted": "sentinel.errors",
    "NotLeader": "sentinel.errors",
}


def test_all_names_the_public_api() -> None:
    """`sentinel.__all__` is the loader, Config, Engine, the errors and the version."""
    assert sorted(sentinel.__all__) == sorted([*PUBLIC, "__version__"])


@pytest.mark.parametrize(("name", "module"), sorted(PUBLIC.items()))
def test_each_name_is_the_object_its_module_defines(name: str, module: str) -> None:
    """`sentinel.X` is the very object its home module defines, not a copy."""
    home = importlib.import_module(module)
    assert getattr(sentinel, name) is getattr(home, name)
    assert getattr(home, name).__module__ == module


def test_errors_derive_from_sentinel_error() -> None:
    """Every exported exception is a `SentinelError` (one tree, drawn in errors.py)."""
    errors = [getattr(sentinel, n) for n, m in PUBLIC.items() if m == "sentinel.errors"]
    assert errors
    assert all(issubclass(e, sentinel.SentinelError) for e in errors)


def test_unknown_names_raise_attribute_error() -> None:
    """A name outside the public API is an AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="no attribute 'Journal'"):
        _ = sentinel.Journal  # type: ignore[attr-defined]


def test_console_script_names_a_callable() -> None:
    """pyproject's `sentinel` console script points at a function that exists."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text())["project"]["scripts"]["sentinel"]
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))
