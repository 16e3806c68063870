"""`sentinel schema`: a valid draft 2020-12 schema, walked from the loader's own tables,
that accepts every example and documented config and every key the loader accepts.
The bad configs of the error tests are checked against it in test_errors.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sentinel.config.load import TOP
from sentinel.config.schema import config_schema
from sentinel.config.tables import (
    Either,
    ListOf,
    MapOf,
    Named,
    Ref,
    Rule,
    Section,
    Shape,
    Variants,
)
from sentinel.sinks.registry import SINK_KINDS
from tests.config import run_sentinel, schema_validator
from tests.snippets import config_snippets

ROOT = Path(__file__).resolve().parents[2]


def test_schema_is_valid_draft_2020_12() -> None:
    """The schema is itself valid under the draft 2020-12 meta-schema."""
    schema = config_schema(SINK_KINDS)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_command_prints_the_schema(tmp_path: Path) -> None:
    """`sentinel schema` prints the schema as JSON on stdout and exits 0."""
    done = run_sentinel("schema", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == json.loads(json.dumps(config_schema(SINK_KINDS)))


def _examples() -> list[Path]:
    return sorted(ROOT.glob("examples/**/sentinel*.yaml"))


@pytest.mark.parametrize("path", _examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_example_configs_validate(path: Path) -> None:
    """Every example configuration under examples/ validates."""
    _assert_valid(yaml.safe_load(path.read_text()))


SNIPPETS = list(config_snippets())


def test_the_docs_hold_config_snippets() -> None:
    """The snippet finder sees the README's blocks (a changed fence would skip them all)."""
    assert len(SNIPPETS) >= 10


@pytest.mark.parametrize(("where", "block"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_doc_snippets_validate(where: str, block: str) -> None:
    """Every YAML configuration snippet in the README and docs/ validates."""
    _assert_valid(yaml.safe_load(block))


def _assert_valid(document: object) -> None:
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in schema_validator().iter_errors(document)]
    assert problems == []


# -- every key the loader accepts is in the schema ---------------------------------


def _sections(shape: Shape, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Section]]:
    """Every table reachable from `shape`, with its path ("*": any key, "[]": an item);
    the sink kinds' tables are reached through the registry, as the schema reaches them."""
    if isinstance(shape, Section):
        yield path, shape
        for field in shape:
            yield from _sections(field.kind, (*path, field.name))
    elif isinstance(shape, Variants):
        for section in (shape.common, *shape.variants.values()):
            yield from _sections(section, path)
    elif isinstance(shape, MapOf | Named):
        yield from _sections(shape.value, (*path, "*"))
    elif isinstance(shape, ListOf):
        yield from _sections(shape.item, (*path, "[]"))
    elif isinstance(shape, Either):
        for part in shape.shapes:
            yield from _sections(part, path)
    elif isinstance(shape, Rule) and isinstance(shape.form, Shape):
        yield from _sections(shape.form, path)
    elif isinstance(shape, Ref):
        for kind in SINK_KINDS.values():
            yield from _sections(kind.options if shape.name == "sink" else kind.binding, path)


def _applying(node: Any, root: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`node` and every subschema that applies at the same place."""
    if not isinstance(node, dict):
        return
    yield node
    if "$ref" in node:
        yield from _applying(root["$defs"][node["$ref"].removeprefix("#/$defs/")], root)
    for key in ("anyOf", "oneOf", "allOf"):
        for part in node.get(key, []):
            yield from _applying(part, root)
    yield from _applying(node.get("then"), root)


def _at(root: dict[str, Any], path: tuple[str, ...]) -> list[dict[str, Any]]:
    """The subschemas that apply at `path`."""
    nodes = list(_applying(root, root))
    for step in path:
        nodes = [part for node in nodes
                 for part in _applying(node.get("additionalProperties") if step == "*"
                                       else node.get("items") if step == "[]"
                                       else node.get("properties", {}).get(step), root)]
    return nodes


def test_every_key_the_loader_accepts_is_in_the_schema() -> None:
    """Walking the tables the loader reads: each section's keys are properties of the
    schema at that place, which allows no other key."""
    schema = config_schema(SINK_KINDS)
    walked = list(_sections(TOP, ()))
    assert len(walked) > 30  # the top, services, probes of every type, every sink kind...
    for path, section in walked:
        nodes = [n for n in _at(schema, path) if "properties" in n]
        assert nodes, path
        allowed = {key for node in nodes for key in node["properties"]}
        assert section.keys <= allowed, (path, section.keys - allowed)
        assert any(node.get("additionalProperties") is False for node in nodes), path


def test_a_key_of_another_probe_type_is_refused() -> None:
    """`if`/`then` on `type`: an http probe cannot take tcp's `send`; without `type`
    (a default may set it) any probe type's keys go, with their values checked."""
    validator = schema_validator()
    http = {"services": {"web": {"backends": ["127.0.0.1:80"],
                                 "probe": {"type": "http", "send": "x"}}}}
    assert not validator.is_valid(http)
    untyped = {"services": {"web": {"backends": ["127.0.0.1:80"],
                                    "probe": {"path": "/healthz"}}}}
    assert validator.is_valid(untyped)
    untyped["services"]["web"]["probe"]["path"] = "no slash"
    assert not validator.is_valid(untyped)


def test_a_canary_probe_without_type_is_tcp() -> None:
    """Canaries take no defaults, so a probe without `type` is tcp: http keys are refused."""
    validator = schema_validator()
    web = {"web": {"backends": ["127.0.0.1:80"]}}
    assert validator.is_valid({"services": web, "canaries": [{"address": "10.0.0.1:53",
                                                              "probe": {"interval": "1s"}}]})
    assert not validator.is_valid({"services": web, "canaries": [{"address": "10.0.0.1:53",
                                                                  "probe": {"path": "/"}}]})


def test_each_sink_kind_checks_its_own_options() -> None:
    """`type` picks the sink's options: nginx's `file` is refused on a haproxy sink, and a
    binding takes the options of some sink kind only."""
    validator = schema_validator()
    assert not validator.is_valid({"sinks": {"lb": {"type": "haproxy", "file": "x"}}})
    assert not validator.is_valid({"sinks": {"lb": {"socket": "/run/x.sock"}}})
    assert validator.is_valid({"services": {"web": {
        "backends": ["127.0.0.1:80"], "sinks": ["lb", {"sink": "lb", "backend": "be"}]}}})
    assert not validator.is_valid({"services": {"web": {
        "backends": ["127.0.0.1:80"], "sinks": [{"sink": "lb", "bogus": 1}]}}})


@pytest.mark.parametrize("value", ["${PORT}", "${PORT:-80}", "x${A}y"])
def test_env_references_go_where_the_loader_substitutes(value: str) -> None:
    """A `${VAR}` stands in for any scalar (the loader substitutes before it parses)."""
    validator = schema_validator()
    assert validator.is_valid({"max_in_flight": value, "api": {"listen": value},
                               "services": {"web": {"backends": [value],
                                                    "probe": {"interval": value}}}})
