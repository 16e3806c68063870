"""`sentinel.config.node`: durations, positions and key paths, `${VAR}` substitution."""

from __future__ import annotations

import re
import textwrap
from fractions import Fraction

import pytest

from sentinel.config.model import InitState
from sentinel.config.node import Node, load_yaml
from sentinel.errors import ConfigError

DOC = textwrap.dedent("""\
    services:
      web:
        backends:
          - 10.0.0.1:80
          - {name: b, address: 10.0.0.2:80}
        probe:
          interval:
    """)


def _scalar(value: object) -> Node:
    return Node(value, "f.yaml", 3, 7, "a.b")


@pytest.mark.parametrize(("value", "seconds"), [
    ("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), ("1h", 3600.0), ("1.5s", 1.5),
    ("90", 90.0), (3, 3.0), (0.5, 0.5), (" 10s ", 10.0),
])
def test_duration(value: object, seconds: float) -> None:
    """Durations: ms, s, m, h suffixes, bare numbers (as text or YAML numbers) are seconds."""
    assert _scalar(value).as_duration() == seconds


@pytest.mark.parametrize("value", ["2 parsecs", "1d", "-1s", "s", "", True, None, "1e3s", ".inf"])
def test_bad_duration(value: object) -> None:
    """Anything else is an error at the value's position, quoting what was found."""
    with pytest.raises(ConfigError, match=r"^f\.yaml:3:7: a\.b: expected a duration"):
        _scalar(value).as_duration()


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_duration(value: float) -> None:
    """YAML's .inf and .nan are rejected: an infinite interval would stall the schedule."""
    with pytest.raises(ConfigError, match="must be a finite duration"):
        _scalar(value).as_duration()


def test_zero_duration() -> None:
    """Zero is refused unless the key allows it (`positive=False`, e.g. slow_start)."""
    with pytest.raises(ConfigError, match="must be more than 0, got 0s"):
        _scalar("0s").as_duration()
    assert _scalar("0s").as_duration(positive=False) == 0.0


def test_positions_and_paths() -> None:
    """Each node knows its 1-based line and column and its key path, list indexes included."""
    root = load_yaml(DOC, "s.yaml")
    web = root.as_map()["services"].as_map()["web"]
    first, second = web.as_map()["backends"].as_list()
    assert (first.line, first.column, first.path) == (4, 9, "services.web.backends[0]")
    address = second.as_map()["address"]
    assert (address.line, address.column) == (5, 28)
    assert address.path == "services.web.backends[1].address"
    assert (address.key_line, address.key_column) == (5, 19)
    assert str(address.error("bad")) == "s.yaml:5:28: services.web.backends[1].address: bad"


def test_empty_value_points_at_its_key() -> None:
    """`interval:` with nothing after it is reported at the key, not at the next line."""
    interval = load_yaml(DOC, "s.yaml").as_map()["services"].as_map()["web"].as_map()[
        "probe"].as_map()["interval"]
    with pytest.raises(ConfigError) as caught:
        interval.as_duration()
    assert str(caught.value).startswith("s.yaml:7:7: services.web.probe.interval: expected")
    assert "got nothing" in str(caught.value)


def test_unknown_key_points_at_the_key() -> None:
    """An unknown key's error is placed on the key and lists the allowed ones."""
    node = load_yaml("a: 1\nzz:\n  x: 1\n", "s.yaml")
    with pytest.raises(ConfigError) as caught:
        node.as_map({"a", "b"})
    assert str(caught.value) == "s.yaml:2:1: zz: unknown key 'zz'; expected one of: a, b"


def test_duplicate_key() -> None:
    """A key given twice in one mapping is an error at the second one."""
    with pytest.raises(ConfigError) as caught:
        load_yaml("a:\n  b: 1\n  c: 2\n  b: 3\n", "s.yaml")
    assert str(caught.value) == "s.yaml:4:3: a.b: duplicate key 'b'"


def test_env_substitution() -> None:
    """`${VAR}` and `${VAR:-default}` are filled from the given environment."""
    root = load_yaml("a: ${HOST}:${PORT:-80}\nb: x${EMPTY:-}y\n", "s.yaml", env={"HOST": "h"})
    assert root.as_map()["a"].as_str() == "h:80"
    assert root.as_map()["b"].as_str() == "xy"


def test_env_missing() -> None:
    """An unset `${VAR}` without a default is an error at the value."""
    with pytest.raises(ConfigError) as caught:
        load_yaml("k:\n  t: 'x ${NOPE}'\n", "s.yaml", env={})
    assert str(caught.value) == "s.yaml:2:6: k.t: environment variable NOPE is not set"


def test_env_reference_unquoted_inside_flow_braces_and_brackets() -> None:
    """SPEC's own sink line, `{type: webhook, ..., secret: ${HOOK_SECRET}}`, loads:
    `${VAR}` written unquoted inside `{...}` or `[...]` is a value, as it is in block
    style (plain YAML ends a value at `{`); a key keeps it as written, as in block style."""
    root = load_yaml("ops: {type: webhook, secret: ${HOOK}}\n"
                     "list: [${A}, '${B:-b}', x${C:-}y]\n"
                     "map: {${K}: v}\n", "s.yaml", env={"HOOK": "whsec_1", "A": "a", "K": "k"})
    values = root.as_map()
    assert values["ops"].as_map()["secret"].as_str() == "whsec_1"
    assert [n.as_str() for n in values["list"].as_list()] == ["a", "b", "xy"]
    assert list(values["map"].as_map()) == ["${K}"]


def test_env_missing_inside_flow_braces_is_placed_at_its_value() -> None:
    """An unset `${VAR}` inside `{...}` is the usual error, at the value's own column."""
    with pytest.raises(ConfigError) as caught:
        load_yaml("sinks:\n  ops: {type: webhook, secret: ${HOOK}}\n", "s.yaml", env={})
    assert str(caught.value) == ("s.yaml:2:32: sinks.ops.secret: environment variable HOOK "
                                 "is not set")


def test_text_with_the_shield_characters_is_read_as_written() -> None:
    """A file that holds the private-use characters `${VAR}`'s braces are read as keeps
    them (and is read as plain YAML: `${VAR}` in braces is then refused as before)."""
    root = load_yaml("a: \ue000${X}\ue001\n", "s.yaml", env={"X": "x"})
    assert root.as_map()["a"].as_str() == "\ue000x\ue001"


def test_yaml_syntax_error_names_where_the_construct_started() -> None:
    """A syntax error found at end of file also says where the unclosed construct began."""
    with pytest.raises(ConfigError) as caught:
        load_yaml("a: [1, 2\n", "s.yaml")
    assert str(caught.value) == ("s.yaml:2:1: YAML syntax error: expected ',' or ']', but got "
                                 "'<stream end>' (while parsing a flow sequence started at 1:4)")


def test_scalar_types() -> None:
    """Integers and booleans accept their text forms; ranges are checked; booleans are
    quoted as YAML spells them."""
    assert _scalar("42").as_int(1, 100) == 42
    assert _scalar("False").as_bool() is False
    with pytest.raises(ConfigError, match=r"must be 1\.\.65535, got 70000"):
        _scalar(70000).as_int(1, 65535)
    with pytest.raises(ConfigError, match=r"expected an integer, got true$"):
        _scalar(True).as_int()


def test_merge_key_own_keys_win_and_the_first_merged_mapping_wins() -> None:
    """`<<: *a` merges a mapping under this one (its own keys win); of `<<: [*a, *b]` the
    first wins; merged values keep the position of their text and take the using path."""
    root = load_yaml(textwrap.dedent("""\
        x-a: &a {interval: 1s, timeout: 1s, path: /a}
        x-b: &b {interval: 2s, jitter: 10%}
        probe:
          <<: [*a, *b]
          timeout: 500ms
        """), "s.yaml")
    probe = root.as_map()["probe"].as_map()
    assert {k: v.raw for k, v in probe.items()} == {
        "interval": "1s", "timeout": "500ms", "path": "/a", "jitter": "10%"}
    path = probe["path"]
    assert (path.line, path.column, path.path) == (1, 43, "probe.path")


def test_an_aliased_value_is_reported_where_the_alias_is() -> None:
    """`interval: *slow` with a bad anchored value: the error points at the alias."""
    root = load_yaml("x-slow: &slow 2 parsecs\nprobe:\n  interval: *slow\n", "s.yaml")
    with pytest.raises(ConfigError, match=r"^s\.yaml:3:13: probe\.interval: expected a dur"):
        root.as_map()["probe"].as_map()["interval"].as_duration()


def test_keys_are_taken_as_written() -> None:
    """A key is its text: `010` is not octal 8, `yes` is not True, `2024-01-01` not a date."""
    root = load_yaml("010: a\nyes: b\n2024-01-01: c\n~: d\n", "s.yaml")
    assert list(root.as_map()) == ["010", "yes", "2024-01-01", "~"]


@pytest.mark.parametrize("value", [10**400, "1" + "0" * 5000, "1e999"])
def test_huge_numbers_are_errors(value: object) -> None:
    """Integers too large for a float, or too long to convert, are errors, not OverflowError."""
    with pytest.raises(ConfigError):
        _scalar(value).as_float()
    with pytest.raises(ConfigError):
        _scalar(value).as_duration()
    if isinstance(value, str) and value.isdigit():
        with pytest.raises(ConfigError, match="expected an integer"):
            _scalar(value).as_int()


@pytest.mark.parametrize(("value", "share"), [
    ("7.2%", Fraction(72, 1000)), (0.072, Fraction(72, 1000)), ("50 %", Fraction(1, 2)),
    (1, Fraction(1)), ("0%", Fraction(0)),
])
def test_share(value: object, share: Fraction) -> None:
    """Shares read exactly, as a fraction or a percent."""
    assert _scalar(value).as_share() == share


@pytest.mark.parametrize(("value", "message"), [
    ("60%", "must be 0..0.5 (50%), got '60%'"), (0.6, "must be 0..0.5 (50%), got 0.6"),
    ("NaN", "expected a fraction (0.25) or a percent (25%), got 'NaN'"),
    ("Infinity%", "expected a fraction (0.25) or a percent (25%), got 'Infinity%'"),
    (True, "expected a fraction (0.25) or a percent (25%), got true"),
])
def test_bad_share(value: object, message: str) -> None:
    """Out of range, not a number, or a boolean: an error quoting the value."""
    with pytest.raises(ConfigError, match=re.escape(f"f.yaml:3:7: a.b: {message}")):
        _scalar(value).as_share(Fraction(1, 2))


def test_a_choice_returns_the_allowed_item_itself() -> None:
    """`as_choice` gives back the item of `allowed` (an enum member stays one) and names
    every allowed word when the value is none of them."""
    assert load_yaml("up", "s.yaml").as_choice(tuple(InitState)) is InitState.UP
    with pytest.raises(ConfigError, match=r"^s\.yaml:1:1: expected one of a, b; got 'c'$"):
        load_yaml("c", "s.yaml").as_choice(("a", "b"))
