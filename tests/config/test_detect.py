"""The detection settings load: `init_state` (per service and in defaults), and each
mistake is one positioned line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sentinel.config import Config, InitState
from sentinel.configload import load_config
from sentinel.errors import ConfigErrors
from tests.config import write_config


def load(tmp_path: Path, text: str) -> Config:
    """Load `text` (dedented) as sentinel.yaml in tmp_path."""
    return load_config(write_config(tmp_path, textwrap.dedent(text)))


def errors(tmp_path: Path, text: str) -> list[str]:
    """The error lines loading `text` gives, file name relative."""
    with pytest.raises(ConfigErrors) as caught:
        load(tmp_path, text)
    return [str(e).replace(f"{tmp_path}/", "") for e in caught.value.errors]


def test_init_state_per_service_and_from_defaults(tmp_path: Path) -> None:
    """`init_state` in defaults applies to every service that does not set its own; the
    default is fully-up."""
    config = load(tmp_path, """\
        defaults: {init_state: down}
        services:
          a: {backends: [127.0.0.1:80]}
          b: {backends: [127.0.0.1:81], init_state: up}
        """)
    assert [s.init_state for s in config.services] == [InitState.DOWN, InitState.UP]
    plain = load(tmp_path, "services: {a: {backends: [127.0.0.1:80]}}\n")
    assert plain.services[0].init_state is InitState.FULLY_UP


def test_init_state_unknown_value(tmp_path: Path) -> None:
    """An unknown init_state names the four values, at its position."""
    assert errors(tmp_path, """\
        services:
          a: {backends: [127.0.0.1:80], init_state: half-up}
        """) == ["sentinel.yaml:2:45: services.a.init_state: expected one of fully-up, up, "
                 "down, fully-down; got 'half-up'"]
