"""Key encoding: byte order of user keys and newest-first versions survive encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hlc.timestamp import LOGICAL_MAX, WALL_MAX, Timestamp
from mvcc.keys import (
    KeySpace,
    escape,
    inverted_ts,
    prefix_end,
    tag_value,
    ts_from_inverted,
    unescape,
    untag_value,
)

# Bytes that stress the escape: 0x00, 0x01 (the terminator's second byte), 0xff.
USER_KEYS = st.lists(st.sampled_from([0x00, 0x01, 0x02, 0x61, 0xFE, 0xFF]), max_size=6).map(bytes) | st.binary(max_size=8)
TIMESTAMPS = st.builds(Timestamp, st.integers(0, WALL_MAX), st.integers(0, LOGICAL_MAX)) | st.builds(
    Timestamp, st.integers(0, 3), st.integers(0, 2)
)
SPACE = KeySpace(b"m")


@settings(max_examples=400, deadline=None)
@given(a=USER_KEYS, b=USER_KEYS, ts_a=TIMESTAMPS, ts_b=TIMESTAMPS)
def test_encoded_order_is_key_order_then_newest_first(a: bytes, b: bytes, ts_a: Timestamp, ts_b: Timestamp) -> None:
    encoded_a, encoded_b = SPACE.version_key(a, ts_a), SPACE.version_key(b, ts_b)
    expected = (a, _reverse(ts_a)) < (b, _reverse(ts_b))
    assert (encoded_a < encoded_b) == expected
    assert (encoded_a == encoded_b) == (a == b and ts_a == ts_b)
    assert (SPACE.intent_key(a) < SPACE.intent_key(b)) == (a < b)


def _reverse(ts: Timestamp) -> tuple[int, int]:
    return (-ts.wall, -ts.logical)


@settings(max_examples=300, deadline=None)
@given(key=USER_KEYS, ts=TIMESTAMPS, other=USER_KEYS)
def test_round_trip_and_group_bounds(key: bytes, ts: Timestamp, other: bytes) -> None:
    version_key = SPACE.version_key(key, ts)
    assert SPACE.decode_version_key(version_key) == (key, ts)
    assert SPACE.decode_intent_key(SPACE.intent_key(key)) == key
    assert unescape(escape(key)) == key
    assert b"\x00\x01" not in escape(key)
    assert ts_from_inverted(inverted_ts(ts)) == ts
    group = SPACE.group(key)
    assert group <= version_key < group + b"\xff" * 13
    # No other key's versions fall inside this key's group range.
    other_key = SPACE.version_key(other, ts)
    assert (group <= other_key < group + b"\xff" * 13) == (other == key)
    assert SPACE.versions <= version_key < SPACE.versions_end
    assert SPACE.prefix <= version_key < SPACE.end  # type: ignore[operator]


@given(value=st.none() | st.binary(max_size=4))
def test_tagged_values_round_trip_including_empty(value: bytes | None) -> None:
    assert untag_value(tag_value(value)) == value


def test_untag_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        untag_value(b"\x07abc")
    with pytest.raises(ValueError):
        untag_value(b"")


def test_prefix_end_and_bad_prefix() -> None:
    assert prefix_end(b"m") == b"n"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None
    with pytest.raises(ValueError):
        KeySpace(b"")
    with pytest.raises(ValueError):
        SPACE.decode_version_key(b"p\x00\x01" + b"\x00" * 12)


def test_layout_examples() -> None:
    ts = Timestamp(1, 2)
    assert SPACE.version_key(b"a\x00b", ts) == b"mva\x00\xffb\x00\x01" + inverted_ts(ts)
    assert inverted_ts(ts) == (WALL_MAX - 1).to_bytes(8, "big") + (LOGICAL_MAX - 2).to_bytes(4, "big")
    assert SPACE.intent_key(b"") == b"mi\x00\x01"
    assert SPACE.horizon_key == b"mg"
