"""Maglev invariants as hypothesis properties, and the same bytes in a fresh process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.sinks.maglev.table import NO_BACKEND, Member, Mode, Table, build, is_prime
from tests.e2e.helpers import ROOT, run_cli

SIZES = [13, 101, 251, 1009, 4099]


@st.composite
def pools(draw: st.DrawFn, *, weighted: bool = True, min_size: int = 1) -> list[Member]:
    """1..12 distinct backends with weights and up/down flags."""
    n = draw(st.integers(min_size, 12))
    ports = draw(st.lists(st.integers(1, 65535), min_size=n, max_size=n, unique=True))
    weights = draw(st.lists(st.integers(1, 9 if weighted else 1), min_size=n, max_size=n))
    ups = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return [Member(name=f"b{p}", key=f"10.1.0.1:{p}", weight=w if up else 0,
                   configured_weight=w, up=up) for p, w, up in zip(ports, weights, ups,
                                                                    strict=True)]


def with_state(members: list[Member], down: set[str]) -> list[Member]:
    """The same backends with exactly `down` not up."""
    return [Member(m.name, m.key, 0 if m.name in down else m.configured_weight,
                   m.configured_weight, m.name not in down) for m in members]


def by_name(table: Table) -> list[str | None]:
    """Each slot's backend name."""
    return [None if s == NO_BACKEND else table.members[s].name for s in table.slots.tolist()]


@settings(max_examples=80, deadline=None)
@given(members=pools(), size=st.sampled_from(SIZES), mode=st.sampled_from(list(Mode)))
def test_every_slot_holds_an_eligible_backend(members: list[Member], size: int,
                                              mode: Mode) -> None:
    """Whenever some backend is up, every slot names an up backend with weight > 0."""
    table = build(members, size, mode)
    eligible = {i for i, m in enumerate(table.members) if m.eligible}
    if eligible:
        assert set(table.slots.tolist()) <= eligible
    else:
        assert set(table.slots.tolist()) == {NO_BACKEND}


@settings(max_examples=80, deadline=None)
@given(members=pools(weighted=False), size=st.sampled_from(SIZES))
def test_fresh_unweighted_counts_differ_by_at_most_one(members: list[Member],
                                                       size: int) -> None:
    """In fresh mode, up backends of equal weight own within one slot of each other."""
    table = build(members, size, Mode.FRESH)
    counts = [c for c, m in zip(table.counts(), table.members, strict=True) if m.eligible]
    if counts:
        assert max(counts) - min(counts) <= 1
        assert sum(counts) == size


@settings(max_examples=80, deadline=None)
@given(members=pools(), data=st.data())
def test_weighted_shares_are_the_ideal_rounded(members: list[Member],
                                               data: st.DataObject) -> None:
    """Fresh mode: each share is within one slot of size * w / sum(w), so within 1% of the
    ideal once the ideal is 100 slots or more, and within 1% of an even share for
    M >= 100 * N."""
    eligible = [m for m in members if m.eligible]
    size = data.draw(st.sampled_from([p for p in range(100 * len(members),
                                                       100 * len(members) + 200)
                                      if is_prime(p)]))
    table = build(members, size, Mode.FRESH)
    total = sum(m.weight for m in eligible)
    for count, m in zip(table.counts(), table.members, strict=True):
        if m.eligible:
            ideal = size * m.weight / total
            assert abs(count - ideal) < 1
            assert abs(count - ideal) <= 0.01 * size / len(members)
            if ideal >= 100:
                assert abs(count - ideal) <= 0.01 * ideal


@settings(max_examples=80, deadline=None)
@given(members=pools(min_size=2), size=st.sampled_from(SIZES), data=st.data())
def test_stable_moves_exactly_the_failed_slots_and_restores_them(
        members: list[Member], size: int, data: st.DataObject) -> None:
    """Stable mode: failing some (not all) backends changes exactly the slots they owned,
    and their recovery gives back the table from before, byte for byte."""
    everyone = with_state(members, set())
    names = sorted(m.name for m in members)
    down = set(data.draw(st.lists(st.sampled_from(names), min_size=1,
                                  max_size=len(names) - 1, unique=True)))
    before = build(everyone, size, Mode.STABLE)
    during = build(with_state(members, down), size, Mode.STABLE)
    old, new = by_name(before), by_name(during)
    moved = {i for i in range(size) if old[i] != new[i]}
    assert moved == {i for i in range(size) if old[i] in down}
    assert all(new[i] not in down for i in moved)
    assert build(everyone, size, Mode.STABLE).to_bytes() == before.to_bytes()


@settings(max_examples=50, deadline=None)
@given(members=pools(), size=st.sampled_from(SIZES))
def test_modes_agree_when_everything_is_up(members: list[Member], size: int) -> None:
    """With every backend up, stable and fresh are both the paper's table."""
    everyone = with_state(members, set())
    assert (build(everyone, size, Mode.STABLE).to_bytes()
            == build(everyone, size, Mode.FRESH).to_bytes())


@settings(max_examples=80, deadline=None)
@given(members=pools(), size=st.sampled_from(SIZES), mode=st.sampled_from(list(Mode)),
       data=st.data())
def test_config_order_does_not_matter(members: list[Member], size: int, mode: Mode,
                                      data: st.DataObject) -> None:
    """Any permutation of the configured backends gives the same bytes."""
    shuffled = data.draw(st.permutations(members))
    assert build(shuffled, size, mode).to_bytes() == build(members, size, mode).to_bytes()


BUILD_IN_CHILD = """
import hashlib, json, sys
from sentinel.sinks.maglev.table import Member, Mode, build, key_of
spec = json.loads(sys.argv[1])
members = [Member(n, key_of(n), w if n not in spec["down"] else 0, w, n not in spec["down"])
           for n, w in zip(spec["backends"], spec["weights"])]
print(hashlib.sha256(build(members, spec["size"], Mode(spec["mode"])).to_bytes()).hexdigest())
"""


def test_a_fresh_process_builds_identical_bytes() -> None:
    """Another interpreter (other hash seed, other config order) and the CLI produce the
    same table as this process: nothing depends on Python's hash() or on order."""
    backends = [f"10.2.0.{i}:8080" for i in range(1, 41)]
    weights = [1 + i % 3 for i in range(40)]
    down = ["10.2.0.7:8080", "10.2.0.19:8080"]
    members = [Member(n, n, 0 if n in down else w, w, n not in down)
               for n, w in zip(backends, weights, strict=True)]
    here = hashlib.sha256(build(members, 65537, Mode.STABLE).to_bytes()).hexdigest()
    spec = {"backends": backends[::-1], "weights": weights[::-1], "down": down,
            "size": 65537, "mode": "stable"}
    for seed in ("1", "2"):
        child = subprocess.run([sys.executable, "-c", BUILD_IN_CHILD, json.dumps(spec)],
                               capture_output=True, text=True, check=True, timeout=60, cwd=ROOT,
                               env={**os.environ, "PYTHONHASHSEED": seed})
        assert child.stdout.strip() == here
    cli = run_cli("maglev", "build", "--backends", ",".join(backends), "--weights",
                  ",".join(map(str, weights)), "--down", ",".join(down), "--size", "65537")
    assert cli.returncode == 0, cli.stderr
    assert f"sha256 {here}" in cli.stdout
