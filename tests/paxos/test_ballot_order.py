"""Ballot ordering is (round, node), hand-written for speed: it must agree with the tuple order."""

from __future__ import annotations

import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paxos.messages import ZERO_BALLOT, Ballot

ballots = st.builds(Ballot, st.integers(0, 5), st.sampled_from(["", "n1", "n2", "n10"]))


@given(ballots, ballots)
def test_ballot_order_is_round_then_node(a: Ballot, b: Ballot) -> None:
    for op in (operator.lt, operator.le, operator.gt, operator.ge, operator.eq):
        assert op(a, b) == op((a.round, a.node), (b.round, b.node)), (op, a, b)
    assert max(a, b) == (a if (a.round, a.node) >= (b.round, b.node) else b)


def test_ballots_do_not_compare_with_other_types() -> None:
    with pytest.raises(TypeError):
        assert Ballot(1, "n1") < (2, "n1")
    assert ZERO_BALLOT < Ballot(1, "") < Ballot(1, "n1") < Ballot(2, "")
