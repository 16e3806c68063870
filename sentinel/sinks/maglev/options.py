"""Configuration of the `maglev` sink (it takes no per-service options).

    sinks:
      ring: {type: maglev, table_size: 65537, dir: maglev, mode: stable,
             on_empty: keep, min_interval: 100ms}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sentinel.config.node import Node
from sentinel.config.sections import writable
from sentinel.config.tables import Choice, Duration, Field, FilePath, Rule, Section, scalar
from sentinel.extras import missing
from sentinel.sinks.maglev.table import (
    DEFAULT_TABLE_SIZE,
    MAX_TABLE_SIZE,
    Mode,
    is_prime,
    nearest_primes,
)


@dataclass(frozen=True, slots=True)
class MaglevOptions:
    """Table size (a prime), where the files go, the mode and the empty-pool policy."""

    table_size: int = DEFAULT_TABLE_SIZE
    dir: str | None = None  # None: STATE_DIR/maglev
    mode: Mode = Mode.STABLE
    on_empty: str = "keep"  # keep | clear
    min_interval: float = 0.1


def parse_table_size(node: Node) -> int:
    """A prime number of slots; anything else names the nearest primes."""
    size = node.as_int(2, MAX_TABLE_SIZE)
    if not is_prime(size):
        below, above = nearest_primes(size)
        nearest = f"{below} or {above}" if below else str(above)
        raise node.error(f"must be a prime (Maglev permutations need it), got {size}; "
                         f"nearest primes: {nearest}")
    return size


def _directory(node: Node) -> str:
    """`dir`, relative to the config file's directory; refused where no directory can be
    (a file there, or in the way)."""
    return writable(node, str(Path(node.file).resolve().parent / node.as_path()),
                    directory=True)


_D = MaglevOptions()
_MODES, _ON_EMPTY = tuple(Mode), ("keep", "clear")
OPTIONS = Section(
    Field("table_size", Rule(parse_table_size, scalar(
        {"type": "integer", "minimum": 2, "maximum": MAX_TABLE_SIZE}, r"^\s*\d+\s*$")),
          "slots in the lookup table: a prime, at least 100 times the backends for an even "
          "spread", _D.table_size),
    Field("dir", Rule(_directory, FilePath().schema()), "where the table files go, relative "
          "to this file (default: STATE_DIR/maglev)"),
    Field("mode", Choice(_MODES),
          "stable: only a failed backend's slots move; fresh: the table is rebuilt from the "
          "live backends", _D.mode),
    Field("on_empty", Choice(_ON_EMPTY),
          "with no backend up: keep the last table, or clear it", _D.on_empty),
    Field("min_interval", Duration(positive=False), "tables are written at most this often",
          _D.min_interval))


def parse_options(node: Node) -> MaglevOptions:
    """`{type: maglev, table_size: 65537, dir: ..., mode: stable|fresh, on_empty:
    keep|clear, min_interval: 100ms}`; a relative `dir` is relative to the config file."""
    e = OPTIONS.parse(node)
    needs = missing("maglev", "the maglev sink")
    if needs:
        raise node.error(needs)
    return MaglevOptions(
        table_size=OPTIONS.get(e, "table_size"), dir=OPTIONS.get(e, "dir"),
        mode=Mode(OPTIONS.get(e, "mode")), on_empty=OPTIONS.get(e, "on_empty"),
        min_interval=OPTIONS.get(e, "min_interval"))


def parse_binding(node: Node) -> None:
    """A service's reference takes no options."""
    node.as_map(set())
