"""Tablet log commands: round trips and refusal of undecodable entries."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, strategies as st

from hlc import Timestamp
from paxos.messages import Ballot
from txn.tablet.commands import (
    KIND_DECIDE, KIND_RESOLVE, KIND_RESOLVE_MANY, Barrier, CommandError, Decide, Resolve, SafeTimeAdvance, WriteBatch,
    decode_command, describe_command, encode_command,
)

timestamps = st.builds(Timestamp, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
writes = st.lists(st.tuples(st.binary(max_size=20), st.one_of(st.none(), st.binary(max_size=20))), max_size=8)


@given(timestamps, writes)
def test_write_batch_round_trip(ts: Timestamp, pairs) -> None:
    command = WriteBatch(ts, pairs)
    assert decode_command(encode_command(command)) == command


@given(timestamps)
def test_markers_round_trip(ts: Timestamp) -> None:
    for command in (SafeTimeAdvance(ts), Barrier(ts)):
        assert decode_command(encode_command(command)) == command


@given(timestamps, writes, st.booleans())
def test_decide_round_trip_with_the_coordinators_writes(ts: Timestamp, pairs, committed: bool) -> None:
    command = Decide(ts, Ballot(3, "n2"), "tx1", committed, ["t2", "t3"], pairs)
    assert decode_command(encode_command(command)) == command


def test_a_decide_logged_before_coordinators_wrote_in_it_decodes_without_writes() -> None:
    """The format before: the writes slot of a decide was always empty."""
    old = cbor2.dumps([KIND_DECIDE, Timestamp(5, 0).to_bytes(), [], 1, "n1", ["tx1", True, ["t2"]]], canonical=True)
    assert decode_command(old) == Decide(Timestamp(5, 0), Ballot(1, "n1"), "tx1", True, ["t2"], [])


@given(timestamps, st.lists(st.tuples(st.text(min_size=1, max_size=8), st.one_of(st.none(), timestamps)),
                            min_size=1, max_size=6))
def test_resolve_round_trip_with_several_decisions(ts: Timestamp, decisions) -> None:
    command = Resolve(ts, Ballot(2, "n1"), decisions)
    assert decode_command(encode_command(command)) == command


def test_a_resolve_logged_before_with_one_decision_still_decodes() -> None:
    """Kind 6, one transaction's decision, as logged before 12-05."""
    old = cbor2.dumps([KIND_RESOLVE, Timestamp(5, 0).to_bytes(), [], 1, "n1", ["tx1", Timestamp(4, 0).to_bytes()]],
                      canonical=True)
    assert decode_command(old) == Resolve(Timestamp(5, 0), Ballot(1, "n1"), [("tx1", Timestamp(4, 0))])
    aborted = cbor2.dumps([KIND_RESOLVE, Timestamp(5, 0).to_bytes(), [], 1, "n1", ["tx2", None]], canonical=True)
    assert decode_command(aborted) == Resolve(Timestamp(5, 0), Ballot(1, "n1"), [("tx2", None)])


@pytest.mark.parametrize("body", [[], [["tx1"]], [[1, None]], "tx1", [["tx1", b"short"]]])
def test_a_malformed_resolve_is_refused(body: object) -> None:
    data = cbor2.dumps([KIND_RESOLVE_MANY, Timestamp(5, 0).to_bytes(), [], 1, "n1", body], canonical=True)
    with pytest.raises(CommandError):
        decode_command(data)


def test_empty_is_noop() -> None:
    assert decode_command(b"") is None
    assert describe_command(b"") == "noop"


@pytest.mark.parametrize(
    "data",
    [b"\xff\x00", cbor2.dumps([9, Timestamp(1, 0).to_bytes(), []]), cbor2.dumps([1, b"short", []]),
     cbor2.dumps([1, Timestamp(1, 0).to_bytes(), [["k", b"v"]]]), cbor2.dumps("text")],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(CommandError):
        decode_command(data)
    assert describe_command(data).startswith("<undecodable")
