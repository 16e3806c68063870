"""YAML with positions: every value knows its file, line, column and key path.

`load_yaml` composes the document with PyYAML (never constructing arbitrary
objects), substitutes `${VAR}` from the environment in string scalars, and
wraps everything in `Node`s whose accessors raise `ConfigError`s that say
where the value is and what was expected.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from sentinel.errors import ConfigError, Mark

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_constructor = yaml.SafeLoader("")


class Node:
    """One YAML value with where it came from."""

    __slots__ = ("_value", "column", "file", "key_column", "key_line", "line", "path")

    def __init__(self, value: Any, file: str, line: int, column: int, path: str) -> None:
        self._value = value
        self.file = file
        self.line = line
        self.column = column
        self.path = path
        self.key_line = line  # where this entry's key is, when it is in a mapping
        self.key_column = column

    @property
    def mark(self) -> Mark:
        """Where this value is."""
        return Mark(self.file, self.line, self.column, self.path)

    def error(self, message: str) -> ConfigError:
        """A ConfigError pointing at this value."""
        return ConfigError(self.mark, message)

    def describe(self) -> str:
        """The value as an error message quotes it."""
        v = self._value
        if isinstance(v, dict):
            return "a mapping"
        if isinstance(v, list):
            return "a list"
        if v is None:
            return "nothing"
        if isinstance(v, bool):
            return "true" if v else "false"  # as YAML spells it, not Python
        return repr(v) if isinstance(v, str) else str(v)

    # -- structure ----------------------------------------------------------

    @property
    def is_map(self) -> bool:
        """True for a mapping."""
        return isinstance(self._value, dict)

    @property
    def is_list(self) -> bool:
        """True for a sequence."""
        return isinstance(self._value, list)

    @property
    def raw(self) -> Any:
        """The plain Python value (scalars only; mappings and lists hold Nodes)."""
        return self._value

    def items(self, allowed: set[str] | None = None) -> Iterator[tuple[str, Node]]:
        """The mapping's entries; an unknown key (not in `allowed`) is an error."""
        mapping = self.as_map()
        for key, node in mapping.items():
            if allowed is not None and key not in allowed:
                hint = ("expected one of: " + ", ".join(sorted(allowed)) if allowed
                        else "no keys are allowed here")
                raise node.key_error(f"unknown key {key!r}; {hint}")
            yield key, node

    def as_map(self, allowed: set[str] | None = None) -> Mapping[str, Node]:
        """This value as a mapping of key -> Node, checking keys when `allowed` is given."""
        if self._value is None:
            return {}
        if not isinstance(self._value, dict):
            raise self.error(f"expected a mapping, got {self.describe()}")
        if allowed is not None:
            for _ in self.items(allowed):
                pass
        return self._value

    def as_list(self) -> list[Node]:
        """This value as a list of Nodes."""
        if not isinstance(self._value, list):
            raise self.error(f"expected a list, got {self.describe()}")
        return self._value

    def without(self, *keys: str) -> Node:
        """A copy of this mapping without `keys` (for handing options on to a plug-in)."""
        kept = {k: v for k, v in self.as_map().items() if k not in keys}
        return Node(kept, self.file, self.line, self.column, self.path)

    def get(self, key: str) -> Node | None:
        """The entry `key` of a mapping, or None."""
        return self.as_map().get(key)

    def key_error(self, message: str) -> ConfigError:
        """An error placed at this entry's key (unknown keys point at the key)."""
        return ConfigError(Mark(self.file, self.key_line, self.key_column, self.path), message)

    # -- scalars ------------------------------------------------------------

    def as_str(self) -> str:
        """A non-empty string (numbers are accepted as their text)."""
        v = self._value
        if isinstance(v, bool) or v is None or isinstance(v, dict | list):
            raise self.error(f"expected a string, got {self.describe()}")
        return str(v)

    def as_choice(self, allowed: tuple[str, ...]) -> str:
        """One of the strings in `allowed`."""
        value = self.as_str()
        if value not in allowed:
            raise self.error(f"expected one of {', '.join(allowed)}; got {self.describe()}")
        return value

    def as_bool(self) -> bool:
        """true/false."""
        if isinstance(self._value, bool):
            return self._value
        if isinstance(self._value, str) and self._value.lower() in ("true", "false"):
            return self._value.lower() == "true"
        raise self.error(f"expected true or false, got {self.describe()}")

    def as_int(self, low: int | None = None, high: int | None = None) -> int:
        """An integer, optionally within low..high."""
        v = self._value
        if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"expected an integer, got {self.describe()}")
        _check_range(self, v, low, high)
        return v

    def as_float(self, low: float | None = None, high: float | None = None) -> float:
        """A number, optionally within low..high."""
        v = self._value
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise self.error(f"expected a number, got {self.describe()}") from None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.error(f"expected a number, got {self.describe()}")
        _check_range(self, float(v), low, high)
        return float(v)

    def as_duration(self, *, positive: bool = True) -> float:
        """A duration in seconds: `250ms`, `2s`, `1m`, `1h` or a bare number of seconds."""
        v = self._value
        if isinstance(v, int | float) and not isinstance(v, bool):
            seconds = float(v)
        elif isinstance(v, str) and (m := _DURATION.match(v)):
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
        else:
            raise self.error(
                f"expected a duration such as 250ms, 2s, 1m, 1h or a number of seconds, "
                f"got {self.describe()}"
            )
        if not math.isfinite(seconds):  # .inf would stall the schedule forever
            raise self.error(f"must be a finite duration, got {self.describe()}")
        if seconds < 0 or (positive and seconds == 0):
            raise self.error(f"must be {'more than' if positive else 'at least'} 0, got {v}")
        return seconds


def _check_range(node: Node, v: float, low: float | None, high: float | None) -> None:
    if low is not None and high is not None and not low <= v <= high:
        raise node.error(f"must be {low}..{high}, got {node.describe()}")
    if low is not None and v < low:
        raise node.error(f"must be at least {low}, got {node.describe()}")
    if high is not None and v > high:
        raise node.error(f"must be at most {high}, got {node.describe()}")


def load_yaml(text: str, file: str, env: Mapping[str, str] | None = None) -> Node:
    """Parse `text` into Nodes; YAML syntax errors become ConfigErrors with a position."""
    environ = os.environ if env is None else env
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            # the problem is often found far below its cause (an unclosed `[` at end of file)
            start = exc.context_mark
            problem += f" ({exc.context} started at {start.line + 1}:{start.column + 1})"
        raise ConfigError(Mark(file, line, col, ""), f"YAML syntax error: {problem}") from None
    if root is None:
        return Node({}, file, 1, 1, "")
    return _wrap(root, file, "", environ)


def _wrap(node: yaml.Node, file: str, path: str, env: Mapping[str, str]) -> Node:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if isinstance(node, yaml.MappingNode):
        entries: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = str(_constructor.construct_object(key_node))
            if key in entries:
                mark = Mark(file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                            _join(path, key))
                raise ConfigError(mark, f"duplicate key {key!r}")
            entry = _wrap(value_node, file, _join(path, key), env)
            entry.key_line = key_node.start_mark.line + 1
            entry.key_column = key_node.start_mark.column + 1
            if _is_empty(value_node):  # `key:` with nothing: point at the key
                entry.line, entry.column = entry.key_line, entry.key_column
            entries[key] = entry
        return Node(entries, file, line, col, path)
    if isinstance(node, yaml.SequenceNode):
        items = [_wrap(v, file, f"{path}[{i}]", env) for i, v in enumerate(node.value)]
        return Node(items, file, line, col, path)
    value = _constructor.construct_object(node)
    if isinstance(value, str) and "${" in value:
        value = _substitute(value, Node(value, file, line, col, path), env)
    return Node(value, file, line, col, path)


def _is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style


def _substitute(text: str, where: Node, env: Mapping[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise where.error(f"environment variable {name} is not set")

    return _ENV.sub(replace, text)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
