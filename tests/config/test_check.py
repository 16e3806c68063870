"""`sentinel check` beyond syntax: the commands sinks run by default, warnings, budgets."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.config import run_sentinel, whole, write_config

DEFAULT_COMMANDS = """\
    sinks:
      lvs: {type: ipvs}
      edge: {type: nginx, file: ./up.conf, reload: "true"}
    """


def _path_with(directory: Path, *programs: str) -> dict[str, str]:
    """The environment with PATH holding only `directory`, where `programs` are scripts."""
    directory.mkdir()
    for program in programs:
        (directory / program).write_text("#!/bin/sh\nexit 0\n")
        (directory / program).chmod(0o755)
    return {**os.environ, "PATH": str(directory)}


def test_default_commands_missing_here_are_errors(tmp_path: Path) -> None:
    """`{type: ipvs}` without ipvsadm and nginx's default `nginx -t` without nginx fail
    `check` (exit 2) as a configured command would, at the sink."""
    write_config(tmp_path, whole(textwrap.dedent(DEFAULT_COMMANDS)))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path,
                        env=_path_with(tmp_path / "bin", "true"))
    assert (done.returncode, done.stderr.splitlines()) == (2, [
        "sentinel.yaml:2:8: sinks.lvs: `command` defaults to `ipvsadm`: command not found "
        "on PATH: ipvsadm; install it or set `command`",
        "sentinel.yaml:3:9: sinks.edge: `test` defaults to `nginx -t`: command not found on "
        "PATH: nginx; install it or set `test`"])


def test_default_commands_found_here_pass(tmp_path: Path) -> None:
    """With ipvsadm and nginx on PATH the same file is ok."""
    write_config(tmp_path, whole(textwrap.dedent(DEFAULT_COMMANDS)))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path,
                        env=_path_with(tmp_path / "bin", "ipvsadm", "nginx", "true"))
    assert (done.returncode, done.stdout.splitlines()[0], done.stderr) == (
        0, "sentinel.yaml: ok", "")


@pytest.mark.parametrize(("probe", "warning"), [
    ("{interval: 1s, fast_interval: 200m}",
     "sentinel.yaml:4:42: services.web.probe.fast_interval: fast_interval (12000s) is longer "
     "than interval (1s): probing slows down after a failure"),
    ("{interval: 1s, down_interval: 2h}",
     "sentinel.yaml:4:42: services.web.probe.down_interval: down_interval (7200s) is longer "
     "than interval (1s): a recovery is seen that much later"),
])
def test_a_slower_fast_or_down_interval_is_a_warning(tmp_path: Path, probe: str,
                                                     warning: str) -> None:
    """fast_interval or down_interval longer than interval (the typo `200m` for `200ms`,
    whose budget took minutes to compute): `check` warns, and still exits 0."""
    write_config(tmp_path, textwrap.dedent(f"""\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {probe}
        """))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, f"warning: {warning}\n")


def test_an_empty_program_name_is_named_as_such(tmp_path: Path) -> None:
    """`command: [""]` is an error that says the program name is empty."""
    write_config(tmp_path, whole(textwrap.dedent("""\
        sinks:
          run: {type: exec, command: [""]}
        """)))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2, "sentinel.yaml:2:30: sinks.run.command: the program name is empty\n")


def test_a_program_on_path_that_is_not_executable_is_named(tmp_path: Path) -> None:
    """`command: [notify, ...]` where PATH holds a `notify` this user may not run (exec
    would fail "permission denied") is an error naming that file, not "not found"."""
    env = _path_with(tmp_path / "bin", "true")
    (tmp_path / "bin" / "notify").write_text("#!/bin/sh\nexit 0\n")
    write_config(tmp_path, whole(textwrap.dedent("""\
        sinks:
          run: {type: exec, command: [notify, "{service}"]}
        """)))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path, env=env)
    assert (done.returncode, done.stderr) == (
        2, f"sentinel.yaml:2:30: sinks.run.command: command is not executable: "
           f"{tmp_path / 'bin' / 'notify'} (found on PATH for notify)\n")


@pytest.mark.parametrize(("breaker", "key", "value"), [
    ("{kind: nginx, max_fails: 1000000000, fail_timeout: 1h}", "max_fails", 10**9),
    ("{kind: nginx, passes: 1000000000}", "passes", 10**9),
    ("{kind: threshold, rise: 1000000000000}", "rise", 10**12),
    ("{kind: threshold, fall: 30000}", "fall", 30000),
    ("{kind: circuit, min_calls: 1000000000}", "min_calls", 10**9),
    ("{kind: circuit, half_open_trials: 1001}", "half_open_trials", 1001),
])
def test_a_breaker_count_over_1000_is_refused_at_its_key(tmp_path: Path, breaker: str,
                                                          key: str, value: int) -> None:
    """A count over 1000 probes is exit 2 with file:line:col and the key path, at once;
    it used to pass, `check` printing `never` for breakers that do flip (`fall: 30000`)."""
    write_config(tmp_path, textwrap.dedent(f"""\
        services:
          web:
            backends: [127.0.0.1:1]
            probe: {{interval: 1s, timeout: 500ms}}
            breaker: {breaker}
        """))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)  # killed after 30 s
    column = 5 + len("breaker: ") + breaker.index(f"{key}:") + len(f"{key}: ")
    low = 0 if key == "max_fails" else 1
    assert (done.returncode, done.stdout, done.stderr) == (2, "", (
        f"sentinel.yaml:5:{column}: services.web.breaker.{key}: must be {low}..1000, "
        f"got {value}\n"))
