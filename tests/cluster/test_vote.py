"""The vote: quorum of live probers, abstaining suspects, no down without quorum."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sentinel.cluster.vote import tally
from sentinel.model import State

UP, DOWN = State.UP, State.DOWN
PROBERS = ("n1", "n2", "n3")


def test_quorum_of_downs_is_down() -> None:
    """Two of three probers saying down with quorum 2 vote the backend down."""
    ballot = tally({"n1": DOWN, "n2": DOWN, "n3": UP}, PROBERS, 2, UP)
    assert ballot.state is DOWN
    assert ballot.down == ("n1", "n2")
    assert ballot.reason == "2 of 3 probers say down (n1, n2); quorum 2"


def test_one_partitioned_member_cannot_take_a_backend_down() -> None:
    """A single down vote (one member cut off from the backend) leaves it up."""
    ballot = tally({"n1": DOWN, "n2": UP, "n3": UP}, PROBERS, 2, UP)
    assert ballot.state is UP
    assert ballot.reason == "1 of 3 probers say down (n1); quorum 2"


def test_recovery_needs_downs_below_quorum() -> None:
    """A down backend comes back up once fewer than quorum probers say down."""
    assert tally({"n1": DOWN, "n2": UP, "n3": UP}, PROBERS, 2, DOWN).state is UP
    assert tally({"n1": DOWN, "n2": DOWN, "n3": UP}, PROBERS, 2, DOWN).state is DOWN


def test_only_live_probers_count() -> None:
    """An observation from a member that does not probe the backend is ignored."""
    ballot = tally({"n1": DOWN, "old": DOWN, "n2": UP}, ("n1", "n2"), 2, UP)
    assert ballot.state is UP
    assert ballot.down == ("n1",)


def test_suspect_casts_no_down_vote() -> None:
    """A member that suspects itself abstains: its down is not counted."""
    ballot = tally({"n1": DOWN, "n2": DOWN, "n3": UP}, PROBERS, 2, UP, suspects={"n2"})
    assert ballot.state is UP
    assert ballot.abstained == ("n2",)
    assert "n2 suspects itself, not counted" in ballot.reason


def test_below_quorum_no_down_is_voted() -> None:
    """With fewer live probers than quorum every down is refused and says why."""
    ballot = tally({"n1": DOWN}, ("n1",), 2, UP)
    assert ballot.state is UP
    assert not ballot.quorate
    assert ballot.reason.startswith("only 1 prober can vote, quorum 2: no down can be voted")


def test_below_quorum_down_stays_down_until_an_up() -> None:
    """Without quorum a down backend stays down, but comes up when the reporting
    probers say up and none says down (ups are still published)."""
    assert tally({"n1": DOWN}, ("n1",), 2, DOWN).state is DOWN
    assert tally({}, ("n1",), 2, DOWN).state is DOWN
    assert tally({"n1": UP}, ("n1",), 2, DOWN).state is UP


def test_suspects_reduce_who_can_vote() -> None:
    """Probers that suspect themselves do not count towards quorum."""
    ballot = tally({"n1": DOWN, "n2": DOWN}, ("n1", "n2", "n3"), 2, UP, suspects={"n2", "n3"})
    assert not ballot.quorate
    assert ballot.state is UP


def test_new_prober_silence_is_no_up_vote() -> None:
    """A down backend whose new prober has not reported stays down while the missing
    report could still make a quorum, and says whom it waits for."""
    ballot = tally({"n1": DOWN}, ("n1", "n3"), 2, DOWN)
    assert ballot.state is DOWN
    assert ballot.missing == ("n3",)
    assert "waiting for n3" in ballot.reason
    assert tally({"n1": DOWN, "n3": UP}, ("n1", "n3"), 2, DOWN).state is UP


observations = st.dictionaries(st.sampled_from(["n1", "n2", "n3", "n4", "n5"]),
                               st.sampled_from([UP, DOWN]))


@given(obs=observations, quorum=st.integers(1, 5), current=st.sampled_from([UP, DOWN]),
       suspects=st.sets(st.sampled_from(["n1", "n2", "n3", "n4", "n5"])))
def test_down_only_with_quorum_of_trusted_downs(obs: dict[str, State], quorum: int,
                                                current: State, suspects: set[str]) -> None:
    """Whatever the observations: a newly voted down always has `quorum` down votes of
    probers that do not suspect themselves, and a backend with that many is down."""
    probers = ("n1", "n2", "n3", "n4")
    ballot = tally(obs, probers, quorum, current, suspects)
    trusted_downs = [p for p in probers if obs.get(p) is DOWN and p not in suspects]
    if current is UP and ballot.state is DOWN:
        assert len(trusted_downs) >= quorum
    if len(trusted_downs) >= quorum:
        assert ballot.state is DOWN
    if all(obs.get(p) is UP for p in probers):
        assert ballot.state is UP
