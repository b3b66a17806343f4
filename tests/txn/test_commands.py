"""Tablet log commands: round trips and refusal of undecodable entries."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, strategies as st

from hlc import Timestamp
from paxos.messages import Ballot
from txn.tablet.commands import (
    KIND_DECIDE, Barrier, CommandError, Decide, SafeTimeAdvance, WriteBatch, decode_command, describe_command,
    encode_command,
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
