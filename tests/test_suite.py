"""The suite's own shape: tests share helpers through helper modules and fixtures, never
by importing another test module."""

from __future__ import annotations

import ast
from pathlib import Path


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
