"""Tablet log commands: round trips and refusal of undecodable entries."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, strategies as st

from hlc import Timestamp
from txn.tablet.commands import Barrier, CommandError, SafeTimeAdvance, WriteBatch, decode_command, describe_command, encode_command

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
