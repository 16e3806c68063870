"""Field tables: a kind's schema accepts what its parser accepts, and a section's keys,
defaults and required keys come out the same to the loader and to the schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from sentinel.config.node import Node
from sentinel.config.sections import ADDRESS
from sentinel.config.tables import (
    DEFS,
    Bool,
    Choice,
    Duration,
    Field,
    FilePath,
    Float,
    Int,
    Kind,
    Section,
    Share,
    Str,
    Url,
)
from sentinel.errors import ConfigError

KINDS: list[tuple[str, Kind[Any], list[object], list[object]]] = [
    ("duration", Duration(), ["250ms", "2s", "1m", "1h", "1.5s", " 2 s ", 3, 0.5],
     ["0", 0, "0s", "-1s", -1, "2 parsecs", "1d", "", True, None, 1e12, float("inf")]),
    ("duration-or-zero", Duration(positive=False), ["0", 0, "0s", "250ms"],
     ["-1", -1, "soon"]),
    ("int", Int(1, 10), [1, 10, "5", " 7 "], [0, 11, "x", 1.5, True, None]),
    ("float", Float(0, 1), [0, 1, 0.5, "0.25", "1e-1"], [-0.1, 1.1, "x", True]),
    # a percent written as text is bounded by the loader alone ("101%" passes the schema)
    ("share", Share(), ["50%", "7.2 %", 0.25, "0.25", 0, 1], [1.5, "x", True, None]),
    ("bool", Bool(), [True, False, "true", "FALSE"], ["yes", 1, None]),
    ("choice", Choice(("a", "b")), ["a", "b"], ["c", 1, None]),
    ("str", Str(), ["x", 5], [True, None, ["x"], {"a": 1}]),
    ("path", FilePath(), ["/x", "rel", 5], ["", "  ", True, None]),
    ("url", Url(), ["http://h", "https://h:8080/p?q", "http://[::1]:80/"],
     ["http://", "ftp://h", "h", "http://h x", 5]),
    ("address", ADDRESS, ["10.0.0.1:80", "[::1]:443", "web-1.example:8080", "h:00080"],
     ["10.0.0.1", "h:0", "h:70000", "a;b:80", "::1:80", "[::1]", 80]),
]


def _parses(kind: Kind[Any], value: object) -> bool:
    try:
        kind.parse(Node(value, "t.yaml", 1, 1, "k"))
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize(("kind", "good", "bad"), [k[1:] for k in KINDS],
                         ids=[k[0] for k in KINDS])
def test_schema_and_parser_agree(kind: Kind[Any], good: list[object], bad: list[object]
                                 ) -> None:
    """Each value the parser takes, the kind's schema takes; each it refuses, the schema
    refuses (for these samples: the everyday values and mistakes)."""
    validator = jsonschema.Draft202012Validator({**kind.schema(), "$defs": DEFS})
    assert [(v, _parses(kind, v), validator.is_valid(v)) for v in good] == [
        (v, True, True) for v in good]
    assert [(v, _parses(kind, v), validator.is_valid(v)) for v in bad] == [
        (v, False, False) for v in bad]


SECTION = Section(
    Field("name", Str(), "a name", required="needs `name`"),
    Field("wait", Duration(), "a wait", 2.0),
    Field("port", Int(1, 65535), "a port", required="needs `port`"),
)


def test_required_keys_and_defaults() -> None:
    """Missing required keys are reported in table order at the section; an absent key
    reads as its default, or the fallback the caller computes."""
    node = Node({}, "t.yaml", 3, 5, "s")
    assert [str(e) for e in SECTION.missing(node, {})] == [
        "t.yaml:3:5: s: needs `name`", "t.yaml:3:5: s: needs `port`"]
    assert SECTION.get({}, "wait") == 2.0
    assert SECTION.get({}, "wait", 5.0) == 5.0
    schema = SECTION.schema()
    assert schema["required"] == ["name", "port"]
    assert schema["properties"]["wait"]["default"] == "2s"


def test_unknown_key_names_the_table() -> None:
    """An unknown key is refused at the key with the table's keys, as the schema's
    `additionalProperties: false` refuses it."""
    node = Node({"name": Node("x", "t.yaml", 1, 7, "s.name"),
                 "prot": Node(80, "t.yaml", 2, 7, "s.prot")}, "t.yaml", 1, 1, "s")
    with pytest.raises(ConfigError) as caught:
        SECTION.parse(node)
    assert str(caught.value) == ("t.yaml:2:7: s.prot: unknown key 'prot'; expected one of: "
                                 "name, port, wait")
    assert SECTION.schema()["additionalProperties"] is False


def test_a_section_with_nothing_required_may_be_empty() -> None:
    """`api:` with nothing under it is an empty section to the loader, so null is allowed
    where no key is required."""
    optional = Section(Field("wait", Duration(), "a wait"))
    assert optional.parse(Node(None, "t.yaml", 1, 1, "s")) == {}
    assert jsonschema.Draft202012Validator(
        {**optional.schema(), "$defs": DEFS}).is_valid(None)
    assert not jsonschema.Draft202012Validator(
        {**SECTION.schema(), "$defs": DEFS}).is_valid(None)
