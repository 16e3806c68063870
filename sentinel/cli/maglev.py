"""`sentinel maglev build|diff|lookup`: Maglev tables from the command line.

    sentinel maglev build --backends A,B,C [--weights 1,1,2] [--size 65537]
                          [--mode stable|fresh] [--down B] [--out FILE.maglev]
    sentinel maglev diff OLD NEW       (either file of each published pair)
    sentinel maglev lookup FILE KEY    (KEY: a client address, 192.0.2.7:51234)

Backends given as `host:port` are canonicalised exactly as the sink does, so
`build` prints the same sha256 as a running sentinel with those backends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from sentinel.cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from sentinel.config.node import Node
from sentinel.errors import ConfigError
from sentinel.extras import missing
from sentinel.sinks.maglev.options import parse_table_size
from sentinel.sinks.maglev.table import (
    DEFAULT_TABLE_SIZE,
    NO_BACKEND,
    Member,
    Mode,
    Table,
    build,
    key_of,
    lookup,
    read_files,
    sidecar,
    table_files,
)


def add_maglev_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `maglev` and its subcommands on the top-level subparsers `sub`."""
    maglev = sub.add_parser("maglev", parents=[common], help="build, compare and query "
                            "Maglev lookup tables")
    cmds = maglev.add_subparsers(dest="maglev_command", required=True)
    b = cmds.add_parser("build", parents=[common], help="build a table, print its balance")
    b.add_argument("--backends", required=True, help="comma-separated keys (host:port)")
    b.add_argument("--weights", help="comma-separated weights, one per backend (default 1)")
    b.add_argument("--size", type=int, default=DEFAULT_TABLE_SIZE, help="slots, a prime")
    b.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.STABLE.value)
    b.add_argument("--down", default="", help="comma-separated backends to treat as down")
    b.add_argument("--out", help="write FILE.maglev and FILE.json (as the sink does)")
    d = cmds.add_parser("diff", parents=[common], help="slots moved between two tables")
    d.add_argument("old")
    d.add_argument("new")
    lk = cmds.add_parser("lookup", parents=[common], help="the backend a client key maps to")
    lk.add_argument("file")
    lk.add_argument("key")


def run_maglev(args: argparse.Namespace) -> int:
    """Dispatch a parsed `sentinel maglev ...` command."""
    needs = missing("maglev", f"sentinel maglev {args.maglev_command}")
    if needs and args.maglev_command != "lookup":  # a lookup reads the file as it is
        print(f"sentinel: {needs}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.maglev_command == "build":
            return _build(args)
        if args.maglev_command == "diff":
            return _diff(args.old, args.new)
        return _lookup(args.file, args.key)
    except ConfigError as exc:
        print(f"sentinel maglev: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # stdout's reader went away: the CLI's main ends quietly
    except (OSError, ValueError) as exc:
        print(f"sentinel maglev: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _members(args: argparse.Namespace) -> list[Member]:
    parse_table_size(Node(args.size, "--size", 1, 1, ""))
    names = _split(args.backends)
    if len(set(names)) != len(names) or not names:
        raise ConfigError(None, "--backends: give one or more distinct names")
    weights = [int(w) for w in _split(args.weights)] if args.weights else [1] * len(names)
    if len(weights) != len(names) or any(w < 0 for w in weights):
        raise ConfigError(None, f"--weights: give {len(names)} weights >= 0")
    down = set(_split(args.down))
    if down - set(names):
        raise ConfigError(None, f"--down: unknown backends {', '.join(sorted(down - set(names)))}")
    return [Member(name=n, key=key_of(n), weight=0 if n in down else w, configured_weight=w,
                   up=n not in down) for n, w in zip(names, weights, strict=True)]


def _build(args: argparse.Namespace) -> int:
    members = _members(args)
    if args.out and not (parent := table_files(args.out)[0].parent).is_dir():
        # as cp, tee and a shell's `>` do: a mistyped path is not made up silently
        raise ConfigError(None, f"--out: directory {parent} does not exist")
    started = time.perf_counter()
    table = build(members, args.size, Mode(args.mode))
    elapsed = (time.perf_counter() - started) * 1000
    doc = sidecar(table, generation=1, state="ok" if table.filled else "empty", service="cli")
    up = sum(1 for m in members if m.eligible)
    print(f"table_size {table.size}, {len(members)} backends ({up} up), mode {table.mode}, "
          f"built in {elapsed:.1f} ms")
    print(f"sha256 {doc['sha256']}")
    _print_balance(table)
    if up < len(members):
        everyone = [Member(m.name, m.key, m.configured_weight, m.configured_weight, True)
                    for m in members]
        _print_disruption(build(everyone, table.size, table.mode), table)
    if args.out:
        from sentinel.files import write_atomic

        table_path, doc_path = table_files(args.out)
        write_atomic(table_path, table.to_bytes())
        write_atomic(doc_path, json.dumps(doc, indent=1).encode() + b"\n")
        print(f"wrote {table_path} and {doc_path}")
    return EXIT_OK


def _print_balance(table: Table) -> None:
    counts = table.counts()
    total = sum(m.weight for m in table.members if m.eligible)
    width = max(len(m.name) for m in table.members)
    print(f"{'backend':<{width}}  {'weight':>6}  {'slots':>8}  {'share':>7}  {'/ideal':>7}")
    ratios = []
    for member, count in zip(table.members, counts, strict=True):
        ratio = "-"
        if member.eligible and total:
            ideal = table.size * member.weight / total
            ratios.append(count / ideal)
            ratio = f"{count / ideal:.4f}"
        print(f"{member.name:<{width}}  {member.weight:>6}  {count:>8}  "
              f"{100 * count / table.size:>6.2f}%  {ratio:>7}")
    if ratios:
        print(f"balance: max/ideal {max(ratios):.4f}, min/ideal {min(ratios):.4f}")


def _print_disruption(before: Table, after: Table) -> None:
    moved = int((before.slots != after.slots).sum())
    down = [i for i, m in enumerate(after.members) if not m.eligible]
    lost = sum(before.counts()[i] for i in down)
    print(f"vs all up: {moved} slots moved ({100 * moved / after.size:.2f}%); the down "
          f"backends held {lost} ({100 * lost / after.size:.2f}%), the minimum")


def _diff(old_path: str, new_path: str) -> int:
    import numpy as np

    old_doc, old_bytes = read_files(old_path)
    new_doc, new_bytes = read_files(new_path)
    old = np.frombuffer(old_bytes, dtype="<u4")
    new = np.frombuffer(new_bytes, dtype="<u4")
    if old.size != new.size:
        raise ValueError(f"tables differ in size ({old.size} and {new.size} slots): every "
                         "slot maps anew")
    old_names, new_names = old_doc["backends"], new_doc["backends"]

    def name(names: list[str], index: int) -> str:
        return "(none)" if index == NO_BACKEND else names[index]

    changed = np.flatnonzero(old != new)
    moves = Counter((name(old_names, int(old[i])), name(new_names, int(new[i])))
                    for i in changed)
    print(f"{table_files(old_path)[0]} (generation {old_doc.get('generation')}) -> "
          f"{table_files(new_path)[0]} (generation {new_doc.get('generation')})")
    print(f"{changed.size} of {old.size} slots moved ({100 * changed.size / old.size:.2f}%)")
    for (src, dst), count in sorted(moves.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {src} -> {dst}: {count}")
    return EXIT_OK


def _lookup(path: str, key: str) -> int:
    doc, table = read_files(path)
    slot, index = lookup(table, key)
    if index == NO_BACKEND:
        print(f"{key_of(key)}: slot {slot} -> no backend")
        return EXIT_FAIL
    name, address = doc["backends"][index], doc.get("addresses", doc["backends"])[index]
    where = f" ({address})" if address and address != name else ""
    print(f"{key_of(key)}: slot {slot} -> {name}{where}")
    return EXIT_OK
