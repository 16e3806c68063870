"""Rendezvous assignment of probers: deterministic, minimal movement, zone spread."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.cluster.assign import Member, assignment, probe_phase, probers_for, score

BACKENDS = [f"web/10.0.{i // 250}.{i % 250}:80" for i in range(300)]
nodes = st.lists(st.sampled_from([f"n{i}" for i in range(12)]), min_size=1, max_size=8,
                 unique=True)
zones = st.sampled_from([None, "a", "b", "c"])
counts = st.integers(min_value=1, max_value=5)


def members_of(names: list[str], zone_list: list[str | None]) -> list[Member]:
    """Members named `names`, zones cycled from `zone_list`."""
    return [Member(n, zone_list[i % len(zone_list)]) for i, n in enumerate(names)]


def test_score_is_stable() -> None:
    """The hash is pinned (not Python's salted hash()): members of any process and
    version must agree on it."""
    assert score("n1", "web/web1") == 0xB78A9EAB77B7E834
    assert probers_for("web/web1", [Member("n1"), Member("n2"), Member("n3")], 1) == \
        probers_for("web/web1", [Member("n3"), Member("n1"), Member("n2")], 1)


def test_the_probers_of_a_backend_take_even_turns() -> None:
    """Two probers check a backend half an interval apart, three a third apart (so one
    of them sees a death within interval / probers); the offset is pinned (every member
    must agree on it) and spreads backends over the interval."""
    assert probe_phase("web/web1", 0, 2) == probe_phase("web/web1", 0, 2)
    for probers in (2, 3):
        turns = sorted(probe_phase("web/web1", rank, probers) for rank in range(probers))
        gaps = [b - a for a, b in zip(turns, [*turns[1:], turns[0] + 1], strict=True)]
        assert gaps == pytest.approx([1 / probers] * probers)
    assert probe_phase("web/web1", 0, 1) == pytest.approx(0xF42C4A996F7956B2 / 2**64)
    firsts = [probe_phase(b, 0, 2) for b in BACKENDS]
    assert all(0 <= f < 1 for f in firsts)
    assert Counter(int(f * 4) for f in firsts).keys() == {0, 1, 2, 3}
    assert all(40 <= n <= 110 for n in Counter(int(f * 4) for f in firsts).values())


def test_all_means_every_member() -> None:
    """`probers: all` (count None) and a count above the members give every member."""
    members = [Member("n1"), Member("n2"), Member("n3")]
    assert set(probers_for("b", members, None)) == {"n1", "n2", "n3"}
    assert set(probers_for("b", members, 5)) == {"n1", "n2", "n3"}
    assert probers_for("b", [], 2) == ()


def test_load_is_spread() -> None:
    """3,000 backends over three members with one prober each: about a third each."""
    members = [Member("balancer-1"), Member("balancer-2"), Member("balancer-3")]
    backends = [f"web/10.1.{i // 200}.{i % 200}:8080" for i in range(3000)]
    load = Counter(p for ps in assignment(backends, members, 1).values() for p in ps)
    assert all(900 <= n <= 1100 for n in load.values()), load


@given(names=nodes, zone_list=st.lists(zones, min_size=1, max_size=3), count=counts,
       seed=st.randoms(use_true_random=False))
def test_deterministic_and_sized(names: list[str], zone_list: list[str | None], count: int,
                                 seed: object) -> None:
    """Any order of the member list gives the same probers: `count` distinct members
    (or all of them)."""
    members = members_of(names, zone_list)
    shuffled = list(members)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    for backend in BACKENDS[:40]:
        chosen = probers_for(backend, members, count)
        assert chosen == probers_for(backend, shuffled, count)
        assert len(chosen) == len(set(chosen)) == min(count, len(members))
        assert set(chosen) <= set(names)


@given(names=nodes, zone_list=st.lists(zones, min_size=1, max_size=3), count=counts,
       data=st.data())
def test_leave_moves_only_its_backends(names: list[str], zone_list: list[str | None],
                                       count: int, data: st.DataObject) -> None:
    """When a member leaves, only the backends it probed change, each losing just it."""
    members = members_of(names, zone_list)
    gone = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != gone]
    before = assignment(BACKENDS, members, count)
    after = assignment(BACKENDS, rest, count)
    for backend in BACKENDS:
        old, new = set(before[backend]), set(after[backend])
        assert old - new <= {gone.node}
        if gone.node not in old:
            assert new == old


@given(names=nodes, zone_list=st.lists(zones, min_size=1, max_size=3), count=counts,
       zone=zones)
def test_join_moves_only_where_it_wins(names: list[str], zone_list: list[str | None],
                                       count: int, zone: str | None) -> None:
    """When a member joins, a backend changes only by taking it in, in place of at most
    one other prober."""
    members = members_of(names, zone_list)
    joined = Member("newcomer", zone)
    before = assignment(BACKENDS, members, count)
    after = assignment(BACKENDS, [*members, joined], count)
    for backend in BACKENDS:
        old, new = set(before[backend]), set(after[backend])
        assert new - old <= {"newcomer"}
        assert len(old - new) <= 1
        if "newcomer" not in new:
            assert new == old


@given(names=nodes, zone_list=st.lists(zones, min_size=1, max_size=3), count=counts)
def test_zones_are_spread(names: list[str], zone_list: list[str | None], count: int) -> None:
    """The probers of a backend cover as many zones as they can."""
    members = members_of(names, zone_list)
    zone_of = {m.node: m.zone for m in members}
    all_zones = set(zone_of.values())
    for backend in BACKENDS[:60]:
        chosen = probers_for(backend, members, count)
        assert len({zone_of[n] for n in chosen}) == min(len(chosen), len(all_zones))
