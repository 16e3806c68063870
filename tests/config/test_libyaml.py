"""libyaml's parser and PyYAML's pure-Python loader give the same Nodes and the same
errors: the C parser is only a faster way to the same document."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config import node
from sentinel.config.node import MAX_DEPTH, Node, load_yaml
from sentinel.errors import ConfigError
from tests.config.hostile import CASES, GOOD, Case

ROOT = Path(__file__).resolve().parents[2]
# corners where two YAML parsers could part: each must load the same with both, or fail
# with the same error
TRICKY = [
    "", "# only a comment\n", "---\n", "---\n...\n", "a: 1\n...\n", "a: 1\n---\nb: 2\n",
    "%YAML 1.1\n---\na: 1\n", "%YAML 1.2\n---\na: 1\n", "%YAML 1.3\n---\na: 1\n",
    "%YAML 2.0\n---\na: 1\n", "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
    "a: !<tag:yaml.org,2002:str> 1\n", "a: ! 1\nb: !!str 2\nc: !local 3\n",
    "[a:b, c: d, ?e, f?, 'g': h]\n", "{a:b, ? c : d, e: }\n", "? a\n: b\n? [c]\n: d\n",
    "a:\tb\n", "a:\n\t- b\n", "\ta: b\n", "a: b\t# c\n", "a: b #c\nd: e# f\n",
    "a: |\n  x\n   y\nb: >-\n  p\n\n  q\nc: |+\n\n", "a: |2\n   x\n", "a: |0\n x\n",
    "a: 'x\n  y'\nb: \"p\\\n  q\\ttab\\u00e9\\x41\"\n", "a: \"\\q\"\n", "a: '\n",
    "a: b\r\nc: d\r\n", "a: b\rc: d\r", "a: b\x85c: d\n", "a: b\u2028c: d\u2029e: f\n",
    "\ufeffa: b\n", "a: \ufeffb\n", "a: é\u00a0ü\n", "a: \U0001f600\n", "\"\U0001f600\": x\n",
    "a: &x 1\nb: *x\nc: &x 2\n", "a: *x\n", "a: &x [*x]\n", "&a a: b\n*a : c\n",
    "a: &m {x: 1}\nb: {<<: *m, y: 2}\nc: {<<: [*m, {z: 3}]}\n", "a: {<<: 1}\n",
    "a: 1\na: 2\n", "- a\n- - b\n  - c\n- {d: [e, {f: g}]}\n", "a: [1, 2\n", "a: {b\n",
    "a: b: c\n", "- a\nb: c\n", "a:\n  - b\n c: d\n", "a: @x\n", "a: `x\n", "a: %x\n",
    "a: 010\nb: 0x1F\nc: 1_000\nd: 1:20\ne: .5\nf: -.inf\ng: .NaN\nh: 0b101\ni: 0o7\n",
    "a: yes\nb: No\nc: ~\nd: null\ne: 2024-01-01\nf: 2024-13-45\ng: =\n", "a: !!int x\n",
    "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n",
    "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n",
    "a: " + "[" * (MAX_DEPTH - 2) + "x" + "]" * (MAX_DEPTH - 2) + "\n",
    "a: " + "[" * (MAX_DEPTH - 1) + "x" + "]" * (MAX_DEPTH - 1) + "\n",
    "a: " + "[" * 100_000 + "\n", "a: ${HOME}\nb: ${NOPE:-d}\nc: '${X}'\n",
    "a: {b: ${HOME}, c: [${NOPE:-d}, '${HOME}']}\n", "a: {${HOME}: 1}\n",
    "a: x" + "y" * 2000 + ": b\n",
    "\x00", "a: \x07\n", "a: b\x1f\n", "a: '\ud800'\n", "a: \x7f\n", "a: \x9f\n", "a: \ufffe\n",
]


def _shape(value: Node) -> Any:
    """Everything a Node tells: its value (nested), position, key position and path."""
    raw = value.raw
    if isinstance(raw, dict):
        raw = {k: _shape(v) for k, v in raw.items()}
    elif isinstance(raw, list):
        raw = [_shape(v) for v in raw]
    elif isinstance(raw, float) and raw != raw:
        raw = "nan"
    return (raw, type(raw).__name__, value.file, value.line, value.column, value.key_line,
            value.key_column, value.path)


class _Env(Mapping[str, str]):
    """Every environment variable is set (to its name in lower case)."""

    def __getitem__(self, name: str) -> str:
        return name.lower()

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _outcome(text: str | bytes) -> Any:
    try:
        return _shape(load_yaml(text, "f.yaml", env=_Env()))
    except ConfigError as exc:
        return str(exc)


def _both(text: str | bytes) -> tuple[Any, Any]:
    """What `text` loads to with libyaml, and without it (PyYAML's pure-Python loader)."""
    fast = _outcome(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(node, "CParser", None)
        slow = _outcome(text)
    return fast, slow


def test_libyaml_is_installed() -> None:
    """PyYAML's wheels carry libyaml, so the tests (and CI) run the fast path."""
    assert yaml.__with_libyaml__
    assert node.CParser is not None


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_tricky_yaml_is_read_alike(text: str) -> None:
    """Directives, flow corners, tabs, block scalars, line breaks, BOMs, anchors, merges,
    implicit types, nesting at the limit, control characters: the same either way."""
    fast, slow = _both(text)
    assert fast == slow


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_yaml_is_refused_alike(case: Case) -> None:
    """Every hostile file of test_hostile is the same error either way."""
    fast, slow = _both(case.data)
    assert fast == slow


@pytest.mark.parametrize("path", sorted(ROOT.glob("examples/*/sentinel.yaml")),
                         ids=lambda p: p.parent.name)
def test_examples_are_read_alike(path: Path) -> None:
    """The shipped example configs take libyaml's path and load to the same Nodes as
    without it."""
    assert node._compose_fast(path.read_text()) is not node._UNTAKEN
    fast, slow = _both(path.read_bytes())
    assert fast == slow
    assert not isinstance(fast, str)


def test_deep_nesting_is_refused_without_recursing() -> None:
    """A million levels is the nesting error, not a crash: libyaml's composer, which
    recurses in C, is never used."""
    with pytest.raises(ConfigError, match=r"^f\.yaml:1:67: nested more than 64 levels"):
        load_yaml("a: " + "[" * 1_000_000 + "]" * 1_000_000 + "\n", "f.yaml")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{},?!&*|>#'\"\\ \n\t%@`<~\r\ufeff.0")),
               max_size=60), st.integers(0, len(GOOD)))
def test_any_text_anywhere_is_read_alike(junk: str, at: int) -> None:
    """YAML's punctuation spliced into a valid config: the same Nodes or the same error."""
    fast, slow = _both(GOOD[:at] + junk + GOOD[at:])
    assert fast == slow
