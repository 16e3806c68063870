"""Maglev population: the paper's worked example, the fill strategies against a slow
oracle, quotas and turn order, the documented hash contract, pools and modes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.sinks.maglev import fill as maglevfill
from sentinel.sinks.maglev import table as maglev
from sentinel.sinks.maglev.table import NO_BACKEND, Member, Mode, build
from tests.sinks.maglev.reference import largest_remainder, reference_table

PRIMES = [2, 3, 7, 11, 13, 101, 251, 1009]


def arr(values: list[int]) -> maglevfill.Array:
    """An int64 array."""
    return np.array(values, dtype=np.int64)


def member(name: str, *, up: bool = True, weight: int = 1, backup: bool = False) -> Member:
    """A member keyed by its name."""
    return Member(name=name, key=name, weight=weight if up else 0, configured_weight=weight,
                  up=up, backup=backup)


def owners(table: maglev.Table) -> list[str]:
    """The table as backend names (`-` for NO_BACKEND)."""
    return ["-" if s == NO_BACKEND else table.members[s].name for s in table.slots.tolist()]


def test_paper_worked_example_by_hand() -> None:
    """NSDI 2016 Table 1 and 2: B0 (offset 3, skip 4), B1 (0, 2), B2 (3, 1) in M = 7 give
    B1 B0 B1 B0 B2 B2 B0; without B1 the pseudocode gives B0 B0 B0 B0 B2 B2 B2."""
    offsets, skips = arr([3, 0, 3]), arr([4, 2, 1])
    perms = [[(o + j * k) % 7 for j in range(7)] for o, k in zip([3, 0, 3], [4, 2, 1],
                                                                  strict=True)]
    assert perms == [[3, 0, 4, 1, 5, 2, 6], [0, 2, 4, 6, 1, 3, 5], [3, 4, 5, 6, 0, 1, 2]]
    # Round 1: B0 takes 3, B1 takes 0, B2 finds 3 taken and takes 4.
    # Round 2: B0 skips 0 and 4, takes 1; B1 takes 2; B2 takes 5.
    # Round 3: B0 skips 5 and 2, takes 6: the table is full.
    assert maglevfill.populate(offsets, skips, arr([1, 1, 1]), 7).tolist() == [1, 0, 1, 0, 2, 2, 0]
    # Without B1: B0 3, B2 4; B0 0, B2 5; B0 (4 taken) 1, B2 6; B0 (5 taken) 2: full.
    kept = [0, 2]
    table = maglevfill.populate(offsets[kept], skips[kept], arr([1, 1]), 7)
    assert [kept[i] for i in table.tolist()] == [0, 0, 0, 0, 2, 2, 2]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_both_fill_strategies_equal_the_oracle(data: st.DataObject) -> None:
    """The serial fill and the per-round deferred acceptance (scanning, and jumping by
    modular inverses as in the table's tail) all produce exactly the pseudocode's table."""
    size = data.draw(st.sampled_from(PRIMES[1:]))
    n = data.draw(st.integers(1, 12))
    offsets = data.draw(st.lists(st.integers(0, size - 1), min_size=n, max_size=n))
    skips = data.draw(st.lists(st.integers(1, size - 1), min_size=n, max_size=n))
    weights = data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n).filter(any))
    expected = reference_table(offsets, skips, weights, size)
    turns = maglevfill.schedule(arr(weights), size)
    o, k = arr(offsets), arr(skips)
    assert maglevfill._fill_serial(o, k, turns, n, size).tolist() == expected
    assert maglevfill._fill_rounds(o, k, turns, n, size).tolist() == expected
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(maglevfill, "_JUMP_AFTER", 0)
        assert maglevfill._fill_rounds(o, k, turns, n, size).tolist() == expected


def test_large_tables_agree_across_strategies() -> None:
    """At production sizes (both strategies past their switch-over) the fills agree."""
    rng = np.random.default_rng(7)
    size, n = 4099, 300
    offsets = rng.integers(0, size, n)
    skips = rng.integers(1, size, n)
    turns = maglevfill.schedule(rng.integers(1, 4, n), size)
    serial = maglevfill._fill_serial(offsets, skips, turns, n, size)
    assert (maglevfill._fill_rounds(offsets, skips, turns, n, size) == serial).all()


@pytest.mark.parametrize(("weights", "size", "expected"), [
    ([1, 1, 1], 7, [3, 2, 2]),
    ([2, 1], 7, [5, 2]),
    ([1, 0, 3], 101, [25, 0, 76]),
    ([5], 13, [13]),
])
def test_quotas_are_the_ideal_rounded_by_largest_remainder(
        weights: list[int], size: int, expected: list[int]) -> None:
    """Each backend's slot count is size * w / sum(w) rounded by largest remainder."""
    assert maglevfill.quotas(arr(weights), size).tolist() == expected
    assert largest_remainder(weights, size) == expected


def test_turn_order_is_katrans_credit_rounds() -> None:
    """Weights 2 and 1: B0 claims every round, B1 every second round, after B0."""
    turns = maglevfill.schedule(arr([2, 1]), 7).tolist()
    assert turns == [0, 2, 3, 4, 6, 7, 8]  # round * 2 + index
    assert [t % 2 for t in turns] == [0, 0, 1, 0, 0, 1, 0]


def test_hash_contract_is_sha256_little_endian() -> None:
    """H(seed, key) is the first 8 bytes of SHA-256(seed || key), little-endian; offsets,
    skips and flow slots follow the module docstring."""
    digest = hashlib.sha256(b"sentinel-maglev-offset:10.0.0.1:80").digest()
    assert maglev.hash64(b"sentinel-maglev-offset:", "10.0.0.1:80") == int.from_bytes(
        digest[:8], "little") == 0xBD2034BB148AD488
    assert maglev.permutation_params("10.0.0.1:80", 65537) == (14233, 31394)
    assert maglev.flow_slot("192.0.2.7:51234", 65537) == 39368


def test_golden_table_pins_the_whole_algorithm() -> None:
    """Five backends 10.0.0.1-5:80 at M = 65537 give this table byte for byte: a change
    here breaks every consumer that shares tables, so it must be deliberate."""
    members = [member(maglev.key_of(f"10.0.0.{i}:80")) for i in range(1, 6)]
    table = build(members, 65537, Mode.STABLE)
    assert hashlib.sha256(table.to_bytes()).hexdigest() == (
        "87632f88f5753a10ded96ce096679171708265b9d6e38f4b630af1fc00bc2678")


def test_key_of_canonicalises_addresses_and_keeps_plain_names() -> None:
    """Text that is host:port is canonicalised; anything else is used as given."""
    assert maglev.key_of("[2001:DB8:0::1]:443") == "[2001:db8::1]:443"
    assert maglev.key_of("Web.Example:8080") == "web.example:8080"
    assert maglev.key_of(" web1 ") == "web1"
    assert maglev.key_of("a:b") == "a:b"


def test_primes_and_nearest_primes() -> None:
    """65537 is prime; 65536 is not and its nearest primes are 65521 and 65537."""
    assert all(maglev.is_prime(n) for n in (2, 3, 65537, 655373))
    assert not any(maglev.is_prime(n) for n in (0, 1, 65536, 65535, 561, 3215031751))
    assert maglev.nearest_primes(65536) == (65521, 65537)
    assert maglev.nearest_primes(2) == (None, 3)


def test_backups_fill_only_when_no_primary_is_up() -> None:
    """Primaries up: backups own nothing; every primary down: the backups fill the table."""
    primaries = [member("a"), member("b")]
    backups = [member("z", backup=True)]
    table = build(primaries + backups, 101, Mode.STABLE)
    assert set(owners(table)) == {"a", "b"}
    table = build([member("a", up=False), member("b", up=False), *backups], 101, Mode.FRESH)
    assert set(owners(table)) == {"z"}


@pytest.mark.parametrize("mode", list(Mode))
def test_nothing_eligible_gives_an_empty_table(mode: Mode) -> None:
    """No backend up (or only weight 0): every slot is NO_BACKEND and `filled` is False."""
    table = build([member("a", up=False), Member("b", "b", 0, 1, True)], 13, mode)
    assert not table.filled
    assert set(table.slots.tolist()) == {NO_BACKEND}
    assert table.to_bytes() == b"\xff" * 4 * 13


@pytest.mark.parametrize("mode", list(Mode))
def test_weight_zero_claims_nothing(mode: Mode) -> None:
    """An up backend whose published weight is 0 owns no slot."""
    table = build([member("a"), Member("b", "b", 0, 3, True), member("c")], 101, mode)
    assert "b" not in owners(table)
    assert table.counts()[1] == 0


def test_table_bytes_are_little_endian_uint32() -> None:
    """The .maglev file is one little-endian uint32 index per slot."""
    table = build([member("a"), member("b")], 7, Mode.FRESH)
    raw = table.to_bytes()
    assert len(raw) == 28
    assert [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 28, 4)] == (
        table.slots.tolist())


def test_lookup_hashes_the_canonical_client_key() -> None:
    """lookup() maps a client address through flow_slot to the slot's backend index."""
    table = build([member("a"), member("b"), member("c")], 101, Mode.FRESH)
    slot, index = maglev.lookup(table.to_bytes(), "192.0.2.7:51234")
    assert slot == maglev.flow_slot("192.0.2.7:51234", 101)
    assert index == table.slots[slot]
    assert maglev.lookup(table.slots, "192.0.2.7:51234") == (slot, index)
