"""Field tables: each configuration section's keys, what each value must be, its default
and what it means, written once.

The loader reads a section through its table: `Section.parse` refuses a key the table
does not list (with the table's keys in the message) and `Section.get` parses a value by
its field's kind, so what the loader accepts is what the tables say. `sentinel schema`
walks the same tables (`Shape.schema`) to print the JSON Schema that editors and CI
check a file against, so the two cannot drift. What a schema cannot say (a rule across
fields, a reference to a sink defined elsewhere, a file that must exist) stays in the
loader's code, next to the table.

A kind is a `Kind`: `parse(node)` for the loader, `schema()` for JSON Schema (draft
2020-12). Every scalar may be written as text holding a `${VAR}` (the loader substitutes
the environment in every string before a kind sees it), so each scalar kind's schema
also admits `#/$defs/env`; integers and the like also take their text ("5"), as the
loader does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Generic, TypeVar

from sentinel.config.node import MAX_DURATION, Node, Word
from sentinel.errors import ConfigError
from sentinel.timefmt import duration

T = TypeVar("T")
JsonSchema = dict[str, Any]
_UNSET: Any = object()

ENV: JsonSchema = {"$ref": "#/$defs/env"}
DURATION: JsonSchema = {"$ref": "#/$defs/duration"}
DURATION_OR_ZERO: JsonSchema = {"$ref": "#/$defs/duration_or_zero"}
_NUMBER_TEXT = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
_UNIT = r"\s*(ms|s|m|h)?\s*$"
DEFS: dict[str, JsonSchema] = {
    "env": {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
            "description": "${VAR} or ${VAR:-default}: replaced by the environment variable "
                           "when the file is loaded"},
    "duration": {"anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION},
        {"type": "string", "pattern": r"^\s*(?=[\d.]*[1-9])\d+(\.\d+)?" + _UNIT}, ENV],
        "description": "250ms, 2s, 1m, 1h or a number of seconds; more than 0"},
    "duration_or_zero": {"anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?" + _UNIT}, ENV],
        "description": "250ms, 2s, 1m, 1h or a number of seconds; 0 allowed"},
}


def scalar(native: JsonSchema, text: str | None = None) -> JsonSchema:
    """A scalar's schema: its native form, the text the loader also reads (a regex the
    whole text must match), or text with a `${VAR}` in it."""
    forms = [native] if text is None else [native, {"type": "string", "pattern": text}]
    return {"anyOf": [*forms, ENV]}


class Shape:
    """Something a configuration value can be, as JSON Schema describes it."""

    __slots__ = ()

    def schema(self) -> JsonSchema:
        """This shape as a JSON Schema (draft 2020-12) fragment."""
        raise NotImplementedError

    def dump(self, value: object) -> object:
        """A default as the configuration file would spell it (the schema's `default`)."""
        return value


class Kind(Shape, Generic[T]):
    """A shape the loader parses a value by."""

    __slots__ = ()

    def parse(self, node: Node) -> T:
        """The value of `node`, or a ConfigError at it."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a section: its name, what its value must be, what it means, the value
    the loader takes when the key is absent (None: no value, or one computed from other
    keys, which `doc` then explains) and, for a required key, the error when it is
    missing."""

    name: str
    kind: Shape
    doc: str
    default: object = None
    required: str | None = None

    def schema(self) -> JsonSchema:
        """The value's schema with the field's description and default."""
        out = {**self.kind.schema(), "description": self.doc}
        if self.default is not None:
            out["default"] = self.kind.dump(self.default)
        return out


class Section(Kind[Mapping[str, Node]]):
    """A mapping with a fixed set of keys, one `Field` each. `extensions`: a regex for
    further keys the loader ignores (`x-` at the top, for YAML anchors)."""

    __slots__ = ("by_name", "doc", "extensions", "fields", "keys")

    def __init__(self, *fields: Field, doc: str = "", extensions: str | None = None) -> None:
        self.fields = fields
        self.by_name = {f.name: f for f in fields}
        self.keys = set(self.by_name)
        self.doc = doc
        self.extensions = extensions

    def __getitem__(self, name: str) -> Field:
        return self.by_name[name]

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def parse(self, node: Node) -> Mapping[str, Node]:
        """The section's entries (null is an empty section); an unknown key is an error
        naming the keys the table allows."""
        return node.as_map(self.keys)

    def get(self, entries: Mapping[str, Node], name: str, fallback: object = _UNSET) -> Any:
        """The parsed value of `name`, else `fallback` if given (a default computed from
        other keys), else the field's default."""
        field = self.by_name[name]
        if name in entries:
            kind = field.kind
            assert isinstance(kind, Kind), f"{name}: parsed by its section's own code"
            return kind.parse(entries[name])
        return field.default if fallback is _UNSET else fallback

    def without(self, *names: str) -> Section:
        """This section less some keys (`defaults` takes a service's keys but `backends`)."""
        return Section(*(f for f in self.fields if f.name not in names), doc=self.doc)

    def missing(self, node: Node, entries: Mapping[str, Node]) -> list[ConfigError]:
        """An error at `node` for each required key absent from `entries`, in table order."""
        return [node.error(f.required) for f in self.fields
                if f.required is not None and f.name not in entries]

    def require(self, node: Node, entries: Mapping[str, Node]) -> None:
        """Raise the error of the first required key absent from `entries`."""
        problems = self.missing(node, entries)
        if problems:
            raise problems[0]

    def properties(self) -> dict[str, JsonSchema]:
        """Each key's schema."""
        return {f.name: f.schema() for f in self.fields}

    def schema(self) -> JsonSchema:
        """An object with exactly these keys (null as well, when none is required)."""
        required = [f.name for f in self.fields if f.required is not None]
        out: JsonSchema = {"type": "object" if required else ["object", "null"]}
        if self.doc:
            out["description"] = self.doc
        out["properties"] = self.properties()
        if self.extensions:
            out["patternProperties"] = {self.extensions: True}
        out["additionalProperties"] = False
        if required:
            out["required"] = required
        return out


class Variants(Kind[str]):
    """A section whose `key` (a probe's `type`, a breaker's `kind`) picks the other keys it
    takes: `common` holds the keys of every variant (the key itself among them), each
    variant's own section the rest. `default`: the variant when the key is absent."""

    __slots__ = ("common", "default", "doc", "key", "merged_under_defaults", "variants")

    def __init__(self, key: str, variants: Mapping[str, Section], *, common: Section,
                 default: str | None, doc: str = "", merged_under_defaults: bool = False
                 ) -> None:
        self.key = key
        self.variants = dict(variants)
        self.common = common
        self.default = default
        self.doc = doc
        self.merged_under_defaults = merged_under_defaults

    def merged(self) -> Variants:
        """These variants where `defaults` are merged underneath: the schema cannot tell
        the variant of a section without the key (the default may set it)."""
        return Variants(self.key, self.variants, common=self.common, default=self.default,
                        doc=self.doc, merged_under_defaults=True)

    def keys(self, variant: str) -> set[str]:
        """The keys a section of `variant` takes."""
        return self.common.keys | self.variants[variant].keys

    def parse(self, node: Node) -> str:
        """The section's variant, checked against the table, and then its other keys
        against what that variant allows."""
        kind_node = node.as_map().get(self.key)
        kind = kind_node.as_choice(tuple(self.variants)) if kind_node else self.default
        if kind is None:
            raise node.error(f"`{self.key}` is required: one of {', '.join(self.variants)}")
        node.as_map(self.keys(kind))
        return kind

    def all_fields(self) -> Iterator[Field]:
        """Every field of every variant (the common ones first), each section once."""
        seen: list[Section] = []
        for section in (self.common, *self.variants.values()):
            if not any(section is s for s in seen):
                seen.append(section)
                yield from section

    def schema(self) -> JsonSchema:
        """Every variant's keys at the top (so `additionalProperties: false` holds and
        editors complete them); `if`/`then` per variant allows only its own keys and
        checks their values. A key that two variants read differently (`window`: a
        choice for nginx, a duration for circuit) takes either at the top."""
        forms: dict[str, list[JsonSchema]] = {}
        for field in self.all_fields():
            schemas = forms.setdefault(field.name, [])
            if field.schema() not in schemas:
                schemas.append(field.schema())
        properties = {name: s[0] if len(s) == 1 else {"anyOf": s} for name, s in forms.items()}
        selector: JsonSchema = {"anyOf": [{"enum": list(self.variants)}, ENV],
                                "description": self.common[self.key].doc}
        if self.default is not None:
            selector["default"] = self.default
        properties[self.key] = selector
        branches = []
        for name, section in self.variants.items():
            condition: JsonSchema = {"properties": {self.key: {"const": name}}}
            if name != self.default or self.merged_under_defaults:
                condition["required"] = [self.key]
            then: JsonSchema = {"propertyNames": {"enum": sorted(self.keys(name))}}
            own = {f.name: f.schema() for f in section}
            if own:
                then["properties"] = own
            required = [f.name for f in section if f.required is not None]
            if required:
                then["required"] = required
            branches.append({"if": condition, "then": then})
        required_key = self.common[self.key].required is not None
        out: JsonSchema = {"type": "object" if required_key else ["object", "null"]}
        if self.doc:
            out["description"] = self.doc
        out.update(properties=properties, additionalProperties=False, allOf=branches)
        if required_key:
            out["required"] = [self.key]
        return out


# -- scalar kinds ---------------------------------------------------------------


class Str(Kind[str]):
    """Text (a number is taken as its text)."""

    __slots__ = ()

    def parse(self, node: Node) -> str:
        """The text."""
        return node.as_str()

    def schema(self) -> JsonSchema:
        """A string, or a number read as its text."""
        return {"type": ["string", "number"]}


class Name(Kind[str]):
    """A name (a backend's): text with something other than blanks in it, as events, sinks
    and the API's paths carry it."""

    __slots__ = ()

    def parse(self, node: Node) -> str:
        """The name as written."""
        return blank_refused(node.as_str(), node)

    def schema(self) -> JsonSchema:
        """A string with something other than blanks in it."""
        return {"type": ["string", "number"], "pattern": r"\S"}


def blank_refused(name: str, node: Node, *, key: bool = False) -> str:
    """`name` (`node`'s value, or with `key` the key it is written under: a service's or
    a sink's), or an error there when it is blank: no event, sink or API path could
    name it."""
    if not name.strip():
        message = f"a name must not be blank, got {name!r}"
        raise node.key_error(message) if key else node.error(message)
    return name


class FilePath(Kind[str]):
    """A file system path: not blank, no NUL."""

    __slots__ = ()

    def parse(self, node: Node) -> str:
        """The path as written."""
        return node.as_path()

    def schema(self) -> JsonSchema:
        """A string with something other than blanks in it."""
        return {"type": ["string", "number"], "pattern": r"\S"}


class Url(Kind[str]):
    """An http:// or https:// URL with a host."""

    __slots__ = ()

    def parse(self, node: Node) -> str:
        """The URL as written."""
        return node.as_url()

    def schema(self) -> JsonSchema:
        """http(s)://, an optional user, a host (a name or a bracketed IPv6 address), an
        optional port, then anything without blanks."""
        return scalar({"type": "string", "pattern": URL_PATTERN})


PORT = r"0*([1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d{2}|655[0-2]\d|6553[0-5])"
"""A port 1..65535 as text."""
URL_HOST = r"(\[[0-9A-Fa-f:.]+\]|[^\s/?#:@\[\]]+)"
URL_PATTERN = rf"^https?://([^\s/?#@]*@)?{URL_HOST}(:\d*)?([/?#]\S*)?$"


@dataclass(frozen=True, slots=True)
class Choice(Kind[Word]):
    """One of a few words (str, a Literal, a StrEnum: the word parsed keeps its type)."""

    options: tuple[Word, ...]

    def parse(self, node: Node) -> Word:
        """The word, if it is one of the options (`Node.as_choice`)."""
        return node.as_choice(self.options)

    def schema(self) -> JsonSchema:
        """One of the words."""
        return scalar({"enum": list(self.options)})


class Bool(Kind[bool]):
    """true or false (in any case, as YAML 1.2 and the loader read them)."""

    __slots__ = ()

    def parse(self, node: Node) -> bool:
        """The flag."""
        return node.as_bool()

    def schema(self) -> JsonSchema:
        """A boolean, or the text true/false in any case."""
        return scalar({"type": "boolean"}, "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$")


def _bounds(low: float | None, high: float | None) -> JsonSchema:
    return {**({"minimum": low} if low is not None else {}),
            **({"maximum": high} if high is not None else {})}


@dataclass(frozen=True, slots=True)
class Int(Kind[int]):
    """An integer, optionally within low..high."""

    low: int | None = None
    high: int | None = None

    def parse(self, node: Node) -> int:
        """The integer."""
        return node.as_int(self.low, self.high)

    def schema(self) -> JsonSchema:
        """An integer in range, or its digits as text."""
        return scalar({"type": "integer", **_bounds(self.low, self.high)}, r"^\s*-?\d+\s*$")


@dataclass(frozen=True, slots=True)
class Float(Kind[float]):
    """A number, optionally within low..high."""

    low: float | None = None
    high: float | None = None

    def parse(self, node: Node) -> float:
        """The number."""
        return node.as_float(self.low, self.high)

    def schema(self) -> JsonSchema:
        """A number in range, or its text."""
        return scalar({"type": "number", **_bounds(self.low, self.high)},
                      rf"^\s*{_NUMBER_TEXT}\s*$")


@dataclass(frozen=True, slots=True)
class Share(Kind[Fraction]):
    """A share within 0..high, written as a fraction (0.25) or a percent (25%), exactly."""

    high: Fraction = Fraction(1)

    def parse(self, node: Node) -> Fraction:
        """The share as an exact fraction."""
        return node.as_share(self.high)

    def dump(self, value: object) -> object:
        """A percent, as operators mostly write it."""
        return f"{float(value) * 100:g}%" if isinstance(value, Fraction | float | int) \
            else value

    def schema(self) -> JsonSchema:
        """A number in 0..high, or a number or percent as text."""
        return scalar({"type": "number", "minimum": 0, "maximum": float(self.high)},
                      rf"^\s*{_NUMBER_TEXT}\s*%?\s*$")


@dataclass(frozen=True, slots=True)
class Duration(Kind[float]):
    """A duration in seconds: 250ms, 2s, 1m, 1h or a bare number; more than 0 unless
    `positive` is false."""

    positive: bool = True

    def parse(self, node: Node) -> float:
        """Seconds."""
        return node.as_duration(positive=self.positive)

    def dump(self, value: object) -> object:
        """250ms, 2s."""
        return duration(value) if isinstance(value, float | int) else value

    def schema(self) -> JsonSchema:
        """`#/$defs/duration` (or `duration_or_zero`)."""
        return dict(DURATION if self.positive else DURATION_OR_ZERO)


# -- structure ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapOf(Kind[dict[str, T]]):
    """A mapping of free keys (names, header names) to values of one kind. `keys`, when
    given, is the JSON Schema the keys must meet; the loader checks them in the code
    that reads the mapping."""

    value: Kind[T]
    keys: JsonSchema | None = None

    def parse(self, node: Node) -> dict[str, T]:
        """Each key with its parsed value (null is an empty mapping)."""
        return {key: self.value.parse(entry) for key, entry in node.items()}

    def schema(self) -> JsonSchema:
        """An object (or null) whose every value is of the kind."""
        out: JsonSchema = {"type": ["object", "null"], "additionalProperties": self.value.schema()}
        if self.keys is not None:
            out["propertyNames"] = self.keys
        return out


@dataclass(frozen=True, slots=True)
class Named(Shape):
    """A mapping of names to sections (services, sinks); the loader reads each entry in
    its section's own code, collecting every entry's errors."""

    value: Shape

    def schema(self) -> JsonSchema:
        """An object (or null) whose every value is of the shape, under a name that is
        not blank."""
        return {"type": ["object", "null"], "propertyNames": {"pattern": r"\S"},
                "additionalProperties": self.value.schema()}


@dataclass(frozen=True, slots=True)
class ListOf(Shape):
    """A list of items of one shape; `single`: one item alone is taken as a list of one;
    `min_items`: the least the loader accepts."""

    item: Shape
    min_items: int = 0
    single: bool = False

    def schema(self) -> JsonSchema:
        """An array of the items (or one item)."""
        array: JsonSchema = {"type": "array", "items": self.item.schema()}
        if self.min_items:
            array["minItems"] = self.min_items
        return {"anyOf": [self.item.schema(), array]} if self.single else array


@dataclass(frozen=True, slots=True)
class Either(Shape):
    """One of several shapes, told apart by form (`host:port`, or a mapping with more)."""

    shapes: tuple[Shape, ...]

    def schema(self) -> JsonSchema:
        """Any of the shapes."""
        return {"anyOf": [s.schema() for s in self.shapes]}


@dataclass(frozen=True, slots=True)
class Rule(Kind[T]):
    """A kind with its own parse function and the schema that says as much of it as
    JSON Schema can, or the shape (a section) it reads; the two sit together, in the
    module that owns the rule."""

    check: Callable[[Node], T]
    form: JsonSchema | Shape

    def parse(self, node: Node) -> T:
        """The value, as the rule's function reads it."""
        return self.check(node)

    def schema(self) -> JsonSchema:
        """The form given."""
        return self.form.schema() if isinstance(self.form, Shape) else dict(self.form)


@dataclass(frozen=True, slots=True)
class Ref(Shape):
    """A shape defined in the schema's `$defs` (the sink kinds, which the sink registry
    supplies when the schema is built)."""

    name: str

    def schema(self) -> JsonSchema:
        """A reference to `#/$defs/NAME`."""
        return {"$ref": f"#/$defs/{self.name}"}
