"""Parsing what users type for durations and timestamps.

Role: one place that turns `10ms`, `-5s`, `1795000000123456789.2` or
`2026-11-22T15:00:00.123456789Z` into integers and `Timestamp`s, so every
CLI flag and config value accepts the same forms (DESIGN.md, "Timestamps as
users see them").

Invariants: results are integer nanoseconds; every failure is a ValueError
whose message quotes the input. Pure: relative timestamps take `now_ns` as an
argument instead of reading a clock.
"""

from __future__ import annotations

import datetime as dt
import re

from hlc.timestamp import Timestamp

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION = re.compile(r"([+-]?)(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?"
)


def parse_duration_ns(text: str) -> int:
    """`250ms`, `-5s`, `1.5s`, `100us`, `7ns` -> signed integer nanoseconds."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a duration (expected a number with a unit ns, us, ms, s, m or h, e.g. 250ms): {text!r}")
    sign, number, unit = match.groups()
    whole, _, fraction = number.partition(".")
    scale = _UNITS_NS[unit]
    ns = int(whole) * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)
    return -ns if sign == "-" else ns


def format_duration_ns(ns: int) -> str:
    """A short human form: 1500000 -> '1.5ms'."""
    sign = "-" if ns < 0 else ""
    magnitude = abs(ns)
    for unit, scale in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if magnitude >= scale:
            return f"{sign}{magnitude / scale:g}{unit}"
    return f"{sign}{magnitude}ns"


def parse_iso_ns(text: str) -> int:
    """ISO-8601 time (UTC unless an offset is given) -> nanoseconds since the epoch."""
    match = _ISO.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO-8601 time (e.g. 2026-11-22T15:00:00.123Z): {text!r}")
    date, hour, minute, second, fraction, zone = match.groups()
    try:
        tz = dt.timezone.utc if zone in (None, "Z") else dt.datetime.strptime(zone, "%z").tzinfo
        moment = dt.datetime.fromisoformat(f"{date}T{hour}:{minute}:{second}").replace(tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"not a valid ISO-8601 time ({exc}): {text!r}") from None
    seconds = int(moment.timestamp())
    nanos = int((fraction or "0").ljust(9, "0"))
    total = seconds * 1_000_000_000 + nanos
    if total < 0:
        raise ValueError(f"time before the Unix epoch: {text!r}")
    return total


def format_iso(ts: Timestamp) -> str:
    """ISO-8601 UTC with nanoseconds: 2026-11-22T15:00:00.123456789Z."""
    seconds, nanos = divmod(ts.wall, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def parse_user_timestamp(text: str, now_ns: int) -> Timestamp:
    """A timestamp as users write it: `WALL.LOGICAL`, ISO-8601, or relative to now (`-5s`)."""
    stripped = text.strip() if isinstance(text, str) else ""
    if stripped[:1] in ("-", "+"):
        return Timestamp(now_ns + parse_duration_ns(stripped), 0)
    if "." in stripped and stripped.replace(".", "", 1).isdigit():
        return Timestamp.parse(stripped)
    if stripped.isdigit():
        return Timestamp.parse(stripped + ".0")
    try:
        return Timestamp(parse_iso_ns(stripped), 0)
    except ValueError:
        raise ValueError(
            f"not a timestamp (expected WALL.LOGICAL, an ISO-8601 time, or a relative duration like -5s): {text!r}"
        ) from None
