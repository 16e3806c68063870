"""YAML with positions: every value knows its file, line, column and key path.

`load_yaml` composes the document with PyYAML (never constructing arbitrary
objects): libyaml's parser (in C, part of PyYAML's wheels) reads the text and
a composer here builds the nodes without recursing; a document that parser or
composer does not take as it is (a syntax error, nesting too deep, an undefined
alias, a byte-order mark), or an install without libyaml, goes through PyYAML's
pure-Python loader instead, so every error is PyYAML's own, as before. It
then substitutes `${VAR}` from the environment in string scalars, and
wraps everything in `Node`s whose accessors raise `ConfigError`s that say
where the value is and what was expected. Whatever the bytes, a ConfigError
with a position is the only way it fails: the text is checked (UTF-8, no
control characters), aliases are measured before they are expanded, and
nesting, alias expansion and numbers are bounded.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    DocumentEndEvent,
    ScalarEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

try:
    from yaml._yaml import CParser  # libyaml's parser
except ImportError:  # a PyYAML built without libyaml: the pure-Python loader only
    CParser = None  # type: ignore[assignment,misc]

from sentinel.errors import ConfigError, Mark

Word = TypeVar("Word", bound=str)  # a choice's words: str, a Literal, a StrEnum

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# `${VAR}` unquoted inside `{...}` or `[...]` (SPEC's own `{type: webhook, ..., secret:
# ${HOOK_SECRET}}`) is not YAML as it stands: in a flow collection `{` and `}` end a plain
# value. Its braces are read as two private-use characters instead (one character for
# one: every position stays) and given back in every string before substitution.
_SHIELD = str.maketrans("{}", "\ue000\ue001")
_UNSHIELD = str.maketrans("\ue000\ue001", "{}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION = 10 * 365 * 86400.0
MAX_DEPTH = 64  # a config is a handful of levels deep
MAX_ALIAS_NODES = 100_000  # values that aliases may add: a bomb is refused in milliseconds
_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
_SCALAR_TAGS = {_TAG + "str": "a string", _TAG + "int": "an integer", _TAG + "float": "a number",
                _TAG + "bool": "true or false", _TAG + "null": "null"}
# kept as the text: a string is its text, no setting is a date (2024-13-45 too), and `<<`
# as a value is the word
_AS_WRITTEN = {_TAG + "str", _TAG + "timestamp", _MERGE}
_COLLECTION_TAGS: dict[type[yaml.Node], str] = {yaml.MappingNode: _TAG + "map",
                                                yaml.SequenceNode: _TAG + "seq"}
_constructor = yaml.SafeLoader("")
# SafeLoader's implicit tags (int, bool, null...): (kind, value, implicit) -> tag
_resolve: Callable[[type[yaml.Node], str | None, Any], str] = yaml.resolver.Resolver().resolve
# text libyaml may read otherwise than PyYAML goes through the pure-Python loader
_PYTHON_ONLY = re.compile(
    yaml.reader.Reader.NON_PRINTABLE.pattern  # what PyYAML's reader refuses
    + "|\ufeff"  # a byte-order mark: libyaml skips it, PyYAML counts it as a column
    + "|\t"  # tabs: libyaml takes them as separators where PyYAML refuses them
    + "|[|>][-+0-9]*#"  # a block scalar's header, then a comment with no space (`|#`)
    + "|(?m:^%)")  # directives: libyaml takes `%YAML 1.1#`


class Node:
    """One YAML value with where it came from."""

    __slots__ = ("_value", "column", "file", "key_column", "key_line", "line", "path",
                 "warnings")

    def __init__(self, value: Any, file: str, line: int, column: int, path: str,
                 warnings: list[ConfigError] | None = None) -> None:
        self._value = value
        self.file = file
        self.line = line
        self.column = column
        self.path = path
        self.key_line = line  # where this entry's key is, when it is in a mapping
        self.key_column = column
        self.warnings = [] if warnings is None else warnings  # shared by the whole document

    @property
    def mark(self) -> Mark:
        """Where this value is."""
        return Mark(self.file, self.line, self.column, self.path)

    def error(self, message: str) -> ConfigError:
        """A ConfigError pointing at this value."""
        return ConfigError(self.mark, message)

    def warn(self, message: str) -> None:
        """Note something risky but valid about this value (`sentinel check` prints it)."""
        self.warnings.append(self.error(message))

    def derive(self, value: Any) -> Node:
        """`value` in this node's place: a part of it, or a mapping rebuilt from it."""
        node = Node(value, self.file, self.line, self.column, self.path, self.warnings)
        node.key_line, node.key_column = self.key_line, self.key_column
        return node

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
        return _shorten(v) if isinstance(v, str) else _shorten(str(v), quote=False)

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
        return self.derive({k: v for k, v in self.as_map().items() if k not in keys})

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

    def as_path(self) -> str:
        """A file system path: not empty or blank, no NUL character."""
        text = self.as_str()
        if not text.strip():
            raise self.error("must not be empty")
        if "\0" in text:
            raise self.error("a path cannot hold a NUL character")
        return text

    def as_url(self) -> str:
        """An http:// or https:// URL with a host (and a valid port, when it has one)."""
        text = self.as_str()
        try:
            parts = urlsplit(text)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (
                parts.port is None or parts.port > 0)
        except ValueError:  # `http://[::1`, port 99999
            ok = False
        if not ok or any(not char.isprintable() or char.isspace() for char in text):
            raise self.error(f"expected an http:// or https:// URL with a host, got "
                             f"{self.describe()}")
        return text

    def as_choice(self, allowed: tuple[Word, ...]) -> Word:
        """One of the words in `allowed`, returned as that very item (so a Literal or an
        enum member keeps its type): the one parser of a choice of words."""
        value = self.as_str()
        for option in allowed:
            if value == option:
                return option
        raise self.error(f"expected one of {', '.join(allowed)}; got {self.describe()}")

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
        if isinstance(v, str) and re.fullmatch(r"-?\d{1,4000}", v.strip()):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"expected an integer, got {self.describe()}")
        _check_range(self, v, low, high)
        return v

    def as_float(self, low: float | None = None, high: float | None = None) -> float:
        """A number, optionally within low..high."""
        v = self._value
        try:
            number = float(v) if isinstance(v, str | int | float) and not isinstance(v, bool) \
                else math.nan
        except (ValueError, OverflowError):  # "abc", an integer of 400 digits
            number = math.nan
        if not math.isfinite(number):
            raise self.error(f"expected a number, got {self.describe()}")
        _check_range(self, number, low, high)
        return number

    @property
    def is_percent(self) -> bool:
        """True for a value written as a percent (`25%`): a count-or-share key (`min_up`)
        asks before choosing how to read it."""
        return isinstance(self._value, str) and self._value.strip().endswith("%")

    def as_share(self, high: Fraction = Fraction(1)) -> Fraction:
        """A share within 0..`high`, written as a fraction (0.25) or a percent (25%), read
        exactly: 7.2% is 72/1000, where 7.2 / 100 in floats is 0.07200000000000001. The
        one parser of a percent-or-fraction."""
        v = self._value
        text = "" if isinstance(v, bool) or v is None else str(v).strip()
        try:
            share = Fraction(Decimal(text.removesuffix("%").strip()))
        except (InvalidOperation, ValueError, OverflowError):  # "abc", NaN, Infinity
            raise self.error(f"expected a fraction (0.25) or a percent (25%), got "
                             f"{self.describe()}") from None
        if self.is_percent:
            share /= 100
        if not 0 <= share <= high:
            raise self.error(f"must be 0..{float(high):g} ({float(high * 100):g}%), got "
                             f"{self.describe()}")
        return share

    def as_duration(self, *, positive: bool = True) -> float:
        """A duration in seconds: `250ms`, `2s`, `1m`, `1h` or a bare number of seconds."""
        v = self._value
        if isinstance(v, int | float) and not isinstance(v, bool):
            seconds = v if isinstance(v, float) else float(max(min(v, 2**64), -(2**64)))
        elif isinstance(v, str) and (m := _DURATION.match(v)):
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
        else:
            raise self.error(
                f"expected a duration such as 250ms, 2s, 1m, 1h or a number of seconds, "
                f"got {self.describe()}"
            )
        if not math.isfinite(seconds):  # .inf would stall the schedule forever
            raise self.error(f"must be a finite duration, got {self.describe()}")
        if seconds > MAX_DURATION:  # far-off times overflow dates in /v1/state and the log
            raise self.error(f"must be at most 10 years, got {self.describe()}")
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


def load_yaml(source: str | bytes, file: str, env: Mapping[str, str] | None = None) -> Node:
    """Parse `source` (UTF-8 bytes or text) into Nodes.

    Whatever the input, the only error is a ConfigError with a position: bytes
    that are not UTF-8, characters YAML forbids, syntax errors, tags other than
    the plain scalar ones, values a tag cannot hold, recursive aliases, nesting
    deeper than MAX_DEPTH and aliases that expand past MAX_ALIAS_NODES values.
    Merge keys (`<<: *defaults`) are supported: the mapping's own keys win, and
    of several merged mappings (`<<: [*a, *b]`) the first wins.
    """
    text = _decode(source, file) if isinstance(source, bytes) else source
    shielded = "${" in text and "\ue000" not in text and "\ue001" not in text
    if shielded:
        text = _ENV.sub(lambda m: m.group(0).translate(_SHIELD), text)
    root = _compose_fast(text)
    if root is _UNTAKEN:
        root = _compose(text, file)
    if root is None:
        return Node({}, file, 1, 1, "")
    if "*" in text:  # an alias is written `*name`: without a `*` there is none to measure
        _AliasCheck(file).walk(root)
    return _Wrapper(file, os.environ if env is None else env, shielded).wrap(root, "")


# -- reading the text ---------------------------------------------------------


_UNTAKEN = ScalarNode("", "")  # what _compose_fast answers for a document it leaves


def _compose_fast(text: str) -> yaml.Node | None:
    """The document composed from libyaml's events, as `_Loader` composes it (the same
    nodes, tags, positions and `_Alias`es), or `_UNTAKEN` when libyaml is missing or the
    document is not a plain success: any error, nesting past MAX_DEPTH, an undefined or
    repeated anchor, a second document. Those go to `_compose`, so every error a user
    sees comes from one place. A loop with a stack, not recursion: libyaml's own
    composer recurses in C, and a deep document would overflow the C stack."""
    if CParser is None or _PYTHON_ONLY.search(text):
        return _UNTAKEN
    parser = CParser(text)
    try:
        return _build(parser)
    except (yaml.YAMLError, ValueError):  # ValueError: libyaml failed with no error to tell
        return _UNTAKEN
    finally:
        parser.dispose()


def _build(parser: Any) -> yaml.Node | None:
    """`_compose_fast`'s loop: one event at a time, the open collections on a stack."""
    get = parser.get_event
    get()  # StreamStartEvent
    if isinstance(get(), StreamEndEvent):  # else a DocumentStartEvent
        return None
    anchors: dict[str, yaml.Node] = {}
    open_: list[yaml.CollectionNode] = []  # the collections being filled, innermost last
    keys: list[yaml.Node | None] = []  # per open collection: a mapping's key awaiting a value
    root: yaml.Node | None = None
    while not isinstance(event := get(), DocumentEndEvent):
        if isinstance(event, CollectionEndEvent):
            open_.pop().end_mark = event.end_mark
            keys.pop()
            continue
        node = _node(event, anchors, open_, keys)
        if node is None:
            return _UNTAKEN
        if not open_:
            root = node
        elif isinstance(open_[-1], SequenceNode):
            open_[-1].value.append(node)
        elif keys[-1] is None:
            keys[-1] = node
        else:
            open_[-1].value.append((keys[-1], node))
            keys[-1] = None
        if isinstance(node, yaml.CollectionNode):
            open_.append(node)
            keys.append(None)
    return root if isinstance(get(), StreamEndEvent) else _UNTAKEN


def _node(event: Any, anchors: dict[str, yaml.Node], open_: list[yaml.CollectionNode],
          keys: list[yaml.Node | None]) -> yaml.Node | None:
    """The node an alias, scalar or collection start event opens, as `_Loader` composes
    it; None when PyYAML might read that part of the text otherwise or refuse it."""
    kind = type(event)
    if kind is AliasEvent:
        target = anchors.get(event.anchor)
        return None if target is None else _Alias(target, event.anchor, event.start_mark)
    if len(open_) >= MAX_DEPTH or event.anchor in anchors or event.tag is not None:
        return None  # libyaml takes tags PyYAML refuses (`!a?`, `!+1`)
    node: yaml.Node
    if kind is ScalarEvent:
        if not event.style and not _same_plain(event.value, open_, keys):
            return None
        node = ScalarNode(_resolve(ScalarNode, event.value, event.implicit), event.value,
                          event.start_mark, event.end_mark, event.style)
    else:
        cls = SequenceNode if kind is SequenceStartEvent else MappingNode
        node = cls(_resolve(cls, None, event.implicit), [], event.start_mark, None,
                   event.flow_style)
    if event.anchor is not None:
        anchors[event.anchor] = node
    return node


def _same_plain(value: str, open_: list[yaml.CollectionNode], keys: list[yaml.Node | None]) -> bool:
    """Whether PyYAML reads this plain scalar as libyaml did. In a flow collection
    libyaml takes `a?b` where PyYAML ends `a` at the `?`. An empty one (`key:` with
    nothing, `- ` , `---`) is placed after what precedes it by PyYAML and before what
    follows by libyaml: alike only as a mapping's value, which takes its key's position
    (unless the key is a merge, whose errors point at the value)."""
    if not value:
        key = keys[-1] if keys else None
        return key is not None and key.tag != _MERGE
    return "?" not in value or not (open_ and open_[-1].flow_style)


def _compose(text: str, file: str) -> yaml.Node | None:
    """The document composed by PyYAML's pure-Python loader; its errors as ConfigErrors."""
    try:
        loader = _Loader(text, file)  # the reader checks every character here
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, file) from None


def _decode(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start:exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError(Mark(file, line, column, ""),
                          f"not UTF-8: byte 0x{data[exc.start]:02x}; save the file as "
                          f"UTF-8") from None


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: str) -> ConfigError:
    """PyYAML's reader refuses control characters with an index, not a mark."""
    index = exc.position
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return ConfigError(Mark(file, line, column, ""),
                       f"control character U+{ord(char):04X} is not allowed in YAML; write "
                       f"it as an escape in a double-quoted string")


def _syntax_error(exc: yaml.MarkedYAMLError, file: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid YAML"
    if exc.context and exc.context_mark and exc.context_mark is not mark:
        # the problem is often found far below its cause (an unclosed `[` at end of file)
        start = exc.context_mark
        problem += f" ({exc.context} started at {start.line + 1}:{start.column + 1})"
    return ConfigError(Mark(file, line, col, ""), f"YAML syntax error: {problem}")


class _Alias(yaml.Node):
    """One use of an anchor (`*name`): the anchored node, and where the alias is written.
    PyYAML hands back the anchored node itself, which loses the alias's position and
    makes a recursive alias a cycle in the tree."""

    id = "alias"

    def __init__(self, target: yaml.Node, name: str, start_mark: yaml.Mark) -> None:
        super().__init__("", target, start_mark, start_mark)
        self.target = target
        self.name = name


class _Loader(yaml.SafeLoader):
    """PyYAML's safe composer with a depth limit (its composer recurses per level, so a
    deep document would otherwise end in RecursionError) and aliases kept visible."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self._file = file
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """One node; an alias becomes an `_Alias`, a node too deep an error."""
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()  # type: ignore[no-untyped-call]
            if event.anchor not in self.anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
            return _Alias(self.anchors[event.anchor], event.anchor, event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ConfigError(Mark(self._file, mark.line + 1, mark.column + 1, ""),
                                  f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# -- YAML nodes -> Nodes ------------------------------------------------------



class _AliasCheck:
    """Measures the document before anything is built: what every alias expands to (a
    bomb is refused at once, not after minutes of expanding) and how deep the expansion
    nests, and finds aliases inside their own anchor. Anchors come before their aliases,
    so walking the text in order has every complete anchor measured when it is used."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels)
        self.open: set[int] = set()  # collections being walked: an alias to one is a cycle
        self.expanded = 0  # values the aliases add, so far

    def walk(self, node: yaml.Node, depth: int = 0) -> tuple[int, int]:
        """(values, levels) of `node` once its aliases are expanded."""
        if isinstance(node, _Alias):
            return self._alias(node, depth)
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return 1, 1
        self.open.add(id(node))
        children = (node.value if isinstance(node, yaml.SequenceNode)
                    else [part for pair in node.value for part in pair])
        values, levels = 1, 0
        for child in children:
            size, height = self.walk(child, depth + 1)
            values, levels = min(values + size, MAX_ALIAS_NODES + 1), max(levels, height)
        self.open.discard(id(node))
        self.measured[id(node)] = (values, levels + 1)
        return values, levels + 1

    def _alias(self, alias: _Alias, depth: int) -> tuple[int, int]:
        where = Mark(self.file, alias.start_mark.line + 1, alias.start_mark.column + 1, "")
        target = alias.target
        if id(target) in self.open:
            raise ConfigError(where, f"recursive alias: *{alias.name} is inside its own anchor")
        values, levels = self.measured.get(id(target), (1, 1))  # a scalar: one value
        self.expanded += values
        if self.expanded > MAX_ALIAS_NODES:
            raise ConfigError(where, f"aliases expand to more than {MAX_ALIAS_NODES} values "
                                     f"(this *{alias.name} to {_count(values)})")
        if depth + levels > MAX_DEPTH:
            raise ConfigError(where, f"*{alias.name} nests values more than {MAX_DEPTH} "
                                     f"levels deep")
        return values, levels


def _count(values: int) -> str:
    return f"more than {MAX_ALIAS_NODES}" if values > MAX_ALIAS_NODES else str(values)


class _Wrapper:
    """Turns one composed document (aliases already checked) into Nodes, expanding
    aliases and merge keys and substituting `${VAR}` in strings."""

    def __init__(self, file: str, env: Mapping[str, str], shielded: bool = False) -> None:
        self.file = file
        self.env = env
        self.shielded = shielded  # `${VAR}`s' braces were read as _SHIELD's characters
        self.warnings: list[ConfigError] = []

    def node(self, value: Any, line: int, column: int, path: str) -> Node:
        return Node(value, self.file, line, column, path, self.warnings)

    def mark(self, node: yaml.Node, path: str) -> Mark:
        return Mark(self.file, node.start_mark.line + 1, node.start_mark.column + 1, path)

    def wrap(self, node: yaml.Node, path: str) -> Node:
        if isinstance(node, _Alias):
            wrapped = self.wrap(node.target, path)
            # errors in an aliased value point at the alias, where it is used
            wrapped.line, wrapped.column = node.start_mark.line + 1, node.start_mark.column + 1
            return wrapped
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if node.tag != _COLLECTION_TAGS.get(type(node)):
            raise ConfigError(self.mark(node, path), f"unsupported YAML tag {_short(node.tag)}")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        items = [self.wrap(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        return self.node(items, node.start_mark.line + 1, node.start_mark.column + 1, path)

    def _mapping(self, node: yaml.MappingNode, path: str) -> Node:
        own: dict[str, Node] = {}
        merged: dict[str, Node] = {}
        merge_seen = False
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE and isinstance(key_node, yaml.ScalarNode):
                if merge_seen:
                    raise ConfigError(self.mark(key_node, path), "duplicate merge key '<<'")
                merge_seen = True
                for source in self._merge_sources(value_node, path):
                    for key, entry in source.as_map().items():
                        merged.setdefault(key, entry)
                continue
            key = self._key(key_node, path)
            if key in own:
                raise ConfigError(self.mark(key_node, _join(path, key)),
                                  f"duplicate key {key!r}")
            entry = self.wrap(value_node, _join(path, key))
            entry.key_line = key_node.start_mark.line + 1
            entry.key_column = key_node.start_mark.column + 1
            if _is_empty(value_node):  # `key:` with nothing: point at the key
                entry.line, entry.column = entry.key_line, entry.key_column
            own[key] = entry
        return self.node({**merged, **own}, node.start_mark.line + 1,
                         node.start_mark.column + 1, path)

    def _merge_sources(self, value: yaml.Node, path: str) -> list[Node]:
        """`<<: *a` or `<<: [*a, *b]`: the mappings to merge (the first wins), wrapped
        with the path of the mapping they merge into."""
        target = value.target if isinstance(value, _Alias) else value
        items = target.value if isinstance(target, yaml.SequenceNode) else [value]
        sources = [self.wrap(item, path) for item in items]
        for source in sources:
            if not source.is_map:
                raise source.error("a merge key `<<` takes a mapping or a list of mappings "
                                   f"(such as *defaults), got {source.describe()}")
        return sources

    def _key(self, node: yaml.Node, path: str) -> str:
        target = node.target if isinstance(node, _Alias) else node
        if not isinstance(target, yaml.ScalarNode):
            raise ConfigError(self.mark(node, path),
                              "a key must be a plain value, not a mapping or a list")
        key = str(target.value)  # as written: `010` stays 010, `yes` stays yes
        return key.translate(_UNSHIELD) if self.shielded else key

    def _scalar(self, node: yaml.ScalarNode, path: str) -> Node:
        value: Any
        if node.tag in _AS_WRITTEN:
            value = node.value
        elif node.tag in _SCALAR_TAGS:
            try:
                value = yaml.SafeLoader.yaml_constructors[node.tag](_constructor, node)
            # `!!int one`, 5,000 digits, `!!int` with nothing (IndexError), `!!bool no way`
            except (ValueError, OverflowError, IndexError, KeyError):
                raise ConfigError(self.mark(node, path), f"{_shorten(node.value, 40)} cannot "
                                  f"be read as {_SCALAR_TAGS[node.tag]}") from None
        else:
            raise ConfigError(self.mark(node, path), f"unsupported YAML tag {_short(node.tag)}")
        if self.shielded and isinstance(value, str):
            value = value.translate(_UNSHIELD)
        wrapped = self.node(value, node.start_mark.line + 1, node.start_mark.column + 1, path)
        if isinstance(value, str) and "${" in value:
            wrapped = wrapped.derive(_substitute(value, wrapped, self.env))
        return wrapped


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


def _shorten(text: str, limit: int = 60, *, quote: bool = True) -> str:
    """`text` for an error message, cut short: a 5,000-digit number is not quoted whole."""
    short = text if len(text) <= limit else text[:limit] + "..."
    return repr(short) if quote else short


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
