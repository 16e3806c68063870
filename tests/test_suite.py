"""The suite's own shape: tests share helpers through helper modules and fixtures, never
by importing another test module; logging is put back after a test that set it up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TWO_TESTS = """
import logging
from sentinel.telemetry.logs import setup_logging

def test_a_command_sets_up_logging_in_process(capsys):
    setup_logging("info")  # what `sentinel ...` does first: on capsys's stderr, closed after
    logging.getLogger("sentinel").info("first")

def test_a_later_test_logs():
    logging.getLogger("sentinel").warning("second")
"""


def test_logging_set_up_by_one_test_does_not_outlive_it(pytester: pytest.Pytester) -> None:
    """With the root conftest, a later test's log line goes nowhere closed: no "I/O
    operation on closed file" traceback (without it, `--- Logging error ---` and that
    traceback in the later test's output)."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest_subprocess("-rP", "-p", "no:cacheprovider")  # -rP: the output
    result.assert_outcomes(passed=2)
    assert "Logging error" not in result.stderr.str() + result.stdout.str()


def test_no_test_module_imports_another() -> None:
    """What tests share lives in helper modules and conftest fixtures: a test module that
    imports another runs (or collects) that one's tests' setup and ties the two together."""
    root = Path(__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module is not None \
                    and node.module.rpartition(".")[2].startswith("test_"):
                offenders.append(f"{path.relative_to(root)}: {node.module}")
    assert offenders == []


def test_real_time_tests_are_marked_slow(pytester: pytest.Pytester) -> None:
    """`-m 'not slow'` leaves out every end-to-end and cluster test and keeps the rest."""
    tests = Path(__file__).parent
    quick = pytester.runpytest_subprocess(
        "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not slow",
        str(tests / "e2e"), str(tests / "cluster"), str(tests / "breakers"))
    kept = [line for line in quick.outlines if "::" in line]
    assert kept
    assert [line for line in kept if "breakers/" not in line] == []
