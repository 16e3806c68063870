"""Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software
Network Load Balancer", NSDI 2016, section 3.4), pure: no I/O, no Trio.

The contract, so that any process on any machine (and a data plane in any
language) computes the same table from the same inputs:

    H(seed, text)  = the first 8 bytes of SHA-256(seed || UTF-8 text), read as an
                     unsigned little-endian 64-bit integer
    backend key    = its canonical address: `host:port`, the host lower-cased, an
                     IP literal in its compressed form, IPv6 in brackets
                     (`10.0.0.1:80`, `[2001:db8::1]:80`, `web.example:8080`)
    offset         = H("sentinel-maglev-offset:", key) mod M
    skip           = H("sentinel-maglev-skip:", key) mod (M - 1) + 1
    permutation    = (offset + j * skip) mod M, j = 0, 1, ...   (M prime)
    index          = a backend's position when all configured backends are sorted
                     by (key, name): the turn order and the number stored in the table
    flow slot      = H("sentinel-maglev-flow:", client key) mod M, the client key
                     canonicalised like a backend key (`192.0.2.7:51234`)

Population is the paper's: backends take turns in index order, each claiming
the next empty slot of its permutation. Weights follow Katran's weighted
variant (credit per round): in every round each backend gains its weight in
credit and claims a slot once the credit reaches the largest weight. Each
backend stops at its quota, M * weight / sum(weights) rounded by largest
remainder (ties to the lower index), so counts are the ideal rounded and
unweighted counts differ by at most one. Weight 0 claims nothing.

Which backends fill the table: those `up` with weight > 0 ("eligible"), the
primaries while any primary is eligible, else the `backup: true` ones.

- `fresh`: the paper's table over the eligible backends only. Best balance; a
  failure also moves some slots that did not belong to the failed backend.
- `stable` (default): the table over every backend of the pool (weights: the
  published one when eligible, else the configured one), then each slot owned
  by a backend that is not eligible goes to the eligible backend that prefers it
  most: the earliest position in its permutation, ties to the lower index. A
  failure moves only the failed backends' slots and a recovery moves exactly
  those back.

Files: `NAME.maglev` holds one little-endian uint32 backend index per slot
(`NO_BACKEND`, 0xFFFFFFFF, in a table with nothing to fill it); `NAME.json`
names the backends by index with their weights and the table's sha256. The
fill itself (and how it is made fast) is in `sentinel.sinks.maglev.fill`.
"""

from __future__ import annotations

import array
import hashlib
import json
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentinel.addresses import canonical, split

if TYPE_CHECKING:  # NumPy is the `maglev` extra: imported where tables are built, so the
    import numpy as np  # contract (hashes, keys, files, lookup) and sentinel's other
    import numpy.typing as npt  # commands run without it

    from sentinel.sinks.maglev.fill import Array

DEFAULT_TABLE_SIZE = 65537
MAX_TABLE_SIZE = 1 << 24
NO_BACKEND = 0xFFFFFFFF
HASH_SCHEME = "sha256-le64/v1"  # in every sidecar, so a consumer can check it hashes alike
SEED_OFFSET = b"sentinel-maglev-offset:"
SEED_SKIP = b"sentinel-maglev-skip:"
SEED_FLOW = b"sentinel-maglev-flow:"


class Mode(StrEnum):
    """How failed backends' slots are redistributed."""

    STABLE = "stable"
    FRESH = "fresh"


# -- hashing -------------------------------------------------------------------


def hash64(seed: bytes, text: str) -> int:
    """H(seed, text): the first 8 bytes of SHA-256(seed || text), little-endian."""
    return int.from_bytes(hashlib.sha256(seed + text.encode()).digest()[:8], "little")


def key_of(text: str) -> str:
    """A backend or client key given as text: canonical (`sentinel.addresses.canonical`,
    the backend key of the contract) when it is `host:port`, else as is."""
    try:
        host, port = split(text)
    except ValueError:
        return text.strip()
    return canonical(host, port)


def permutation_params(key: str, size: int) -> tuple[int, int]:
    """(offset, skip) of a backend key in a table of `size` slots."""
    return hash64(SEED_OFFSET, key) % size, hash64(SEED_SKIP, key) % (size - 1) + 1


def flow_slot(key: str, size: int) -> int:
    """The slot a client key (`key_of("192.0.2.7:51234")`) maps to."""
    return hash64(SEED_FLOW, key) % size


# -- primes --------------------------------------------------------------------


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin (exact for n < 3.3e24)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in small:
        return True
    if any(n % p == 0 for p in small):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def nearest_primes(n: int) -> tuple[int | None, int]:
    """The largest prime below `n` (None when there is none) and the smallest above."""
    below = next((p for p in range(n - 1, 1, -1) if is_prime(p)), None)
    above = next(p for p in range(n + 1, 2 * n + 3) if is_prime(p))
    return below, above


# -- tables --------------------------------------------------------------------


def _reassign(table: Array, offsets: Array, skips: Array, eligible: Array, size: int) -> None:
    """Give each slot owned by a non-eligible backend to the eligible backend (indices
    `eligible`, ascending) with that slot earliest in its permutation; ties to the lower."""
    import numpy as np

    need = np.zeros(size, dtype=bool)
    need[np.flatnonzero(~np.isin(table, eligible))] = True
    remaining = int(need.sum())
    off, skip = offsets[eligible], skips[eligible]
    block = max(1, min(size, (1 << 18) // eligible.size))
    for first in range(0, size, block):
        if not remaining:
            return
        pos = np.arange(first, min(size, first + block), dtype=np.int64)
        slots = (off + pos[:, None] * skip) % size  # rows: positions, columns: backends
        rows, cols = np.nonzero(need[slots])  # row-major: ascending (position, index)
        found, at = np.unique(slots[rows, cols], return_index=True)
        table[found] = eligible[cols[at]]
        need[found] = False
        remaining -= found.size


@dataclass(frozen=True, slots=True)
class Member:
    """One configured backend as the table sees it."""

    name: str
    key: str
    weight: int  # published weight (0 unless up)
    configured_weight: int
    up: bool
    backup: bool = False
    address: str = ""

    @property
    def eligible(self) -> bool:
        """Fills the table: up with weight > 0."""
        return self.up and self.weight > 0


@dataclass(frozen=True, slots=True)
class Table:
    """A built table: `slots[i]` is an index into `members` (sorted by key, name)."""

    size: int
    mode: Mode
    members: tuple[Member, ...]
    slots: npt.NDArray[np.uint32]

    @property
    def filled(self) -> bool:
        """False when no backend was eligible (every slot NO_BACKEND)."""
        return bool(self.slots[0] != NO_BACKEND)

    def to_bytes(self) -> bytes:
        """The `.maglev` file: one little-endian uint32 per slot."""
        return self.slots.astype("<u4").tobytes()

    def counts(self) -> list[int]:
        """Slots owned per member index."""
        import numpy as np

        filled = self.slots[self.slots != NO_BACKEND]
        return [int(c) for c in np.bincount(filled, minlength=len(self.members))]


def build(members: list[Member], size: int, mode: Mode) -> Table:
    """The table for `members` (any order); every slot `NO_BACKEND` when none is eligible.
    Needs NumPy (the `maglev` extra)."""
    import numpy as np

    from sentinel.sinks.maglev.fill import populate

    ordered = tuple(sorted(members, key=lambda m: (m.key, m.name)))
    params = [permutation_params(m.key, size) for m in ordered]
    offsets = np.array([p[0] for p in params], dtype=np.int64)
    skips = np.array([p[1] for p in params], dtype=np.int64)
    primaries = [i for i, m in enumerate(ordered) if not m.backup]
    backups = [i for i, m in enumerate(ordered) if m.backup]
    pool = next((group for group in (primaries, backups)
                 if any(ordered[i].eligible for i in group)), [])
    eligible = np.array([i for i in pool if ordered[i].eligible], dtype=np.int64)
    table = np.full(size, -1, dtype=np.int64)
    if mode is Mode.FRESH and eligible.size:
        weights = np.array([ordered[i].weight for i in eligible], dtype=np.int64)
        table = eligible[populate(offsets[eligible], skips[eligible], weights, size)]
    elif eligible.size:
        members_pool = np.array(pool, dtype=np.int64)
        weights = np.array([m.weight if m.eligible else m.configured_weight
                            for m in (ordered[i] for i in pool)], dtype=np.int64)
        table = members_pool[populate(offsets[members_pool], skips[members_pool], weights,
                                      size)]
        _reassign(table, offsets, skips, eligible, size)
    slots = np.where(table >= 0, table, NO_BACKEND).astype(np.uint32)
    slots.flags.writeable = False
    return Table(size, mode, ordered, slots)


def sidecar(table: Table, *, generation: int, state: str, service: str) -> dict[str, object]:
    """The `.json` document published beside the `.maglev` file (SPEC 7) and served by
    GET /v1/maglev/SERVICE; `state` is ok, fail_static or empty."""
    return {
        "service": service,
        "table_size": table.size,
        "backends": [m.name for m in table.members],
        "addresses": [m.address or m.key for m in table.members],
        "weights": [m.weight for m in table.members],
        "generation": generation,
        "sha256": hashlib.sha256(table.to_bytes()).hexdigest(),
        "mode": table.mode.value,
        "state": state,
        "hash": HASH_SCHEME,
    }


def lookup(table: bytes | npt.NDArray[np.uint32], key: str) -> tuple[int, int]:
    """(slot, backend index) for a client key in a serialised or loaded table."""
    if isinstance(table, bytes):  # a data plane reads the file without NumPy
        slot = flow_slot(key_of(key), len(table) // 4)
        return slot, int.from_bytes(table[4 * slot:4 * slot + 4], "little")
    slot = flow_slot(key_of(key), int(table.size))
    return slot, int(table[slot])


def table_files(path: str | Path) -> tuple[Path, Path]:
    """(`.maglev`, `.json`) for either file of a published pair."""
    given = Path(path)
    return given.with_suffix(".maglev"), given.with_suffix(".json")


def read_files(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """A published pair (sidecar, table bytes); ValueError when they do not match or the
    sidecar does not describe the table (names for every index), OSError when one cannot
    be read."""
    table_path, doc_path = table_files(path)
    try:
        doc = json.loads(doc_path.read_text())
    except RecursionError:
        raise ValueError(f"{doc_path}: not a maglev sidecar (nested too deeply)") from None
    table = table_path.read_bytes()
    if not isinstance(doc, dict) or not isinstance(doc.get("table_size"), int):
        raise ValueError(f"{doc_path}: not a maglev sidecar")
    if len(table) != 4 * doc["table_size"]:
        raise ValueError(f"{table_path}: {len(table)} bytes, expected {4 * doc['table_size']}")
    if hashlib.sha256(table).hexdigest() != doc.get("sha256"):
        raise ValueError(f"{table_path}: sha256 differs from {doc_path.name} "
                         f"(a newer table may be landing; read again)")
    names = doc.get("backends")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{doc_path}: `backends` must be a list of names, got "
                         f"{json.dumps(names)[:60]}")
    addresses = doc.get("addresses", names)
    if not isinstance(addresses, list) or len(addresses) != len(names) \
            or not all(isinstance(a, str) for a in addresses):
        raise ValueError(f"{doc_path}: `addresses` must list one address per backend")
    slots = array.array("I", table)  # no NumPy: `lookup` and forwarders run without it
    if sys.byteorder == "big":
        slots.byteswap()
    highest = max((s for s in set(slots) if s != NO_BACKEND), default=None)
    if highest is not None and highest >= len(names):
        raise ValueError(f"{table_path}: a slot holds backend index {highest}, but "
                         f"{doc_path.name} names {len(names)} backends")
    return doc, table
