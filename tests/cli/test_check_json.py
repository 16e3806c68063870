"""`sentinel check --format json`: one document on stdout for CI pipelines, as a real
`sentinel` process prints it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.cli import BUDGET_CONFIG
from tests.config import run_sentinel, write_config
from tests.sinks.ipvs import config_file

BAD = """\
version: 1
services:
  web:
    backends: [127.0.0.1:70000]
    probe: {type: tcpx, interval: 1s}
    breaker: {kind: threshold, fall: 0}
"""


def test_budgets_as_numbers(tmp_path: Path) -> None:
    """Each service's worst cases in seconds (the text output's hand-derived values),
    null where the backend is never removed."""
    write_config(tmp_path, textwrap.dedent(BUDGET_CONFIG))
    done = run_sentinel("check", "--format", "json", "-c", "sentinel.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    doc = json.loads(done.stdout)
    assert (doc["file"], doc["ok"], doc["errors"], doc["warnings"]) == (
        "sentinel.yaml", True, [], [{"message": "sentinel.yaml:13:64: services.slowdown.probe."
                                    "down_interval: down_interval (5s) is longer than interval "
                                    "(2s): a recovery is seen that much later"}])
    assert [(s["name"], s["backends"], s["probe"], s["to_down_seconds"], s["to_up_seconds"])
            for s in doc["services"]] == [
        ("tcp3", 1, "tcp", 3.5, 2.0),
        ("slowdown", 2, "tcp", 5.0, 5.2),
        ("ngx", 1, "tcp", 2.5, 10.7),
        ("never", 1, "tcp", None, 11.0),
        ("jittery", 1, "tcp", 3.8, 2.2),
        ("quick", 1, "tcp", 0.3, 0.2),
    ]


def test_errors_with_position_and_key_path(tmp_path: Path) -> None:
    """Every error of the pass, with file, line, column, key path and message: the same
    errors the text format prints as `file:line:col: path: message`; exit 2, stdout only."""
    write_config(tmp_path, BAD)
    text = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    done = run_sentinel("check", "--format", "json", "-c", "sentinel.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "")
    doc = json.loads(done.stdout)
    assert (doc["ok"], doc["services"]) == (False, [])
    errors = doc["errors"]
    assert errors[0] == {"file": "sentinel.yaml", "line": 4, "column": 16,
                         "path": "services.web.backends[0]",
                         "message": "port must be 1..65535, got 70000"}
    assert [e["path"] for e in errors] == ["services.web.backends[0]",
                                           "services.web.probe.type",
                                           "services.web.breaker.fall"]
    assert [f"{e['file']}:{e['line']}:{e['column']}: {e['path']}: {e['message']}"
            for e in errors] == text.stderr.splitlines()


def test_unreadable_file_and_syntax_error(tmp_path: Path) -> None:
    """An unreadable file has no position or key path (null); a YAML syntax error has a
    position but no key path."""
    done = run_sentinel("check", "--format", "json", "-c", "missing.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert json.loads(done.stdout)["errors"] == [
        {"file": "missing.yaml", "line": None, "column": None, "path": None,
         "message": "missing.yaml: cannot read: No such file or directory"}]
    write_config(tmp_path, "version: 1\nservices: [\n")
    done = run_sentinel("check", "--format", "json", "-c", "sentinel.yaml", cwd=tmp_path)
    (error,) = json.loads(done.stdout)["errors"]
    assert (error["line"], error["column"], error["path"]) == (3, 1, None)
    assert error["message"].startswith("YAML syntax error: ")


def test_warnings_keep_exit_0(tmp_path: Path) -> None:
    """A risky but valid config: ok, exit 0, the warning in the document, stderr empty."""
    path = config_file(tmp_path, "virtual: 'tcp:10.0.0.1:80', scheduler: mh")
    done = run_sentinel("check", "--format", "json", "-c", str(path), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    doc = json.loads(done.stdout)
    assert doc["ok"] is True
    assert any(w["message"].startswith("service web (lvs, tcp:10.0.0.1:80): mh without "
                                       "mh-fallback") for w in doc["warnings"])
