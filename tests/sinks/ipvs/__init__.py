"""Tests of the ipvs sink; the config file several of them write."""

from __future__ import annotations

from pathlib import Path

from tests.config import write_config

CONFIG = """\
version: 1
state_dir: {state}
sinks:
  lvs: {{type: ipvs, command: [/bin/true], resync: 5s{driver}}}
services:
  web:
    backends: [127.0.0.1:8080]
    sinks: [{{sink: lvs, {binding}}}]
"""


def config_file(tmp_path: Path, binding_text: str, driver: str = "") -> Path:
    """A config with one service bound to an ipvs sink."""
    return write_config(tmp_path, CONFIG.format(state=tmp_path / "state", binding=binding_text,
                                                driver=driver))
