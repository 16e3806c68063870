"""Tests for the configuration loader and the `sentinel` command line.

`run_sentinel` runs the real console entry point (`python -m sentinel`) as a
subprocess, so exit codes, stdout and stderr are what an operator sees;
`schema_validator` checks documents against the schema `sentinel schema` prints.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import jsonschema

from sentinel.config.model import Config, ServiceConfig
from sentinel.config.schema import config_schema
from sentinel.errors import ConfigErrors
from sentinel.sinks.registry import SINK_KINDS, load_config

COMMAND_TIMEOUT = 30.0


def run_sentinel(*args: str, cwd: Path, env: Mapping[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    """Run `sentinel ARGS` in `cwd`; on timeout the child is killed and reaped."""
    environ = dict(os.environ if env is None else env)
    return subprocess.run([sys.executable, "-m", "sentinel", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)


# A whole file names at least one service: what a test of something else adds to a file
# that names none (at its end, so every position above stays where it is).
ONE_SERVICE = "services:\n  snippet:\n    backends: [127.0.0.1:9]\n"


def whole(text: str) -> str:
    """`text` with ONE_SERVICE added when it has no `services:` of its own."""
    if re.search(r"^services:", text, re.MULTILINE):
        return text
    return text + ("" if not text or text.endswith("\n") else "\n") + ONE_SERVICE


def write_config(directory: Path, text: str, name: str = "sentinel.yaml") -> Path:
    """Write a config file into `directory` and return its path."""
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@functools.cache
def schema_validator() -> jsonschema.Draft202012Validator:
    """A validator for the schema `sentinel schema` prints, checking formats (regexes) too."""
    schema = config_schema(SINK_KINDS)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def check_schema_verdict(document: object, key_path: str, loader_only: str,
                         *more: str) -> None:
    """The schema refuses `document` at the loader's `key_path` (`services.web.probe`,
    `backends[1]`) or a parent of it (or at one of `more`, when the loader reports several
    mistakes); or, for a mistake only the loader can see (`loader_only` says why), accepts
    it, so a mark that is no longer true fails."""
    best = jsonschema.exceptions.best_match(schema_validator().iter_errors(document))
    if loader_only:
        assert best is None, best.message
        return
    assert best is not None, "the schema accepts it"
    where = "".join(f"[{step}]" if isinstance(step, int) else f".{step}"
                    for step in best.absolute_path).removeprefix(".")
    assert where == "" or any(path == where or path.startswith((where + ".", where + "["))
                              for path in (key_path, *more)), (where, best.message)


def error_lines(path: Path) -> list[str]:
    """The `file:line:col: key.path: message` lines loading `path` fails with."""
    try:
        load_config(path)
    except ConfigErrors as caught:
        return [str(e) for e in caught.errors]
    raise AssertionError(f"{path} loaded without errors")


def service_named(config: Config, name: str) -> ServiceConfig:
    """The one service of `config` called `name`."""
    [svc] = [s for s in config.services if s.name == name]
    return svc
