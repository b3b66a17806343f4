"""Timestamp: ordering, byte encoding, text form, and validation."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hlc import Timestamp
from hlc.timestamp import LOGICAL_MAX, WALL_MAX

timestamps = st.builds(Timestamp, st.integers(0, WALL_MAX), st.integers(0, LOGICAL_MAX))


@given(timestamps, timestamps)
def test_byte_order_equals_timestamp_order(a: Timestamp, b: Timestamp) -> None:
    assert (a < b) == (a.to_bytes() < b.to_bytes())
    assert (a == b) == (a.to_bytes() == b.to_bytes())


@given(timestamps)
def test_bytes_round_trip(ts: Timestamp) -> None:
    encoded = ts.to_bytes()
    assert len(encoded) == 12
    assert Timestamp.from_bytes(encoded) == ts


@given(timestamps)
def test_text_round_trip(ts: Timestamp) -> None:
    assert Timestamp.parse(str(ts)) == ts
    assert str(ts) == f"{ts.wall}.{ts.logical}"


@given(timestamps)
def test_next_is_the_smallest_timestamp_above(ts: Timestamp) -> None:
    if ts == Timestamp.MAX:
        with pytest.raises(ValueError):
            ts.next()
        return
    following = ts.next()
    assert following > ts
    assert following.to_bytes() > ts.to_bytes()
    assert following.prev() == ts


def test_order_is_wall_then_logical() -> None:
    assert Timestamp(5, 9) < Timestamp(6, 0)
    assert Timestamp(5, 1) < Timestamp(5, 2)
    assert Timestamp.MIN < Timestamp(0, 1) < Timestamp.MAX
    assert Timestamp(7, LOGICAL_MAX).next() == Timestamp(8, 0)


@pytest.mark.parametrize(
    "text",
    ["", "abc", "1", "1.", ".1", "-1.0", "1.-1", "1.2.3", " 1 . 2", f"{WALL_MAX + 1}.0", f"1.{LOGICAL_MAX + 1}", "0x10.0"],
)
def test_parse_rejects_bad_text_and_quotes_it(text: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        Timestamp.parse(text)
    assert repr(text) in str(excinfo.value)


@pytest.mark.parametrize("wall, logical", [(-1, 0), (0, -1), (WALL_MAX + 1, 0), (0, LOGICAL_MAX + 1), (1.5, 0), ("1", 0)])
def test_construction_validates_ranges(wall: object, logical: object) -> None:
    with pytest.raises(ValueError):
        Timestamp(wall, logical)  # type: ignore[arg-type]


def test_from_bytes_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        Timestamp.from_bytes(b"\x00" * 11)
