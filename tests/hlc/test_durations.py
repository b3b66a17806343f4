"""User-facing time parsing: durations, ISO-8601, relative timestamps."""

from __future__ import annotations

import pytest

from hlc import Timestamp, format_duration_ns, format_iso, parse_duration_ns, parse_user_timestamp


@pytest.mark.parametrize(
    "text, ns",
    [("10ms", 10_000_000), ("-5s", -5_000_000_000), ("250us", 250_000), ("7ns", 7), ("1.5s", 1_500_000_000),
     ("+2m", 120_000_000_000), ("0.001ms", 1_000), ("1h", 3_600_000_000_000)],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "10", "ms", "10 parsecs", "1e3ms", "--5s", "5 s"])
def test_parse_duration_rejects_and_quotes(text: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_duration_ns(text)
    assert repr(text) in str(excinfo.value)


def test_format_duration() -> None:
    assert format_duration_ns(1_500_000) == "1.5ms"
    assert format_duration_ns(-2_000_000_000) == "-2s"
    assert format_duration_ns(999) == "999ns"


def test_iso_round_trip_keeps_nanoseconds() -> None:
    ts = Timestamp(1_795_000_000_123_456_789, 0)
    text = format_iso(ts)
    assert text == "2026-11-18T11:06:40.123456789Z"
    assert parse_user_timestamp(text, now_ns=0) == ts


def test_user_timestamp_forms() -> None:
    now = 1_800_000_000_000_000_000
    assert parse_user_timestamp("1795000000123456789.2", now) == Timestamp(1_795_000_000_123_456_789, 2)
    assert parse_user_timestamp("-5s", now) == Timestamp(now - 5_000_000_000, 0)
    assert parse_user_timestamp("-250ms", now) == Timestamp(now - 250_000_000, 0)
    assert parse_user_timestamp("2027-01-15T08:00:00Z", now) == Timestamp(now, 0)
    assert parse_user_timestamp("2027-01-15T09:00:00+01:00", now) == Timestamp(now, 0)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00:00Z", "1.2.3", "-5 parsecs", ""])
def test_user_timestamp_rejects_and_quotes(text: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_user_timestamp(text, now_ns=1)
    assert repr(text) in str(excinfo.value)
